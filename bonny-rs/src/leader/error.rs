//! Errors of the leader elector.

use std::time::Duration;

/// Why [`Elector::run`](super::Elector::run) stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Leadership was lost while `exit_on_loss` was set. The gate was closed (every
    /// controller stopped) before this was returned; restart the process to stand for
    /// election again, or leave `exit_on_loss` off to stand by in-process.
    #[error(
        "leadership lost: the controllers were stopped and exit_on_loss is set, so the elector exits"
    )]
    LeadershipLost,
}

/// A [`LeaderElection`](super::LeaderElection) that cannot guarantee a single leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The timings break `lease_duration > renew_deadline > retry_period * 1.2 > 0`.
    #[error(
        "leader election timings must satisfy {rule}, got lease_duration = {lease_duration:?}, \
         renew_deadline = {renew_deadline:?}, retry_period = {retry_period:?}; \
         the defaults are 15s, 10s and 2s"
    )]
    Timings {
        /// The part of the rule that does not hold.
        rule: &'static str,
        /// The configured lease duration.
        lease_duration: Duration,
        /// The configured renew deadline.
        renew_deadline: Duration,
        /// The configured retry period.
        retry_period: Duration,
    },
    /// `lease_duration` does not fit the Lease's `leaseDurationSeconds` (an `i32`).
    #[error("lease_duration = {0:?} is longer than a Lease can hold (i32::MAX seconds)")]
    LeaseDurationTooLong(Duration),
    /// The identity is empty, so the elector could not tell its own Lease from a free one.
    #[error("the leader election identity is empty; set one or leave it to the default")]
    EmptyIdentity,
    /// The Lease name is not a DNS-1123 subdomain.
    #[error(
        "lease name {0:?} is not a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', \
         at most 253 characters, starting and ending alphanumeric)"
    )]
    InvalidLeaseName(String),
    /// The Lease namespace is not a DNS-1123 label.
    #[error(
        "lease namespace {0:?} is not a DNS-1123 label (lowercase alphanumerics and '-', \
         at most 63 characters, starting and ending alphanumeric)"
    )]
    InvalidNamespace(String),
}

/// One Lease request that did not give a usable answer; logged and retried, never fatal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The request exceeded its own timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The API server answered 409 Conflict or AlreadyExists: someone else wrote first.
    #[error("conflict: {0}")]
    Conflict(#[source] kube::Error),
    /// Any other failure: transport, 403, 5xx, undecodable body.
    #[error(transparent)]
    Api(#[from] kube::Error),
}
