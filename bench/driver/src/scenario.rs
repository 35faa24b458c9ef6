//! One peer through the scenario, on a fresh control plane: start, reconcile N new widgets,
//! a steady-state window in which every widget is touched once, delete them all. With
//! `foreign` set, that many ConfigMaps no widget owns exist in other namespaces before the peer
//! starts.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use bonny::testing::TestEnv;
use bonny_e2e::widget::{Widget, WidgetSpec};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use crate::{
    BoxError,
    peer::{MachineCpu, Peer, Process, Sampler, Usage, ticks_per_second},
    requests::{Counts, Ledger, Mark},
};

const NAMESPACE: &str = "bench";
const FINALIZER: &str = "e2e.bonny.dev/cleanup";
const POLL: Duration = Duration::from_millis(200);
/// How often the driver tries one of its own requests before giving up.
const RETRIES: u32 = 5;
/// Namespaces the foreign ConfigMaps are spread over.
const FOREIGN_NAMESPACES: usize = 10;
/// Bytes of data in each foreign ConfigMap.
const FOREIGN_BYTES: usize = 2048;

/// The knobs of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Widgets created at once.
    pub n: usize,
    /// The steady-state window.
    pub window: Duration,
    /// How long reconciling (or deleting) all widgets may take before the peer fails.
    pub deadline: Duration,
    /// Requests the driver has in flight while creating or touching widgets.
    pub concurrency: usize,
    /// ConfigMaps of about 2 KiB in other namespaces, created before the peer starts.
    pub foreign: usize,
}

/// What one peer cost.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Process start until a first widget was reconciled.
    pub startup: Duration,
    /// First create until all N widgets have their ConfigMap and status.
    pub reconcile: Duration,
    /// Delete until all N widgets are gone (finalizer removed).
    pub deletion: Duration,
    /// Peer writes from the first create until the writes stopped.
    pub create: Counts,
    /// Peer requests during the steady-state window.
    pub steady: Counts,
    /// Peer requests over the whole run.
    pub total: Counts,
    /// RSS once the first widget was reconciled (caches synced).
    pub startup_rss_kib: u64,
    /// Peak RSS (`VmHWM`).
    pub peak_rss_kib: u64,
    /// RSS at the end of the steady-state window.
    pub steady_rss_kib: u64,
    /// CPU time over the whole run.
    pub cpu: Duration,
    /// Where the machine's CPU went while the N widgets were reconciled.
    pub reconcile_load: Load,
}

/// The machine's CPU over one phase: the peer's, the control plane's (etcd and
/// kube-apiserver), and the share left idle. A phase with almost nothing idle was bound by the
/// machine, not by the peer's latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// The peer's CPU time.
    pub peer: Duration,
    /// etcd's and kube-apiserver's CPU time.
    pub control_plane: Duration,
    /// The driver's own CPU time (creating widgets, listing them to see what the peer did).
    pub driver: Duration,
    /// The share of all cores left idle, 0 to 1.
    pub idle: f64,
}

/// CPU counters at one instant, for [`Load`].
struct LoadMark {
    peer: Duration,
    control_plane: Duration,
    driver: Duration,
    machine: MachineCpu,
}

impl LoadMark {
    fn take(env: &TestEnv, pid: u32, ticks: u64) -> LoadMark {
        let cpu = |pid: u32| Usage::read(pid, ticks).unwrap_or_default().cpu;
        LoadMark {
            peer: cpu(pid),
            control_plane: env.pids().into_iter().map(cpu).sum(),
            driver: cpu(std::process::id()),
            machine: MachineCpu::read(),
        }
    }

    fn since(&self, earlier: &LoadMark) -> Load {
        Load {
            peer: self.peer.saturating_sub(earlier.peer),
            control_plane: self.control_plane.saturating_sub(earlier.control_plane),
            driver: self.driver.saturating_sub(earlier.driver),
            idle: self.machine.idle_since(&earlier.machine),
        }
    }
}

/// Runs `peer` (its binary at `binary`) through the scenario on a new control plane.
pub async fn run(
    peer: Peer,
    binary: &Path,
    settings: &Settings,
    logs: &Path,
) -> Result<Outcome, BoxError> {
    let env = TestEnv::start().await?;
    let cluster = Cluster::prepare(&env).await?;
    let ledger = cluster.ledger.clone();
    let ticks = ticks_per_second();
    if settings.foreign > 0 {
        create_foreign(&env.client(), settings.foreign, settings.concurrency).await?;
    }

    // Startup: from the process start until a widget that was there before is reconciled
    // (caches synced, watches open).
    cluster.create(&["warmup".to_owned()], 1).await?;
    let m0 = Mark::take(&env, &ledger).await?;
    let started = Instant::now();
    let process = Process::spawn(
        binary,
        env.kubeconfig_path(),
        &logs.join(format!("{}-{}.log", peer.label(), settings.n)),
    )?;
    let pid = process.pid();
    let sampler = Sampler::start(pid);
    let mut processes = [process];
    let process = &mut processes;
    cluster
        .wait_until(process, settings.deadline, "the warmup widget", |s| {
            s.reconciled == 1
        })
        .await?;
    let startup = started.elapsed();
    let startup_rss_kib = Usage::read(pid, ticks).unwrap_or_default().rss_kib;
    let m1 = cluster.settle(&env, process).await?;

    // Reconcile N new widgets.
    let names: Vec<String> = (0..settings.n).map(|i| format!("w-{i:05}")).collect();
    let begun = Instant::now();
    let load_begun = LoadMark::take(&env, pid, ticks);
    cluster.create(&names, settings.concurrency).await?;
    let want = settings.n + 1;
    cluster
        .wait_until(process, settings.deadline, "all widgets reconciled", |s| {
            s.reconciled == want
        })
        .await?;
    let reconcile = begun.elapsed();
    let reconcile_load = LoadMark::take(&env, pid, ticks).since(&load_begun);
    let m2 = cluster.settle(&env, process).await?;

    // Steady state: touch each widget's label once, spread over the first half of the
    // window, so that each gets one reconcile that has nothing to change.
    let window_start = tokio::time::Instant::now();
    let spread = settings.window / 2;
    stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let at = window_start + spread.mul_f64(i as f64 / settings.n.max(1) as f64);
            let cluster = &cluster;
            async move {
                tokio::time::sleep_until(at).await;
                cluster.touch(name).await
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    tokio::time::sleep_until(window_start + settings.window).await;
    process[0].check_alive()?;
    let m3 = Mark::take(&env, &ledger).await?;
    let steady_rss_kib = Usage::read(pid, ticks).unwrap_or_default().rss_kib;

    // Delete them all.
    let begun = Instant::now();
    cluster.delete_all().await?;
    cluster
        .wait_until(process, settings.deadline, "all widgets deleted", |s| {
            s.widgets == 0
        })
        .await?;
    let deletion = begun.elapsed();
    let m4 = cluster.settle(&env, process).await?;
    let end = Usage::read(pid, ticks).ok_or("the peer is gone")?;
    drop(processes);

    Ok(Outcome {
        startup,
        reconcile,
        deletion,
        create: m2.peer_since(&m1),
        steady: m3.peer_since(&m2),
        total: m4.peer_since(&m0),
        startup_rss_kib,
        peak_rss_kib: end.hwm_kib.max(sampler.latest().hwm_kib),
        steady_rss_kib,
        cpu: end.cpu,
        reconcile_load,
    })
}

/// `count` ConfigMaps of about 2 KiB, spread over namespaces `foreign-0`, `foreign-1`, ...:
/// objects of a kind the peers own that no widget owns.
async fn create_foreign(client: &Client, count: usize, concurrency: usize) -> Result<(), BoxError> {
    for k in 0..FOREIGN_NAMESPACES {
        create_namespace(client, &format!("foreign-{k}")).await?;
    }
    let filler = "x".repeat(FOREIGN_BYTES);
    stream::iter(0..count)
        .map(|i| {
            let namespace = format!("foreign-{}", i % FOREIGN_NAMESPACES);
            let configmap = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("foreign-{i:05}")),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("filler".to_owned(), filler.clone())])),
                ..ConfigMap::default()
            };
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            async move { api.create(&PostParams::default(), &configmap).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), BoxError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// The driver's view of the namespace, counting its own requests.
pub struct Cluster {
    pub widgets: Api<Widget>,
    pub configmaps: Api<ConfigMap>,
    pub ledger: Ledger,
}

/// What a poll saw.
pub struct State {
    pub widgets: usize,
    pub reconciled: usize,
}

/// `request`, sent again after a transport failure (a loaded API server may drop a
/// connection), up to [`RETRIES`] times; an answer of the API server is final. For requests
/// whose repeat changes nothing.
async fn retried<T, F, Fut>(what: &str, mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(answer) => return Ok(answer),
            Err(err) if attempt < RETRIES && !matches!(err, kube::Error::Api(_)) => {
                eprintln!("  {what} failed ({err}); retrying");
                attempt += 1;
                tokio::time::sleep(POLL).await;
            }
            Err(err) => return Err(err),
        }
    }
}

impl Cluster {
    /// Installs the Widget CRD and the namespace on a new control plane.
    pub async fn prepare(env: &TestEnv) -> Result<Cluster, BoxError> {
        env.install_crd(Widget::crd()).await?;
        let client = env.client();
        create_namespace(&client, NAMESPACE).await?;
        Ok(Cluster {
            widgets: Api::namespaced(client.clone(), NAMESPACE),
            configmaps: Api::namespaced(client, NAMESPACE),
            ledger: Ledger::default(),
        })
    }

    pub async fn create(&self, names: &[String], concurrency: usize) -> Result<(), BoxError> {
        stream::iter(names.iter().enumerate())
            .map(|(i, name)| async move {
                // 1..=12: never the controller's unlucky 13 or its invalid sizes.
                let size = 1 + (i % 12) as u32;
                let widget = Widget::new(name, WidgetSpec { size });
                let mut attempt = 1;
                loop {
                    self.ledger.record("POST", "widgets", 1);
                    match self.widgets.create(&PostParams::default(), &widget).await {
                        Ok(_) => return Ok(()),
                        // A retried create whose first attempt got through.
                        Err(kube::Error::Api(status)) if attempt > 1 && status.code == 409 => {
                            return Ok(());
                        }
                        Err(err) if attempt < RETRIES && !matches!(err, kube::Error::Api(_)) => {
                            eprintln!("  create failed ({err}); retrying");
                            attempt += 1;
                            tokio::time::sleep(POLL).await;
                        }
                        Err(err) => return Err(err),
                    }
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Labels one widget: a merge patch, so a repeat that lands twice changes nothing.
    async fn touch(&self, name: &str) -> Result<(), BoxError> {
        let patch = serde_json::json!({ "metadata": { "labels": { "bench-touched": "yes" } } });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retried("touch", || {
            self.ledger.record("PATCH", "widgets", 1);
            self.widgets.patch(name, &params, &patch)
        })
        .await?;
        Ok(())
    }

    /// Deletes every widget: a repeated delete of the collection deletes what is left, which
    /// is what the first one meant.
    async fn delete_all(&self) -> Result<(), BoxError> {
        let (params, all) = (DeleteParams::default(), ListParams::default());
        retried("delete of all widgets", || {
            // The API server counts a delete of a collection under the verb DELETE.
            self.ledger.record("DELETE", "widgets", 1);
            self.widgets.delete_collection(&params, &all)
        })
        .await?;
        Ok(())
    }

    /// [`Cluster::poll_once`], again after a failure (a loaded API server may drop a
    /// connection): a read, so repeating it changes nothing.
    async fn poll(&self) -> Result<State, BoxError> {
        let mut attempt = 1;
        loop {
            match self.poll_once().await {
                Ok(state) => return Ok(state),
                Err(err) if attempt < RETRIES => {
                    eprintln!("  poll failed ({err}); retrying");
                    attempt += 1;
                    tokio::time::sleep(POLL).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn poll_once(&self) -> Result<State, BoxError> {
        self.ledger.record("LIST", "widgets", 1);
        // Served from the API server's watch cache (`resourceVersion=0`), not read from etcd:
        // at 10,000 widgets a quorum list of everything every 200 ms loaded the API server
        // more than the peer did.
        let widgets = self
            .widgets
            .list(&ListParams::default().match_any())
            .await?
            .items;
        self.ledger.record("LIST", "configmaps", 1);
        let configmaps: BTreeMap<String, ConfigMap> = self
            .configmaps
            .list(&ListParams::default().match_any())
            .await?
            .items
            .into_iter()
            .map(|cm| (cm.name_any(), cm))
            .collect();
        let reconciled = widgets
            .iter()
            .filter(|w| is_reconciled(w, &configmaps))
            .count();
        Ok(State {
            widgets: widgets.len(),
            reconciled,
        })
    }

    /// Polls until `done`; fails when a process exits or the deadline passes.
    pub async fn wait_until(
        &self,
        processes: &mut [Process],
        deadline: Duration,
        what: &str,
        done: impl Fn(&State) -> bool,
    ) -> Result<(), BoxError> {
        let until = Instant::now() + deadline;
        loop {
            for process in processes.iter_mut() {
                process.check_alive()?;
            }
            let state = self.poll().await?;
            if done(&state) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "timed out after {deadline:?} waiting for {what}: {} widgets, {} reconciled; {}",
                    state.widgets,
                    state.reconciled,
                    processes
                        .iter()
                        .map(Process::log_tail)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
                .into());
            }
            // Each poll lists everything: above 2,000 widgets it comes less often (1.2 s at
            // 10,000), so that the driver's own load stays a small share of the API server's.
            let steps = u32::try_from(state.widgets / 2_000)
                .unwrap_or(u32::MAX)
                .min(10);
            let scaled = POLL * (1 + steps);
            tokio::time::sleep(scaled).await;
        }
    }

    /// Waits until the peer has stopped writing (no writes for 2 s, at most 30 s), so that
    /// late writes are charged to the phase that caused them, and returns the last mark.
    /// (Marks are taken 500 ms apart: the API server counts a `/metrics` scrape only after
    /// answering it, so a scrape right after another might not see it yet.)
    pub async fn settle(&self, env: &TestEnv, processes: &mut [Process]) -> Result<Mark, BoxError> {
        let until = Instant::now() + Duration::from_secs(30);
        let mut last = Mark::take(env, &self.ledger).await?;
        let mut quiet_since = Instant::now();
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for process in processes.iter_mut() {
                process.check_alive()?;
            }
            let now = Mark::take(env, &self.ledger).await?;
            if now.peer_since(&last).peer_writes() > 0 {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_secs(2) {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }
}

/// The widget has the finalizer, a Ready status with its size, and its ConfigMap holds the
/// size.
pub fn is_reconciled(widget: &Widget, configmaps: &BTreeMap<String, ConfigMap>) -> bool {
    let size = widget.spec.size;
    let status_ok = widget.status.as_ref().is_some_and(|status| {
        status.size == Some(size)
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let configmap_ok = configmaps
        .get(&format!("{}-data", widget.name_any()))
        .and_then(|cm| cm.data.as_ref())
        .and_then(|data| data.get("size"))
        .is_some_and(|s| *s == size.to_string());
    status_ok && configmap_ok && widget.finalizers().iter().any(|f| f == FINALIZER)
}
