//! A cheap, shareable view of the elector's state for metrics and health checks.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The elector's state as seen from other tasks; cloning shares it.
#[derive(Clone, Debug)]
pub struct LeaderStatus {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    identity: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leading: bool,
    transitions: u64,
    last_renewal: Option<Instant>,
    holder: Option<String>,
    problem: Option<String>,
}

impl LeaderStatus {
    pub(crate) fn new(identity: String) -> Self {
        Self {
            inner: Arc::new(Shared {
                identity,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Whether this replica currently runs the controllers (the gate is open).
    pub fn is_leader(&self) -> bool {
        self.state().leading
    }

    /// How many times this replica acquired leadership since it started.
    pub fn transitions(&self) -> u64 {
        self.state().transitions
    }

    /// When this replica last wrote the Lease successfully (acquired or renewed).
    pub fn last_renewal(&self) -> Option<Instant> {
        self.state().last_renewal
    }

    /// The holder of the Lease as last observed; `None` when free or not yet read.
    pub fn holder(&self) -> Option<String> {
        self.state().holder.clone()
    }

    /// Why this replica cannot take part in the election (it may not read or write its
    /// Lease), as one sentence naming the fix; `None` while its Lease requests are allowed.
    /// The operator's `/readyz` reports it.
    pub fn problem(&self) -> Option<String> {
        self.state().problem.clone()
    }

    /// The identity this replica writes into the Lease.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// True when this replica leads but its last successful renewal is older than `limit`:
    /// the signal for a liveness check. A healthy elector closes the gate once
    /// `renew_deadline` passes without renewal, so pass `renew_deadline` plus a grace.
    pub fn renewal_overdue(&self, limit: Duration) -> bool {
        let state = self.state();
        match (state.leading, state.last_renewal) {
            (true, Some(at)) => at.elapsed() > limit,
            _ => false,
        }
    }

    pub(crate) fn set_leading(&self, leading: bool) {
        let mut state = self.state();
        if leading && !state.leading {
            state.transitions += 1;
        }
        state.leading = leading;
    }

    pub(crate) fn renewed(&self, at: Instant) {
        self.state().last_renewal = Some(at);
    }

    /// Records why Lease requests are refused (`None`: they are not).
    pub(crate) fn set_problem(&self, problem: Option<String>) {
        self.state().problem = problem;
    }

    pub(crate) fn set_holder(&self, holder: Option<&str>) {
        let mut state = self.state();
        if state.holder.as_deref() != holder {
            state.holder = holder.map(str::to_owned);
        }
    }

    // A panic while holding this lock cannot leave the plain-data state inconsistent,
    // so a poisoned lock is simply taken over.
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
