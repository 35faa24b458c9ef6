//! The operator: controllers, client, leader election, probes and shutdown, put together.
//!
//! ```no_run
//! # use bonny::prelude::*;
//! # async fn run<C: Controller>(controller: C) -> Result<(), bonny::Error> {
//! Operator::builder()
//!     .name("widget-operator")
//!     .controller(controller)
//!     .watch_namespace("team-a")
//!     .leader_election(true)
//!     .run()
//!     .await
//! # }
//! ```

mod cli;
mod controller_set;
mod manifests;
mod settings;
mod shutdown;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kube::{Client, runtime::events::Reporter};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Layer;

pub use crate::runtime::Namespaces;
use crate::{
    Error,
    controller::Controller,
    leader::{Defaults, Election, Elector, LeaderElection},
    observe::{CountRequests, Health, Metrics, server::Server},
    runtime::{Caches, Registered, Registration, RunContext},
    webhook::{self, Webhooks},
};
use controller_set::ControllerSet;
pub use settings::{Settings, parse_duration};

const DEFAULT_HTTP_ADDR: ([u8; 4], u16) = ([0, 0, 0, 0], 8080);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long startup waits for the conversion webhook's certificate and CA bundle.
const WEBHOOK_SETTLE: Duration = Duration::from_secs(30);
/// Preflight tries for an operator that converts, while the API server reloads the CRD.
const PREFLIGHT_TRIES: u32 = 10;
/// How far past the renew deadline a leader may go unrenewed before `/healthz` fails.
const LIVENESS_GRACE: Duration = Duration::from_secs(5);

/// Install the global log subscriber: the format `BONNY_LOG_FORMAT` gives (read through
/// [`Settings`]; plain text when it is unset or the environment does not parse, which
/// [`OperatorBuilder::build`] then reports), filtered by `RUST_LOG` (default `info`). Call it
/// first in `main`; it does nothing if a subscriber is already set.
pub fn init_logging() {
    let format = Settings::from_env()
        .ok()
        .and_then(|settings| settings.log_format)
        .unwrap_or_default();
    crate::observe::init_logging_with(format);
}

/// A configured operator, ready to [`run`](Operator::run).
pub struct Operator {
    name: String,
    /// The binary, as hints name it (`<binary> manifests`).
    binary: String,
    registrations: Arc<[Box<dyn Registration>]>,
    namespaces: Namespaces,
    client: Option<ClientSource>,
    leader: Option<Election>,
    shutdown_timeout: Duration,
    http_addr: Option<SocketAddr>,
    metrics: Metrics,
    health: Health,
    settings: Settings,
    observer: Option<Observer>,
    warm_standby: bool,
    webhooks: Option<Webhooks>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field(
                "controllers",
                &self
                    .registrations
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>(),
            )
            .field("namespaces", &self.namespaces)
            .field("leader_election", &self.leader.is_some())
            .field("warm_standby", &self.warm_standby)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Start configuring an operator.
    pub fn builder() -> OperatorBuilder {
        OperatorBuilder::default()
    }

    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metrics registry (to read, or to register the author's own metrics).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The health state behind `/healthz` and `/readyz`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The settings read from the environment.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Run until SIGTERM or SIGINT, then shut down gracefully: stop taking work, let in-flight
    /// reconciles finish within the shutdown timeout, release the Lease. A second signal exits
    /// at once.
    ///
    /// # Errors
    /// When the client cannot be configured, a resource is not installed or not permitted, the
    /// probe server cannot bind, or leader election gives up.
    pub async fn run(self) -> Result<(), Error> {
        let stop = CancellationToken::new();
        let signals = tokio::spawn(shutdown::watch_signals(stop.clone()));
        let result = self.run_until(stop).await;
        signals.abort();
        result
    }

    /// Run until `stop` is cancelled (for embedding and tests; [`run`](Operator::run) wires it
    /// to signals).
    ///
    /// # Errors
    /// As [`run`](Operator::run).
    pub async fn run_until(self, stop: CancellationToken) -> Result<(), Error> {
        // Every request the operator makes (leader election included) is counted in
        // `rest_client_requests_total`.
        let client = match self.client {
            Some(ClientSource::Client(client)) => counted_client(client, &self.metrics),
            Some(ClientSource::Config(config)) => {
                configured_client(*config, &self.metrics).map_err(Error::ClientConfig)?
            }
            None => default_client(&self.metrics)
                .await
                .map_err(Error::ClientConfig)?,
        };
        let server_stop = CancellationToken::new();
        let mut background = JoinSet::new();
        // Webhooks are served by every replica, leader or not, with the plain client: the
        // certificate Secret and CA bundle are shared state, not controller writes. They start
        // before preflight: listing a converted resource needs the conversion webhook.
        if let Some(webhooks) = self.webhooks.as_ref().filter(|w| !w.is_empty()) {
            let context = webhook::Context {
                client: client.clone(),
                operator: self.name.clone(),
                namespace: self
                    .settings
                    .pod_namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
                addr: SocketAddr::from(([0, 0, 0, 0], webhooks.port_number())),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
            };
            let started = webhook::start(webhooks, context, server_stop.clone()).await?;
            tracing::info!(addr = %started.addr, "serving webhooks");
            for task in started.tasks {
                background.spawn(task);
            }
            if webhook::converts(webhooks) {
                // Preflight lists the converted resource: wait until the API server can reach
                // the conversion webhook (bounded; preflight then says what is wrong).
                let mut settled = started.settled;
                let waited =
                    tokio::time::timeout(WEBHOOK_SETTLE, settled.wait_for(|settled| *settled))
                        .await;
                if waited.is_err() {
                    tracing::warn!("the conversion webhook has no certificate or CA bundle yet");
                }
            }
        }
        for registration in self.registrations.iter() {
            let mut attempt = 0;
            loop {
                match registration
                    .preflight(&client, &self.namespaces, &self.binary)
                    .await
                {
                    Ok(()) => break,
                    // The API server picks up a CRD's new CA bundle a moment after it is
                    // written: a converted resource gets a few tries.
                    Err(err)
                        if self.webhooks.as_ref().is_some_and(webhook::converts)
                            && attempt < PREFLIGHT_TRIES =>
                    {
                        attempt += 1;
                        tracing::debug!(error = %err, attempt, "preflight failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(err) => {
                        server_stop.cancel();
                        while background.join_next().await.is_some() {}
                        return Err(err.into());
                    }
                }
            }
        }
        if let Some(addr) = self.http_addr {
            let server = Server::bind(addr, self.metrics.clone(), self.health.clone())
                .await
                .map_err(|source| Error::Http { addr, source })?;
            let bound = server.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
            background.spawn(server.serve(server_stop.clone()));
        }
        let elector = self
            .leader
            .map(|election| Elector::new(election, client.clone()));
        if let Some(elector) = &elector {
            warn_if_fenced_out(&client, elector.identity()).await;
        }
        let identity = elector
            .as_ref()
            .map(|elector| elector.identity().to_owned())
            .or_else(|| self.settings.pod_name.clone());
        // With leader election, controller code only ever gets the guarded client: its writes
        // leave only while this replica's tenure holds. The elector keeps the plain one.
        let client = match &elector {
            Some(elector) => elector.write_guard().client(client),
            None => client,
        };
        let runtime = RunContext {
            client,
            namespaces: self.namespaces.clone(),
            reporter: Reporter {
                controller: self.name.clone(),
                instance: identity,
            },
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            caches: Caches::default(),
            binary: Arc::from(self.binary.as_str()),
        };
        // With leader election, in-flight reconciles get only what the Lease's margin allows,
        // so they never run on beside the next leader's.
        let grace = match &elector {
            Some(elector) => self.shutdown_timeout.min(elector.close_budget()),
            None => self.shutdown_timeout,
        };
        let mut controllers = ControllerSet::new(
            self.registrations.clone(),
            runtime,
            grace,
            self.observer.clone(),
            self.warm_standby && elector.is_some(),
        );
        let result = match elector {
            None => {
                controllers.start();
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = controllers.exited() => tracing::error!("a controller stopped by itself; shutting down"),
                }
                controllers.stop().await;
                Ok(())
            }
            Some(elector) => {
                // A standby is ready: it serves nothing that needs a cache.
                self.health.mark_started();
                let status = elector.status();
                let problem = status.clone();
                self.health
                    .add_readiness_check(move || problem.problem().map_or(Ok(()), Err));
                let deadline = elector.renew_deadline() + LIVENESS_GRACE;
                self.health.add_liveness_check(move || {
                    if status.renewal_overdue(deadline) {
                        Err(format!(
                            "the leader has not renewed its Lease for over {deadline:?}"
                        ))
                    } else {
                        Ok(())
                    }
                });
                controllers
                    .report_leadership(self.metrics.clone(), elector.lease_name().to_owned());
                controllers.warm_up();
                let result = elector
                    .run(&mut controllers, stop.clone())
                    .await
                    .map_err(Error::Leader);
                controllers.stop_caches().await;
                result
            }
        };
        server_stop.cancel();
        while background.join_next().await.is_some() {}
        tracing::info!("operator stopped");
        result
    }
}

/// Says at startup, in one warning, when a leader fence would refuse every write of this
/// replica: its identity is not the pod its token is bound to.
async fn warn_if_fenced_out(client: &Client, identity: &str) {
    match crate::leader::check_identity(client, identity).await {
        Ok(check) => match check.problem(identity) {
            Some(problem) => tracing::warn!(identity, "{problem}"),
            None => tracing::debug!(identity, ?check, "leader identity checked"),
        },
        Err(error) => {
            tracing::debug!(%error, "cannot ask the API server who this replica is; identity not checked");
        }
    }
}

/// Builds an [`Operator`]. Every setting has a production-safe default; environment variables
/// (see [`Settings`]) fill what the builder leaves unset.
#[must_use]
#[derive(Default)]
pub struct OperatorBuilder {
    name: Option<String>,
    registrations: Vec<Box<dyn Registration>>,
    namespaces: Option<Vec<String>>,
    client: Option<ClientSource>,
    leader: Option<LeaderElection>,
    leader_explicit: bool,
    shutdown_timeout: Option<Duration>,
    http_addr: Option<Option<SocketAddr>>,
    metrics: Option<Metrics>,
    observer: Option<Observer>,
    warm_standby: Option<bool>,
    webhooks: Option<Webhooks>,
}

/// What [`OperatorBuilder::on_controllers`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllersEvent {
    /// The controllers are about to start (leadership acquired, or startup without election).
    Starting,
    /// Every controller task has ended (leadership lost, or shutdown).
    Stopped,
}

pub(crate) type Observer = Arc<dyn Fn(ControllersEvent) + Send + Sync>;

impl OperatorBuilder {
    /// The operator's name: used for the Lease, events and generated manifests.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Add a controller. Controllers of several resource types can be added.
    pub fn controller<C: Controller>(mut self, controller: C) -> Self {
        self.registrations
            .push(Box::new(Registered::new(controller)));
        self
    }

    /// Watch this namespace (call again for more). Without any, all namespaces are watched.
    pub fn watch_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces
            .get_or_insert_with(Vec::new)
            .push(namespace.into());
        self
    }

    /// Use this client instead of loading kubeconfig or the in-cluster configuration.
    ///
    /// A [`Client`] does not tell which API server it talks to (its requests reach the layers
    /// around it without the server's address), so `rest_client_requests_total` counts its
    /// requests with an empty `host`. Pass the configuration with
    /// [`kube_config`](Self::kube_config) instead to have the SDK build the client and label
    /// them with the API server's `host:port`.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(ClientSource::Client(client));
        self
    }

    /// Build the client from this configuration instead of loading kubeconfig or the
    /// in-cluster configuration; its requests are counted with the `host:port` of
    /// `config.cluster_url`.
    pub fn kube_config(mut self, config: kube::Config) -> Self {
        self.client = Some(ClientSource::Config(Box::new(config)));
        self
    }

    /// Run controllers only on the replica that holds the Lease (default settings: 15 s lease,
    /// 10 s renew deadline, 2 s retry period).
    ///
    /// The timings can be set from the environment (`BONNY_LEASE_DURATION`,
    /// `BONNY_RENEW_DEADLINE`, `BONNY_RETRY_PERIOD`).
    pub fn leader_election(mut self, enabled: bool) -> Self {
        self.leader = enabled.then(LeaderElection::default);
        self.leader_explicit = false;
        self
    }

    /// Leader election with explicit settings (the environment does not override them).
    pub fn leader_election_with(mut self, config: LeaderElection) -> Self {
        self.leader = Some(config);
        self.leader_explicit = true;
        self
    }

    /// Be told when the controllers start and when they have all stopped: with leader
    /// election, these bound the intervals in which this replica reconciles.
    pub fn on_controllers(
        mut self,
        observer: impl Fn(ControllersEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// How long in-flight reconciles may run after a stop is asked for (default 30 s).
    ///
    /// With leader election the grace is also capped at half the margin between lease
    /// duration and renew deadline (2.5 s with the defaults), so that no reconcile outlives
    /// its leader's claim while a standby takes over; what is left is aborted.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Serve `/metrics`, `/healthz` and `/readyz` here (default `0.0.0.0:8080`).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.http_addr = Some(Some(addr));
        self
    }

    /// Serve no metrics or probes.
    pub fn without_http(mut self) -> Self {
        self.http_addr = Some(None);
        self
    }

    /// Share this metrics registry (to register the author's metrics before building).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// With leader election, keep the caches of a standby replica synced while it waits for
    /// the Lease (default on; `BONNY_WARM_STANDBY` sets it when the builder does not).
    ///
    /// On acquisition the controllers then reconcile from caches already synced, instead of
    /// listing every object first: a takeover starts at once (at 5,000 objects, the first
    /// reconcile came within the lease duration of the leader's death warm, 1.6 s after it
    /// cold; `bench/README.md`). It costs each standby the memory and watch connections of
    /// the leader's caches, as controller-runtime's standbys, whose informers start before
    /// the election, pay too. Writes are unaffected: they still leave only while the Lease is
    /// held (standbys only read). `warm_standby(false)` keeps standbys down to the elector.
    pub fn warm_standby(mut self, warm: bool) -> Self {
        self.warm_standby = Some(warm);
        self
    }

    /// Serve these admission and conversion webhooks (on every replica, leader or not); the
    /// manifests gain their Service, configurations and CRD conversion stanzas.
    pub fn webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// Check the configuration and build the operator.
    ///
    /// # Errors
    /// [`Error::NoControllers`], [`Error::LeaderConfig`] or [`Error::LeaderConfigFromEnv`]
    /// naming the rule that failed, or [`Error::InvalidEnv`] for an environment variable that
    /// does not parse.
    pub fn build(self) -> Result<Operator, Error> {
        let settings = Settings::from_env()?;
        if self.registrations.is_empty() {
            return Err(Error::NoControllers);
        }
        let name = self
            .name
            .or_else(|| settings.operator_name.clone())
            .or_else(binary_name)
            .unwrap_or_else(|| "bonny-operator".to_owned());
        let binary = binary_name().unwrap_or_else(|| name.clone());
        let namespaces = match self
            .namespaces
            .or_else(|| settings.watch_namespaces.clone())
        {
            Some(list) if !list.is_empty() => Namespaces::List(list),
            _ => Namespaces::All,
        };
        let leader = match self.leader {
            Some(mut config) => {
                // Which timings came from the environment, so an error can say where to look.
                let mut from_env = Vec::new();
                if !self.leader_explicit {
                    if let Some(duration) = settings.lease_duration {
                        config = config.lease_duration(duration);
                        from_env.push(format!("BONNY_LEASE_DURATION={duration:?}"));
                    }
                    if let Some(deadline) = settings.renew_deadline {
                        config = config.renew_deadline(deadline);
                        from_env.push(format!("BONNY_RENEW_DEADLINE={deadline:?}"));
                    }
                    if let Some(period) = settings.retry_period {
                        config = config.retry_period(period);
                        from_env.push(format!("BONNY_RETRY_PERIOD={period:?}"));
                    }
                }
                let defaults = Defaults::new(name.clone())
                    .binary(Some(binary.clone()))
                    .pod_name(settings.pod_name.clone())
                    .pod_namespace(settings.pod_namespace.clone())
                    .hostname(settings.hostname.clone());
                let election = config.validate(&defaults).map_err(|err| {
                    if from_env.is_empty() {
                        Error::LeaderConfig(err)
                    } else {
                        Error::LeaderConfigFromEnv {
                            source: err,
                            vars: from_env.join(", "),
                        }
                    }
                })?;
                Some(election)
            }
            None => None,
        };
        let http_addr = self
            .http_addr
            .or(settings.http_addr)
            .unwrap_or(Some(SocketAddr::from(DEFAULT_HTTP_ADDR)));
        Ok(Operator {
            name,
            binary,
            registrations: self.registrations.into(),
            namespaces,
            client: self.client,
            leader,
            shutdown_timeout: self
                .shutdown_timeout
                .or(settings.shutdown_timeout)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            http_addr,
            metrics: self.metrics.unwrap_or_default(),
            health: Health::default(),
            warm_standby: self.warm_standby.or(settings.warm_standby).unwrap_or(true),
            settings,
            observer: self.observer,
            webhooks: self.webhooks,
        })
    }

    /// Build and [`run`](Operator::run) until a termination signal.
    ///
    /// # Errors
    /// As [`build`](Self::build) and [`Operator::run`].
    pub async fn run(self) -> Result<(), Error> {
        self.build()?.run().await
    }
}

/// Where the operator's client comes from, when not from kubeconfig or the cluster.
enum ClientSource {
    /// Handed over built: the SDK cannot tell which server it talks to.
    Client(Client),
    /// Built by the SDK.
    Config(Box<kube::Config>),
}

/// The client of the kubeconfig or in-cluster configuration, its requests counted with the API
/// server's `host:port` as their `host`.
async fn default_client(metrics: &Metrics) -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    configured_client(config, metrics)
}

/// The client of `config`, its requests counted with the API server's `host:port` as their
/// `host` (kube-client sets the server on each request inside the client, so a layer around it
/// sees paths only).
fn configured_client(config: kube::Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    let host = config
        .cluster_url
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountRequests::new(metrics.clone(), host))
        .build())
}

/// `client`, its requests counted. The client does not tell which server it talks to, so
/// their `host` is empty (see [`OperatorBuilder::client`]).
fn counted_client(client: Client, metrics: &Metrics) -> Client {
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let client = client.clone();
        async move { client.send(request).await }
    });
    Client::new(
        CountRequests::new(metrics.clone(), String::new()).layer(service),
        namespace,
    )
}

fn binary_name() -> Option<String> {
    std::env::args_os().next().and_then(|arg0| {
        std::path::Path::new(&arg0)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_client_built_from_a_config_counts_requests_with_its_host() {
        // A port nothing listens on: the request fails, and is counted all the same.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let metrics = Metrics::new();
        let client = configured_client(config, &metrics).unwrap();
        assert!(client.apiserver_version().await.is_err());
        let text = metrics.encode();
        let expected =
            format!(r#"rest_client_requests_total{{code="<error>",method="GET",host="{addr}"}} 1"#);
        assert!(text.contains(&expected), "{text}");
    }
}
