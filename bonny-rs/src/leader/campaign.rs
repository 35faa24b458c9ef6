//! The election loop: stands by, campaigns, leads and steps down, opening and closing the
//! [`Gate`]. Every request goes through a [`LeaseStore`]; every choice of what to write is
//! made by the pure [`decision`](super::decision) core.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{Election, JITTER_FACTOR};
use super::decision::{Ballot, Decision, Loss, Move, Observation, Tenure, decide};
use super::error::RequestError;
use super::record::{self, LeaseRecord};
use super::store::{LeaseEvent, LeaseEvents, LeaseStore};
use super::{Error, Gate, LeaderStatus};

/// What woke a standing-by candidate.
enum WakeUp {
    Event(Option<Result<LeaseEvent, kube::Error>>),
    Timer { poll: bool },
}

/// Why leading ended.
enum Reign {
    Shutdown,
    Lost,
}

/// The result of one renewal attempt.
enum Renewal {
    Renewed,
    Lost,
    Failed(RequestError),
}

/// The election loop of one replica over any [`LeaseStore`].
pub(crate) struct Campaign<S> {
    store: S,
    ballot: Ballot,
    renew_deadline: Duration,
    retry_period: Duration,
    request_timeout: Duration,
    release_on_shutdown: bool,
    exit_on_loss: bool,
    status: LeaderStatus,
    observation: Observation,
    /// Whether the observed record is known to be current (we wrote it last), so the next
    /// renewal may skip the read.
    fresh: bool,
}

impl<S: LeaseStore> Campaign<S> {
    pub(crate) fn new(election: Election, store: S) -> Self {
        Self {
            store,
            status: LeaderStatus::new(election.ballot.identity.clone()),
            ballot: election.ballot,
            renew_deadline: election.renew_deadline,
            retry_period: election.retry_period,
            request_timeout: (election.renew_deadline / 2).max(Duration::from_secs(1)),
            release_on_shutdown: election.release_on_shutdown,
            exit_on_loss: election.exit_on_loss,
            observation: Observation::default(),
            fresh: false,
        }
    }

    pub(crate) fn status(&self) -> LeaderStatus {
        self.status.clone()
    }

    pub(crate) fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    pub(crate) fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    pub(crate) async fn run<G: Gate>(
        mut self,
        gate: &mut G,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        loop {
            let Some(tenure) = self.stand(&shutdown).await else {
                debug!(lease = %self.ballot.lease_name, "shutting down while standing by");
                return Ok(());
            };
            self.status.set_leading(true);
            info!(
                lease = %self.ballot.lease_name, namespace = %self.ballot.lease_namespace,
                identity = %self.ballot.identity,
                transitions = self.observation.record().map_or(0, |r| r.transitions),
                "acquired leadership, starting controllers"
            );
            gate.open().await;
            let reign = self.lead(tenure, &shutdown).await;
            gate.close().await;
            self.status.set_leading(false);
            match reign {
                Reign::Shutdown => {
                    info!(lease = %self.ballot.lease_name, "controllers stopped for shutdown");
                    if self.release_on_shutdown {
                        self.release().await;
                    }
                    return Ok(());
                }
                Reign::Lost if self.exit_on_loss => {
                    warn!(lease = %self.ballot.lease_name, "controllers stopped after losing leadership, exiting");
                    return Err(Error::LeadershipLost);
                }
                Reign::Lost => {
                    info!(lease = %self.ballot.lease_name, "controllers stopped after losing leadership, standing by");
                }
            }
        }
    }

    /// Stands for election until this replica holds the Lease (returning the tenure its
    /// write won) or `shutdown` is cancelled.
    async fn stand(&mut self, shutdown: &CancellationToken) -> Option<Tenure> {
        let mut watch: Option<LeaseEvents> = None;
        let mut next_poll = Instant::now();
        loop {
            let expiry = self.expiry();
            let wake = expiry.map_or(next_poll, |at| at.min(next_poll));
            let wake_up = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                event = next_event(&mut watch) => WakeUp::Event(event),
                () = sleep_until(wake) => WakeUp::Timer { poll: wake >= next_poll },
            };
            let read = match wake_up {
                WakeUp::Timer { poll } => poll || watch.is_none(),
                WakeUp::Event(event) => {
                    match event {
                        Some(Ok(LeaseEvent::Applied(object))) => {
                            self.observe(Some(LeaseRecord::parse(object)));
                        }
                        Some(Ok(LeaseEvent::Deleted)) => self.observe(None),
                        Some(Err(error)) => {
                            debug!(lease = %self.ballot.lease_name, %error, "lease watch failed, polling");
                            watch = None;
                        }
                        None => watch = None,
                    }
                    if matches!(self.decision(false), Decision::Standby { .. }) {
                        continue;
                    }
                    false
                }
            };
            if read {
                next_poll = Instant::now() + self.jittered_retry();
                if let Err(error) = self.read().await {
                    warn!(lease = %self.ballot.lease_name, %error, "could not read the lease, retrying");
                    continue;
                }
            }
            let started = Instant::now();
            let written = match self.next_move(false) {
                Move::Wait { .. } | Move::StepDown(_) => {
                    if watch.is_none() {
                        watch = self.start_watch().await;
                    }
                    continue;
                }
                Move::Create(body) => self.call(self.store.create(body)).await,
                Move::Replace(body) => self.call(self.store.replace(body)).await,
            };
            match written {
                Ok(object) => {
                    self.observe(Some(LeaseRecord::parse(object)));
                    self.fresh = true;
                    self.status.renewed(started);
                    return Some(Tenure::new(started, self.renew_deadline));
                }
                Err(RequestError::Conflict(error)) => {
                    debug!(lease = %self.ballot.lease_name, %error, "another candidate wrote the lease first");
                }
                Err(error) => {
                    warn!(lease = %self.ballot.lease_name, %error, "could not write the lease, retrying");
                }
            }
        }
    }

    /// Renews every `retry_period` until shutdown, until another holder is observed, or until
    /// `renew_deadline` passed since the last successful renewal started.
    async fn lead(&mut self, mut tenure: Tenure, shutdown: &CancellationToken) -> Reign {
        let mut failures = 0_u32;
        let mut next = tenure.renewed_at() + self.retry_period;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Reign::Shutdown,
                () = sleep_until(tenure.deadline()) => return self.deadline_passed(tenure),
                () = sleep_until(next) => {}
            }
            let started = Instant::now();
            next = started + self.retry_period;
            let renewal = tokio::select! {
                biased;
                () = shutdown.cancelled() => None,
                () = sleep_until(tenure.deadline()) => Some(None),
                renewal = self.renew() => Some(Some(renewal)),
            };
            let renewal = match renewal {
                None => return Reign::Shutdown,
                Some(None) => return self.deadline_passed(tenure),
                Some(Some(renewal)) => renewal,
            };
            match renewal {
                Renewal::Renewed => {
                    if failures > 0 {
                        warn!(
                            lease = %self.ballot.lease_name, failed_attempts = failures,
                            since_last = ?started.saturating_duration_since(tenure.renewed_at()),
                            "renewed leadership late"
                        );
                    } else {
                        debug!(lease = %self.ballot.lease_name, "renewed leadership");
                    }
                    failures = 0;
                    tenure.renewed(started);
                    self.status.renewed(started);
                }
                Renewal::Lost => return Reign::Lost,
                Renewal::Failed(error) => {
                    failures += 1;
                    self.fresh = false;
                    warn!(
                        lease = %self.ballot.lease_name, %error, failed_attempts = failures,
                        left = ?tenure.deadline().saturating_duration_since(Instant::now()),
                        "could not renew leadership, retrying until the renew deadline"
                    );
                }
            }
        }
    }

    fn deadline_passed(&self, tenure: Tenure) -> Reign {
        warn!(
            lease = %self.ballot.lease_name, renew_deadline = ?self.renew_deadline,
            last_renewal_ago = ?tenure.renewed_at().elapsed(),
            "lost leadership: no renewal succeeded within the renew deadline, stopping controllers"
        );
        Reign::Lost
    }

    /// One renewal: a write based on our last write when it is known current, else a read
    /// first. A conflict on the former means someone else wrote: read at once to learn who.
    async fn renew(&mut self) -> Renewal {
        let fast = self.fresh;
        match self.renew_once().await {
            Renewal::Failed(RequestError::Conflict(error)) if fast => {
                debug!(lease = %self.ballot.lease_name, %error, "the lease changed since our last renewal, reading it");
                self.renew_once().await
            }
            renewal => renewal,
        }
    }

    async fn renew_once(&mut self) -> Renewal {
        if !self.fresh
            && let Err(error) = self.read().await
        {
            return Renewal::Failed(error);
        }
        self.fresh = false;
        let body = match self.next_move(true) {
            Move::Replace(body) => body,
            Move::StepDown(loss) => {
                let lease = &self.ballot.lease_name;
                match loss {
                    Loss::Emptied => {
                        warn!(%lease, "lost leadership: someone else emptied the lease");
                    }
                    Loss::Taken(holder) => {
                        warn!(%lease, %holder, "lost leadership: another replica holds the lease");
                    }
                    Loss::Released => {
                        warn!(%lease, "lost leadership: the lease was released or deleted by someone else");
                    }
                }
                return Renewal::Lost;
            }
            // A leader's move is a renewal or a step-down; anything else ends the reign too.
            Move::Create(_) | Move::Wait { .. } => return Renewal::Lost,
        };
        match self.call(self.store.replace(body)).await {
            Ok(object) => {
                self.observe(Some(LeaseRecord::parse(object)));
                self.fresh = true;
                Renewal::Renewed
            }
            Err(error) => Renewal::Failed(error),
        }
    }

    /// Clears the holder so a standby takes over at once; best effort, once.
    async fn release(&mut self) {
        let lease = self.ballot.lease_name.clone();
        if let Err(error) = self.read().await {
            warn!(%lease, %error, "could not read the lease to release it; standbys take over when it expires");
            return;
        }
        let Some(current) = self.observation.record() else {
            return;
        };
        if !current.held_by(&self.ballot.identity) {
            debug!(%lease, "not releasing: the lease is no longer ours");
            return;
        }
        let body = record::release(current, &MicroTime(Timestamp::now()));
        match self.call(self.store.replace(body)).await {
            Ok(_) => info!(%lease, "released leadership"),
            Err(error) => {
                warn!(%lease, %error, "could not release the lease; standbys take over when it expires");
            }
        }
    }

    async fn read(&mut self) -> Result<(), RequestError> {
        let object = self.call(self.store.get()).await?;
        self.observe(object.map(LeaseRecord::parse));
        Ok(())
    }

    async fn start_watch(&self) -> Option<LeaseEvents> {
        let version = self.observation.record()?.resource_version.clone()?;
        match self.call(self.store.watch(version)).await {
            Ok(events) => Some(events),
            Err(error) => {
                debug!(lease = %self.ballot.lease_name, %error, "could not watch the lease, polling only");
                None
            }
        }
    }

    fn observe(&mut self, record: Option<LeaseRecord>) {
        if !self.observation.observe(record, Instant::now()) {
            return;
        }
        let holder = self.observation.record().and_then(|r| r.holder.clone());
        if self.status.holder() != holder {
            let lease = &self.ballot.lease_name;
            match &holder {
                Some(holder) if *holder == self.ballot.identity => {}
                Some(holder) => info!(%lease, %holder, "new leader observed"),
                None => info!(%lease, "lease is free"),
            }
            self.status.set_holder(holder.as_deref());
        }
    }

    /// What the Lease says now; `leading` says whether our controllers run.
    fn decision(&self, leading: bool) -> Decision {
        decide(
            &self.observation,
            &self.ballot.identity,
            self.ballot.lease_duration,
            Instant::now(),
            leading,
        )
    }

    /// What to write now (or whether to wait or step down), by the shared decision core.
    fn next_move(&self, leading: bool) -> Move {
        self.ballot.next_move(
            &self.observation,
            Instant::now(),
            MicroTime(Timestamp::now()),
            leading,
        )
    }

    /// When the Lease held by someone else expires by our observation.
    fn expiry(&self) -> Option<Instant> {
        match self.decision(false) {
            Decision::Standby { expires_in, .. } => Some(Instant::now() + expires_in),
            _ => None,
        }
    }

    fn jittered_retry(&self) -> Duration {
        self.retry_period
            .mul_f64(1.0 + rand::random::<f64>() * (JITTER_FACTOR - 1.0))
    }

    /// One request with its own timeout; 409 answers are told apart.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, RequestError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Err(_) => Err(RequestError::Timeout(self.request_timeout)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                Err(RequestError::Conflict(kube::Error::Api(status)))
            }
            Ok(result) => result.map_err(RequestError::from),
        }
    }
}

async fn next_event(watch: &mut Option<LeaseEvents>) -> Option<Result<LeaseEvent, kube::Error>> {
    match watch {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::leader::store::fake::{FakeStore, Mode};
    use crate::leader::{Defaults, LeaderElection};

    /// Records every open and close with its instant.
    #[derive(Clone, Default)]
    struct Journal(Arc<Mutex<Vec<(Instant, String, bool)>>>);

    impl Journal {
        fn entries(&self) -> Vec<(Instant, String, bool)> {
            self.0.lock().expect("journal lock").clone()
        }

        fn opened(&self, id: &str) -> Vec<Instant> {
            self.times(id, true)
        }

        fn closed(&self, id: &str) -> Vec<Instant> {
            self.times(id, false)
        }

        fn times(&self, id: &str, open: bool) -> Vec<Instant> {
            self.entries()
                .into_iter()
                .filter(|(_, who, opened)| who == id && *opened == open)
                .map(|(at, _, _)| at)
                .collect()
        }
    }

    struct TestGate {
        id: String,
        journal: Journal,
    }

    impl Gate for TestGate {
        async fn open(&mut self) {
            let entry = (Instant::now(), self.id.clone(), true);
            self.journal.0.lock().expect("journal lock").push(entry);
        }

        async fn close(&mut self) {
            // Stopping controllers takes a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let entry = (Instant::now(), self.id.clone(), false);
            self.journal.0.lock().expect("journal lock").push(entry);
        }
    }

    struct Replica {
        status: LeaderStatus,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), Error>>,
    }

    fn start(id: &str, config: LeaderElection, store: &FakeStore, journal: &Journal) -> Replica {
        let election = config
            .identity(id)
            .lease_name("lease")
            .lease_namespace("ns")
            .validate(&Defaults::new("test"))
            .expect("valid config");
        let campaign = Campaign::new(election, store.clone());
        let status = campaign.status();
        let shutdown = CancellationToken::new();
        let mut gate = TestGate {
            id: id.to_owned(),
            journal: journal.clone(),
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move { campaign.run(&mut gate, token).await });
        Replica {
            status,
            shutdown,
            task,
        }
    }

    fn holder(store: &FakeStore) -> Option<String> {
        store
            .object()
            .and_then(|o| o.pointer("/spec/holderIdentity").cloned())
            .and_then(|h| h.as_str().map(str::to_owned))
    }

    async fn sleep(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn assert_near(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff <= Duration::from_millis(50),
            "{actual:?}, expected {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquires_renews_cheaply_and_releases() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let t0 = Instant::now();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(7_000).await;
        assert_eq!(journal.opened("a"), vec![t0]);
        assert!(a.status.is_leader());
        assert_eq!(a.status.transitions(), 1);
        assert_eq!(a.status.identity(), "a");
        assert_eq!(a.status.last_renewal(), Some(t0 + Duration::from_secs(6)));
        assert_eq!(holder(&store), Some("a".into()));
        // One read, one create, then a single write per renewal.
        assert_eq!((store.reads(), store.writes()), (1, 4));
        let lease = store.object().expect("lease");
        assert_eq!(lease["spec"]["leaseTransitions"], 0);
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
        assert_eq!(journal.closed("a").len(), 1);
        assert!(!a.status.is_leader());
        let lease = store.object().expect("lease");
        assert_eq!(holder(&store), None, "released: {lease}");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(lease["spec"]["leaseTransitions"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn standby_takes_over_exactly_one_lease_duration_after_a_crash() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(100).await;
        let b = start("b", LeaderElection::new(), &store, &journal);
        sleep(9_000).await;
        assert_eq!(journal.opened("b"), vec![]);
        assert_eq!(b.status.holder(), Some("a".into()));
        // Crash: no close, no release.
        a.task.abort();
        let last_renewal = a.status.last_renewal().expect("a renewed");
        sleep(20_000).await;
        let opened = journal.opened("b");
        assert_eq!(opened.len(), 1);
        assert_near(opened[0] - last_renewal, Duration::from_secs(15));
        assert_eq!(holder(&store), Some("b".into()));
        let lease = store.object().expect("lease");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        assert_eq!(b.status.transitions(), 1);
        b.shutdown.cancel();
        assert!(b.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn release_hands_over_at_once() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(100).await;
        let b = start("b", LeaderElection::new(), &store, &journal);
        sleep(5_000).await;
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
        let closed = journal.closed("a")[0];
        sleep(3_000).await;
        let opened = journal.opened("b");
        assert_eq!(opened.len(), 1);
        assert!(opened[0] >= closed);
        assert_near(opened[0] - closed, Duration::ZERO);
        b.shutdown.cancel();
        assert!(b.task.await.expect("no panic").is_ok());
    }

    async fn outage_closes_the_gate_by_the_renew_deadline(mode: Mode) {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(5_000).await;
        store.set_mode(mode);
        let last_renewal = a.status.last_renewal().expect("renewed");
        sleep(12_000).await;
        let closed = journal.closed("a");
        assert_eq!(closed.len(), 1, "{mode:?}");
        // Closing starts exactly at the deadline; the test gate takes 100 ms to stop.
        assert_near(
            closed[0] - last_renewal,
            Duration::from_secs(10) + Duration::from_millis(100),
        );
        assert!(!a.status.is_leader());
        // The API comes back: the Lease is still ours, so we take it again.
        store.set_mode(Mode::Up);
        sleep(5_000).await;
        assert_eq!(journal.opened("a").len(), 2, "{mode:?}");
        assert!(a.status.is_leader());
        assert_eq!(a.status.transitions(), 2);
        assert_eq!(
            store.object().expect("lease")["spec"]["leaseTransitions"],
            0
        );
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_api_closes_the_gate_by_the_renew_deadline() {
        outage_closes_the_gate_by_the_renew_deadline(Mode::Down).await;
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_api_closes_the_gate_by_the_renew_deadline() {
        outage_closes_the_gate_by_the_renew_deadline(Mode::Stalled).await;
    }

    #[tokio::test(start_paused = true)]
    async fn exit_on_loss_returns_an_error_after_closing() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start(
            "a",
            LeaderElection::new().exit_on_loss(true),
            &store,
            &journal,
        );
        sleep(3_000).await;
        // Someone else overwrites the Lease.
        let mut lease = store.object().expect("lease");
        lease["spec"]["holderIdentity"] = json!("intruder");
        store.put(lease);
        let result = a.task.await.expect("no panic");
        assert!(matches!(result, Err(Error::LeadershipLost)), "{result:?}");
        assert_eq!(journal.closed("a").len(), 1);
        assert!(!a.status.is_leader());
        assert_eq!(a.status.holder(), Some("intruder".into()));
        assert_eq!(holder(&store), Some("intruder".into()), "never overwritten");
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_closes_the_gate_and_stands_by() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(3_000).await;
        let mut lease = store.object().expect("lease");
        lease["spec"]["holderIdentity"] = json!("intruder");
        store.put(lease);
        sleep(3_000).await;
        assert_eq!(journal.closed("a").len(), 1);
        assert!(!a.status.is_leader());
        // The intruder never renews: a takes the Lease back one lease duration later.
        sleep(15_000).await;
        assert_eq!(journal.opened("a").len(), 2);
        assert_eq!(
            store.object().expect("lease")["spec"]["leaseTransitions"],
            1
        );
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_lease_is_waited_out_then_taken() {
        let store = FakeStore::new(Some(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": "lease", "namespace": "ns" },
            "spec": {
                "holderIdentity": "ghost",
                "renewTime": "not a time",
                "acquireTime": 7,
                "leaseDurationSeconds": -4,
                "leaseTransitions": "many",
            },
        })));
        let journal = Journal::default();
        let t0 = Instant::now();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(20_000).await;
        let opened = journal.opened("a");
        assert_eq!(opened.len(), 1);
        // No valid duration in the Lease: our own lease_duration applies.
        assert_near(opened[0] - t0, Duration::from_secs(15));
        let spec = store.object().expect("lease")["spec"].clone();
        assert_eq!(spec["leaseTransitions"], 1);
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert!(
            spec["renewTime"]
                .as_str()
                .is_some_and(|t| t.parse::<Timestamp>().is_ok())
        );
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_standing_by_changes_nothing() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(100).await;
        let b = start("b", LeaderElection::new(), &store, &journal);
        sleep(1_000).await;
        let before = store.object();
        b.shutdown.cancel();
        assert!(b.task.await.expect("no panic").is_ok());
        assert_eq!(journal.opened("b"), vec![]);
        assert_eq!(store.object(), before);
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn three_replicas_never_overlap_through_crashes_and_restarts() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let mut replicas: Vec<Option<Replica>> = ["a", "b", "c"]
            .iter()
            .map(|id| Some(start(id, LeaderElection::new(), &store, &journal)))
            .collect();
        for round in 0..4 {
            sleep(20_000).await;
            // Kill whoever leads (crash or graceful, alternately) and restart it.
            let leader = replicas
                .iter()
                .position(|r| r.as_ref().is_some_and(|r| r.status.is_leader()))
                .expect("someone leads");
            let id = ["a", "b", "c"][leader];
            if let Some(replica) = replicas[leader].take() {
                if round % 2 == 0 {
                    replica.task.abort();
                    // A crashed process runs no controllers.
                    journal
                        .0
                        .lock()
                        .expect("journal")
                        .push((Instant::now(), id.into(), false));
                } else {
                    replica.shutdown.cancel();
                    assert!(replica.task.await.expect("no panic").is_ok());
                }
            }
            replicas[leader] = Some(start(id, LeaderElection::new(), &store, &journal));
        }
        // Replay the journal: at most one gate open at any instant.
        let mut open: Vec<String> = Vec::new();
        for (at, id, opened) in journal.entries() {
            if opened {
                assert!(open.is_empty(), "{id} opened at {at:?} while {open:?} open");
                open.push(id);
            } else {
                open.retain(|o| *o != id);
            }
        }
        assert!(journal.entries().iter().filter(|e| e.2).count() >= 5);
    }
}
