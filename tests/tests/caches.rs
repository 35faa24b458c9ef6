//! The SDK's watch caches on a real kube-apiserver: lean (objects the SDK did not create are
//! neither streamed nor cached), shared (controllers owning one kind open one watch, and so do
//! controllers owning and watching it), and warm (a standby that keeps its caches synced takes
//! over without listing).
//!
//! Sizes: `BONNY_E2E_FOREIGN` foreign ConfigMaps of 2 KiB (default 300; the figure is
//! 2000), `BONNY_E2E_FAILOVER_N` widgets for the failover (default 100; 500 for the figure).
//! Figures (RSS, failover times, request counts) are printed as `figures: ...` lines.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use bonny::{
    prelude::*,
    testing::{AuditRecord, TestEnv},
};
use bonny_e2e::{
    copier::{Copier, CopierController, Reconciles, copier},
    eventually,
    in_process::InProcess,
    init_tracing,
    widget::{Gadget, GadgetSpec, GadgetStatus, Widget, WidgetController, widget},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

const WAIT: Duration = Duration::from_secs(60);

/// The tests of this file run one at a time: each starts a control plane and many objects,
/// and the figures would measure the neighbours.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn size_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn env() -> TestEnv {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env
}

/// `count` ConfigMaps of about 2 KiB in `namespace` that no controller created.
async fn create_foreign(client: &kube::Client, namespace: &str, count: usize) {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..count)
        .map(|i| {
            let configmaps = configmaps.clone();
            async move {
                let configmap = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("foreign-{i}")),
                        ..ObjectMeta::default()
                    },
                    data: Some([("blob".to_owned(), "x".repeat(2048))].into()),
                    ..ConfigMap::default()
                };
                configmaps.create(&PostParams::default(), &configmap).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

async fn create_widgets(client: &kube::Client, namespace: &str, count: usize) {
    let widgets: Api<Widget> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..count)
        .map(|i| {
            let widgets = widgets.clone();
            async move {
                widgets
                    .create(&PostParams::default(), &widget(&format!("w{i}"), 1))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// The sum of the samples of `metric` whose labels contain `labels`, in Prometheus text.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with(metric) && line.contains(labels))
        .filter(|line| line[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The watches of `resource` open now, in every namespace, as the API server counts them
/// (`apiserver_longrunning_requests`).
async fn open_watches(env: &TestEnv, resource: &str) -> usize {
    let text = env.apiserver_metrics().await.unwrap();
    let metric = "apiserver_longrunning_requests{";
    let resource = format!("resource=\"{resource}\"");
    text.lines()
        .filter(|line| {
            line.starts_with(metric) && line.contains(&resource) && line.contains("verb=\"WATCH\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// The request URIs of the watches of `resource` in `namespace` that `audit` recorded.
fn watches_in(audit: &[AuditRecord], resource: &str, namespace: &str) -> Vec<String> {
    audit
        .iter()
        .filter(|record| {
            record.verb == "watch" && record.resource == resource && record.namespace == namespace
        })
        .map(|record| record.request_uri.clone())
        .collect()
}

/// The audit log once it recorded at least `open` ended watches of `resource` in
/// `namespaces`: it records a watch only once the API server saw its connection close, which
/// may come a moment after the operator stopped.
async fn audited(
    env: &TestEnv,
    open: usize,
    resource: &str,
    namespaces: &[&str],
) -> Vec<AuditRecord> {
    eventually("the operator's watches to be audited", WAIT, || async {
        let audit = env.audit_log().unwrap();
        let ended: usize = namespaces
            .iter()
            .map(|namespace| watches_in(&audit, resource, namespace).len())
            .sum();
        (ended >= open).then_some(audit)
    })
    .await
}

/// A free local port (bound, then released for the replica to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `cache-operator` process.
struct Replica {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Replica {
    fn spawn(env: &TestEnv, name: &str, namespace: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = env.dir().join(format!("{name}.log"));
        let stdout = std::fs::File::create(&log).unwrap();
        let stderr = stdout.try_clone().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_cache-operator"));
        command
            .env("KUBECONFIG", env.kubeconfig_path())
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", "default")
            .env("BONNY_WATCH_NAMESPACES", namespace)
            .env("BONNY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("BONNY_LEASE_DURATION", "3s")
            .env("BONNY_RENEW_DEADLINE", "2s")
            .env("BONNY_RETRY_PERIOD", "500ms")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("BONNY_WARM_STANDBY")
            .env_remove("ADOPT")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        for (key, value) in extra {
            command.env(key, value);
        }
        Self {
            child: command.spawn().unwrap(),
            port,
            log,
        }
    }

    /// The replica's `/metrics`, or `None` while it does not answer.
    async fn metrics(&self) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    }

    async fn metric(&self, metric: &str, labels: &str) -> Option<f64> {
        sample(&self.metrics().await?, metric, labels)
    }

    /// Resident set size in KiB, from `/proc`.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until `replica`'s cache of ConfigMaps in `namespace` holds `objects`.
async fn cache_holds(replica: &Replica, namespace: &str, objects: usize) {
    let labels = format!("cache=\"configmaps/{namespace}\"");
    let what = format!("the ConfigMap cache to hold {objects} objects");
    let deadline = Instant::now() + WAIT;
    loop {
        let held = replica.metric("bonny_cache_objects", &labels).await;
        if held == Some(objects as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: it holds {held:?}\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn foreign_configmaps_are_neither_streamed_nor_cached_and_a_deleted_child_comes_back() {
    let _serial = SERIAL.lock().await;
    let foreign = size_from_env("BONNY_E2E_FOREIGN", 300);
    let env = env().await;
    let client = env.client();
    let namespace = "foreign";
    env.create_namespace(namespace).await.unwrap();
    create_foreign(&client, namespace, foreign).await;
    let widgets = 3;
    create_widgets(&client, namespace, widgets).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);

    // Default: the owned cache selects the controller's label and holds only its children.
    let mut lean = Replica::spawn(&env, "lean", namespace, &[]);
    for i in 0..widgets {
        eventually("a widget's child", WAIT, || async {
            configmaps.get_opt(&format!("w{i}-data")).await.unwrap()
        })
        .await;
    }
    cache_holds(&lean, namespace, widgets).await;
    let lean_rss = lean.rss_kib();

    // A deleted child is re-created: its deletion is in the label-selected watch.
    let old = configmaps.get("w0-data").await.unwrap();
    configmaps
        .delete("w0-data", &DeleteParams::default())
        .await
        .unwrap();
    let new = eventually("the deleted child to come back", WAIT, || async {
        configmaps
            .get_opt("w0-data")
            .await
            .unwrap()
            .filter(|child| child.uid() != old.uid())
    })
    .await;
    assert_eq!(
        new.labels().get(bonny::controller::DESCENDANT_LABEL),
        Some(&"widget".to_owned())
    );
    cache_holds(&lean, namespace, widgets).await;
    lean.kill().await;

    // Adopting existing children: every ConfigMap of the namespace is watched and cached.
    let adopting = Replica::spawn(&env, "adopting", namespace, &[("ADOPT", "1")]);
    // kube-root-ca.crt, which the API server's controller would add, is not there: the
    // environment runs no controller manager.
    let all = configmaps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    cache_holds(&adopting, namespace, all).await;
    let adopting_rss = adopting.rss_kib();
    println!(
        "figures: {foreign} foreign ConfigMaps of 2 KiB + {widgets} widgets: owned cache holds {widgets} \
         (label-selected) vs {all} (adopt_existing); replica RSS {:.1} MiB vs {:.1} MiB",
        lean_rss as f64 / 1024.0,
        adopting_rss as f64 / 1024.0
    );
}

/// A controller of Gadgets owning ConfigMaps too: `<name>-gadget`.
#[derive(Clone, Default)]
struct GadgetOwner;

impl Controller for GadgetOwner {
    type Resource = Gadget;

    fn config(&self) -> Config<Gadget> {
        Config::new().name("gadget").owns::<ConfigMap>()
    }
}

impl Reconcile<Gadget> for GadgetOwner {
    async fn apply(&self, axn: &mut Axn<Gadget>) -> Result<Action, ReconcileError> {
        axn.register_descendant(ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-gadget", axn.name())),
                ..ObjectMeta::default()
            },
            data: Some([("label".to_owned(), axn.object().spec.label.clone())].into()),
            ..ConfigMap::default()
        })?;
        Ok(Action::await_change())
    }
}

#[tokio::test]
async fn two_controllers_owning_configmaps_share_one_watch() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    env.install_crd(Gadget::crd()).await.unwrap();
    let client = env.client();
    let namespace = "shared";
    env.create_namespace(namespace).await.unwrap();
    // The API server's own clients watch ConfigMaps too (in kube-system).
    let others = open_watches(&env, "configmaps").await;
    let running = InProcess::start(
        InProcess::builder("shared-e2e", client.clone(), namespace)
            .controller(WidgetController::default())
            .controller(GadgetOwner),
    );

    create_widgets(&client, namespace, 2).await;
    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), namespace);
    gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g0", GadgetSpec { label: "hi".into() }),
        )
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in ["w0-data", "w1-data", "g0-gadget"] {
        eventually("a child", WAIT, || async {
            configmaps.get_opt(name).await.unwrap()
        })
        .await;
    }
    // The shared cache feeds both controllers: each re-creates its own deleted child.
    for name in ["g0-gadget", "w1-data"] {
        let old = configmaps.get(name).await.unwrap();
        configmaps
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the deleted child to come back", WAIT, || async {
            configmaps
                .get_opt(name)
                .await
                .unwrap()
                .filter(|child| child.uid() != old.uid())
        })
        .await;
    }
    let cache = format!("cache=\"configmaps/{namespace}\"");
    eventually(
        "the shared cache to hold the three children",
        WAIT,
        || async {
            (sample(&running.metrics().encode(), "bonny_cache_objects", &cache) == Some(3.0))
                .then_some(())
        },
    )
    .await;
    let open = open_watches(&env, "configmaps").await - others;
    running.stop().await;

    // The audit log: every ConfigMap watch the operator opened, once each ended.
    let audit = audited(&env, open, "configmaps", &[namespace]).await;
    let watches = watches_in(&audit, "configmaps", namespace);
    assert_eq!(open, 1, "open ConfigMap watches of the operator");
    println!("figures: ConfigMap watches of two controllers owning ConfigMaps: {watches:?}");
    assert_eq!(watches.len(), 1, "{watches:?}");
    let uri = watches[0].replace("%2F", "/").replace("%2C", ",");
    assert!(
        uri.contains("bonny.dev/controller") && uri.contains("gadget,widget"),
        "the one watch selects both controllers' labels: {uri}"
    );
}

/// A controller of Gadgets that owns ConfigMaps and watches them too: `<name>-mirror` holds
/// `data.value` of the ConfigMap its `spec.label` names, read from the cache, and its status
/// counts the Gadget's cached children (`Cache::owned_by_me`, served by the owner index).
#[derive(Clone, Default)]
struct MirrorController;

impl Controller for MirrorController {
    type Resource = Gadget;

    fn config(&self) -> Config<Gadget> {
        Config::new().name("mirror").owns::<ConfigMap>().watches(
            Mapper::<Gadget, ConfigMap>::field("spec.label", |gadget: &Gadget| {
                Some(gadget.spec.label.clone())
            }),
        )
    }
}

impl Reconcile<Gadget> for MirrorController {
    async fn apply(&self, axn: &mut Axn<Gadget>) -> Result<Action, ReconcileError> {
        let namespace = axn.namespace().unwrap_or_default();
        let cache = axn.cache::<ConfigMap>()?;
        let value = cache
            .get(&namespace, &axn.object().spec.label)
            .and_then(|source| source.data?.get("value").cloned());
        let children = cache.owned_by_me().len();
        axn.register_descendant(ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-mirror", axn.name())),
                ..ObjectMeta::default()
            },
            data: value.map(|value| [("value".to_owned(), value)].into()),
            ..ConfigMap::default()
        })?;
        axn.set_status(GadgetStatus {
            seen: Some(format!("{children} children")),
        })?;
        Ok(Action::await_change())
    }
}

/// The copier reconciles counted once none has come for a while: what follows the
/// controllers' own writes is over, so a count taken now moves only for what the test does.
async fn settled(reconciles: &Reconciles) -> HashMap<String, usize> {
    const QUIET: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + WAIT;
    let mut seen = reconciles.all();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = reconciles.all();
        if now == seen {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "reconciles never settled: {now:?}"
        );
        seen = now;
    }
}

#[tokio::test]
async fn a_kind_owned_and_watched_by_one_controller_and_watched_by_another_is_watched_once() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    env.install_crd(Gadget::crd()).await.unwrap();
    env.install_crd(Copier::crd()).await.unwrap();
    let client = env.client();
    let scopes = ["both-a", "both-b"];
    let post = PostParams::default();
    for namespace in scopes {
        env.create_namespace(namespace).await.unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for (name, value) in [("src", "1"), ("other", "x")] {
            let source = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                data: Some([("value".to_owned(), value.to_owned())].into()),
                ..ConfigMap::default()
            };
            maps.create(&post, &source).await.unwrap();
        }
        let copiers: Api<Copier> = Api::namespaced(client.clone(), namespace);
        for (name, source) in [("copies-src", "src"), ("copies-other", "other")] {
            let name = format!("{name}-{namespace}");
            copiers
                .create(&post, &copier(&name, Some(source)))
                .await
                .unwrap();
        }
        let gadgets: Api<Gadget> = Api::namespaced(client.clone(), namespace);
        gadgets
            .create(
                &post,
                &Gadget::new(
                    "g",
                    GadgetSpec {
                        label: "src".into(),
                    },
                ),
            )
            .await
            .unwrap();
    }
    // The API server's own clients watch ConfigMaps too (in kube-system).
    let others = open_watches(&env, "configmaps").await;
    let copier_controller = CopierController::default();
    let reconciles = copier_controller.reconciles.clone();
    let running = InProcess::start(
        InProcess::builder("both-e2e", client.clone(), scopes[0])
            .watch_namespace(scopes[1])
            .controller(MirrorController)
            .controller(copier_controller),
    );

    // Both controllers read the one shared cache: copies, the mirror and its child count.
    let converged = |namespace: &'static str, value: &'static str| {
        let copiers: Api<Copier> = Api::namespaced(client.clone(), namespace);
        let gadgets: Api<Gadget> = Api::namespaced(client.clone(), namespace);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        async move {
            eventually("the copiers and the mirror to converge", WAIT, || async {
                let copied = |name: String| {
                    let copiers = copiers.clone();
                    async move { copiers.get(&name).await.unwrap().status?.copied }
                };
                let mirrored = maps
                    .get_opt("g-mirror")
                    .await
                    .unwrap()
                    .and_then(|child| child.data?.get("value").cloned());
                let seen = gadgets.get("g").await.unwrap().status.and_then(|s| s.seen);
                let now = (
                    copied(format!("copies-src-{namespace}")).await,
                    copied(format!("copies-other-{namespace}")).await,
                    mirrored,
                    seen,
                );
                let want = (
                    Some(value.to_owned()),
                    Some("x".to_owned()),
                    Some(value.to_owned()),
                    Some("1 children".to_owned()),
                );
                (now == want).then_some(())
            })
            .await;
        }
    };
    for namespace in scopes {
        converged(namespace, "1").await;
    }

    // A related change reaches the primaries naming it in its scope, and only them.
    let before = settled(&reconciles).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), scopes[0]);
    maps.patch(
        "src",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "value": "2" } })),
    )
    .await
    .unwrap();
    converged(scopes[0], "2").await;
    converged(scopes[1], "1").await;
    let after = settled(&reconciles).await;
    let moved =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    assert!(moved("copies-src-both-a") >= 1, "{before:?} -> {after:?}");
    for name in [
        "copies-other-both-a",
        "copies-src-both-b",
        "copies-other-both-b",
    ] {
        assert_eq!(moved(name), 0, "{name}: {before:?} -> {after:?}");
    }
    // The operator's watches open now, as the API server counts them (over both scopes).
    let open = open_watches(&env, "configmaps").await - others;
    running.stop().await;
    println!(
        "figures: ConfigMap watches the operator had open while both controllers ran, over two \
         scopes: {open} (the API server's own: {others})"
    );
    assert_eq!(open, scopes.len(), "one open ConfigMap watch per scope");

    // The audit log: every watch the operator opened, once each ended.
    audited(&env, open, "configmaps", &scopes).await;
    // The Secret watches end on connections of their own: the log (which only grows) is read
    // once it recorded them too.
    let audit = audited(&env, scopes.len(), "secrets", &scopes).await;
    for namespace in scopes {
        let configmaps = watches_in(&audit, "configmaps", namespace);
        let secrets = watches_in(&audit, "secrets", namespace);
        println!(
            "figures: {namespace}: ConfigMap watches of one controller owning and watching \
             ConfigMaps and one watching them: {} {configmaps:?}; Secret watches: {}",
            configmaps.len(),
            secrets.len()
        );
        assert_eq!(configmaps.len(), 1, "{namespace}: {configmaps:?}");
        assert!(
            !configmaps[0].contains("labelSelector"),
            "a watched kind is watched whole: {}",
            configmaps[0]
        );
        assert_eq!(secrets.len(), 1, "{namespace}: {secrets:?}");
    }
}

/// What one failover measured.
struct Failover {
    kill_to_reconcile: Duration,
    /// From the standby's leader gauge turning 1 (as polled) to its first completed reconcile.
    acquired_to_reconcile: Duration,
    lists_after_kill: u64,
    standby_rss_kib: u64,
}

/// Leader `a` converged on `n` widgets, standby `b` waiting; `a` is SIGKILLed and the time
/// until `b` finished its first reconcile is measured, with the LISTs of widgets in between.
async fn failover(env: &TestEnv, namespace: &str, n: usize, warm: bool) -> Failover {
    let mode = if warm { "warm" } else { "cold" };
    let settings = [("BONNY_WARM_STANDBY", if warm { "true" } else { "false" })];
    let mut leader = Replica::spawn(env, &format!("{mode}-a"), namespace, &settings);
    let leading = "leader_election_master_status";
    let deadline = Instant::now() + WAIT;
    while leader.metric(leading, "").await != Some(1.0) {
        assert!(Instant::now() < deadline, "no leader:\n{}", leader.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cache_holds(&leader, namespace, n).await;
    let standby = Replica::spawn(env, &format!("{mode}-b"), namespace, &settings);
    let deadline = Instant::now() + WAIT;
    while standby.metric(leading, "").await != Some(0.0) {
        assert!(Instant::now() < deadline, "no standby:\n{}", standby.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if warm {
        cache_holds(&standby, namespace, n).await;
    }
    let standby_rss_kib = standby.rss_kib();
    let lists_before = env.request_count("LIST", "widgets").await.unwrap();
    let killed = Instant::now();
    leader.kill().await;
    let reconciled = "controller_runtime_reconcile_total";
    let deadline = Instant::now() + WAIT;
    let mut acquired = None;
    loop {
        let text = standby.metrics().await.unwrap_or_default();
        if acquired.is_none() && sample(&text, leading, "") == Some(1.0) {
            acquired = Some(Instant::now());
        }
        if sample(&text, reconciled, "").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never reconciled:\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill_to_reconcile = killed.elapsed();
    let acquired_to_reconcile = acquired.map_or(Duration::ZERO, |at| at.elapsed());
    let lists_after_kill = env.request_count("LIST", "widgets").await.unwrap() - lists_before;
    let mut standby = standby;
    standby.kill().await;
    Failover {
        kill_to_reconcile,
        acquired_to_reconcile,
        lists_after_kill,
        standby_rss_kib,
    }
}

#[tokio::test]
async fn a_warm_standby_takes_over_without_listing() {
    let _serial = SERIAL.lock().await;
    let n = size_from_env("BONNY_E2E_FAILOVER_N", 100);
    let env = env().await;
    let client = env.client();
    let namespace = "failover";
    env.create_namespace(namespace).await.unwrap();
    create_widgets(&client, namespace, n).await;
    let cold = failover(&env, namespace, n, false).await;
    let warm = failover(&env, namespace, n, true).await;
    println!(
        "figures: failover at {n} widgets (lease 3s, retry 500ms): kill to first completed reconcile \
         cold {:.2}s, warm {:.2}s (from acquisition, as polled every 10 ms: cold {:.0} ms, warm \
         {:.0} ms); LISTs of widgets after the kill cold {}, warm {}; standby RSS cold {:.1} MiB, \
         warm {:.1} MiB",
        cold.kill_to_reconcile.as_secs_f64(),
        warm.kill_to_reconcile.as_secs_f64(),
        cold.acquired_to_reconcile.as_secs_f64() * 1000.0,
        warm.acquired_to_reconcile.as_secs_f64() * 1000.0,
        cold.lists_after_kill,
        warm.lists_after_kill,
        cold.standby_rss_kib as f64 / 1024.0,
        warm.standby_rss_kib as f64 / 1024.0,
    );
    assert!(
        cold.lists_after_kill >= 1,
        "a cold standby lists on takeover"
    );
    assert_eq!(
        warm.lists_after_kill, 0,
        "a warm standby reconciles from its synced cache"
    );
}
