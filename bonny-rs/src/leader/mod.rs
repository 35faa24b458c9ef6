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
//! - **A stale leader's writes do not leave.** Clients wrapped by the elector's
//!   [`WriteGuard`] send a POST, PUT, PATCH or DELETE only while this replica's tenure
//!   (start of the last successful renewal + `renew_deadline`, on the monotonic clock) holds,
//!   and refuse it with [`Fenced`] otherwise; reads always pass. An elector that finds its
//!   deadline already behind it (the process was frozen or starved) closes the gate with
//!   [`Closing::Abort`]: nothing in flight may finish. The graceful [`Closing::Drain`] is for
//!   shutdown and for a loss noticed in time.
//! - **Robust.** Each request has its own timeout (`max(renew_deadline / 2, 1 s)`); missing
//!   fields, garbage timestamps, 403, 409, 5xx and timeouts are logged and retried, never a
//!   panic. A Lease this replica may not read or write is named with the ClusterRole that
//!   grants it and reported by [`LeaderStatus::problem`] (the operator's `/readyz`).
//!
//! ```no_run
//! use bonny::leader::{Closing, Defaults, Elector, Gate, LeaderElection};
//! use tokio_util::sync::CancellationToken;
//!
//! /// Controllers that write through `client`.
//! struct Controllers { client: kube::Client }
//! impl Gate for Controllers {
//!     async fn open(&mut self) { /* spawn the controllers with self.client */ }
//!     async fn close(&mut self, _how: Closing) { /* stop them and await every task */ }
//! }
//!
//! # async fn demo(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let election = LeaderElection::new().validate(&Defaults::new("my-operator"))?;
//! let elector = Elector::new(election, client.clone());
//! let status = elector.status(); // for metrics and health checks
//! // Their writes leave only while this replica's tenure holds.
//! let mut controllers = Controllers { client: elector.write_guard().client(client) };
//! elector.run(&mut controllers, CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

mod campaign;
mod config;
mod decision;
mod elector;
mod error;
mod gate;
mod guard;
mod identity;
mod record;
mod status;
mod store;

#[cfg(test)]
mod simulation;

pub use config::{Defaults, Election, LeaderElection, default_identity, default_lease_name};
pub use elector::Elector;
pub use error::{ConfigError, Error};
pub use gate::{Closing, Gate};
pub use guard::{FENCE_REFUSAL, Fenced, WriteGuard};
pub use identity::{IdentityCheck, check_identity};
pub use status::LeaderStatus;
