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
    /// Stop the controllers and wait until every one has stopped (bounded grace inside).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}
