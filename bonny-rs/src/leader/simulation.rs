//! A simulated cluster checking that the election's pure logic never yields two leaders.
//!
//! Candidates share one in-memory Lease store with resourceVersion compare-and-swap (and, like
//! etcd, no new resourceVersion for a write that changes nothing). Each candidate has its own
//! wall clock (skewed by minutes, or stuck), every message may be delayed or lost, requests
//! time out, candidates crash and restart, and all of them step through the very code the
//! election loop runs: `Observation`, `decide`, the decision-to-write mapping
//! `Ballot::act_on` (with `create_body` and `claim` behind it) and `Tenure`.
//!
//! A candidate counts as leader from the answer to its winning write until `renew_deadline`
//! after the start of its last successful renewal; the check is that no two such intervals
//! overlap. `naive_wall_clock_decider_is_caught` shows the check can fail.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::time::Instant;

use super::decision::{self, Ballot, Decision, Move, Observation, Tenure};
use super::record::LeaseRecord;

const TICK: u64 = 10;
const LEASE_DURATION: u64 = 15_000;
const RENEW_DEADLINE: u64 = 10_000;
const RETRY_PERIOD: u64 = 2_000;
const REQUEST_TIMEOUT: u64 = 5_000;

/// Decides like `decision::decide`, given also the candidate's wall clock.
type Decider = fn(&Observation, &str, Duration, Instant, Timestamp, bool) -> Decision;

fn real_decider(
    observation: &Observation,
    identity: &str,
    fallback: Duration,
    now: Instant,
    _wall: Timestamp,
    leading: bool,
) -> Decision {
    decision::decide(observation, identity, fallback, now, leading)
}

/// The bug the design forbids: judging expiry by the holder's `renewTime` against the local
/// wall clock.
fn naive_wall_clock_decider(
    observation: &Observation,
    identity: &str,
    fallback: Duration,
    now: Instant,
    wall: Timestamp,
    leading: bool,
) -> Decision {
    let Some(current) = observation.record() else {
        return Decision::Create;
    };
    match (&current.holder, current.renew_time) {
        (Some(holder), Some(renewed)) if holder != identity => {
            let duration = current.lease_duration.unwrap_or(fallback);
            match renewed.checked_add(duration) {
                Ok(expiry) if expiry > wall => Decision::Standby {
                    holder: holder.clone(),
                    expires_in: Duration::ZERO,
                },
                _ => Decision::Acquire {
                    transitions: current.transitions + 1,
                },
            }
        }
        _ => decision::decide(observation, identity, fallback, now, leading),
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    candidates: Vec<CandidateSetup>,
    max_delay: u64,
    loss: f64,
    seed: u64,
    duration: u64,
}

#[derive(Clone, Debug)]
struct CandidateSetup {
    /// Wall clock offset in ms.
    skew: i64,
    /// A wall clock that does not move at all.
    stuck: bool,
    /// Crash at this time, and restart after that long (if ever).
    crash: Option<(u64, Option<u64>)>,
    /// All this candidate's messages are lost in `[from, to)`.
    partition: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Report {
    violations: Vec<String>,
    /// (time, candidate) of every acquisition.
    acquisitions: Vec<(u64, usize)>,
}

#[derive(Debug)]
enum Op {
    Get,
    Create(Value),
    Replace(Value),
}

#[derive(Debug)]
enum Answer {
    Found(Option<Value>),
    Written(Value),
    Conflict,
}

#[derive(Debug)]
struct InFlight {
    op: Op,
    sent_at: u64,
    /// When the store applies it; `None` when the request is lost.
    apply_at: Option<u64>,
    /// When the answer arrives; `None` when lost or later than the timeout.
    answer_at: Option<u64>,
    answer: Option<Answer>,
    /// Start of the attempt this request belongs to (what a successful write's tenure counts from).
    attempt_start: u64,
}

#[derive(Debug)]
struct Candidate {
    id: String,
    ballot: Ballot,
    setup: CandidateSetup,
    alive: bool,
    observation: Observation,
    tenure: Option<Tenure>,
    fresh: bool,
    in_flight: Option<InFlight>,
    next_action: u64,
}

struct Store {
    object: Option<Value>,
    version: u64,
}

impl Store {
    fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::Get => Answer::Found(self.object.clone()),
            Op::Create(body) => {
                if self.object.is_some() {
                    return Answer::Conflict;
                }
                self.version += 1;
                let mut object = body.clone();
                object["metadata"]["resourceVersion"] = self.version.to_string().into();
                self.object = Some(object.clone());
                Answer::Written(object)
            }
            Op::Replace(body) => {
                let Some(current) = &self.object else {
                    return Answer::Conflict;
                };
                let precondition = body.pointer("/metadata/resourceVersion");
                if precondition != current.pointer("/metadata/resourceVersion") {
                    return Answer::Conflict;
                }
                if body.get("spec") == current.get("spec") {
                    // etcd does not bump the resourceVersion of a no-op update.
                    return Answer::Written(current.clone());
                }
                self.version += 1;
                let mut object = body.clone();
                object["metadata"]["resourceVersion"] = self.version.to_string().into();
                self.object = Some(object.clone());
                Answer::Written(object)
            }
        }
    }
}

struct World {
    scenario: Scenario,
    decider: Decider,
    rng: StdRng,
    base: Instant,
    base_wall: Timestamp,
    store: Store,
    candidates: Vec<Candidate>,
    /// Requests of crashed or deposed candidates, still applied by the store.
    orphans: Vec<InFlight>,
    /// Watch events: (delivery time, candidate, object or deletion).
    deliveries: Vec<(u64, usize, Option<Value>)>,
    report: Report,
}

impl World {
    fn new(scenario: Scenario, decider: Decider) -> Self {
        let candidates = scenario
            .candidates
            .iter()
            .enumerate()
            .map(|(index, setup)| Candidate {
                id: format!("candidate-{index}"),
                ballot: Ballot {
                    identity: format!("candidate-{index}"),
                    lease_name: "lease".into(),
                    lease_namespace: "ns".into(),
                    lease_duration: Duration::from_millis(LEASE_DURATION),
                    lease_duration_seconds: (LEASE_DURATION / 1000) as i32,
                },
                setup: setup.clone(),
                alive: true,
                observation: Observation::default(),
                tenure: None,
                fresh: false,
                in_flight: None,
                next_action: index as u64 * 137,
            })
            .collect();
        Self {
            rng: StdRng::seed_from_u64(scenario.seed),
            scenario,
            decider,
            base: Instant::now(),
            base_wall: "2024-05-01T10:00:00Z".parse().expect("valid timestamp"),
            store: Store {
                object: None,
                version: 0,
            },
            candidates,
            orphans: Vec::new(),
            deliveries: Vec::new(),
            report: Report::default(),
        }
    }

    fn run(mut self) -> Report {
        let mut t = 0;
        while t <= self.scenario.duration {
            self.step(t);
            t += TICK;
        }
        self.report
    }

    fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_millis(t)
    }

    fn wall(&self, index: usize, t: u64) -> Timestamp {
        let setup = &self.candidates[index].setup;
        let elapsed = if setup.stuck { 0 } else { t as i64 };
        let offset = k8s_openapi::jiff::SignedDuration::from_millis(elapsed + setup.skew);
        self.base_wall.checked_add(offset).unwrap_or(self.base_wall)
    }

    fn step(&mut self, t: u64) {
        // Crashes, restarts and lapsed tenures first: a deposed leader stops at its deadline.
        for index in 0..self.candidates.len() {
            self.lifecycle(index, t);
        }
        // The store applies requests that arrive now, in a random order.
        self.apply_requests(t);
        // Candidates handle answers, watch events and timers.
        for index in 0..self.candidates.len() {
            if !self.candidates[index].alive {
                continue;
            }
            self.handle_answer(index, t);
            self.handle_deliveries(index, t);
            let candidate = &self.candidates[index];
            if candidate.in_flight.is_none() && t >= candidate.next_action {
                self.act(index, t);
            }
        }
    }

    fn lifecycle(&mut self, index: usize, t: u64) {
        let now = self.instant(t);
        let candidate = &mut self.candidates[index];
        if let Some((crash_at, restart_after)) = candidate.setup.crash {
            if t == crash_at {
                candidate.alive = false;
                candidate.tenure = None;
                self.orphans.extend(candidate.in_flight.take());
            }
            if restart_after.is_some_and(|after| t == crash_at + after) {
                candidate.alive = true;
                candidate.observation = Observation::default();
                candidate.fresh = false;
                candidate.next_action = t;
            }
        }
        if candidate.tenure.is_some_and(|tenure| !tenure.holds(now)) {
            candidate.tenure = None;
            candidate.fresh = false;
            self.orphans.extend(candidate.in_flight.take());
            candidate.next_action = t;
        }
    }

    fn apply_requests(&mut self, t: u64) {
        let mut due: Vec<(usize, Option<usize>)> = Vec::new();
        for (index, candidate) in self.candidates.iter().enumerate() {
            if let Some(request) = &candidate.in_flight
                && request.apply_at == Some(t)
            {
                due.push((index, None));
            }
        }
        for (index, request) in self.orphans.iter().enumerate() {
            if request.apply_at == Some(t) {
                due.push((usize::MAX, Some(index)));
            }
        }
        // Shuffle so that no candidate systematically wins races.
        for i in (1..due.len()).rev() {
            let j = self.rng.random_range(0..=i);
            due.swap(i, j);
        }
        for (candidate, orphan) in due {
            let request = match orphan {
                Some(index) => &mut self.orphans[index],
                None => match self.candidates[candidate].in_flight.as_mut() {
                    Some(request) => request,
                    None => continue,
                },
            };
            let before = self.store.version;
            let answer = self.store.apply(&request.op);
            request.answer = Some(answer);
            if self.store.version != before {
                self.broadcast(t);
            }
        }
        self.orphans
            .retain(|request| request.apply_at.is_some_and(|at| at > t));
    }

    /// Schedules the new store content to every live standby's watch, each delayed or lost.
    fn broadcast(&mut self, t: u64) {
        for index in 0..self.candidates.len() {
            if !self.candidates[index].alive || self.candidates[index].tenure.is_some() {
                continue;
            }
            if let Some(delay) = self.message_delay(index, t) {
                let object = self.store.object.clone();
                self.deliveries.push((t + delay, index, object));
            }
        }
    }

    /// A one-way delay, or `None` when the message is lost.
    fn message_delay(&mut self, index: usize, t: u64) -> Option<u64> {
        let setup = &self.candidates[index].setup;
        if setup
            .partition
            .is_some_and(|(from, to)| (from..to).contains(&t))
        {
            return None;
        }
        if self.rng.random_bool(self.scenario.loss) {
            return None;
        }
        let delay = self.rng.random_range(0..=self.scenario.max_delay);
        Some(delay.div_ceil(TICK).max(1) * TICK)
    }

    fn send(&mut self, index: usize, t: u64, op: Op, attempt_start: u64) {
        let apply_at = self.message_delay(index, t).map(|delay| t + delay);
        let answer_at = match apply_at {
            Some(applied) => self
                .message_delay(index, applied)
                .map(|delay| applied + delay)
                .filter(|at| *at < t + REQUEST_TIMEOUT),
            None => None,
        };
        self.candidates[index].in_flight = Some(InFlight {
            op,
            sent_at: t,
            apply_at,
            answer_at,
            answer: None,
            attempt_start,
        });
    }

    fn act(&mut self, index: usize, t: u64) {
        let candidate = &mut self.candidates[index];
        if candidate.tenure.is_some() {
            candidate.next_action = t + RETRY_PERIOD;
            if candidate.fresh {
                self.write(index, t, t);
            } else {
                self.send(index, t, Op::Get, t);
            }
        } else {
            let jitter = self.rng.random_range(0..=RETRY_PERIOD / 5);
            self.candidates[index].next_action = t + RETRY_PERIOD + jitter;
            self.send(index, t, Op::Get, t);
        }
    }

    /// Writes what the decider asks for, through the elector's own decision-to-write mapping;
    /// `attempt_start` is when the attempt began.
    fn write(&mut self, index: usize, t: u64, attempt_start: u64) {
        let now = self.instant(t);
        let wall = MicroTime(self.wall(index, t));
        let decider = self.decider;
        let candidate = &mut self.candidates[index];
        let leading = candidate.tenure.is_some();
        let decision = decider(
            &candidate.observation,
            &candidate.id,
            candidate.ballot.lease_duration,
            now,
            wall.0,
            leading,
        );
        let op = match candidate
            .ballot
            .act_on(decision, &candidate.observation, wall, leading)
        {
            Move::Wait { expires_in, .. } => {
                // The watch (or a timer) brings us back when it expires.
                let at = t + (expires_in.as_millis() as u64).div_ceil(TICK) * TICK;
                candidate.next_action = candidate.next_action.min(at.max(t + TICK));
                return;
            }
            Move::Replace(body) => Op::Replace(body),
            Move::Create(body) => Op::Create(body),
            Move::StepDown(_) => {
                // Leading, but the Lease is no longer ours: step down at once.
                candidate.tenure = None;
                candidate.fresh = false;
                candidate.next_action = t;
                return;
            }
        };
        candidate.fresh = false;
        self.send(index, t, op, attempt_start);
    }

    fn handle_answer(&mut self, index: usize, t: u64) {
        let Some(request) = &self.candidates[index].in_flight else {
            return;
        };
        let arrived = request.answer_at == Some(t);
        let timed_out = t >= request.sent_at + REQUEST_TIMEOUT;
        if !arrived && !timed_out {
            return;
        }
        let Some(request) = self.candidates[index].in_flight.take() else {
            return;
        };
        if !arrived {
            // Timed out; the store may still apply it.
            if request.apply_at.is_some_and(|at| at > t) {
                self.orphans.push(request);
            }
            self.candidates[index].fresh = false;
            return;
        }
        let now = self.instant(t);
        match (request.op, request.answer) {
            (Op::Get, Some(Answer::Found(object))) => {
                let candidate = &mut self.candidates[index];
                candidate
                    .observation
                    .observe(object.map(LeaseRecord::parse), now);
                self.write(index, t, request.attempt_start);
            }
            (Op::Create(_) | Op::Replace(_), Some(Answer::Written(object))) => {
                let candidate = &mut self.candidates[index];
                candidate
                    .observation
                    .observe(Some(LeaseRecord::parse(object)), now);
                candidate.fresh = true;
                match &mut candidate.tenure {
                    Some(tenure) => {
                        tenure.renewed(self.base + Duration::from_millis(request.attempt_start));
                    }
                    None => {
                        let start = self.base + Duration::from_millis(request.attempt_start);
                        candidate.tenure =
                            Some(Tenure::new(start, Duration::from_millis(RENEW_DEADLINE)));
                        self.report.acquisitions.push((t, index));
                        self.check_single_leader(index, t);
                    }
                }
            }
            _ => self.candidates[index].fresh = false,
        }
    }

    fn handle_deliveries(&mut self, index: usize, t: u64) {
        let mut due = Vec::new();
        self.deliveries.retain(|(at, to, object)| {
            if *at == t && *to == index {
                due.push(object.clone());
                false
            } else {
                *at > t || *to != index
            }
        });
        let now = self.instant(t);
        for object in due {
            let candidate = &mut self.candidates[index];
            if candidate.tenure.is_some() {
                continue;
            }
            candidate
                .observation
                .observe(object.map(LeaseRecord::parse), now);
            if candidate.in_flight.is_none() {
                // Like the elector: act at once on a release or deletion, else re-arm the
                // expiry timer.
                self.write(index, t, t);
            }
        }
    }

    fn check_single_leader(&mut self, new_leader: usize, t: u64) {
        let now = self.instant(t);
        for (index, candidate) in self.candidates.iter().enumerate() {
            if index != new_leader
                && candidate.alive
                && candidate.tenure.is_some_and(|tenure| tenure.holds(now))
            {
                self.report.violations.push(format!(
                    "t = {t} ms: {} acquired while {} still leads (skews {} and {} ms)",
                    self.candidates[new_leader].id,
                    candidate.id,
                    self.candidates[new_leader].setup.skew,
                    candidate.setup.skew,
                ));
            }
        }
    }
}

fn quiet(skew: i64) -> CandidateSetup {
    CandidateSetup {
        skew,
        stuck: false,
        crash: None,
        partition: None,
    }
}

fn candidate_setup(duration: u64) -> impl Strategy<Value = CandidateSetup> {
    (
        -600_000i64..600_000,
        prop::bool::weighted(0.2),
        prop::option::weighted(0.4, (0..duration / TICK, prop::option::of(1u64..4_000))),
        prop::option::weighted(0.3, (0..duration / TICK, 1u64..2_500)),
    )
        .prop_map(|(skew, stuck, crash, partition)| CandidateSetup {
            skew,
            stuck,
            crash: crash.map(|(at, restart)| (at * TICK, restart.map(|r| r * TICK))),
            partition: partition.map(|(from, len)| (from * TICK, (from + len) * TICK)),
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    const DURATION: u64 = 150_000;
    (
        prop::collection::vec(candidate_setup(DURATION), 3..=5),
        0u64..4_000,
        0.0f64..0.3,
        any::<u64>(),
    )
        .prop_map(|(candidates, max_delay, loss, seed)| Scenario {
            candidates,
            max_delay,
            loss,
            seed,
            duration: DURATION,
        })
}

/// The seed of [`never_two_leaders`]: fixed unless `PROPTEST_RNG_SEED` names one.
fn fixed_seed_unless_set() -> proptest::test_runner::RngSeed {
    match std::env::var("PROPTEST_RNG_SEED").ok().as_deref() {
        Some("random") => proptest::test_runner::RngSeed::Random,
        Some(_) => ProptestConfig::default().rng_seed,
        None => proptest::test_runner::RngSeed::Fixed(2),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Failures are kept as explicit tests below, not in files outside this module.
        failure_persistence: None,
        // One fixed set of scenarios in CI, so a rare liveness miss (no acquisition at all in a
        // scenario of extreme delays and loss) cannot fail an unrelated change; runs by hand
        // explore others with `PROPTEST_RNG_SEED=<n>` (or `random`) and `PROPTEST_CASES`.
        rng_seed: fixed_seed_unless_set(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_two_leaders(scenario in scenario()) {
        let survivor = scenario.candidates.iter().any(|c| c.crash.is_none());
        let report = World::new(scenario, real_decider).run();
        prop_assert!(report.violations.is_empty(), "{:?}", report.violations);
        // Not vacuous: with a replica that never crashes, someone leads at some point.
        prop_assert!(!survivor || !report.acquisitions.is_empty());
    }
}

/// Two candidates, the second one's clock five minutes ahead, no faults.
fn skewed_pair() -> Scenario {
    Scenario {
        candidates: vec![quiet(0), quiet(300_000)],
        max_delay: 50,
        loss: 0.0,
        seed: 1,
        duration: 60_000,
    }
}

#[test]
fn naive_wall_clock_decider_is_caught() {
    let report = World::new(skewed_pair(), naive_wall_clock_decider).run();
    assert!(
        !report.violations.is_empty(),
        "the simulation must detect overlapping leaders of a decider that trusts remote clocks"
    );
}

#[test]
fn real_decider_keeps_one_leader_under_skew() {
    let report = World::new(skewed_pair(), real_decider).run();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.acquisitions.len(), 1, "{:?}", report.acquisitions);
}

#[test]
fn crash_failover_takes_about_one_lease_duration() {
    let mut scenario = Scenario {
        candidates: vec![quiet(0), quiet(-120_000), quiet(90_000)],
        max_delay: 20,
        loss: 0.0,
        seed: 7,
        duration: 80_000,
    };
    // Candidate 0 acts first and leads; it crashes at 30 s.
    scenario.candidates[0].crash = Some((30_000, None));
    let report = World::new(scenario, real_decider).run();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.acquisitions[0].1, 0, "{:?}", report.acquisitions);
    let (takeover, by) = report.acquisitions[1];
    assert_ne!(by, 0);
    let after_crash = takeover - 30_000;
    assert!(
        after_crash <= LEASE_DURATION + 100,
        "takeover {after_crash} ms after the crash"
    );
    assert!(after_crash >= LEASE_DURATION - RETRY_PERIOD - 100);
}

#[test]
fn stuck_clocks_keep_one_leader() {
    let mut scenario = skewed_pair();
    scenario.candidates[0].stuck = true;
    scenario.candidates[1].stuck = true;
    scenario.duration = 120_000;
    let report = World::new(scenario, real_decider).run();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.acquisitions.len(), 1, "{:?}", report.acquisitions);
}

/// Found by `never_two_leaders`: a stuck-clock leader whose renewals alternated between two
/// specs (A-B-A), so a standby that missed one renewal saw "no change" and took over.
#[test]
fn regression_alternating_renewals_of_a_stuck_clock() {
    let mut candidates = vec![quiet(0), quiet(0), quiet(0), quiet(0), quiet(0)];
    candidates[0].partition = Some((22_040, 27_040));
    candidates[1].crash = Some((52_040, Some(39_710)));
    candidates[4].stuck = true;
    let scenario = Scenario {
        candidates,
        max_delay: 2_734,
        loss: 0.101_307_977_487_266_94,
        seed: 12_302_877_955_763_107_031,
        duration: 150_000,
    };
    let report = World::new(scenario, real_decider).run();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
