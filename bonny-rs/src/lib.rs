//! # bonny-rs
//!
//! A Kubernetes operator SDK on [kube-rs](https://kube.rs): declare a custom resource and a
//! controller, hand the controllers to an [`Operator`], and run it. With leader election on,
//! controllers run only on the replica that holds a `coordination.k8s.io/v1` Lease.
//!
//! ```no_run
//! use bonny::prelude::*;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::CustomResource;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
//! #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
//! pub struct WidgetSpec { pub size: u32 }
//!
//! #[bonny::controller(resource = Widget, finalizer = "example.com/cleanup", owns = [ConfigMap])]
//! pub struct WidgetController;
//!
//! impl Reconcile<Widget> for WidgetController {
//!     async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
//!         axn.normal_event("Reconciled", format!("size {}", axn.object().spec.size));
//!         Ok(Action::await_change())
//!     }
//! }
//!
//! # async fn run() -> Result<(), bonny::Error> {
//! Operator::builder()
//!     .name("widget-operator")
//!     .controller(WidgetController)
//!     .leader_election(true)
//!     .run()
//!     .await
//! # }
//! ```

pub mod controller;
mod error;
pub mod leader;
pub mod manifest;
pub mod observe;
pub mod operator;
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;

pub use bonny_rs_macros::controller;
pub use error::Error;
pub use operator::{Operator, OperatorBuilder};

/// Re-exported so that generated code and users share one version.
pub use k8s_openapi;
/// Re-exported so that generated code and users share one version.
pub use kube;
/// Re-exported so that a controller can log (`bonny::tracing::info!(..)`) without adding the
/// crate; [`operator::init_logging`] installs the subscriber.
pub use tracing;

/// The names an operator author needs in scope.
pub mod prelude {
    pub use crate::controller::{
        Action, Axn, Backoff, Config, Controller, Filter, Flow, Mapper, Phase, Reconcile,
        ReconcileError, Rule, Step,
    };
    pub use crate::operator::Operator;
}

/// The README's Rust example, compiled with the doc tests so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
