//! The election loop: stands by, campaigns, leads and steps down, opening and closing the
//! [`Gate`]. Every request goes through a [`LeaseStore`]; every choice of what to write is
//! made by the pure [`decision`](super::decision) core.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
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
use super::gate::Closing;
use super::guard::WriteGuard;
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
    /// Leadership lost; the gate closes as this says.
    Lost(Closing),
}

/// How late a deadline may be noticed and still count as noticed in time: timers on a busy
/// machine fire within milliseconds, so anything later means the process was frozen or
/// starved while its tenure ran out.
const LATE_LAPSE: Duration = Duration::from_millis(100);

/// A foreign Lease with a duration beyond this is spoken of: it keeps every replica waiting
/// that long after its holder is gone.
const ODD_LEASE_DURATION: Duration = Duration::from_secs(3600);

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
    guard: WriteGuard,
    /// The operator's binary, named in permission hints.
    binary: String,
    observation: Observation,
    /// Whether the observed record is known to be current (we wrote it last), so the next
    /// renewal may skip the read.
    fresh: bool,
    /// What was last said about an odd Lease, so it is said once, not on every retry.
    spoken: Option<String>,
    /// The verbs on the Lease the API server refused, with the sentence that says so.
    refused: Mutex<BTreeMap<&'static str, String>>,
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
            guard: WriteGuard::new(),
            binary: election.binary,
            observation: Observation::default(),
            fresh: false,
            spoken: None,
            refused: Mutex::default(),
        }
    }

    pub(crate) fn status(&self) -> LeaderStatus {
        self.status.clone()
    }

    /// The tenure every guarded client checks, kept up to date by [`run`](Self::run).
    pub(crate) fn write_guard(&self) -> WriteGuard {
        self.guard.clone()
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
            self.guard.grant(tenure.deadline());
            self.status.set_leading(true);
            info!(
                lease = %self.ballot.lease_name, namespace = %self.ballot.lease_namespace,
                identity = %self.ballot.identity,
                transitions = self.observation.record().map_or(0, |r| r.transitions),
                "acquired leadership, starting controllers"
            );
            gate.open().await;
            let reign = self.lead(tenure, &shutdown).await;
            match reign {
                // Shutting down in good standing: in-flight writes may land until the tenure
                // ends, then the Lease is released.
                Reign::Shutdown => gate.close(Closing::Drain).await,
                // Lost: nothing may be written any more, whatever is still in flight.
                Reign::Lost(how) => {
                    self.guard.revoke();
                    gate.close(how).await;
                }
            }
            self.guard.revoke();
            self.status.set_leading(false);
            match reign {
                Reign::Shutdown => {
                    info!(lease = %self.ballot.lease_name, "controllers stopped for shutdown");
                    if self.release_on_shutdown {
                        self.release().await;
                    }
                    return Ok(());
                }
                Reign::Lost(_) if self.exit_on_loss => {
                    warn!(lease = %self.ballot.lease_name, "controllers stopped after losing leadership, exiting");
                    return Err(Error::LeadershipLost);
                }
                Reign::Lost(_) => {
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
                    self.log_failure("could not read the lease, retrying", &error);
                    continue;
                }
            }
            let started = Instant::now();
            let written = match self.next_move(false) {
                Move::Wait { holder, expires_in } => {
                    if holder.is_empty() {
                        self.speak_of_free_lease(expires_in);
                    }
                    if watch.is_none() {
                        watch = self.start_watch().await;
                    }
                    continue;
                }
                Move::StepDown(_) => continue,
                Move::Create(body) => self.call("create", self.store.create(body)).await,
                Move::Replace(body) => self.call("update", self.store.replace(body)).await,
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
                Err(error) => self.log_failure("could not write the lease, retrying", &error),
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
                    self.guard.grant(tenure.deadline());
                    self.status.renewed(started);
                }
                Renewal::Lost => return Reign::Lost(Closing::Drain),
                Renewal::Failed(error) => {
                    failures += 1;
                    self.fresh = false;
                    if error.is_forbidden() {
                        debug!(lease = %self.ballot.lease_name, %error, failed_attempts = failures, "could not renew leadership");
                    } else {
                        warn!(
                            lease = %self.ballot.lease_name, %error, failed_attempts = failures,
                            left = ?tenure.deadline().saturating_duration_since(Instant::now()),
                            "could not renew leadership, retrying until the renew deadline"
                        );
                    }
                }
            }
        }
    }

    /// The renew deadline has passed: a loss, noticed in time or late.
    fn deadline_passed(&self, tenure: Tenure) -> Reign {
        let late = Instant::now().saturating_duration_since(tenure.deadline());
        if late > LATE_LAPSE {
            warn!(
                lease = %self.ballot.lease_name, renew_deadline = ?self.renew_deadline,
                noticed_late_by = ?late,
                "lost leadership late: the renew deadline had passed before the elector could \
                 act (the process was frozen or starved), aborting every controller at once"
            );
            return Reign::Lost(Closing::Abort);
        }
        warn!(
            lease = %self.ballot.lease_name, renew_deadline = ?self.renew_deadline,
            last_renewal_ago = ?tenure.renewed_at().elapsed(),
            "lost leadership: no renewal succeeded within the renew deadline, stopping controllers"
        );
        Reign::Lost(Closing::Drain)
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
        match self.call("update", self.store.replace(body)).await {
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
        match self.call("update", self.store.replace(body)).await {
            Ok(_) => info!(%lease, "released leadership"),
            Err(error) => {
                warn!(%lease, %error, "could not release the lease; standbys take over when it expires");
            }
        }
    }

    async fn read(&mut self) -> Result<(), RequestError> {
        let object = self.call("get", self.store.get()).await?;
        self.observe(object.map(LeaseRecord::parse));
        Ok(())
    }

    async fn start_watch(&self) -> Option<LeaseEvents> {
        let version = self.observation.record()?.resource_version.clone()?;
        match self.call("watch", self.store.watch(version)).await {
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
        self.speak_of_long_lease();
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

    /// One request (`verb` on the Lease) with its own timeout; 409 answers and refused
    /// permissions are told apart. A refusal makes the status report the problem (and
    /// `/readyz` fail) until a request is allowed again.
    async fn call<T>(
        &self,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, RequestError> {
        let result = match tokio::time::timeout(self.request_timeout, request).await {
            Err(_) => Err(RequestError::Timeout(self.request_timeout)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                Err(RequestError::Conflict(kube::Error::Api(status)))
            }
            Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403) => {
                Err(RequestError::Forbidden {
                    verb,
                    namespace: self.ballot.lease_namespace.clone(),
                    binary: self.binary.clone(),
                    source: kube::Error::Api(status),
                })
            }
            Ok(result) => result.map_err(RequestError::Api),
        };
        match &result {
            Err(error @ RequestError::Forbidden { .. }) => {
                self.note_permission(verb, Some(error.to_string()));
            }
            // A timeout proves nothing about permissions either way.
            Err(RequestError::Timeout(_)) => {}
            Ok(_) | Err(RequestError::Conflict(_) | RequestError::Api(_)) => {
                self.note_permission(verb, None);
            }
        }
        result
    }

    /// Records whether `verb` on the Lease was refused (`Some` with the sentence saying so),
    /// says so once when that changes, and publishes every refusal as the status' problem.
    fn note_permission(&self, verb: &'static str, refusal: Option<String>) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let lease = &self.ballot.lease_name;
        match refusal {
            Some(sentence) => {
                if refused.get(verb) != Some(&sentence) {
                    warn!(%lease, "{sentence}");
                    refused.insert(verb, sentence);
                }
            }
            None => {
                if refused.remove(verb).is_some() {
                    info!(%lease, verb, "the API server allows this request on the lease again");
                }
            }
        }
        let problem = (!refused.is_empty())
            .then(|| refused.values().cloned().collect::<Vec<_>>().join("; and "));
        self.status.set_problem(problem);
    }

    /// Logs a failed request: a refused permission was already said once by `call`.
    fn log_failure(&self, what: &str, error: &RequestError) {
        if error.is_forbidden() {
            debug!(lease = %self.ballot.lease_name, %error, "{what}");
        } else {
            warn!(lease = %self.ballot.lease_name, %error, "{what}");
        }
    }

    /// Says once what waiting on a Lease without a holder means.
    fn speak_of_free_lease(&mut self, expires_in: Duration) {
        let said = format!(
            "free {:?}",
            self.observation.record().map(|r| &r.resource_version)
        );
        if self.spoken.as_ref() == Some(&said) {
            return;
        }
        self.spoken = Some(said);
        let (namespace, lease) = (&self.ballot.lease_namespace, &self.ballot.lease_name);
        let cause = if self.observation.record().is_some() {
            "has no holder, but no leader released it (its holder was removed by hand or by a tool)"
        } else {
            "was deleted while held"
        };
        info!(
            %lease, %namespace, waiting = ?expires_in,
            "the lease {cause}: waiting one lease duration in case its last leader still runs \
             controllers, then taking it"
        );
    }

    /// Warns once per holder and duration about a foreign Lease far longer than ours.
    fn speak_of_long_lease(&mut self) {
        let Some(record) = self.observation.record() else {
            return;
        };
        let (Some(holder), Some(duration)) = (&record.holder, record.lease_duration) else {
            return;
        };
        if *holder == self.ballot.identity || duration <= ODD_LEASE_DURATION {
            return;
        }
        let said = format!("long {holder} {duration:?}");
        if self.spoken.as_ref() == Some(&said) {
            return;
        }
        let (namespace, lease) = (&self.ballot.lease_namespace, &self.ballot.lease_name);
        warn!(
            %lease, %namespace, %holder, lease_duration_seconds = duration.as_secs(),
            "the lease is held by {holder} for {}s, far beyond this operator's own {}s: it is \
             honoured, so if {holder} is gone no replica runs controllers until it expires; if \
             nothing runs as {holder}, clear it with `kubectl delete lease -n {namespace} {lease}`",
            duration.as_secs(),
            self.ballot.lease_duration.as_secs(),
        );
        self.spoken = Some(said);
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

    /// Records every open and close with its instant, and how each close was asked for
    /// with whether the write guard still held then.
    #[derive(Clone, Default)]
    struct Journal(
        Arc<Mutex<Vec<(Instant, String, bool)>>>,
        Arc<Mutex<Vec<(String, Closing, bool)>>>,
    );

    impl Journal {
        fn closings(&self, id: &str) -> Vec<(Closing, bool)> {
            let closings = self.1.lock().expect("journal lock");
            closings
                .iter()
                .filter(|(who, _, _)| who == id)
                .map(|(_, how, held)| (*how, *held))
                .collect()
        }

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
        guard: WriteGuard,
    }

    impl Gate for TestGate {
        async fn open(&mut self) {
            assert!(self.guard.holds(), "the gate opens within a tenure");
            let entry = (Instant::now(), self.id.clone(), true);
            self.journal.0.lock().expect("journal lock").push(entry);
        }

        async fn close(&mut self, how: Closing) {
            let closing = (self.id.clone(), how, self.guard.holds());
            self.journal.1.lock().expect("journal lock").push(closing);
            // Draining controllers takes a moment; aborting them does not.
            if how == Closing::Drain {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let entry = (Instant::now(), self.id.clone(), false);
            self.journal.0.lock().expect("journal lock").push(entry);
        }
    }

    struct Replica {
        status: LeaderStatus,
        guard: WriteGuard,
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
        let guard = campaign.write_guard();
        let shutdown = CancellationToken::new();
        let mut gate = TestGate {
            id: id.to_owned(),
            journal: journal.clone(),
            guard: guard.clone(),
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move { campaign.run(&mut gate, token).await });
        Replica {
            status,
            guard,
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
        // The write guard's tenure follows the renewals.
        assert!(a.guard.holds());
        assert_eq!(
            a.guard.deadline(),
            Some(t0 + Duration::from_secs(6) + Duration::from_secs(10))
        );
        // One read, one create, then a single write per renewal.
        assert_eq!((store.reads(), store.writes()), (1, 4));
        let lease = store.object().expect("lease");
        assert_eq!(lease["spec"]["leaseTransitions"], 0);
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
        assert_eq!(journal.closed("a").len(), 1);
        // Shutdown drains with writes still allowed, then ends the tenure before releasing.
        assert_eq!(journal.closings("a"), vec![(Closing::Drain, true)]);
        assert!(!a.guard.holds());
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
        // Noticed in time: a drain, with writes already refused.
        assert_eq!(
            journal.closings("a"),
            vec![(Closing::Drain, false)],
            "{mode:?}"
        );
        assert!(!a.guard.holds());
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
    async fn a_leader_frozen_past_its_deadline_aborts_at_once() {
        let store = FakeStore::new(None);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(3_000).await;
        assert!(a.status.is_leader() && a.guard.holds());
        // The elector's task is not polled while the clock jumps: a freeze longer than the
        // lease. On waking, its deadline is long gone.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!a.guard.holds(), "writes are refused from the deadline on");
        sleep(10).await;
        let resumed = Instant::now();
        assert_eq!(journal.closings("a"), vec![(Closing::Abort, false)]);
        let closed = journal.closed("a");
        assert_eq!(closed.len(), 1);
        assert!(closed[0] <= resumed, "aborted without any grace");
        // Nobody else took the Lease meanwhile: it has expired by our own observation too,
        // so the replica takes it again, with a fresh tenure.
        let opened = journal.opened("a");
        assert_eq!(opened.len(), 2);
        assert!(opened[1] >= closed[0]);
        assert!(a.status.is_leader() && a.guard.holds());
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_lease_is_reported_with_its_fix_until_allowed() {
        let store = FakeStore::new(None);
        store.set_mode(Mode::Forbidden);
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(5_000).await;
        let problem = a.status.problem().expect("a problem is reported");
        assert!(
            problem.starts_with(
                "this replica may not get leases.coordination.k8s.io in namespace ns (403 Forbidden"
            ),
            "{problem}"
        );
        assert!(
            problem.ends_with("grant it with the ClusterRole that `test manifests` generates"),
            "{problem}"
        );
        assert!(!problem.contains("Status {"), "{problem}");
        assert!(journal.opened("a").is_empty());
        store.set_mode(Mode::Up);
        sleep(3_000).await;
        assert_eq!(a.status.problem(), None);
        assert_eq!(journal.opened("a").len(), 1);
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());
    }

    /// Log lines written on this thread while the returned guard lives.
    fn capture_log() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    fn text(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&buffer.lock().expect("log lock")).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn odd_leases_are_spoken_of_once() {
        let (log, _guard) = capture_log();
        // A foreign Lease held for two hours: honoured, and explained once.
        let store = FakeStore::new(Some(json!({
            "metadata": { "name": "lease", "namespace": "ns" },
            "spec": { "holderIdentity": "ghost", "leaseDurationSeconds": 7200 },
        })));
        let journal = Journal::default();
        let a = start("a", LeaderElection::new(), &store, &journal);
        sleep(20_000).await;
        assert!(journal.opened("a").is_empty(), "the long Lease is honoured");
        let said = text(&log);
        assert_eq!(
            said.matches("far beyond this operator's own 15s").count(),
            1,
            "{said}"
        );
        assert!(said.contains("held by ghost for 7200s"), "{said}");
        assert!(
            said.contains("clear it with `kubectl delete lease -n ns lease`"),
            "{said}"
        );
        a.shutdown.cancel();
        assert!(a.task.await.expect("no panic").is_ok());

        // A holderless Lease no leader released: the wait is explained once, then it is taken.
        let store = FakeStore::new(Some(json!({
            "metadata": { "name": "lease", "namespace": "ns" },
            "spec": { "leaseTransitions": 2 },
        })));
        let b = start("b", LeaderElection::new(), &store, &journal);
        sleep(10_000).await;
        assert!(journal.opened("b").is_empty());
        let said = text(&log);
        assert_eq!(
            said.matches("waiting one lease duration").count(),
            1,
            "{said}"
        );
        assert!(
            said.contains("has no holder, but no leader released it"),
            "{said}"
        );
        sleep(6_000).await;
        assert_eq!(journal.opened("b").len(), 1);
        b.shutdown.cancel();
        assert!(b.task.await.expect("no panic").is_ok());
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
        assert_eq!(journal.closings("a"), vec![(Closing::Drain, false)]);
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
