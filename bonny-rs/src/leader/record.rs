//! The election's decisions, free of I/O and of clock reads: every instant is passed in.
//!
//! Expiry is judged only by the local monotonic clock: a Lease counts as expired when its
//! content has not changed for `leaseDurationSeconds` since *this* process first saw the
//! current content. The `renewTime` written by another machine is never compared with the
//! local clock, so wall-clock skew between replicas cannot produce two leaders.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// A Lease as read from the API server, parsed tolerantly: a missing spec, a garbage
/// timestamp or a negative duration reads as "absent", never as an error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LeaseRecord {
    /// `spec.holderIdentity`; `None` when absent or empty (the Lease is free).
    pub(crate) holder: Option<String>,
    /// `spec.leaseDurationSeconds` when it is a positive integer.
    pub(crate) lease_duration: Option<Duration>,
    /// `spec.acquireTime` when it is a valid timestamp.
    pub(crate) acquire_time: Option<Timestamp>,
    /// `spec.renewTime` when it is a valid timestamp; only used to keep renewals distinct.
    pub(crate) renew_time: Option<Timestamp>,
    /// `spec.leaseTransitions`, clamped to `0..=i32::MAX`.
    pub(crate) transitions: i32,
    /// `metadata.resourceVersion`, the precondition of the next write.
    pub(crate) resource_version: Option<String>,
    /// The whole object as received: the base of the next write, so fields this elector does
    /// not know about (labels, owner references, newer spec fields) survive a replace.
    object: Value,
}

impl LeaseRecord {
    /// Reads a Lease object; never fails.
    pub(crate) fn parse(object: Value) -> Self {
        let spec = object.get("spec");
        let field = |name: &str| spec.and_then(|spec| spec.get(name));
        let timestamp = |name: &str| {
            field(name)
                .and_then(Value::as_str)
                .and_then(|text| text.parse::<Timestamp>().ok())
        };
        Self {
            holder: field("holderIdentity")
                .and_then(Value::as_str)
                .filter(|holder| !holder.is_empty())
                .map(str::to_owned),
            lease_duration: field("leaseDurationSeconds")
                .and_then(Value::as_i64)
                .and_then(|secs| u64::try_from(secs).ok())
                .filter(|secs| *secs > 0)
                .map(Duration::from_secs),
            acquire_time: timestamp("acquireTime"),
            renew_time: timestamp("renewTime"),
            transitions: field("leaseTransitions")
                .and_then(Value::as_i64)
                .map_or(0, |n| n.clamp(0, i64::from(i32::MAX)) as i32),
            resource_version: object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| !rv.is_empty())
                .map(str::to_owned),
            object,
        }
    }

    /// Whether `holder` holds this Lease.
    pub(crate) fn held_by(&self, identity: &str) -> bool {
        self.holder.as_deref() == Some(identity)
    }

    /// Whether this is a leader's release: no holder and a one-second duration, written only
    /// after the leader stopped its controllers. Any other free Lease (an emptied spec, an
    /// edit by a person or a tool) may still have a leader running that has not seen it yet.
    pub(crate) fn is_release(&self) -> bool {
        self.holder.is_none() && self.lease_duration == Some(RELEASED_DURATION)
    }

    /// Whether two reads show the same Lease. Any write makes a new `resourceVersion`, so a
    /// renewal is seen as a change even if it restored an older spec; the spec is compared
    /// too for servers (or fakes) that omit the version. An edit of labels also counts as a
    /// change: that only delays a takeover, never hastens it.
    fn same_content(&self, other: &Self) -> bool {
        self.resource_version == other.resource_version
            && self.object.get("spec") == other.object.get("spec")
    }
}

/// The `leaseDurationSeconds` a release writes.
const RELEASED_DURATION: Duration = Duration::from_secs(1);

/// The Lease content last seen, and the local monotonic instant it was first seen.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observation {
    current: Option<Observed>,
    /// When a Lease we had seen was found gone: its holder may still be running.
    gone_since: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Observed {
    record: LeaseRecord,
    since: Instant,
}

impl Observation {
    /// Records a read of the Lease (`None`: it does not exist) made at `now`. Returns true
    /// when the content differs from the previous read, i.e. the observation clock restarted.
    pub(crate) fn observe(&mut self, record: Option<LeaseRecord>, now: Instant) -> bool {
        match (record, &mut self.current) {
            (Some(record), Some(seen)) if seen.record.same_content(&record) => {
                // Same election state; keep the instant, take the newer resourceVersion.
                seen.record = record;
                false
            }
            (Some(record), _) => {
                self.current = Some(Observed { record, since: now });
                self.gone_since = None;
                true
            }
            (None, current) => {
                let vanished = current.take().is_some();
                if vanished {
                    self.gone_since = Some(now);
                }
                vanished
            }
        }
    }

    /// The Lease as last read; `None` when it did not exist (or was never read).
    pub(crate) fn record(&self) -> Option<&LeaseRecord> {
        self.current.as_ref().map(|seen| &seen.record)
    }

    /// The local instant the current content was first seen.
    #[cfg(test)]
    pub(crate) fn since(&self) -> Option<Instant> {
        self.current.as_ref().map(|seen| seen.since)
    }
}

/// What a candidate should do about the Lease it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// No Lease exists: create it with ourselves as holder.
    Create,
    /// The Lease is free, released or expired: take it over, writing `transitions`.
    Acquire {
        /// The `leaseTransitions` the takeover writes.
        transitions: i32,
    },
    /// We hold the Lease: renew it.
    Renew,
    /// Someone else holds the Lease and it has not expired by our observation.
    Standby {
        /// The current holder.
        holder: String,
        /// Time left until the Lease expires by our observation.
        expires_in: Duration,
    },
}

/// Decides what `identity` should do at the local monotonic instant `now`; `leading` says
/// whether it runs its controllers now.
///
/// A Lease expires `leaseDurationSeconds` after we first saw its current content;
/// `fallback_duration` (our own `lease_duration`) applies when the Lease carries no valid
/// duration. Only a leader's release ([`LeaseRecord::is_release`]) is free at once. A Lease
/// that names us while we do not lead (a previous run of ours, or a hand-over by someone
/// else), a free Lease that is not a release, and a Lease that vanished are all waited out
/// like anyone else's: whoever led before may not have noticed yet, and only a full lease
/// duration proves it stopped.
pub(crate) fn decide(
    observation: &Observation,
    identity: &str,
    fallback_duration: Duration,
    now: Instant,
    leading: bool,
) -> Decision {
    let Some(seen) = &observation.current else {
        if let Some(gone) = observation.gone_since
            && !leading
            && now < gone + fallback_duration
        {
            return Decision::Standby {
                holder: String::new(),
                expires_in: gone + fallback_duration - now,
            };
        }
        return Decision::Create;
    };
    let record = &seen.record;
    match record.holder.as_deref() {
        Some(holder) if holder == identity && leading => Decision::Renew,
        None if record.is_release() => Decision::Acquire {
            transitions: next_transitions(record, identity),
        },
        holder => {
            let expires_at = seen.since + record.lease_duration.unwrap_or(fallback_duration);
            if now < expires_at {
                Decision::Standby {
                    holder: holder.unwrap_or_default().to_owned(),
                    expires_in: expires_at - now,
                }
            } else {
                Decision::Acquire {
                    transitions: next_transitions(record, identity),
                }
            }
        }
    }
}

fn next_transitions(record: &LeaseRecord, identity: &str) -> i32 {
    if record.held_by(identity) {
        record.transitions
    } else {
        record.transitions.saturating_add(1)
    }
}

/// A write of the Lease naming a holder.
#[derive(Clone, Debug)]
pub(crate) struct Claim<'a> {
    /// The holder to write.
    pub(crate) identity: &'a str,
    /// `leaseDurationSeconds` to write.
    pub(crate) lease_duration_seconds: i32,
    /// The local wall clock; only ever written, never compared with a remote timestamp.
    pub(crate) now: MicroTime,
}

/// The body that creates the Lease `namespace/name` held by `claim.identity`.
pub(crate) fn create_body(name: &str, namespace: &str, claim: Claim<'_>) -> Value {
    let now = format_micro(truncate_micros(claim.now.0));
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "holderIdentity": claim.identity,
            "leaseDurationSeconds": claim.lease_duration_seconds,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    })
}

/// The body that renews (same holder) or takes over (new holder) `record`, with its
/// `resourceVersion` as the precondition.
///
/// On renewal `acquireTime` and `leaseTransitions` are kept; on takeover `acquireTime` is
/// now and `leaseTransitions` grows by one. `renewTime` is the local wall clock, but on
/// renewal at least a microsecond after the previous one, so every renewal is a change that
/// standbys observe, even from a replica with a stuck or stepped-back clock.
pub(crate) fn claim(record: &LeaseRecord, claim: Claim<'_>) -> Value {
    let now = truncate_micros(claim.now.0);
    let renewing = record.held_by(claim.identity);
    // A renewal's renewTime strictly increases, whatever the local clock does (stuck, stepped
    // back), so no renewal ever writes the spec it had before: an unchanged write would be a
    // no-op for the API server, and standbys would rightly see the Lease expire.
    let renew = match record.renew_time.map(truncate_micros) {
        Some(previous) if renewing && previous >= now => previous
            .checked_add(Duration::from_micros(1))
            .unwrap_or(now),
        _ => now,
    };
    let renewing = record.held_by(claim.identity);
    let acquire = match record.acquire_time {
        Some(acquired) if renewing => acquired,
        _ => now,
    };
    write_spec(record, |spec| {
        spec.insert("holderIdentity".into(), claim.identity.into());
        spec.insert(
            "leaseDurationSeconds".into(),
            claim.lease_duration_seconds.into(),
        );
        spec.insert("acquireTime".into(), format_micro(acquire).into());
        spec.insert("renewTime".into(), format_micro(renew).into());
        spec.insert(
            "leaseTransitions".into(),
            next_transitions(record, claim.identity).into(),
        );
    })
}

/// The body that releases `record`: no holder, a 1 s duration, `renewTime` now, and the
/// transitions kept, so a standby may take over at once.
pub(crate) fn release(record: &LeaseRecord, now: &MicroTime) -> Value {
    write_spec(record, |spec| {
        spec.remove("holderIdentity");
        spec.remove("acquireTime");
        spec.insert("leaseDurationSeconds".into(), 1.into());
        spec.insert(
            "renewTime".into(),
            format_micro(truncate_micros(now.0)).into(),
        );
        spec.insert("leaseTransitions".into(), record.transitions.into());
    })
}

/// The observed object with its spec edited and its resourceVersion as the precondition.
fn write_spec(record: &LeaseRecord, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut object = match &record.object {
        Value::Object(object) => object.clone(),
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), "coordination.k8s.io/v1".into());
    object.insert("kind".into(), "Lease".into());
    let mut spec = match object.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    edit(&mut spec);
    object.insert("spec".into(), Value::Object(spec));
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        match &record.resource_version {
            Some(rv) => metadata.insert("resourceVersion".into(), rv.clone().into()),
            None => metadata.remove("resourceVersion"),
        };
    }
    Value::Object(object)
}

fn truncate_micros(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).unwrap_or(at)
}

/// RFC 3339 with microseconds, the wire format of `MicroTime`.
fn format_micro(at: Timestamp) -> String {
    k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.6fZ", at)
        .unwrap_or_else(|_| at.to_string())
}

/// Whether the leader still holds its tenure: it may run controllers from a successful write
/// until `renew_deadline` after the *start* of its last successful write. The start, not the
/// answer, because the API server may have applied the write at any moment in between, and
/// standbys count their lease duration from when they see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tenure {
    renewed_at: Instant,
    renew_deadline: Duration,
}

impl Tenure {
    /// A tenure won by a write that started at `sent_at`.
    pub(crate) fn new(sent_at: Instant, renew_deadline: Duration) -> Self {
        Self {
            renewed_at: sent_at,
            renew_deadline,
        }
    }

    /// Extends the tenure after a successful renewal that started at `sent_at`.
    pub(crate) fn renewed(&mut self, sent_at: Instant) {
        self.renewed_at = self.renewed_at.max(sent_at);
    }

    /// Start of the last successful write.
    pub(crate) fn renewed_at(&self) -> Instant {
        self.renewed_at
    }

    /// The instant the controllers must have stopped by, unless renewed before.
    pub(crate) fn deadline(&self) -> Instant {
        self.renewed_at + self.renew_deadline
    }

    /// Whether the tenure still holds at `now`.
    #[cfg(test)]
    pub(crate) fn holds(&self, now: Instant) -> bool {
        now < self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const FALLBACK: Duration = Duration::from_secs(15);

    fn lease(spec: Value) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": "lease", "namespace": "ns", "resourceVersion": "7",
                "labels": { "keep": "me" },
            },
            "spec": spec,
        })
    }

    fn record(spec: Value) -> LeaseRecord {
        LeaseRecord::parse(lease(spec))
    }

    fn held(holder: &str, renew: &str) -> LeaseRecord {
        record(json!({
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-05-01T10:00:00.000000Z",
            "renewTime": renew,
            "leaseTransitions": 3,
        }))
    }

    fn micro(text: &str) -> MicroTime {
        MicroTime(text.parse().expect("valid timestamp"))
    }

    fn claim_as<'a>(identity: &'a str, now: &MicroTime) -> Claim<'a> {
        Claim {
            identity,
            lease_duration_seconds: 15,
            now: now.clone(),
        }
    }

    fn observed(record: LeaseRecord, at: Instant) -> Observation {
        let mut observation = Observation::default();
        observation.observe(Some(record), at);
        observation
    }

    #[test]
    fn parses_a_complete_lease() {
        let r = held("other", "2024-05-01T10:00:05.123456Z");
        assert_eq!(r.holder.as_deref(), Some("other"));
        assert_eq!(r.lease_duration, Some(Duration::from_secs(15)));
        assert_eq!(r.transitions, 3);
        assert_eq!(r.resource_version.as_deref(), Some("7"));
        assert_eq!(
            r.renew_time,
            Some("2024-05-01T10:00:05.123456Z".parse().expect("timestamp"))
        );
        assert!(r.acquire_time.is_some());
    }

    #[test]
    fn parses_anything_without_failing() {
        let odd = [
            json!(null),
            json!("a string"),
            json!([1, 2]),
            json!({}),
            json!({ "metadata": "garbage", "spec": 42 }),
            json!({ "metadata": { "resourceVersion": 9 } }),
            json!({ "spec": null }),
            json!({ "spec": {} }),
        ];
        for object in odd {
            let r = LeaseRecord::parse(object);
            assert_eq!(r.holder, None);
            assert_eq!(r.lease_duration, None);
            assert_eq!(r.renew_time, None);
            assert_eq!(r.acquire_time, None);
            assert_eq!(r.transitions, 0);
            assert_eq!(r.resource_version, None);
        }
    }

    #[test]
    fn tolerates_garbage_fields() {
        let r = record(json!({
            "holderIdentity": "",
            "leaseDurationSeconds": -5,
            "renewTime": "yesterday-ish",
            "acquireTime": 12345,
            "leaseTransitions": -3,
        }));
        assert_eq!(r.holder, None, "an empty holder is a free lease");
        assert_eq!(r.lease_duration, None);
        assert_eq!(r.renew_time, None);
        assert_eq!(r.acquire_time, None);
        assert_eq!(r.transitions, 0);

        let r = record(json!({
            "holderIdentity": 17,
            "leaseDurationSeconds": 0,
            "leaseTransitions": 1e12,
        }));
        assert_eq!(r.holder, None);
        assert_eq!(r.lease_duration, None);
        assert_eq!(r.transitions, 0, "a float is not a transition count");

        let r = record(json!({ "leaseDurationSeconds": 2.5, "leaseTransitions": i64::MAX }));
        assert_eq!(r.lease_duration, None);
        assert_eq!(r.transitions, i32::MAX);
    }

    #[test]
    fn missing_lease_means_create() {
        let observation = Observation::default();
        assert_eq!(
            decide(&observation, ME, FALLBACK, Instant::now(), false),
            Decision::Create
        );
    }

    #[test]
    fn only_a_release_is_free_at_once() {
        let now = Instant::now();
        let released = record(json!({ "leaseDurationSeconds": 1, "leaseTransitions": 4 }));
        assert!(released.is_release());
        let observation = observed(released, now);
        assert_eq!(
            decide(&observation, ME, FALLBACK, now, false),
            Decision::Acquire { transitions: 5 }
        );
    }

    #[test]
    fn a_free_lease_that_is_not_a_release_is_waited_out() {
        // An emptied spec or a holder removed by hand: the leader may not have noticed yet.
        let t0 = Instant::now();
        for spec in [
            json!({}),
            json!({ "holderIdentity": "", "leaseTransitions": 4 }),
            json!({ "holderIdentity": "", "leaseDurationSeconds": 15 }),
        ] {
            let observation = observed(record(spec.clone()), t0);
            assert_eq!(
                decide(
                    &observation,
                    ME,
                    FALLBACK,
                    t0 + Duration::from_secs(14),
                    false
                ),
                Decision::Standby {
                    holder: String::new(),
                    expires_in: Duration::from_secs(1)
                },
                "{spec}"
            );
            let expected = spec["leaseTransitions"].as_i64().unwrap_or(0) as i32 + 1;
            assert_eq!(
                decide(&observation, ME, FALLBACK, t0 + FALLBACK, false),
                Decision::Acquire {
                    transitions: expected
                },
                "{spec}"
            );
        }
    }

    #[test]
    fn a_vanished_lease_is_waited_out_before_it_is_created_again() {
        let t0 = Instant::now();
        let mut observation = observed(held("other", "2024-05-01T10:00:00Z"), t0);
        let t1 = t0 + Duration::from_secs(5);
        assert!(observation.observe(None, t1));
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t1 + Duration::from_secs(14),
                false
            ),
            Decision::Standby {
                holder: String::new(),
                expires_in: Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide(&observation, ME, FALLBACK, t1 + FALLBACK, false),
            Decision::Create
        );
        // Reading it gone again does not restart the wait.
        assert!(!observation.observe(None, t1 + Duration::from_secs(10)));
        assert_eq!(
            decide(&observation, ME, FALLBACK, t1 + FALLBACK, false),
            Decision::Create
        );
        // A leader whose Lease vanished steps down: Create is not Renew.
        assert_eq!(
            decide(&observation, ME, FALLBACK, t1, true),
            Decision::Create
        );
    }

    #[test]
    fn own_lease_is_renewed_even_when_stale() {
        let now = Instant::now();
        let observation = observed(held(ME, "2000-01-01T00:00:00Z"), now);
        assert_eq!(
            decide(&observation, ME, FALLBACK, now, true),
            Decision::Renew
        );
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                now + Duration::from_secs(3600),
                true
            ),
            Decision::Renew
        );
    }

    #[test]
    fn a_lease_naming_us_while_we_stand_by_is_waited_out() {
        // Written by an earlier run of ours, or handed to us by someone else while another
        // replica still leads: only a full lease duration proves nobody runs controllers.
        let t0 = Instant::now();
        let observation = observed(held(ME, "2024-05-01T10:00:00Z"), t0);
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(14),
                false
            ),
            Decision::Standby {
                holder: ME.into(),
                expires_in: Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide(&observation, ME, FALLBACK, t0 + FALLBACK, false),
            Decision::Acquire { transitions: 3 },
            "taking back our own Lease is no transition"
        );
    }

    #[test]
    fn others_lease_expires_by_local_observation_only() {
        let t0 = Instant::now();
        // A renewTime far in the past (a skewed or stuck clock) does not make it expired...
        let observation = observed(held("other", "1999-01-01T00:00:00Z"), t0);
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(14),
                false
            ),
            Decision::Standby {
                holder: "other".into(),
                expires_in: Duration::from_secs(1)
            }
        );
        // ...only the local monotonic time since the content was first seen does.
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(15),
                false
            ),
            Decision::Acquire { transitions: 4 }
        );
        // And a renewTime far in the future does not keep it alive.
        let observation = observed(held("other", "2999-01-01T00:00:00Z"), t0);
        assert_eq!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(16),
                false
            ),
            Decision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn lease_duration_comes_from_the_record_or_the_fallback() {
        let t0 = Instant::now();
        let short = record(json!({ "holderIdentity": "other", "leaseDurationSeconds": 3 }));
        let observation = observed(short, t0);
        assert!(matches!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(3),
                false
            ),
            Decision::Acquire { .. }
        ));
        let broken = record(json!({ "holderIdentity": "other", "leaseDurationSeconds": -1 }));
        let observation = observed(broken, t0);
        assert!(matches!(
            decide(
                &observation,
                ME,
                FALLBACK,
                t0 + Duration::from_secs(14),
                false
            ),
            Decision::Standby { .. }
        ));
        assert!(matches!(
            decide(&observation, ME, FALLBACK, t0 + FALLBACK, false),
            Decision::Acquire { .. }
        ));
    }

    #[test]
    fn a_renewal_restarts_the_observation_clock() {
        let t0 = Instant::now();
        let mut observation = observed(held("other", "2024-05-01T10:00:00.000000Z"), t0);
        let t1 = t0 + Duration::from_secs(10);
        // The same Lease read again changes nothing.
        assert!(!observation.observe(Some(held("other", "2024-05-01T10:00:00.000000Z")), t1));
        assert_eq!(observation.since(), Some(t0));
        // Expired by then, had it not been renewed...
        let t2 = t0 + Duration::from_secs(15);
        assert!(matches!(
            decide(&observation, ME, FALLBACK, t2, false),
            Decision::Acquire { .. }
        ));
        // ...but a renewal observed at t1 pushes expiry to t1 + 15 s.
        assert!(observation.observe(Some(held("other", "2024-05-01T10:00:02.000000Z")), t1));
        assert_eq!(
            decide(&observation, ME, FALLBACK, t2, false),
            Decision::Standby {
                holder: "other".into(),
                expires_in: Duration::from_secs(10)
            }
        );
        // Any new resourceVersion is a change, even with a spec seen before (A-B-A).
        let t3 = t1 + Duration::from_secs(1);
        let mut aba = held("other", "2024-05-01T10:00:02.000000Z").object;
        aba["metadata"]["resourceVersion"] = json!("9");
        assert!(observation.observe(Some(LeaseRecord::parse(aba)), t3));
        assert_eq!(observation.since(), Some(t3));
        // A deletion is waited out like an expiry.
        assert!(observation.observe(None, t2));
        assert!(matches!(
            decide(&observation, ME, FALLBACK, t2, false),
            Decision::Standby { .. }
        ));
        assert_eq!(
            decide(&observation, ME, FALLBACK, t2 + FALLBACK, false),
            Decision::Create
        );
    }

    #[test]
    fn create_body_is_a_complete_lease() {
        let now = micro("2024-05-01T10:00:00.123456789Z");
        let body = create_body("lease", "ns", claim_as(ME, &now));
        assert_eq!(body["metadata"]["name"], "lease");
        assert_eq!(body["metadata"]["namespace"], "ns");
        assert_eq!(body["spec"]["holderIdentity"], ME);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["renewTime"], "2024-05-01T10:00:00.123456Z");
        assert_eq!(body["spec"]["acquireTime"], "2024-05-01T10:00:00.123456Z");
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        assert!(body["metadata"].get("resourceVersion").is_none());
        // It parses back into a valid k8s-openapi Lease.
        let typed: k8s_openapi::api::coordination::v1::Lease =
            serde_json::from_value(body).expect("a valid Lease");
        assert_eq!(
            typed.spec.and_then(|s| s.holder_identity).as_deref(),
            Some(ME)
        );
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let previous = held(ME, "2024-05-01T10:00:05.000000Z");
        let now = micro("2024-05-01T10:00:07.000000Z");
        let body = claim(&previous, claim_as(ME, &now));
        assert_eq!(body["spec"]["acquireTime"], "2024-05-01T10:00:00.000000Z");
        assert_eq!(body["spec"]["renewTime"], "2024-05-01T10:00:07.000000Z");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert_eq!(body["spec"]["holderIdentity"], ME);
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["metadata"]["labels"]["keep"], "me");
    }

    #[test]
    fn renewal_with_garbage_acquire_time_sets_it() {
        let previous = record(json!({ "holderIdentity": ME, "acquireTime": "garbage" }));
        let now = micro("2024-05-01T10:00:07Z");
        let body = claim(&previous, claim_as(ME, &now));
        assert_eq!(body["spec"]["acquireTime"], "2024-05-01T10:00:07.000000Z");
        assert_eq!(body["spec"]["leaseTransitions"], 0);
    }

    #[test]
    fn takeover_sets_acquire_time_and_counts_a_transition() {
        let previous = held("other", "2024-05-01T10:00:05.000000Z");
        let now = micro("2024-05-01T10:00:30.5Z");
        let body = claim(&previous, claim_as(ME, &now));
        assert_eq!(body["spec"]["holderIdentity"], ME);
        assert_eq!(body["spec"]["acquireTime"], "2024-05-01T10:00:30.500000Z");
        assert_eq!(body["spec"]["renewTime"], "2024-05-01T10:00:30.500000Z");
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        assert_eq!(body["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn claim_repairs_a_broken_lease() {
        let previous = LeaseRecord::parse(json!({
            "metadata": { "name": "lease", "resourceVersion": "3" },
            "spec": "garbage",
        }));
        let now = micro("2024-05-01T10:00:00Z");
        let body = claim(&previous, claim_as(ME, &now));
        assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(body["kind"], "Lease");
        assert_eq!(body["spec"]["leaseTransitions"], 1);
        let typed: k8s_openapi::api::coordination::v1::Lease =
            serde_json::from_value(body).expect("a valid Lease");
        assert_eq!(typed.spec.and_then(|s| s.lease_duration_seconds), Some(15));
    }

    #[test]
    fn renewals_always_change_content_even_with_a_stuck_clock() {
        let now = micro("2024-05-01T10:00:07Z");
        let first =
            LeaseRecord::parse(claim(&held(ME, "2024-05-01T10:00:05Z"), claim_as(ME, &now)));
        let second = LeaseRecord::parse(claim(&first, claim_as(ME, &now)));
        let third = LeaseRecord::parse(claim(&second, claim_as(ME, &now)));
        assert_ne!(first.object["spec"], second.object["spec"]);
        assert_ne!(second.object["spec"], third.object["spec"]);
        assert_ne!(first.object["spec"], third.object["spec"]);
        assert_eq!(
            third.renew_time,
            Some("2024-05-01T10:00:07.000002Z".parse().expect("timestamp"))
        );
        // A clock stepped back still moves renewTime forward.
        let earlier = micro("2024-05-01T09:00:00Z");
        let fourth = LeaseRecord::parse(claim(&third, claim_as(ME, &earlier)));
        assert_eq!(
            fourth.renew_time,
            Some("2024-05-01T10:00:07.000003Z".parse().expect("timestamp"))
        );
        // A takeover writes the local clock as it is.
        let taken = LeaseRecord::parse(claim(&third, claim_as("other", &earlier)));
        assert_eq!(taken.renew_time, Some(earlier.0));
    }

    #[test]
    fn release_clears_the_holder_and_keeps_transitions() {
        let previous = held(ME, "2024-05-01T10:00:05Z");
        let now = micro("2024-05-01T10:00:09Z");
        let body = release(&previous, &now);
        assert!(body["spec"].get("holderIdentity").is_none());
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(body["spec"]["renewTime"], "2024-05-01T10:00:09.000000Z");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        // Another candidate acquires a released lease at once, counting a transition.
        let t0 = Instant::now();
        let observation = observed(LeaseRecord::parse(body), t0);
        assert_eq!(
            decide(&observation, "other", FALLBACK, t0, false),
            Decision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn tenure_ends_renew_deadline_after_the_last_renewal_started() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        let mut tenure = Tenure::new(t0, deadline);
        assert!(tenure.holds(t0 + Duration::from_millis(9_999)));
        assert!(!tenure.holds(t0 + deadline));
        tenure.renewed(t0 + Duration::from_secs(2));
        assert_eq!(tenure.deadline(), t0 + Duration::from_secs(12));
        // A late answer to an older renewal never shortens or stretches it wrongly.
        tenure.renewed(t0 + Duration::from_secs(1));
        assert_eq!(tenure.renewed_at(), t0 + Duration::from_secs(2));
    }
}
