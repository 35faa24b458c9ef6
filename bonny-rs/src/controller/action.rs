//! What to do with an object after a reconcile.

use std::time::Duration;

/// When to reconcile an object again, returned by [`Reconcile`](super::Reconcile) methods.
///
/// A controller declared with a `requeue_after` interval reconciles every object at least that
/// often; an explicit [`Action::requeue`] overrides it for one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration`, even if nothing changes.
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Reconcile again only when the object or one of its descendants changes (or the
    /// controller's periodic interval elapses).
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// The requested delay, if any.
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
