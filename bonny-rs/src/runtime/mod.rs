//! The runtime: runs declared controllers on kube-runtime.
//!
//! `registration` is the seam the operator holds controllers by; `preflight` checks what
//! the watches need before they start; `watches` wires one kube-runtime controller per
//! namespace scope with the owned kinds' caches and, through `related`, the related kinds'
//! watches, the field index and the event filters, fed through `intake` (objects decoded one by
//! one with `decode`, vanished objects kept for cleanup); `reconcile` runs one reconcile (events,
//! error policy, panics) through the `pipeline`, whose stages live in `finalizer`,
//! `status` and `descendants`. `diff` and `read_your_writes` are pure; `rbac` holds
//! the SDK's own RBAC needs, used by preflight and by the manifests.
//!
//! Public here: only what an operator can meet, [`Namespaces`] and [`StartupError`].

mod decode;
mod descendants;
mod diff;
mod finalizer;
mod intake;
mod namespaces;
mod pipeline;
mod preflight;
pub(crate) mod rbac;
mod read_your_writes;
mod reconcile;
mod registration;
mod related;
mod status;
mod watches;

pub use namespaces::Namespaces;
pub use preflight::StartupError;
pub(crate) use registration::{Registered, Registration, RunContext};
