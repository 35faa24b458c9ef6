//! How the elector is configured, and the default names it uses.

use std::time::Duration;

use bonny_rules::dns::{is_label as is_dns_label, is_subdomain as is_dns_subdomain};
use md5::{Digest, Md5};

use super::ConfigError;

/// The jitter factor of client-go: waits while not leading are `retry_period` stretched by up
/// to this factor, and `renew_deadline` must exceed the longest such wait.
pub(crate) const JITTER_FACTOR: f64 = 1.2;

/// Settings of the Lease leader election.
///
/// Every setting has a production-safe default; [`validate`](Self::validate) runs when the
/// [`Elector`](super::Elector) is built.
///
/// ```
/// use std::time::Duration;
/// use bonny::leader::LeaderElection;
///
/// let config = LeaderElection::new()
///     .lease_duration(Duration::from_secs(20))
///     .renew_deadline(Duration::from_secs(12));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub(crate) lease_name: Option<String>,
    pub(crate) lease_namespace: Option<String>,
    pub(crate) identity: Option<String>,
    pub(crate) lease_duration: Duration,
    pub(crate) renew_deadline: Duration,
    pub(crate) retry_period: Duration,
    pub(crate) release_on_shutdown: bool,
    pub(crate) exit_on_loss: bool,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            lease_name: None,
            lease_namespace: None,
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_shutdown: true,
            exit_on_loss: false,
        }
    }
}

impl LeaderElection {
    /// The defaults: 15 s lease, 10 s renew deadline, 2 s retry period, release on shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Name of the Lease; by default [`default_lease_name`] of the namespace and operator.
    #[must_use]
    pub fn lease_name(mut self, name: impl Into<String>) -> Self {
        self.lease_name = Some(name.into());
        self
    }

    /// Namespace of the Lease; by default [`default_lease_namespace`].
    #[must_use]
    pub fn lease_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.lease_namespace = Some(namespace.into());
        self
    }

    /// Identity written into the Lease; by default [`default_identity`]. Must be unique
    /// per process: two replicas sharing one identity both believe they lead.
    #[must_use]
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// How long standbys wait after the last observed change of the Lease before taking it
    /// over (default 15 s).
    #[must_use]
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration;
        self
    }

    /// How long a leader keeps its controllers running without a successful renewal
    /// (default 10 s).
    #[must_use]
    pub fn renew_deadline(mut self, deadline: Duration) -> Self {
        self.renew_deadline = deadline;
        self
    }

    /// The interval between renewals while leading and between attempts (jittered by up to
    /// 20 %) while standing by (default 2 s).
    #[must_use]
    pub fn retry_period(mut self, period: Duration) -> Self {
        self.retry_period = period;
        self
    }

    /// Whether a leader that shuts down clears the Lease's holder so a standby takes over
    /// within one retry period (default true).
    #[must_use]
    pub fn release_on_shutdown(mut self, release: bool) -> Self {
        self.release_on_shutdown = release;
        self
    }

    /// Whether losing leadership ends [`Elector::run`](super::Elector::run) with
    /// [`Error::LeadershipLost`](super::Error::LeadershipLost) instead of standing by for
    /// re-election (default false). Either way the gate is closed first.
    #[must_use]
    pub fn exit_on_loss(mut self, exit: bool) -> Self {
        self.exit_on_loss = exit;
        self
    }

    /// Checks the settings can keep a single leader.
    ///
    /// # Errors
    /// [`ConfigError::Timings`] unless `lease_duration > renew_deadline > retry_period * 1.2 > 0`:
    /// the margin between the first two is the time a leader has to stop its controllers
    /// before a standby may start them, and a leader must get more than one renewal attempt
    /// per deadline. [`ConfigError::LeaseDurationTooLong`], [`ConfigError::EmptyIdentity`],
    /// [`ConfigError::InvalidLeaseName`] and [`ConfigError::InvalidNamespace`] for settings
    /// the API server or the election could not use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let timings = |rule| ConfigError::Timings {
            rule,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        };
        if self.retry_period.is_zero() {
            return Err(timings("retry_period > 0"));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR) {
            return Err(timings("renew_deadline > retry_period * 1.2"));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(timings("lease_duration > renew_deadline"));
        }
        if lease_duration_seconds(self.lease_duration).is_none() {
            return Err(ConfigError::LeaseDurationTooLong(self.lease_duration));
        }
        if self.identity.as_deref() == Some("") {
            return Err(ConfigError::EmptyIdentity);
        }
        if let Some(name) = &self.lease_name
            && !is_dns_subdomain(name)
        {
            return Err(ConfigError::InvalidLeaseName(name.clone()));
        }
        if let Some(namespace) = &self.lease_namespace
            && !is_dns_label(namespace)
        {
            return Err(ConfigError::InvalidNamespace(namespace.clone()));
        }
        Ok(())
    }
}

/// The Lease's `leaseDurationSeconds` for a duration: rounded up so that standbys never wait
/// less than configured, at least 1.
pub(crate) fn lease_duration_seconds(duration: Duration) -> Option<i32> {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(whole.max(1)).ok()
}

/// The Bonny-compatible Lease name: `{namespace}-{operator name}-{md5 hex of the operator name}`.
///
/// Like Bonny, the hash is taken over the operator's identifier exactly as given (case and
/// punctuation included), so two operators whose names differ only in case get different
/// Leases. The readable part is then lowercased and every character a DNS-1123 subdomain
/// cannot hold becomes `-`; if the result is longer than 253 characters the readable part is
/// shortened, never the hash.
///
/// ```
/// assert_eq!(
///     bonny::leader::default_lease_name("ops", "my-operator"),
///     "ops-my-operator-6aec1fb5efc551d7a2553bae8c8e7e56",
/// );
/// ```
pub fn default_lease_name(namespace: &str, operator_name: &str) -> String {
    const MAX: usize = 253;
    let hash: String = Md5::digest(operator_name.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let readable: String = format!("{namespace}-{operator_name}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    let readable = readable.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let room = MAX - hash.len() - 1;
    let readable =
        readable[..readable.len().min(room)].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}-{hash}")
    }
}

/// This process's identity: `BONNY_POD_NAME`, else `POD_NAME` (set them from the downward
/// API), else the hostname followed by `_` and a random suffix.
pub fn default_identity() -> String {
    if let Some(pod) = env_non_empty("BONNY_POD_NAME").or_else(|| env_non_empty("POD_NAME")) {
        return pod;
    }
    let host = env_non_empty("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "bonny".to_owned());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// The Lease namespace: `BONNY_POD_NAMESPACE` (the operator's own namespace, from the
/// downward API), else `default`.
pub fn default_lease_namespace() -> String {
    env_non_empty("BONNY_POD_NAMESPACE").unwrap_or_else(|| "default".to_owned())
}

fn env_non_empty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn timings(lease: f64, renew: f64, retry: f64) -> Result<(), ConfigError> {
        LeaderElection::new()
            .lease_duration(secs(lease))
            .renew_deadline(secs(renew))
            .retry_period(secs(retry))
            .validate()
    }

    fn rule_of(result: Result<(), ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Timings { rule, .. }) => rule,
            other => panic!("expected a timing error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let config = LeaderElection::new();
        assert_eq!(config.lease_duration, secs(15.0));
        assert_eq!(config.renew_deadline, secs(10.0));
        assert_eq!(config.retry_period, secs(2.0));
        assert!(config.release_on_shutdown);
        assert!(!config.exit_on_loss);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn timing_rules_are_enforced_and_named() {
        assert_eq!(rule_of(timings(15.0, 10.0, 0.0)), "retry_period > 0");
        assert_eq!(
            rule_of(timings(15.0, 2.4, 2.0)),
            "renew_deadline > retry_period * 1.2"
        );
        assert_eq!(timings(15.0, 2.41, 2.0), Ok(()));
        assert_eq!(
            rule_of(timings(10.0, 10.0, 2.0)),
            "lease_duration > renew_deadline"
        );
        assert_eq!(rule_of(timings(0.0, 0.0, 0.0)), "retry_period > 0");
        let message = timings(10.0, 10.0, 2.0).expect_err("invalid").to_string();
        assert!(
            message.contains("lease_duration > renew_deadline"),
            "{message}"
        );
        assert!(
            message.contains("10s") && message.contains("2s"),
            "{message}"
        );
    }

    #[test]
    fn other_settings_are_checked() {
        let huge = LeaderElection::new().lease_duration(Duration::from_secs(u64::from(u32::MAX)));
        assert!(matches!(
            huge.validate(),
            Err(ConfigError::LeaseDurationTooLong(_))
        ));
        assert_eq!(
            LeaderElection::new().identity("").validate(),
            Err(ConfigError::EmptyIdentity)
        );
        assert!(matches!(
            LeaderElection::new().lease_name("Bad_Name").validate(),
            Err(ConfigError::InvalidLeaseName(_))
        ));
        assert!(matches!(
            LeaderElection::new().lease_namespace("a.b").validate(),
            Err(ConfigError::InvalidNamespace(_))
        ));
        let fine = LeaderElection::new()
            .lease_name("ops.my-operator")
            .lease_namespace("ops")
            .identity("pod-0");
        assert_eq!(fine.validate(), Ok(()));
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_duration_seconds(secs(15.0)), Some(15));
        assert_eq!(lease_duration_seconds(secs(15.2)), Some(16));
        assert_eq!(lease_duration_seconds(secs(0.1)), Some(1));
        assert_eq!(lease_duration_seconds(Duration::from_secs(1 << 40)), None);
    }

    #[test]
    fn lease_name_is_bonny_compatible() {
        // md5("my-operator"), as Bonny's `:crypto.hash(:md5, ..) |> Base.encode16 |> downcase`.
        let expected_hash = "6aec1fb5efc551d7a2553bae8c8e7e56";
        assert_eq!(
            default_lease_name("ops", "my-operator"),
            format!("ops-my-operator-{expected_hash}")
        );
    }

    #[test]
    fn lease_name_is_dns_safe_and_hashes_the_raw_name() {
        let name = default_lease_name("ops", "Elixir.MyOperator_Op");
        assert!(is_dns_subdomain(&name), "{name}");
        assert!(name.starts_with("ops-elixir.myoperator-op-"), "{name}");
        assert_ne!(name, default_lease_name("ops", "elixir.myoperator_op"));
        let long = default_lease_name("ops", &"x".repeat(400));
        assert!(long.len() <= 253 && is_dns_subdomain(&long), "{long}");
        let odd = default_lease_name("", "__");
        assert!(is_dns_subdomain(&odd), "{odd}");
    }

    #[test]
    fn identity_is_unique_without_pod_name() {
        // The environment is shared by parallel tests; only assert on the fallback when no
        // pod name is configured in this process.
        if env_non_empty("BONNY_POD_NAME").is_none() && env_non_empty("POD_NAME").is_none() {
            let (a, b) = (default_identity(), default_identity());
            assert_ne!(a, b);
            assert!(a.contains('_'));
        }
    }
}
