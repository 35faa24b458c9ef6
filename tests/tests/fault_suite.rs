//! The fault suite (issue 12, item 5): the Widget operator on a real etcd + kube-apiserver
//! while the control plane or the operator itself fails, each scenario ending with an exact
//! count of what was lost or duplicated, which must be zero:
//!
//! 1. the API server restarted while widgets are created, updated and deleted;
//! 2. etcd compacted under the operator's watches, so its re-watch is `410 Gone`;
//! 3. the leader SIGKILLed while a deletion's cleanup runs, before the finalizer is removed;
//! 4. churn: the leader SIGKILLed every 10 s while widgets are created and updated.
//!
//! Children are counted by the test's own watch (distinct UIDs per name) and by the API
//! server's audit log (`201 Created` answers); cleanups by the ledger every replica writes
//! ([`bonny_e2e::ledger`]). Each scenario prints its figures on one `figures:` line.
//!
//! Sizes: small by default, for CI; `BONNY_FAULT_SCALE=full` runs the sizes of the issue
//! (500 widgets and 5 restarts, 5,000 widgets and 2 minutes of kills).
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bonny::testing::TestEnv;
use bonny_e2e::{
    census::{self, Census, Tally, child_name},
    eventually,
    gated::GATE,
    in_process::InProcess,
    init_tracing,
    ledger::{self, Ledger, Step},
    widget::{Widget, WidgetController, widget},
    witness::{self, Event, Witness},
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::process::{Child, Command};

/// How long a single step (a write, a reconcile) may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);
/// Concurrent writes of the test's workload.
const WRITERS: usize = 8;

/// Whether `BONNY_FAULT_SCALE=full` asks for the sizes (unset or `ci`: CI sizes).
fn full_scale() -> bool {
    match std::env::var("BONNY_FAULT_SCALE").as_deref() {
        Err(_) | Ok("" | "ci") => false,
        Ok("full") => true,
        Ok(other) => panic!("BONNY_FAULT_SCALE must be `ci` or `full`, not {other:?}"),
    }
}

/// `ci` by default, `full` under `BONNY_FAULT_SCALE=full`.
fn scaled<T>(ci: T, full: T) -> T {
    if full_scale() { full } else { ci }
}

/// Polls `probe` (what is still wrong) until it reports nothing or `timeout` passes, and
/// returns its last report: the test then prints and asserts the exact count.
async fn settle<F, Fut>(timeout: Duration, mut probe: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let wrong = probe().await;
        if wrong.is_empty() || Instant::now() >= deadline {
            return wrong;
        }
        // A poll interval, not a synchronisation: the probe decides.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Repeats a write until the API server answers it, through restarts and failovers. A
/// create whose first answer was lost is `409` on the retry, a delete `404`: both done.
async fn persist<F, Fut, T>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match write().await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => return,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: still failing after {WAIT:?}: {error}"
                );
                // A retry interval while the API server is away, not a synchronisation.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What the widgets of `namespace` still lack: for each name in `sizes`, a status and a
/// child showing that size; for each name in `deleted`, being gone.
async fn unconverged(
    client: &Client,
    namespace: &str,
    sizes: &BTreeMap<String, u32>,
    deleted: &BTreeSet<String>,
) -> Vec<String> {
    let widgets: Api<Widget> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let (Ok(widgets), Ok(configmaps)) = (
        widgets.list(&ListParams::default()).await,
        configmaps.list(&ListParams::default()).await,
    ) else {
        return vec!["the API server did not answer the lists".to_owned()];
    };
    let live: BTreeMap<String, Widget> = widgets
        .items
        .into_iter()
        .map(|w| (w.name_any(), w))
        .collect();
    let children: BTreeMap<String, String> = configmaps
        .items
        .into_iter()
        .filter_map(|cm| {
            let size = cm.data.as_ref()?.get("size")?.clone();
            Some((cm.name_any(), size))
        })
        .collect();
    let mut wrong = Vec::new();
    for (name, size) in sizes {
        let status = live
            .get(name)
            .and_then(|w| w.status.as_ref())
            .and_then(|s| s.size);
        let child = children.get(&child_name(name));
        if status != Some(*size) || child.map(String::as_str) != Some(size.to_string().as_str()) {
            wrong.push(format!(
                "{name}: want size {size}, status {status:?}, child {child:?}"
            ));
        }
    }
    for name in deleted {
        if live.contains_key(name) {
            wrong.push(format!("{name}: deleted but still present"));
        }
    }
    wrong
}

/// The Widget operator in this process, on one namespace.
struct Widgets {
    process: InProcess,
    controller: WidgetController,
}

impl Widgets {
    fn start(client: Client, namespace: &str) -> Self {
        let controller = WidgetController::default();
        let process = InProcess::start(
            InProcess::builder("fault-e2e", client, namespace).controller(controller.clone()),
        );
        Self {
            process,
            controller,
        }
    }

    async fn stop(self) {
        self.process.stop().await;
    }
}

async fn env_with(builder: bonny::testing::TestEnvBuilder, namespace: &str) -> TestEnv {
    init_tracing();
    let env = builder.start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env.create_namespace(namespace).await.unwrap();
    env
}

/// Child creations per the audit log, once it shows a creation of every `expected` child
/// (or after 10 s): the audit record of a request may trail its answer by a moment, and the
/// log never stops growing (Lease renewals), so "settled" is judged by its content.
///
/// A create answered by an API server that is being stopped may lack its record (or its
/// `201`): the audit log is a witness of duplicates, the test's watch and lists of losses.
async fn audited(env: &TestEnv, expected: &[String]) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let created = census::audited_creations(&env.audit_log().unwrap());
        if expected.iter().all(|key| created.contains_key(key)) || Instant::now() >= deadline {
            return created;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Widget lists in `namespace` the audit log shows after its first `from` records.
fn widget_lists_since(env: &TestEnv, from: usize, namespace: &str) -> usize {
    let records = env.audit_log().unwrap();
    records[from.min(records.len())..]
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "widgets" && r.namespace == namespace)
        .count()
}

/// Keys (`<namespace>/<child name>`) of the children `names` should have.
fn child_keys<'a>(namespace: &str, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    names
        .into_iter()
        .map(|name| format!("{namespace}/{}", child_name(name)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarts_during_create_update_delete_lose_and_duplicate_nothing() {
    const NS: &str = "restarts";
    let count: usize = scaled(100, 500);
    let restarts: usize = scaled(3, 5);
    let started = Instant::now();
    let mut env = env_with(TestEnv::builder(), NS).await;
    let client = env.client();
    let census = Census::start(client.clone());
    let operator = Widgets::start(client.clone(), NS);

    let names: Vec<String> = (0..count).map(|i| format!("w-{i:04}")).collect();
    let deleted: BTreeSet<String> = names.iter().step_by(3).cloned().collect();
    let total_ops = names.len() * 2 + deleted.len();
    let progress = Arc::new(AtomicUsize::new(0));
    let workload = tokio::spawn({
        let (names, deleted, progress) = (names.clone(), deleted.clone(), progress.clone());
        let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
        async move {
            // Three phases, each finished before the next: create all, resize all, delete some.
            let phases = [
                ("create", names.clone()),
                ("update", names),
                ("delete", deleted.into_iter().collect()),
            ];
            let writers = Arc::new(tokio::sync::Semaphore::new(WRITERS));
            for (op, names) in phases {
                let mut tasks = Vec::with_capacity(names.len());
                for name in names {
                    let permit = writers.clone().acquire_owned().await.unwrap();
                    let (widgets, progress) = (widgets.clone(), progress.clone());
                    tasks.push(tokio::spawn(async move {
                        let what = format!("{op} {name}");
                        match op {
                            "create" => {
                                persist(&what, || async {
                                    widgets
                                        .create(&PostParams::default(), &widget(&name, 1))
                                        .await
                                })
                                .await;
                            }
                            "update" => {
                                let patch = Patch::Merge(json!({"spec": {"size": 2}}));
                                persist(&what, || async {
                                    widgets.patch(&name, &PatchParams::default(), &patch).await
                                })
                                .await;
                            }
                            _ => {
                                persist(&what, || async {
                                    widgets.delete(&name, &DeleteParams::default()).await
                                })
                                .await;
                            }
                        }
                        progress.fetch_add(1, Ordering::SeqCst);
                        drop(permit);
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            }
        }
    });

    // Restarts spread over the workload: the k-th once k/(restarts+1) of the writes are in.
    let mut outages = Vec::new();
    for k in 1..=restarts {
        let due = k * total_ops / (restarts + 1);
        eventually(
            &format!("{due} writes before restart {k}"),
            WAIT * 5,
            || async { (progress.load(Ordering::SeqCst) >= due).then_some(()) },
        )
        .await;
        let at = Instant::now();
        env.restart_apiserver().await.unwrap();
        outages.push(at.elapsed());
    }
    tokio::time::timeout(WAIT * 5, workload)
        .await
        .unwrap()
        .unwrap();

    let sizes: BTreeMap<String, u32> = names
        .iter()
        .filter(|n| !deleted.contains(*n))
        .map(|n| (n.clone(), 2))
        .collect();
    let wrong = settle(WAIT * 3, || unconverged(&client, NS, &sizes, &deleted)).await;
    let kept = child_keys(NS, sizes.keys());
    let watched = Tally::of(&kept, &census.creations());
    let audit = Tally::of(&kept, &audited(&env, &kept).await);
    let cleanups = operator.controller.counters.cleanups();
    // A deleted widget whose child exists reached `apply` (the finalizer is added first), so
    // its cleanup must have run.
    let created = census.creations();
    let applied_then_deleted = child_keys(NS, &deleted)
        .iter()
        .filter(|key| created.contains_key(*key))
        .count();
    println!(
        "figures: api server restarts: {widgets} widgets ({kept} kept, {del} deleted), {restarts} restarts (outages {outages:?}), \
         {ops} writes; not converged {nc}; children lost {wl} (watch; {al} without an audited 201, cut by a restart), duplicated {wd} (watch) / {ad} (audit); \
         cleanups {cleanups} for {del} deletions ({applied_then_deleted} after apply); census watch errors {errors}; {secs:.1}s",
        widgets = names.len(),
        kept = kept.len(),
        del = deleted.len(),
        ops = total_ops,
        nc = wrong.len(),
        wl = watched.lost.len(),
        al = audit.lost.len(),
        wd = watched.extra(),
        ad = audit.extra(),
        errors = census.errors(),
        secs = started.elapsed().as_secs_f64(),
    );
    assert_eq!(wrong.len(), 0, "not converged: {wrong:#?}");
    assert_eq!(
        watched.lost.len(),
        0,
        "children never seen: {:?}",
        watched.lost
    );
    assert_eq!(
        watched.extra(),
        0,
        "children re-created: {:?}",
        watched.duplicated
    );
    assert_eq!(
        audit.extra(),
        0,
        "children created twice: {:?}",
        audit.duplicated
    );
    // Every deleted widget is gone, so its finalizer (if it had one) was removed after a
    // cleanup; a cleanup repeated because its answer was lost in a restart is allowed (at
    // least once).
    assert!(
        cleanups >= applied_then_deleted,
        "{cleanups} cleanups for {applied_then_deleted} widgets deleted after apply"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_expired_by_compaction_is_relisted_and_nothing_is_duplicated() {
    const NS: &str = "expiry";
    let started = Instant::now();
    // Without the watch cache every watch reaches etcd: a compacted resourceVersion is `410
    // Gone` at once instead of being served from the API server's window.
    let mut env = env_with(TestEnv::builder().watch_cache(false), NS).await;
    let client = env.client();
    let operator = Widgets::start(client.clone(), NS);
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
    let nothing_deleted = BTreeSet::new();
    let before: Vec<String> = (0..scaled(5, 50)).map(|i| format!("before-{i}")).collect();
    for name in &before {
        widgets
            .create(&PostParams::default(), &widget(name, 1))
            .await
            .unwrap();
    }
    let sizes: BTreeMap<String, u32> = before.iter().map(|n| (n.clone(), 1)).collect();
    let wrong = settle(WAIT, || unconverged(&client, NS, &sizes, &nothing_deleted)).await;
    assert_eq!(
        wrong.len(),
        0,
        "not converged before the compaction: {wrong:#?}"
    );

    // The control: a plain restart, no compaction. The watches resume where they were (no
    // re-list expected); a widget created after it shows they work.
    let records_before = env.audit_log().unwrap().len();
    env.restart_apiserver().await.unwrap();
    persist("create control", || async {
        widgets
            .create(&PostParams::default(), &widget("control", 2))
            .await
    })
    .await;
    eventually("the control widget reconciled", WAIT, || async {
        let status = widgets.get("control").await.ok()?.status?;
        (status.size == Some(2)).then_some(())
    })
    .await;
    let lists_without_compaction = widget_lists_since(&env, records_before, NS);

    // Writes elsewhere move etcd past every version the operator's watches last saw, then the
    // compaction removes those versions and the restart breaks the watches: each must resume
    // from a version that is gone.
    let noise: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("noise-{i}")),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        noise.create(&PostParams::default(), &cm).await.unwrap();
    }
    let records_before = env.audit_log().unwrap().len();
    let revision = env.compact_etcd().await.unwrap();
    let restart_at = Instant::now();
    env.restart_apiserver().await.unwrap();
    let outage = restart_at.elapsed();

    // The operator re-lists widgets: its watch resumed from a version etcd no longer has
    // (a watch resumed from a version etcd still had would not need a list). Nothing else
    // lists widgets until the test's own checks below.
    let relists = eventually("the operator to re-list widgets", WAIT, || async {
        let relists = widget_lists_since(&env, records_before, NS);
        (relists > 0).then_some(relists)
    })
    .await;

    // A widget created after the compaction, and a change to one from before it.
    persist("create after-0", || async {
        widgets
            .create(&PostParams::default(), &widget("after-0", 4))
            .await
    })
    .await;
    let patch = Patch::Merge(json!({"spec": {"size": 3}}));
    persist("update before-0", || async {
        widgets
            .patch("before-0", &PatchParams::default(), &patch)
            .await
    })
    .await;
    let mut sizes = sizes;
    sizes.insert("control".to_owned(), 2);
    sizes.insert("after-0".to_owned(), 4);
    sizes.insert("before-0".to_owned(), 3);
    let wrong = settle(WAIT * 2, || {
        unconverged(&client, NS, &sizes, &nothing_deleted)
    })
    .await;

    let expected = child_keys(NS, sizes.keys());
    let audit = Tally::of(&expected, &audited(&env, &expected).await);
    println!(
        "figures: watch expiry: {widgets} widgets, 1 compaction (revision {revision}) + 1 API server restart (outage {outage:?}); \
         operator re-lists of widgets after it {relists} (after a restart without compaction: {lists_without_compaction}); not converged {nc}; children lost {lost}, duplicated {dup}; {secs:.1}s",
        widgets = sizes.len(),
        nc = wrong.len(),
        lost = audit.lost.len(),
        dup = audit.extra(),
        secs = started.elapsed().as_secs_f64(),
    );
    assert!(
        relists >= 1,
        "the operator never re-listed widgets after the compaction"
    );
    assert_eq!(
        wrong.len(),
        0,
        "not converged after the compaction: {wrong:#?}"
    );
    assert_eq!(
        audit.lost.len(),
        0,
        "children never created: {:?}",
        audit.lost
    );
    assert_eq!(
        audit.extra(),
        0,
        "children created twice: {:?}",
        audit.duplicated
    );
    operator.stop().await;
}

// Scenarios 3 and 4: three `fault-operator` processes under leader election.

const LEASE_NAMESPACE: &str = "default";
const OPERATOR: &str = "fault-e2e";
const REPLICAS: [&str; 3] = ["fault-a", "fault-b", "fault-c"];
/// Lease 3 s, renew deadline 2 s, retry period 500 ms, as in `leader_election.rs`.
const LEASE_DURATION: Duration = Duration::from_secs(3);

/// The fleet tests run one at a time: each measures failovers on its own control plane.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A control plane, three replicas, their witness and ledger.
struct Fleet {
    // Declared first, dropped first: replicas are killed before the control plane goes.
    replicas: BTreeMap<String, Child>,
    env: TestEnv,
    /// `None` once kept for a failed test's post-mortem.
    dir: Option<tempfile::TempDir>,
    witness: Witness,
    ledger: Ledger,
    leases: Api<Lease>,
    lease_name: String,
    spawned: usize,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Fleet {
    async fn start(namespace: &str) -> Self {
        let serial = SERIAL.lock().await;
        let env = env_with(TestEnv::builder(), namespace).await;
        let dir = tempfile::Builder::new()
            .prefix("bonny-fault-suite-")
            .tempdir()
            .unwrap();
        let witness = Witness::new(dir.path().join("witness"));
        let ledger = Ledger::new(dir.path().join("ledger"));
        let leases = Api::namespaced(env.client(), LEASE_NAMESPACE);
        let mut fleet = Self {
            replicas: BTreeMap::new(),
            env,
            dir: Some(dir),
            witness,
            ledger,
            leases,
            lease_name: bonny::leader::default_lease_name(LEASE_NAMESPACE, OPERATOR),
            spawned: 0,
            _serial: serial,
        };
        for name in REPLICAS {
            let identity = format!("{name}-{}", fleet.spawned + 1);
            fleet.spawn(&identity);
        }
        println!("replica logs in {}", fleet.dir().display());
        fleet
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn spawn(&mut self, name: &str) {
        self.spawned += 1;
        let log: PathBuf = self.dir().join(format!("{name}.log"));
        let stdout = std::fs::File::create(&log).unwrap();
        let stderr = stdout.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fault-operator"))
            .env("KUBECONFIG", self.env.kubeconfig_path())
            .env("WITNESS_FILE", self.witness.path())
            .env("LEDGER_FILE", self.ledger.path())
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", LEASE_NAMESPACE)
            .env("BONNY_LEASE_DURATION", "3s")
            .env("BONNY_RENEW_DEADLINE", "2s")
            .env("BONNY_RETRY_PERIOD", "500ms")
            .env("RUST_LOG", "info,bonny=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        assert!(
            self.replicas.insert(name.to_owned(), child).is_none(),
            "{name} was already running"
        );
    }

    /// SIGKILL, reap and witness the kill of `name`, then start a replica in its place under
    /// a new identity (`fault-a-1` becomes `fault-a-4`, say), so that the ledger and the
    /// witness tell the killed process from its replacement.
    async fn kill_and_respawn(&mut self, name: &str) {
        let mut child = self.replicas.remove(name).unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        self.witness.append(name, Event::Kill).unwrap();
        let base = name.rsplit_once('-').map_or(name, |(base, _)| base);
        let replacement = format!("{base}-{}", self.spawned + 1);
        self.spawn(&replacement);
    }

    async fn holder(&self) -> Option<String> {
        self.leases
            .get_opt(&self.lease_name)
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
            .filter(|holder| !holder.is_empty())
    }

    /// The Lease holder, once the witness shows it (and only it) running controllers.
    async fn leader(&self, within: Duration) -> String {
        eventually("a leader running alone", within, || async {
            let holder = self.holder().await?;
            let intervals = self.witness.intervals().unwrap();
            (witness::running(&intervals) == [holder.as_str()]).then_some(holder)
        })
        .await
    }

    fn assert_alive(&mut self) {
        let dir = self.dir().to_path_buf();
        for (name, child) in &mut self.replicas {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}); see {}", dir.display());
            }
        }
    }

    /// The controller-running intervals so far and every overlap between two of them, for
    /// the figures; [`assert_no_overlap`] then fails the test on any.
    fn overlaps(&self) -> (usize, Vec<witness::Overlap>) {
        let intervals = self.witness.intervals().unwrap();
        let overlaps = witness::overlaps(&intervals, witness::monotonic_now());
        (intervals.len(), overlaps)
    }
}

/// `"<n> controller intervals, <k> overlapping (longest <d>)"`.
fn describe(intervals: usize, overlaps: &[witness::Overlap]) -> String {
    let longest = overlaps.iter().map(|o| o.length).max().unwrap_or_default();
    format!(
        "{intervals} controller intervals, {} overlapping (longest {longest:?})",
        overlaps.len()
    )
}

/// Fails naming every overlap: two replicas ran controllers at once.
fn assert_no_overlap(overlaps: &[witness::Overlap]) {
    let list: Vec<String> = overlaps.iter().map(ToString::to_string).collect();
    assert!(list.is_empty(), "two leaders at once:\n{}", list.join("\n"));
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "kept the replicas' logs, witness and ledger in {}",
                kept.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_cleanup_is_succeeded_and_each_cleanup_completes_once() {
    const NS: &str = "failover";
    let rounds: usize = scaled(1, 3);
    let per_round: usize = scaled(3, 10);
    let started = Instant::now();
    let mut fleet = Fleet::start(NS).await;
    let client = fleet.env.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let (nothing_deleted, nothing_kept) = (BTreeSet::new(), BTreeMap::new());
    fleet.leader(WAIT).await;

    let mut uids = BTreeMap::new();
    let mut killed = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..rounds {
        let names: Vec<String> = (0..per_round).map(|i| format!("r{round}-{i}")).collect();
        for name in &names {
            let created = widgets
                .create(&PostParams::default(), &widget(name, 1))
                .await
                .unwrap();
            uids.insert(created.uid().unwrap(), name.clone());
        }
        let sizes: BTreeMap<String, u32> = names.iter().map(|n| (n.clone(), 1)).collect();
        let wrong = settle(WAIT, || unconverged(&client, NS, &sizes, &nothing_deleted)).await;
        assert_eq!(wrong.len(), 0, "not converged before deletion: {wrong:#?}");

        // The gate holds every cleanup between its start and the finalizer's removal.
        let gate = ConfigMap {
            metadata: ObjectMeta {
                name: Some(GATE.to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        configmaps
            .create(&PostParams::default(), &gate)
            .await
            .unwrap();
        for name in &names {
            widgets
                .delete(name, &DeleteParams::default())
                .await
                .unwrap();
        }
        let round_uids: BTreeSet<String> = uids
            .iter()
            .filter(|(_, n)| names.contains(n))
            .map(|(uid, _)| uid.clone())
            .collect();
        let leader = fleet.leader(WAIT).await;
        eventually(
            &format!("{leader} to begin every cleanup of round {round}"),
            WAIT,
            || async {
                let entries = fleet.ledger.entries().unwrap();
                let begun: BTreeSet<&String> = entries
                    .iter()
                    .filter(|e| e.step == Step::Begin && e.identity == leader)
                    .map(|e| &e.uid)
                    .collect();
                round_uids
                    .iter()
                    .all(|uid| begun.contains(uid))
                    .then_some(())
            },
        )
        .await;

        // Killed while every cleanup waits at the gate: none of them is done.
        let killed_at = Instant::now();
        fleet.kill_and_respawn(&leader).await;
        killed.push((leader.clone(), round_uids.clone()));
        configmaps
            .delete(GATE, &DeleteParams::default())
            .await
            .unwrap();
        let deleted: BTreeSet<String> = names.iter().cloned().collect();
        let wrong = settle(WAIT, || unconverged(&client, NS, &nothing_kept, &deleted)).await;
        failovers.push(killed_at.elapsed());
        assert_eq!(
            wrong.len(),
            0,
            "deletions not completed after the failover: {wrong:#?}"
        );
    }

    let entries = fleet.ledger.entries().unwrap();
    let done = ledger::count(&entries, Step::Done);
    let lost: Vec<&String> = uids.keys().filter(|uid| !done.contains_key(*uid)).collect();
    let duplicated: usize = done.values().map(|n| n.saturating_sub(1)).sum();
    // Per round: what the leader killed in that round began and finished of its objects.
    let by_killed = |step: Step| {
        killed
            .iter()
            .map(|(leader, round_uids)| {
                entries
                    .iter()
                    .filter(|e| e.step == step && e.identity == *leader)
                    .filter(|e| round_uids.contains(&e.uid))
                    .count()
            })
            .sum::<usize>()
    };
    let (begun_by_killed, by_killed) = (by_killed(Step::Begin), by_killed(Step::Done));
    fleet.assert_alive();
    let (intervals, overlaps) = fleet.overlaps();
    let intervals = describe(intervals, &overlaps);
    println!(
        "figures: failover during deletion: {objects} widgets deleted, {rounds} leader kills mid-cleanup \
         ({begun_by_killed} cleanups begun by killed leaders, {by_killed} finished by them), \
         deletion completed {failovers:?} after each kill (lease {LEASE_DURATION:?}); cleanups lost {lost}, duplicated {duplicated}; \
         {intervals}; {secs:.1}s",
        objects = uids.len(),
        lost = lost.len(),
        secs = started.elapsed().as_secs_f64(),
    );
    // A killed process never runs again (replacements have new identities), so it finished
    // none of the cleanups it had begun: each was finished once, by a successor.
    assert_eq!(by_killed, 0, "a killed leader finished cleanups");
    assert_eq!(lost.len(), 0, "cleanups that never completed: {lost:?}");
    assert_eq!(duplicated, 0, "cleanups completed more than once: {done:?}");
    assert_eq!(
        done.len(),
        uids.len(),
        "cleanups of unknown objects: {done:?}"
    );
    assert_no_overlap(&overlaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_the_leader_killed_every_ten_seconds_converges_with_each_child_created_once() {
    const NS: &str = "churn";
    let count: usize = scaled(200, 5000);
    let window = scaled(Duration::from_secs(30), Duration::from_secs(120));
    let cadence = Duration::from_secs(10);
    let started = Instant::now();
    let mut fleet = Fleet::start(NS).await;
    let client = fleet.env.client();
    let census = Census::start(client.clone());
    let nothing_deleted = BTreeSet::new();
    fleet.leader(WAIT).await;

    // Widgets are created over the kill window, and every other one resized once created.
    let names: Vec<String> = (0..count).map(|i| format!("c-{i:05}")).collect();
    let pace = window / u32::try_from(count).unwrap();
    let workload = tokio::spawn({
        let names = names.clone();
        let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
        async move {
            let writers = Arc::new(tokio::sync::Semaphore::new(WRITERS));
            let mut ticks = tokio::time::interval(pace);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::with_capacity(names.len());
            for (i, name) in names.into_iter().enumerate() {
                ticks.tick().await;
                let permit = writers.clone().acquire_owned().await.unwrap();
                let widgets = widgets.clone();
                tasks.push(tokio::spawn(async move {
                    persist(&format!("create {name}"), || async {
                        widgets
                            .create(&PostParams::default(), &widget(&name, 1))
                            .await
                    })
                    .await;
                    if i % 2 == 0 {
                        let patch = Patch::Merge(json!({"spec": {"size": 2}}));
                        persist(&format!("update {name}"), || async {
                            widgets.patch(&name, &PatchParams::default(), &patch).await
                        })
                        .await;
                    }
                    drop(permit);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    });

    // The kill cadence is a timer: whoever leads when it fires is killed (mid-failover, the
    // next leader as soon as there is one).
    let planned = window.as_secs() / cadence.as_secs();
    let mut kills = Vec::new();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + cadence, cadence);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..planned {
        ticks.tick().await;
        let leader = match fleet.holder().await {
            Some(holder) if fleet.replicas.contains_key(&holder) => holder,
            _ => fleet.leader(WAIT).await,
        };
        fleet.kill_and_respawn(&leader).await;
        kills.push(leader);
    }
    tokio::time::timeout(WAIT * 5, workload)
        .await
        .unwrap()
        .unwrap();

    // One more widget after the last kill: the last successor works too.
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NS);
    persist("create c-final", || async {
        widgets
            .create(&PostParams::default(), &widget("c-final", 3))
            .await
    })
    .await;
    let mut sizes: BTreeMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), if i % 2 == 0 { 2 } else { 1 }))
        .collect();
    sizes.insert("c-final".to_owned(), 3);
    let converge_from = Instant::now();
    let wrong = settle(scaled(WAIT * 3, WAIT * 15), || {
        unconverged(&client, NS, &sizes, &nothing_deleted)
    })
    .await;
    let converged_after = converge_from.elapsed();
    let expected = child_keys(NS, sizes.keys());
    let watched = Tally::of(&expected, &census.creations());
    let audit = Tally::of(&expected, &audited(&fleet.env, &expected).await);
    fleet.assert_alive();
    let (intervals, overlaps) = fleet.overlaps();
    let intervals = describe(intervals, &overlaps);
    println!(
        "figures: churn: {widgets} widgets ({updates} resized, 1 after the last kill), 3 replicas, {k} leader SIGKILLs every {cadence:?} \
         ({kills:?}); converged {converged_after:.1?} after the kills; not converged {nc}; children lost {wl} (watch; {al} without an audited 201, cut by a kill), \
         duplicated {wd} (watch) / {ad} (audit); {intervals}; {secs:.1}s",
        widgets = names.len(),
        updates = names.len().div_ceil(2),
        k = kills.len(),
        nc = wrong.len(),
        wl = watched.lost.len(),
        al = audit.lost.len(),
        wd = watched.extra(),
        ad = audit.extra(),
        secs = started.elapsed().as_secs_f64(),
    );
    assert_eq!(
        wrong.len(),
        0,
        "not converged: {:#?}",
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(
        watched.lost.len(),
        0,
        "children never seen: {:?}",
        watched.lost
    );
    assert_eq!(
        watched.extra(),
        0,
        "children re-created: {:?}",
        watched.duplicated
    );
    assert_eq!(
        audit.extra(),
        0,
        "children created twice: {:?}",
        audit.duplicated
    );
    assert_no_overlap(&overlaps);
}
