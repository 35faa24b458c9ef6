//! The runtime: runs declared controllers on kube-runtime.
//!
//! `registration` is the seam the operator holds controllers by; `preflight` checks what
//! the watches need before they start; `cache` holds the operator's shared, lean owned-kind
//! caches; `watches` wires one kube-runtime controller per namespace scope on them and on the
//! reconciled kind's watch and, through `related`, the related kinds' watches, the field
//! index and the event filters, fed through `intake` (objects decoded one by
//! one with `decode`, vanished objects kept for cleanup); `reconcile` runs one reconcile (events,
//! error policy, panics) through the `pipeline`, whose stages live in `finalizer`,
//! `status`, `descendants` and `prune`. `diff` and `read_your_writes` are pure, bounded by
//! `expiring`; `events` publishes events; `queue` counts the work queue's adds where the
//! triggers enter kube-runtime; `rbac` holds the SDK's own RBAC needs, used by preflight
//! and by the manifests.
//!
//! Public here: only what an operator can meet, [`Namespaces`] and [`StartupError`].

mod cache;
mod decode;
mod descendants;
mod diff;
mod events;
mod expiring;
mod finalizer;
mod intake;
mod metadata;
mod namespaces;
mod pipeline;
mod preflight;
mod prune;
mod queue;
pub(crate) mod rbac;
mod read_your_writes;
mod reconcile;
mod registration;
mod related;
mod status;
mod watches;

pub(crate) use cache::Caches;
pub use namespaces::Namespaces;
pub use preflight::StartupError;
pub(crate) use registration::{Registered, Registration, RunContext};
