//! Per-object exponential backoff for failed reconciles.

use std::time::Duration;

/// How long to wait before retrying an object whose reconcile failed: `base * 2^(failures-1)`,
/// capped at `max`. The count resets when a reconcile of the object succeeds.
///
/// ```
/// use std::time::Duration;
/// use bonny::controller::Backoff;
/// let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
/// assert_eq!(backoff.delay(1), Duration::from_millis(500));
/// assert_eq!(backoff.delay(3), Duration::from_secs(2));
/// assert_eq!(backoff.delay(40), Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 1 s doubling up to 5 minutes.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }
}
