//! The election's pure decision core: what a candidate observed, what it should do about it,
//! and which Lease body that writes. Free of I/O and of clock reads (every instant is passed
//! in), so the election loop and the simulated cluster of `simulation.rs` run the very same
//! code.
//!
//! Expiry is judged only by the local monotonic clock: a Lease counts as expired when its
//! content has not changed for `leaseDurationSeconds` since *this* process first saw the
//! current content. The `renewTime` written by another machine is never compared with the
//! local clock, so wall-clock skew between replicas cannot produce two leaders.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::Value;
use tokio::time::Instant;

use super::record::{self, Claim, LeaseRecord};

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
            transitions: record.transitions_after_claim_by(identity),
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
                    transitions: record.transitions_after_claim_by(identity),
                }
            }
        }
    }
}

/// The fixed facts of a candidate's moves: who it is and which Lease it writes.
#[derive(Clone, Debug)]
pub(crate) struct Ballot {
    /// The identity written as holder.
    pub(crate) identity: String,
    /// Name of the Lease.
    pub(crate) lease_name: String,
    /// Namespace of the Lease.
    pub(crate) lease_namespace: String,
    /// Our own lease duration, also the fallback for a Lease without a valid one.
    pub(crate) lease_duration: Duration,
    /// `leaseDurationSeconds` to write.
    pub(crate) lease_duration_seconds: i32,
}

/// What a candidate does next about the Lease, with the body to write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Move {
    /// Create the Lease with this body.
    Create(Value),
    /// Replace the Lease with this body (a renewal or a takeover), preconditioned on the
    /// observed `resourceVersion`.
    Replace(Value),
    /// Someone else holds the Lease (or it is free but not yet provably so): wait until it
    /// expires by our observation, or until it changes.
    Wait {
        /// The holder; empty when the Lease is free or gone.
        holder: String,
        /// Time left until it expires by our observation.
        expires_in: Duration,
    },
    /// We lead, but the Lease no longer says so: close the gate at once.
    StepDown(Loss),
}

/// How a leader learned from the Lease that it no longer leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Loss {
    /// Another replica holds the Lease.
    Taken(String),
    /// Someone else emptied the holder.
    Emptied,
    /// The Lease was released or deleted by someone else.
    Released,
}

impl Ballot {
    /// What to do at the local monotonic instant `now`, writing the wall clock `wall`;
    /// `leading` says whether our controllers run.
    pub(crate) fn next_move(
        &self,
        observation: &Observation,
        now: Instant,
        wall: MicroTime,
        leading: bool,
    ) -> Move {
        let decision = decide(
            observation,
            &self.identity,
            self.lease_duration,
            now,
            leading,
        );
        self.act_on(decision, observation, wall, leading)
    }

    /// The write (or wait, or step-down) that `decision` calls for: the one mapping from
    /// decisions to Lease writes.
    pub(crate) fn act_on(
        &self,
        decision: Decision,
        observation: &Observation,
        wall: MicroTime,
        leading: bool,
    ) -> Move {
        let claim = Claim {
            identity: &self.identity,
            lease_duration_seconds: self.lease_duration_seconds,
            now: wall,
        };
        let current = observation.record();
        if leading {
            return match (decision, current) {
                (Decision::Renew, Some(current)) => Move::Replace(record::claim(current, claim)),
                (Decision::Standby { holder, .. }, _) if holder.is_empty() => {
                    Move::StepDown(Loss::Emptied)
                }
                (Decision::Standby { holder, .. }, _) => Move::StepDown(Loss::Taken(holder)),
                (Decision::Renew | Decision::Acquire { .. } | Decision::Create, _) => {
                    Move::StepDown(Loss::Released)
                }
            };
        }
        match (decision, current) {
            (Decision::Standby { holder, expires_in }, _) => Move::Wait { holder, expires_in },
            (Decision::Acquire { .. } | Decision::Renew, Some(current)) => {
                Move::Replace(record::claim(current, claim))
            }
            (Decision::Create | Decision::Acquire { .. } | Decision::Renew, _) => Move::Create(
                record::create_body(&self.lease_name, &self.lease_namespace, claim),
            ),
        }
    }
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
    use super::super::record::test_support::*;
    use super::*;
    use serde_json::json;

    const FALLBACK: Duration = Duration::from_secs(15);

    fn observed(record: LeaseRecord, at: Instant) -> Observation {
        let mut observation = Observation::default();
        observation.observe(Some(record), at);
        observation
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
        let mut aba = held("other", "2024-05-01T10:00:02.000000Z");
        aba.resource_version = Some("9".into());
        assert!(observation.observe(Some(aba), t3));
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

    fn ballot() -> Ballot {
        Ballot {
            identity: ME.into(),
            lease_name: "lease".into(),
            lease_namespace: "ns".into(),
            lease_duration: FALLBACK,
            lease_duration_seconds: 15,
        }
    }

    #[test]
    fn moves_write_what_the_decision_asks_for() {
        let t0 = Instant::now();
        let wall = micro("2024-05-01T10:00:30Z");
        // No Lease: create one naming us.
        let created = ballot().next_move(&Observation::default(), t0, wall.clone(), false);
        let Move::Create(body) = created else {
            panic!("expected a create, got {created:?}");
        };
        assert_eq!(body["metadata"]["name"], "lease");
        assert_eq!(body["metadata"]["namespace"], "ns");
        assert_eq!(body["spec"]["holderIdentity"], ME);
        // Someone else's live Lease: wait for its expiry.
        let theirs = observed(held("other", "2024-05-01T10:00:00Z"), t0);
        assert_eq!(
            ballot().next_move(&theirs, t0 + Duration::from_secs(5), wall.clone(), false),
            Move::Wait {
                holder: "other".into(),
                expires_in: Duration::from_secs(10)
            }
        );
        // Expired: take it over with the observed version as the precondition.
        let taken = ballot().next_move(&theirs, t0 + FALLBACK, wall.clone(), false);
        let Move::Replace(body) = taken else {
            panic!("expected a takeover, got {taken:?}");
        };
        assert_eq!(body["spec"]["holderIdentity"], ME);
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        // Ours while leading: renew, keeping the transitions.
        let ours = observed(held(ME, "2024-05-01T10:00:00Z"), t0);
        let renewed = ballot().next_move(&ours, t0, wall.clone(), true);
        let Move::Replace(body) = renewed else {
            panic!("expected a renewal, got {renewed:?}");
        };
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert_eq!(body["spec"]["renewTime"], "2024-05-01T10:00:30.000000Z");
    }

    #[test]
    fn a_leader_steps_down_on_what_the_lease_says() {
        let t0 = Instant::now();
        let wall = micro("2024-05-01T10:00:30Z");
        let theirs = observed(held("other", "2024-05-01T10:00:00Z"), t0);
        assert_eq!(
            ballot().next_move(&theirs, t0, wall.clone(), true),
            Move::StepDown(Loss::Taken("other".into()))
        );
        let emptied = observed(record(json!({ "leaseDurationSeconds": 15 })), t0);
        assert_eq!(
            ballot().next_move(&emptied, t0, wall.clone(), true),
            Move::StepDown(Loss::Emptied)
        );
        let released = observed(record(json!({ "leaseDurationSeconds": 1 })), t0);
        assert_eq!(
            ballot().next_move(&released, t0, wall.clone(), true),
            Move::StepDown(Loss::Released)
        );
        assert_eq!(
            ballot().next_move(&Observation::default(), t0, wall, true),
            Move::StepDown(Loss::Released)
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
