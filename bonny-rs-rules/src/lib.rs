//! The rules bonny-rs checks in more than one place, written once.
//!
//! The `#[bonny::controller]` attribute checks them at compile time, the runtime at startup
//! (environment variables, Lease names, RBAC rules) and `cargo bonny` when it scaffolds an
//! operator. Each rule lives here so that the three cannot disagree:
//!
//! - [`verbs`]: the RBAC verbs the Kubernetes authorizer understands.
//! - [`duration`]: the duration grammar (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).
//! - [`dns`]: DNS-1123 labels and subdomains, and qualified names such as finalizers.
//!
//! The crate has no dependencies, so a proc-macro and the runtime can both use it.

pub mod dns;
pub mod duration;
pub mod verbs;
