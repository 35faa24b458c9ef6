//! Operator settings read from the environment; builder calls override them.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BONNY_OPERATOR_NAME` | operator name (Lease and manifest names) | the builder's `.name(..)`, else the binary name |
//! | `BONNY_POD_NAMESPACE` | namespace the operator runs in (Lease namespace) | `default` |
//! | `BONNY_POD_NAME` (else `POD_NAME`) | this replica's identity in the Lease | hostname + random suffix |
//! | `HOSTNAME` (else `/etc/hostname`) | the hostname in that default identity | `bonny` |
//! | `BONNY_WATCH_NAMESPACES` | comma-separated namespaces to watch | all namespaces |
//! | `BONNY_HTTP_ADDR` | bind address of `/metrics`, `/healthz`, `/readyz`; `off` disables | `0.0.0.0:8080` |
//! | `BONNY_SHUTDOWN_TIMEOUT` | grace for in-flight reconciles on stop (`30s`, `500ms`, `2m`) | `30s` |
//! | `BONNY_LEASE_DURATION` | leader election: lease duration | `15s` |
//! | `BONNY_RENEW_DEADLINE` | leader election: renew deadline | `10s` |
//! | `BONNY_RETRY_PERIOD` | leader election: retry period | `2s` |
//! | `BONNY_LOG_FORMAT` | `plain` or `json` | `plain` |
//! | `BONNY_WARM_STANDBY` | leader election: standbys keep their caches synced (`true`/`false`) | `true` |
//! | `RUST_LOG` | log filter | `info` |

use std::{net::SocketAddr, time::Duration};

use crate::{Error, observe::LogFormat};

/// Settings taken from the environment at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `BONNY_OPERATOR_NAME`.
    pub operator_name: Option<String>,
    /// `BONNY_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `BONNY_POD_NAME`, else `POD_NAME`.
    pub pod_name: Option<String>,
    /// `HOSTNAME`; [`from_env`](Self::from_env) falls back to `/etc/hostname`.
    pub hostname: Option<String>,
    /// `BONNY_WATCH_NAMESPACES`, split on commas.
    pub watch_namespaces: Option<Vec<String>>,
    /// `BONNY_HTTP_ADDR`: `Some(None)` when set to `off`.
    pub http_addr: Option<Option<SocketAddr>>,
    /// `BONNY_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Option<Duration>,
    /// `BONNY_LEASE_DURATION`.
    pub lease_duration: Option<Duration>,
    /// `BONNY_RENEW_DEADLINE`.
    pub renew_deadline: Option<Duration>,
    /// `BONNY_RETRY_PERIOD`.
    pub retry_period: Option<Duration>,
    /// `BONNY_LOG_FORMAT`: `plain` or `json`.
    pub log_format: Option<LogFormat>,
    /// `BONNY_WARM_STANDBY`: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub warm_standby: Option<bool>,
}

impl Settings {
    /// Read the settings from the process environment.
    ///
    /// # Errors
    /// [`Error::InvalidEnv`] naming the variable, its value and what it should look like.
    pub fn from_env() -> Result<Self, Error> {
        let mut settings =
            Self::from_lookup(|var| std::env::var(var).ok().filter(|value| !value.is_empty()))?;
        if settings.hostname.is_none() {
            settings.hostname = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty());
        }
        Ok(settings)
    }

    /// Read the settings through `lookup` (for tests and embedding).
    ///
    /// # Errors
    /// As [`Settings::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let http_addr = match lookup("BONNY_HTTP_ADDR") {
            None => None,
            Some(value) if value.eq_ignore_ascii_case("off") => Some(None),
            Some(value) => Some(Some(value.parse().map_err(|_| Error::InvalidEnv {
                var: "BONNY_HTTP_ADDR",
                value,
                expected: "an address like 0.0.0.0:8080, or `off`",
            })?)),
        };
        let duration = |var: &'static str| match lookup(var) {
            None => Ok(None),
            Some(value) => parse_duration(&value).map(Some).ok_or(Error::InvalidEnv {
                var,
                value,
                expected: "a duration longer than zero like 30s, 500ms or 2m",
            }),
        };
        let log_format = match lookup("BONNY_LOG_FORMAT") {
            None => None,
            Some(value) if value.eq_ignore_ascii_case("plain") => Some(LogFormat::Plain),
            Some(value) if value.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
            Some(value) => {
                return Err(Error::InvalidEnv {
                    var: "BONNY_LOG_FORMAT",
                    value,
                    expected: "`plain` or `json`",
                });
            }
        };
        let warm_standby = match lookup("BONNY_WARM_STANDBY") {
            None => None,
            Some(value) => Some(parse_bool(&value).ok_or(Error::InvalidEnv {
                var: "BONNY_WARM_STANDBY",
                value,
                expected: "`true` or `false`",
            })?),
        };
        Ok(Self {
            operator_name: lookup("BONNY_OPERATOR_NAME"),
            pod_namespace: lookup("BONNY_POD_NAMESPACE"),
            pod_name: lookup("BONNY_POD_NAME").or_else(|| lookup("POD_NAME")),
            hostname: lookup("HOSTNAME"),
            watch_namespaces: lookup("BONNY_WATCH_NAMESPACES").map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|ns| !ns.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            http_addr,
            shutdown_timeout: duration("BONNY_SHUTDOWN_TIMEOUT")?,
            lease_duration: duration("BONNY_LEASE_DURATION")?,
            renew_deadline: duration("BONNY_RENEW_DEADLINE")?,
            retry_period: duration("BONNY_RETRY_PERIOD")?,
            log_format,
            warm_standby,
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h`: the grammar of [`bonny_rules::duration`], the same the
/// `#[bonny::controller]` attribute accepts (zero and surrounding space are rejected).
///
/// ```
/// # use std::time::Duration;
/// use bonny::operator::parse_duration;
/// assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
/// assert_eq!(parse_duration("ten seconds"), None);
/// assert_eq!(parse_duration("0s"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    bonny_rules::duration::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |var| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_every_variable() {
        let settings = Settings::from_lookup(env(&[
            ("BONNY_OPERATOR_NAME", "widgets"),
            ("BONNY_POD_NAMESPACE", "ops"),
            ("BONNY_POD_NAME", "widgets-0"),
            ("HOSTNAME", "node-1"),
            ("BONNY_WATCH_NAMESPACES", "a, b,,c"),
            ("BONNY_HTTP_ADDR", "127.0.0.1:9000"),
            ("BONNY_SHUTDOWN_TIMEOUT", "5s"),
            ("BONNY_LEASE_DURATION", "3s"),
            ("BONNY_RENEW_DEADLINE", "2s"),
            ("BONNY_RETRY_PERIOD", "500ms"),
        ]))
        .expect("valid settings");
        assert_eq!(settings.operator_name.as_deref(), Some("widgets"));
        assert_eq!(settings.pod_namespace.as_deref(), Some("ops"));
        assert_eq!(settings.pod_name.as_deref(), Some("widgets-0"));
        assert_eq!(settings.hostname.as_deref(), Some("node-1"));
        let fallback = Settings::from_lookup(env(&[("POD_NAME", "widgets-1")])).expect("valid");
        assert_eq!(fallback.pod_name.as_deref(), Some("widgets-1"));
        assert_eq!(
            settings.watch_namespaces,
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            settings.http_addr,
            Some(Some("127.0.0.1:9000".parse().expect("addr")))
        );
        assert_eq!(settings.shutdown_timeout, Some(Duration::from_secs(5)));
        assert_eq!(settings.lease_duration, Some(Duration::from_secs(3)));
        assert_eq!(settings.renew_deadline, Some(Duration::from_secs(2)));
        assert_eq!(settings.retry_period, Some(Duration::from_millis(500)));
    }

    #[test]
    fn http_can_be_turned_off() {
        let settings = Settings::from_lookup(env(&[("BONNY_HTTP_ADDR", "off")])).expect("valid");
        assert_eq!(settings.http_addr, Some(None));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_expected_form() {
        let err =
            Settings::from_lookup(env(&[("BONNY_HTTP_ADDR", "port 80")])).expect_err("invalid");
        let message = err.to_string();
        assert!(
            message.contains("BONNY_HTTP_ADDR") && message.contains("0.0.0.0:8080"),
            "{message}"
        );
        let err =
            Settings::from_lookup(env(&[("BONNY_SHUTDOWN_TIMEOUT", "30")])).expect_err("invalid");
        let message = err.to_string();
        assert!(
            message.contains("BONNY_SHUTDOWN_TIMEOUT") && message.contains("30s"),
            "{message}"
        );
    }

    #[test]
    fn the_log_format_is_plain_or_json() {
        let json = Settings::from_lookup(env(&[("BONNY_LOG_FORMAT", "JSON")])).expect("valid");
        assert_eq!(json.log_format, Some(LogFormat::Json));
        let unset = Settings::from_lookup(env(&[])).expect("valid");
        assert_eq!(unset.log_format, None);
        let message = Settings::from_lookup(env(&[("BONNY_LOG_FORMAT", "yaml")]))
            .expect_err("invalid")
            .to_string();
        assert!(
            message.contains("BONNY_LOG_FORMAT") && message.contains("json"),
            "{message}"
        );
    }

    #[test]
    fn warm_standby_is_a_boolean() {
        let on = Settings::from_lookup(env(&[("BONNY_WARM_STANDBY", "True")])).expect("valid");
        assert_eq!(on.warm_standby, Some(true));
        let off = Settings::from_lookup(env(&[("BONNY_WARM_STANDBY", "0")])).expect("valid");
        assert_eq!(off.warm_standby, Some(false));
        assert_eq!(
            Settings::from_lookup(env(&[])).expect("valid").warm_standby,
            None
        );
        let message = Settings::from_lookup(env(&[("BONNY_WARM_STANDBY", "warm")]))
            .expect_err("invalid")
            .to_string();
        assert!(
            message.contains("BONNY_WARM_STANDBY") && message.contains("true"),
            "{message}"
        );
    }

    #[test]
    fn durations_reject_missing_or_unknown_units() {
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("18446744073709551615h"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration(" 30s"), None);
    }
}
