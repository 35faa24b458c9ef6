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
/// Every variant displays as one sentence with the reason and code, never a debug dump.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The request exceeded its own timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The API server answered 409 Conflict or AlreadyExists: someone else wrote first.
    #[error("conflict: {}", Described(.0))]
    Conflict(#[source] kube::Error),
    /// The API server refused our credentials or the verb (401, 403): only a change of RBAC
    /// helps, so the message names the fix.
    #[error(
        "this replica may not {verb} leases.coordination.k8s.io in namespace {namespace} \
         ({}); grant it with the ClusterRole that `{binary} manifests` generates",
        Described(.source)
    )]
    Forbidden {
        /// The verb refused: get, create, update or watch.
        verb: &'static str,
        /// The Lease's namespace.
        namespace: String,
        /// The operator's binary, for the hint.
        binary: String,
        /// The refusal.
        #[source]
        source: kube::Error,
    },
    /// Any other failure: transport, 5xx, undecodable body.
    #[error("{}", Described(.0))]
    Api(#[source] kube::Error),
}

impl RequestError {
    /// Whether only a change of permissions can make the request succeed.
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

/// A [`kube::Error`] as one sentence: an API status shows its code, reason and message
/// (kube's own `Display` appends the whole `Status` debug dump).
struct Described<'a>(&'a kube::Error);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            kube::Error::Api(status) => {
                write!(f, "{} {}", status.code, status.reason)?;
                if !status.message.is_empty() {
                    write!(f, ": {}", status.message)?;
                }
                Ok(())
            }
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn errors_read_as_one_sentence_without_a_status_dump() {
        let forbidden = RequestError::Forbidden {
            verb: "get",
            namespace: "ops".into(),
            binary: "widget-operator".into(),
            source: status(
                403,
                "Forbidden",
                "leases.coordination.k8s.io \"l\" is forbidden: User \"bob\" cannot get resource",
            ),
        }
        .to_string();
        assert_eq!(
            forbidden,
            "this replica may not get leases.coordination.k8s.io in namespace ops (403 \
             Forbidden: leases.coordination.k8s.io \"l\" is forbidden: User \"bob\" cannot get \
             resource); grant it with the ClusterRole that `widget-operator manifests` generates"
        );
        let other = RequestError::Api(status(500, "InternalError", "etcd is down")).to_string();
        assert_eq!(other, "500 InternalError: etcd is down");
        for message in [forbidden, other] {
            assert!(!message.contains("Status {"), "{message}");
        }
    }
}
