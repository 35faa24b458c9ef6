//! The Lease as the election reads and writes it: a tolerant parse of any object the API server
//! returns, and the bodies of create, renewal, takeover and release. Pure: no I/O, no clock
//! reads (the wall clock to write is passed in).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

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
    pub(crate) fn same_content(&self, other: &Self) -> bool {
        self.resource_version == other.resource_version
            && self.object.get("spec") == other.object.get("spec")
    }

    /// The `leaseTransitions` a claim by `identity` writes: one more when the holder changes.
    pub(crate) fn transitions_after_claim_by(&self, identity: &str) -> i32 {
        if self.held_by(identity) {
            self.transitions
        } else {
            self.transitions.saturating_add(1)
        }
    }
}

/// The `leaseDurationSeconds` a release writes.
pub(crate) const RELEASED_DURATION: Duration = Duration::from_secs(1);

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
            record.transitions_after_claim_by(claim.identity).into(),
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

/// Lease objects and claims for the tests of this module and of `decision`.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) const ME: &str = "me";

    pub(crate) fn lease(spec: Value) -> Value {
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

    pub(crate) fn record(spec: Value) -> LeaseRecord {
        LeaseRecord::parse(lease(spec))
    }

    pub(crate) fn held(holder: &str, renew: &str) -> LeaseRecord {
        record(json!({
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-05-01T10:00:00.000000Z",
            "renewTime": renew,
            "leaseTransitions": 3,
        }))
    }

    pub(crate) fn micro(text: &str) -> MicroTime {
        MicroTime(text.parse().expect("valid timestamp"))
    }

    pub(crate) fn claim_as<'a>(identity: &'a str, now: &MicroTime) -> Claim<'a> {
        Claim {
            identity,
            lease_duration_seconds: 15,
            now: now.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
        assert!(LeaseRecord::parse(body).is_release());
    }
}

#[cfg(test)]
mod properties {
    //! The parser against arbitrary JSON and arbitrary Lease-shaped objects: it never panics,
    //! and what it cannot read is absent rather than invented. CI runs proptest's default case
    //! count; `PROPTEST_CASES=100000 cargo test --release -p bonny-rs --lib record::properties`
    //! runs longer.
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::LeaseRecord;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
            "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("holderIdentity".to_owned()),
                        Just("leaseDurationSeconds".to_owned()),
                        Just("renewTime".to_owned()),
                        Just("acquireTime".to_owned()),
                        Just("leaseTransitions".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_object_parses_without_panicking(object in json_value()) {
            let _ = LeaseRecord::parse(object);
        }

        #[test]
        fn a_lease_shaped_object_keeps_only_what_it_can_read(
            spec in json_value(),
            version in json_value(),
        ) {
            let object = json!({ "metadata": { "resourceVersion": version.clone() }, "spec": spec.clone() });
            let record = LeaseRecord::parse(object);
            let holder = spec.get("holderIdentity").and_then(Value::as_str);
            if record.holder.is_some() {
                prop_assert_eq!(record.holder.as_deref(), holder);
            }
            if record.resource_version.is_some() {
                prop_assert_eq!(record.resource_version.as_deref(), version.as_str());
            }
            if let Some(duration) = record.lease_duration {
                let seconds = spec.get("leaseDurationSeconds").and_then(Value::as_i64);
                prop_assert_eq!(i64::try_from(duration.as_secs()).ok(), seconds);
            }
        }
    }
}
