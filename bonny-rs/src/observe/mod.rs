//! Observability: Prometheus metrics, health and readiness probes, log setup.

mod health;
mod logging;
mod metrics;
pub(crate) mod server;

pub use health::Health;
pub use logging::{LogFormat, init_logging_with};
pub use metrics::Metrics;
pub(crate) use metrics::ReconcileResult;
pub(crate) use metrics::WebhookMetrics;
