//! The election loop: reads and writes the Lease, opens and closes the [`Gate`].

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{GetParams, PostParams, WatchParams};
use kube::core::{Request, WatchEvent};
use serde_json::Value;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{JITTER_FACTOR, lease_duration_seconds};
use super::error::RequestError;
use super::record::{self, Claim, Decision, LeaseRecord, Observation, Tenure};
use super::{ConfigError, Error, Gate, LeaderElection, LeaderStatus, default_identity};
use super::{default_lease_name, default_lease_namespace};

/// Runs the Lease election for one operator replica and gates its controllers.
///
/// Built from a [`LeaderElection`], a [`kube::Client`] and the operator's name; driven by
/// [`run`](Self::run). See the [module docs](super) for the guarantees.
pub struct Elector {
    runner: Runner<KubeLeases>,
}

impl Elector {
    /// Resolves the defaults (Lease name and namespace, identity) and validates the settings.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the rule the settings break.
    pub fn new(
        config: LeaderElection,
        client: kube::Client,
        operator_name: &str,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let namespace = config
            .lease_namespace
            .clone()
            .unwrap_or_else(default_lease_namespace);
        let name = config
            .lease_name
            .clone()
            .unwrap_or_else(|| default_lease_name(&namespace, operator_name));
        let store = KubeLeases::new(client, &namespace, &name);
        let runner = Runner::new(&config, store, name, namespace)?;
        Ok(Self { runner })
    }

    /// A shareable view of the election state, for metrics and health checks.
    pub fn status(&self) -> LeaderStatus {
        self.runner.status.clone()
    }

    /// The identity this replica writes into the Lease.
    pub fn identity(&self) -> &str {
        &self.runner.identity
    }

    /// The name of the Lease.
    pub fn lease_name(&self) -> &str {
        &self.runner.name
    }

    /// The namespace of the Lease.
    pub fn lease_namespace(&self) -> &str {
        &self.runner.namespace
    }

    /// How long the leader may go without a successful renewal before it stops its
    /// controllers.
    pub fn renew_deadline(&self) -> Duration {
        self.runner.renew_deadline
    }

    /// How long a standby waits after the last change it saw before taking the Lease.
    pub fn lease_duration(&self) -> Duration {
        self.runner.lease_duration
    }

    /// How long closing the gate may take without a standby starting its controllers first:
    /// a leader closes once `renew_deadline` passed since its last renewal, and no standby
    /// takes over before `lease_duration` passed since seeing it. The half of that margin
    /// leaves room for clocks running at different rates and for the close itself.
    pub fn close_budget(&self) -> Duration {
        self.lease_duration().saturating_sub(self.renew_deadline()) / 2
    }

    /// Stands for election until `shutdown` is cancelled, opening `gate` while leading.
    ///
    /// The gate is opened only after a successful write of the Lease and closed (awaited)
    /// before `renew_deadline` has passed without a successful renewal, when another holder
    /// is observed, and on shutdown. On shutdown while leading the Lease is then released
    /// (when `release_on_shutdown`). API errors and timeouts are logged and retried.
    ///
    /// # Errors
    /// [`Error::LeadershipLost`] when leadership is lost and `exit_on_loss` is set, after the
    /// gate was closed. Otherwise returns `Ok(())` once `shutdown` is cancelled.
    pub async fn run<G: Gate>(
        self,
        gate: &mut G,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        self.runner.run(gate, shutdown).await
    }
}

/// A change of the Lease reported by a watch.
#[derive(Debug)]
pub(crate) enum LeaseEvent {
    /// The Lease was created or modified into this object.
    Applied(Value),
    /// The Lease was deleted.
    Deleted,
}

/// Changes of the Lease, as a stream.
pub(crate) type LeaseEvents = BoxStream<'static, Result<LeaseEvent, kube::Error>>;

/// The four Lease requests the elector makes; the API server in production, a fake in tests.
pub(crate) trait LeaseStore: Send + Sync {
    /// Reads the Lease; `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Value>, kube::Error>> + Send;
    /// Creates the Lease; fails with 409 AlreadyExists when it exists.
    fn create(&self, body: Value) -> impl Future<Output = Result<Value, kube::Error>> + Send;
    /// Replaces the Lease; fails with 409 Conflict unless its resourceVersion still matches.
    fn replace(&self, body: Value) -> impl Future<Output = Result<Value, kube::Error>> + Send;
    /// Watches the Lease from `resource_version` on.
    fn watch(
        &self,
        resource_version: String,
    ) -> impl Future<Output = Result<LeaseEvents, kube::Error>> + Send;
}

/// The Lease on the API server, read and written as raw JSON so that a malformed field never
/// fails decoding.
struct KubeLeases {
    client: kube::Client,
    request: Request,
    name: String,
}

impl KubeLeases {
    fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        Self {
            client,
            request: Request::new(path),
            name: name.to_owned(),
        }
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&self) -> Result<Option<Value>, kube::Error> {
        let request = self
            .request
            .get(&self.name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Value>(request).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 404 => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn create(&self, body: Value) -> Result<Value, kube::Error> {
        let body = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    async fn replace(&self, body: Value) -> Result<Value, kube::Error> {
        let body = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .replace(&self.name, &PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    async fn watch(&self, resource_version: String) -> Result<LeaseEvents, kube::Error> {
        // The server ends the watch after this long; the next poll starts a fresh one.
        const WATCH_SECONDS: u32 = 290;
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_SECONDS);
        let request = self
            .request
            .watch(&params, &resource_version)
            .map_err(kube::Error::BuildRequest)?;
        let events = self.client.request_events::<Value>(request).await?;
        Ok(StreamExt::filter_map(
            events,
            |event: Result<WatchEvent<Value>, kube::Error>| async move {
                match event {
                    Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                        Some(Ok(LeaseEvent::Applied(object)))
                    }
                    Ok(WatchEvent::Deleted(_)) => Some(Ok(LeaseEvent::Deleted)),
                    Ok(WatchEvent::Bookmark(_)) => None,
                    Ok(WatchEvent::Error(status)) => Some(Err(kube::Error::Api(status))),
                    Err(error) => Some(Err(error)),
                }
            },
        )
        .boxed())
    }
}

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

/// The election loop over any [`LeaseStore`].
pub(crate) struct Runner<S> {
    store: S,
    name: String,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    lease_duration_seconds: i32,
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

impl<S: LeaseStore> Runner<S> {
    pub(crate) fn new(
        config: &LeaderElection,
        store: S,
        name: String,
        namespace: String,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let identity = config.identity.clone().unwrap_or_else(default_identity);
        let lease_duration_seconds = lease_duration_seconds(config.lease_duration)
            .ok_or(ConfigError::LeaseDurationTooLong(config.lease_duration))?;
        Ok(Self {
            store,
            name,
            namespace,
            status: LeaderStatus::new(identity.clone()),
            identity,
            lease_duration: config.lease_duration,
            lease_duration_seconds,
            renew_deadline: config.renew_deadline,
            retry_period: config.retry_period,
            request_timeout: (config.renew_deadline / 2).max(Duration::from_secs(1)),
            release_on_shutdown: config.release_on_shutdown,
            exit_on_loss: config.exit_on_loss,
            observation: Observation::default(),
            fresh: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> LeaderStatus {
        self.status.clone()
    }

    pub(crate) async fn run<G: Gate>(
        mut self,
        gate: &mut G,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        loop {
            let Some(tenure) = self.campaign(&shutdown).await else {
                debug!(lease = %self.name, "shutting down while standing by");
                return Ok(());
            };
            self.status.set_leading(true);
            info!(
                lease = %self.name, namespace = %self.namespace, identity = %self.identity,
                transitions = self.observation.record().map_or(0, |r| r.transitions),
                "acquired leadership, starting controllers"
            );
            gate.open().await;
            let reign = self.lead(tenure, &shutdown).await;
            gate.close().await;
            self.status.set_leading(false);
            match reign {
                Reign::Shutdown => {
                    info!(lease = %self.name, "controllers stopped for shutdown");
                    if self.release_on_shutdown {
                        self.release().await;
                    }
                    return Ok(());
                }
                Reign::Lost if self.exit_on_loss => {
                    warn!(lease = %self.name, "controllers stopped after losing leadership, exiting");
                    return Err(Error::LeadershipLost);
                }
                Reign::Lost => {
                    info!(lease = %self.name, "controllers stopped after losing leadership, standing by");
                }
            }
        }
    }

    /// Stands by until this replica holds the Lease (returning the tenure its write won) or
    /// `shutdown` is cancelled.
    async fn campaign(&mut self, shutdown: &CancellationToken) -> Option<Tenure> {
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
                            debug!(lease = %self.name, %error, "lease watch failed, polling");
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
                    warn!(lease = %self.name, %error, "could not read the lease, retrying");
                    continue;
                }
            }
            let started = Instant::now();
            let written = match self.decision(false) {
                Decision::Standby { .. } => {
                    if watch.is_none() {
                        watch = self.start_watch().await;
                    }
                    continue;
                }
                Decision::Create => {
                    let body = record::create_body(&self.name, &self.namespace, self.claim_now());
                    self.call(self.store.create(body)).await
                }
                Decision::Acquire { .. } | Decision::Renew => {
                    let Some(current) = self.observation.record() else {
                        continue;
                    };
                    let body = record::claim(current, self.claim_now());
                    self.call(self.store.replace(body)).await
                }
            };
            match written {
                Ok(object) => {
                    self.observe(Some(LeaseRecord::parse(object)));
                    self.fresh = true;
                    self.status.renewed(started);
                    return Some(Tenure::new(started, self.renew_deadline));
                }
                Err(RequestError::Conflict(error)) => {
                    debug!(lease = %self.name, %error, "another candidate wrote the lease first");
                }
                Err(error) => {
                    warn!(lease = %self.name, %error, "could not write the lease, retrying");
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
                            lease = %self.name, failed_attempts = failures,
                            since_last = ?started.saturating_duration_since(tenure.renewed_at()),
                            "renewed leadership late"
                        );
                    } else {
                        debug!(lease = %self.name, "renewed leadership");
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
                        lease = %self.name, %error, failed_attempts = failures,
                        left = ?tenure.deadline().saturating_duration_since(Instant::now()),
                        "could not renew leadership, retrying until the renew deadline"
                    );
                }
            }
        }
    }

    fn deadline_passed(&self, tenure: Tenure) -> Reign {
        warn!(
            lease = %self.name, renew_deadline = ?self.renew_deadline,
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
                debug!(lease = %self.name, %error, "the lease changed since our last renewal, reading it");
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
        match self.decision(true) {
            Decision::Renew => {}
            Decision::Standby { holder, .. } if holder.is_empty() => {
                warn!(lease = %self.name, "lost leadership: someone else emptied the lease");
                return Renewal::Lost;
            }
            Decision::Standby { holder, .. } => {
                warn!(lease = %self.name, %holder, "lost leadership: another replica holds the lease");
                return Renewal::Lost;
            }
            Decision::Acquire { .. } | Decision::Create => {
                warn!(lease = %self.name, "lost leadership: the lease was released or deleted by someone else");
                return Renewal::Lost;
            }
        }
        let Some(current) = self.observation.record() else {
            return Renewal::Lost;
        };
        let body = record::claim(current, self.claim_now());
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
        if let Err(error) = self.read().await {
            warn!(lease = %self.name, %error, "could not read the lease to release it; standbys take over when it expires");
            return;
        }
        let Some(current) = self.observation.record() else {
            return;
        };
        if !current.held_by(&self.identity) {
            debug!(lease = %self.name, "not releasing: the lease is no longer ours");
            return;
        }
        let body = record::release(current, &MicroTime(Timestamp::now()));
        match self.call(self.store.replace(body)).await {
            Ok(_) => info!(lease = %self.name, "released leadership"),
            Err(error) => {
                warn!(lease = %self.name, %error, "could not release the lease; standbys take over when it expires");
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
                debug!(lease = %self.name, %error, "could not watch the lease, polling only");
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
            match &holder {
                Some(holder) if *holder == self.identity => {}
                Some(holder) => info!(lease = %self.name, %holder, "new leader observed"),
                None => info!(lease = %self.name, "lease is free"),
            }
            self.status.set_holder(holder.as_deref());
        }
    }

    /// What to do now; `leading` says whether our controllers run.
    fn decision(&self, leading: bool) -> Decision {
        record::decide(
            &self.observation,
            &self.identity,
            self.lease_duration,
            Instant::now(),
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

    fn claim_now(&self) -> Claim<'_> {
        Claim {
            identity: &self.identity,
            lease_duration_seconds: self.lease_duration_seconds,
            now: MicroTime(Timestamp::now()),
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

    use kube::core::Status;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Mode {
        Up,
        /// Every request fails with 500.
        Down,
        /// Every request hangs.
        Stalled,
    }

    struct FakeState {
        object: Option<Value>,
        version: u64,
        mode: Mode,
        writes: usize,
        reads: usize,
        watchers: Vec<mpsc::UnboundedSender<LeaseEvent>>,
    }

    /// An in-memory Lease with resourceVersion compare-and-swap and watches.
    #[derive(Clone)]
    struct FakeStore(Arc<Mutex<FakeState>>);

    impl FakeStore {
        fn new(object: Option<Value>) -> Self {
            let store = Self(Arc::new(Mutex::new(FakeState {
                object: None,
                version: 0,
                mode: Mode::Up,
                writes: 0,
                reads: 0,
                watchers: Vec::new(),
            })));
            if let Some(object) = object {
                store.put(object);
            }
            store
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().expect("fake store lock")
        }

        fn set_mode(&self, mode: Mode) {
            self.state().mode = mode;
        }

        fn object(&self) -> Option<Value> {
            self.state().object.clone()
        }

        fn writes(&self) -> usize {
            self.state().writes
        }

        fn reads(&self) -> usize {
            self.state().reads
        }

        /// Stores `object` as the next version, like any writer would, and notifies watches.
        fn put(&self, mut object: Value) -> Value {
            let mut state = self.state();
            state.version += 1;
            object["metadata"]["resourceVersion"] = state.version.to_string().into();
            state.object = Some(object.clone());
            state
                .watchers
                .retain(|watch| watch.send(LeaseEvent::Applied(object.clone())).is_ok());
            object
        }

        async fn gate(&self) -> Result<(), kube::Error> {
            let mode = self.state().mode;
            match mode {
                Mode::Up => Ok(()),
                Mode::Down => Err(api_error(500, "InternalError")),
                Mode::Stalled => std::future::pending().await,
            }
        }
    }

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure(reason, reason).with_code(code).boxed())
    }

    impl LeaseStore for FakeStore {
        async fn get(&self) -> Result<Option<Value>, kube::Error> {
            self.gate().await?;
            self.state().reads += 1;
            Ok(self.object())
        }

        async fn create(&self, body: Value) -> Result<Value, kube::Error> {
            self.gate().await?;
            self.state().writes += 1;
            if self.object().is_some() {
                return Err(api_error(409, "AlreadyExists"));
            }
            Ok(self.put(body))
        }

        async fn replace(&self, body: Value) -> Result<Value, kube::Error> {
            self.gate().await?;
            self.state().writes += 1;
            let current = self.object().ok_or_else(|| api_error(404, "NotFound"))?;
            if body.pointer("/metadata/resourceVersion")
                != current.pointer("/metadata/resourceVersion")
            {
                return Err(api_error(409, "Conflict"));
            }
            Ok(self.put(body))
        }

        async fn watch(&self, _resource_version: String) -> Result<LeaseEvents, kube::Error> {
            self.gate().await?;
            let (sender, receiver) = mpsc::unbounded_channel();
            self.state().watchers.push(sender);
            Ok(
                futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|event| (Ok(event), receiver))
                })
                .boxed(),
            )
        }
    }

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
        let config = config.identity(id);
        let runner =
            Runner::new(&config, store.clone(), "lease".into(), "ns".into()).expect("valid config");
        let status = runner.status();
        let shutdown = CancellationToken::new();
        let mut gate = TestGate {
            id: id.to_owned(),
            journal: journal.clone(),
        };
        let token = shutdown.clone();
        let task = tokio::spawn(async move { runner.run(&mut gate, token).await });
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
