//! The step trait: one named stage of the reconcile pipeline.

use std::{future::Future, pin::Pin};

use super::{Action, Axn, ReconcileError};

/// The future a [`Step`] returns.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Flow, ReconcileError>> + Send + 'a>>;

/// Whether the pipeline goes on after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Run the next step.
    Continue,
    /// Stop here: skip the remaining steps and the author's `apply`/`cleanup`; the status and
    /// events gathered so far are still written. The action decides the next reconcile.
    Halt(Action),
}

/// One stage of the reconcile pipeline, run before the author's `apply`/`cleanup`.
///
/// ```
/// use bonny::prelude::*;
/// use bonny::controller::{Flow, Object, StepFuture};
///
/// /// Leaves objects labelled `paused=true` alone.
/// struct SkipPaused;
///
/// impl<K: Object> Step<K> for SkipPaused {
///     fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a> {
///         Box::pin(async move {
///             let paused = axn.object().meta().labels.as_ref()
///                 .and_then(|labels| labels.get("paused"))
///                 .is_some_and(|value| value == "true");
///             Ok(if paused { Flow::Halt(Action::await_change()) } else { Flow::Continue })
///         })
///     }
/// }
/// ```
pub trait Step<K>: Send + Sync {
    /// Run the step on the action context.
    fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a>;

    /// The step's name in traces.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}
