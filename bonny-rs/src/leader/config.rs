//! How the elector is configured, and the default names it uses.

use std::time::Duration;

use bonny_rules::dns::{is_label as is_dns_label, is_subdomain as is_dns_subdomain};
use md5::{Digest, Md5};

use super::ConfigError;
use super::decision::Ballot;

/// The jitter factor of client-go: waits while not leading are `retry_period` stretched by up
/// to this factor, and `renew_deadline` must exceed the longest such wait.
pub(crate) const JITTER_FACTOR: f64 = 1.2;

/// Settings of the Lease leader election.
///
/// Every setting has a production-safe default; [`validate`](Self::validate) checks them once
/// and resolves the defaults into the [`Election`] an [`Elector`](super::Elector) is built from.
///
/// ```
/// use std::time::Duration;
/// use bonny::leader::{Defaults, LeaderElection};
///
/// let election = LeaderElection::new()
///     .lease_duration(Duration::from_secs(20))
///     .renew_deadline(Duration::from_secs(12))
///     .validate(&Defaults::new("my-operator").pod_namespace(Some("ops".into())))
///     .expect("valid settings");
/// assert_eq!(election.lease_namespace(), "ops");
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

    /// Namespace of the Lease; by default the pod's namespace ([`Defaults::pod_namespace`]),
    /// else `default`.
    #[must_use]
    pub fn lease_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.lease_namespace = Some(namespace.into());
        self
    }

    /// Identity written into the Lease; by default the pod name ([`Defaults::pod_name`]), else
    /// [`default_identity`] of the host name. Must be unique
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

    /// Checks the settings can keep a single leader and resolves the defaults (Lease name
    /// and namespace, identity) from `defaults`: the one place leader settings are validated.
    ///
    /// # Errors
    /// [`ConfigError::Timings`] unless `lease_duration > renew_deadline > retry_period * 1.2 > 0`:
    /// the margin between the first two is the time a leader has to stop its controllers
    /// before a standby may start them, and a leader must get more than one renewal attempt
    /// per deadline. [`ConfigError::LeaseDurationTooLong`], [`ConfigError::EmptyIdentity`],
    /// [`ConfigError::InvalidLeaseName`] and [`ConfigError::InvalidNamespace`] for settings
    /// the API server or the election could not use.
    pub fn validate(self, defaults: &Defaults) -> Result<Election, ConfigError> {
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
        let lease_duration_seconds = lease_duration_seconds(self.lease_duration)
            .ok_or(ConfigError::LeaseDurationTooLong(self.lease_duration))?;
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
        let lease_namespace = self
            .lease_namespace
            .or_else(|| defaults.pod_namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let lease_name = self
            .lease_name
            .unwrap_or_else(|| default_lease_name(&lease_namespace, &defaults.operator_name));
        let identity = self
            .identity
            .or_else(|| defaults.pod_name.clone())
            .unwrap_or_else(|| default_identity(defaults.hostname.as_deref()));
        Ok(Election {
            ballot: Ballot {
                identity,
                lease_name,
                lease_namespace,
                lease_duration: self.lease_duration,
                lease_duration_seconds,
            },
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            release_on_shutdown: self.release_on_shutdown,
            exit_on_loss: self.exit_on_loss,
        })
    }
}

/// What the defaults of a [`LeaderElection`] are made of: the operator's name and what the
/// operator's `Settings` read about this replica. The leader module reads no environment.
///
/// ```
/// use bonny::leader::Defaults;
///
/// let defaults = Defaults::new("my-operator")
///     .pod_name(Some("my-operator-7d4b9-x2x7q".into()))
///     .pod_namespace(Some("ops".into()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    operator_name: String,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    hostname: Option<String>,
}

impl Defaults {
    /// Defaults for the operator `operator_name` (part of the default Lease name).
    pub fn new(operator_name: impl Into<String>) -> Self {
        Self {
            operator_name: operator_name.into(),
            ..Self::default()
        }
    }

    /// The pod's name (downward API): the default identity.
    #[must_use]
    pub fn pod_name(mut self, pod_name: Option<String>) -> Self {
        self.pod_name = pod_name.filter(|name| !name.is_empty());
        self
    }

    /// The pod's namespace (downward API): the default Lease namespace, else `default`.
    #[must_use]
    pub fn pod_namespace(mut self, pod_namespace: Option<String>) -> Self {
        self.pod_namespace = pod_namespace.filter(|namespace| !namespace.is_empty());
        self
    }

    /// The host's name: without a pod name the identity is this plus a random suffix.
    #[must_use]
    pub fn hostname(mut self, hostname: Option<String>) -> Self {
        self.hostname = hostname.filter(|host| !host.is_empty());
        self
    }
}

/// Leader election settings that passed [`LeaderElection::validate`], with every default
/// resolved: what an [`Elector`](super::Elector) is built from.
#[derive(Clone, Debug)]
pub struct Election {
    pub(crate) ballot: Ballot,
    pub(crate) renew_deadline: Duration,
    pub(crate) retry_period: Duration,
    pub(crate) release_on_shutdown: bool,
    pub(crate) exit_on_loss: bool,
}

impl Election {
    /// The identity this replica writes into the Lease.
    pub fn identity(&self) -> &str {
        &self.ballot.identity
    }

    /// The name of the Lease.
    pub fn lease_name(&self) -> &str {
        &self.ballot.lease_name
    }

    /// The namespace of the Lease.
    pub fn lease_namespace(&self) -> &str {
        &self.ballot.lease_namespace
    }

    /// How long a standby waits after the last change it saw before taking the Lease.
    pub fn lease_duration(&self) -> Duration {
        self.ballot.lease_duration
    }

    /// How long the leader may go without a successful renewal before it stops its
    /// controllers.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// The interval between renewals, and between attempts while standing by.
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }
}

/// The Lease namespace without a configured one or a pod namespace.
const DEFAULT_NAMESPACE: &str = "default";

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

/// An identity for a process outside a pod: `hostname` (else `bonny`) followed by `_` and a
/// random suffix, so that two processes on one host never share it.
pub fn default_identity(hostname: Option<&str>) -> String {
    let host = hostname.filter(|host| !host.is_empty()).unwrap_or("bonny");
    format!("{host}_{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Validates, keeping only whether it passed (an `Election` has no `PartialEq`).
    fn check(config: LeaderElection) -> Result<(), ConfigError> {
        config.validate(&Defaults::new("my-operator")).map(drop)
    }

    fn timings(lease: f64, renew: f64, retry: f64) -> Result<(), ConfigError> {
        check(
            LeaderElection::new()
                .lease_duration(secs(lease))
                .renew_deadline(secs(renew))
                .retry_period(secs(retry)),
        )
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
        assert_eq!(check(config), Ok(()));
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
            check(huge),
            Err(ConfigError::LeaseDurationTooLong(_))
        ));
        assert_eq!(
            check(LeaderElection::new().identity("")),
            Err(ConfigError::EmptyIdentity)
        );
        assert!(matches!(
            check(LeaderElection::new().lease_name("Bad_Name")),
            Err(ConfigError::InvalidLeaseName(_))
        ));
        assert!(matches!(
            check(LeaderElection::new().lease_namespace("a.b")),
            Err(ConfigError::InvalidNamespace(_))
        ));
        let fine = LeaderElection::new()
            .lease_name("ops.my-operator")
            .lease_namespace("ops")
            .identity("pod-0");
        let election = fine.validate(&Defaults::new("x")).expect("valid");
        assert_eq!(election.identity(), "pod-0");
        assert_eq!(election.lease_name(), "ops.my-operator");
        assert_eq!(election.lease_namespace(), "ops");
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
    fn defaults_come_from_the_replica_then_the_host() {
        let defaults = Defaults::new("my-operator")
            .pod_name(Some("my-operator-0".into()))
            .pod_namespace(Some("ops".into()))
            .hostname(Some("node-1".into()));
        let election = LeaderElection::new().validate(&defaults).expect("valid");
        assert_eq!(election.identity(), "my-operator-0");
        assert_eq!(election.lease_namespace(), "ops");
        assert_eq!(
            election.lease_name(),
            default_lease_name("ops", "my-operator")
        );
        // Explicit settings win over the defaults.
        let election = LeaderElection::new()
            .identity("me")
            .lease_namespace("elsewhere")
            .lease_name("mine")
            .validate(&defaults)
            .expect("valid");
        assert_eq!(
            (
                election.identity(),
                election.lease_namespace(),
                election.lease_name()
            ),
            ("me", "elsewhere", "mine")
        );
        // Outside a pod: the host name with a random suffix, in `default`.
        let outside = Defaults::new("my-operator").hostname(Some("node-1".into()));
        let election = LeaderElection::new().validate(&outside).expect("valid");
        assert!(
            election.identity().starts_with("node-1_"),
            "{}",
            election.identity()
        );
        assert_eq!(election.lease_namespace(), "default");
        // Empty values from the environment count as unset.
        let empty = Defaults::new("my-operator")
            .pod_name(Some(String::new()))
            .pod_namespace(Some(String::new()));
        let election = LeaderElection::new().validate(&empty).expect("valid");
        assert!(
            election.identity().starts_with("bonny_"),
            "{}",
            election.identity()
        );
        assert_eq!(election.lease_namespace(), "default");
    }

    #[test]
    fn identity_is_unique_without_pod_name() {
        let (a, b) = (
            default_identity(Some("host")),
            default_identity(Some("host")),
        );
        assert_ne!(a, b);
        assert!(a.starts_with("host_"), "{a}");
        assert!(default_identity(None).starts_with("bonny_"));
    }
}
