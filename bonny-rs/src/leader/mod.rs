//! Lease leader election that gates the operator's controllers.
//!
//! Every replica runs an [`Elector`] over one `coordination.k8s.io/v1` Lease; only the
//! holder opens its [`Gate`], i.e. runs controllers.
//!
//! # Guarantees
//! - **One leader at a time.** A standby takes the Lease only once its content has not
//!   changed for `lease_duration` on the standby's own monotonic clock; a leader closes its
//!   gate (and waits for its controllers to stop) once `renew_deadline < lease_duration` has
//!   passed since its last successful renewal *started*. Remote timestamps are never compared
//!   with the local clock, so wall-clock skew between replicas cannot make two leaders. Every
//!   write carries the observed `resourceVersion` as a precondition.
//! - **Fast failover.** Standbys poll every `retry_period` (jittered by up to 20 %) and also
//!   watch the Lease: they see each renewal at once, try the takeover exactly when it expires
//!   (about `lease_duration` after a leader crashed), and act at once on a release (a leader
//!   that shuts down clears the holder).
//! - **Robust.** Each request has its own timeout (`max(renew_deadline / 2, 1 s)`); missing
//!   fields, garbage timestamps, 403, 409, 5xx and timeouts are logged and retried, never a
//!   panic.
//!
//! ```no_run
//! use bonny::leader::{Defaults, Elector, Gate, LeaderElection};
//! use tokio_util::sync::CancellationToken;
//!
//! struct Controllers;
//! impl Gate for Controllers {
//!     async fn open(&mut self) { /* spawn the controllers */ }
//!     async fn close(&mut self) { /* abort them and await every task */ }
//! }
//!
//! # async fn demo(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let election = LeaderElection::new().validate(&Defaults::new("my-operator"))?;
//! let elector = Elector::new(election, client);
//! let status = elector.status(); // for metrics and health checks
//! elector.run(&mut Controllers, CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

mod campaign;
mod config;
mod decision;
mod elector;
mod error;
mod gate;
mod record;
mod status;
mod store;

#[cfg(test)]
mod simulation;

pub use config::{Defaults, Election, LeaderElection, default_identity, default_lease_name};
pub use elector::Elector;
pub use error::{ConfigError, Error};
pub use gate::Gate;
pub use status::LeaderStatus;
