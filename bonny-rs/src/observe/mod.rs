//! Observability: Prometheus metrics, health and readiness probes, log setup.

mod health;
mod logging;
mod metrics;
mod process;
mod rest_client;
pub(crate) mod server;
mod workqueue;

pub use health::Health;
pub use logging::{LogFormat, init_logging_with};
pub use metrics::Metrics;
pub(crate) use metrics::ReconcileResult;
pub(crate) use metrics::WebhookMetrics;
pub use rest_client::{CountRequests, Counted};
pub(crate) use workqueue::{QueueKey, WorkQueue};
