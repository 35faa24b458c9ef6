//! The seam between the elector and the controllers it guards.

use std::future::Future;

/// Starts and stops the controllers that may only run on the leader.
///
/// The operator runtime implements this. The elector calls [`open`](Gate::open) after it
/// acquired the Lease and [`close`](Gate::close) before it can no longer prove it holds it;
/// the two always alternate, starting with `open`.
pub trait Gate: Send {
    /// Start the controllers; returns once they are spawned.
    fn open(&mut self) -> impl Future<Output = ()> + Send;
    /// Stop the controllers as `how` says and wait until every one has stopped.
    fn close(&mut self, how: Closing) -> impl Future<Output = ()> + Send;
}

/// How the [`Gate`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closing {
    /// Let in-flight work finish within a bounded grace, then abort what is left: for
    /// shutdown, and for a loss the elector noticed in time.
    Drain,
    /// Abort everything at once: the tenure had already lapsed when the elector noticed
    /// (the process was frozen or starved), so nothing in flight may finish.
    Abort,
}
