//! The proof of leader election (LEADER_ELECTION.md, "How it is proved"): three `le-operator`
//! processes on a real etcd + kube-apiserver, each appending its controller-running intervals
//! to a witness file; every test ends by asserting that no two intervals overlap. The frozen
//! leader's test (FENCING.md) witnesses writes instead: a frozen process runs nothing, yet its
//! interval stays open until it resumes, so there the API server's stored versions testify.
//!
//! Timings: lease 3 s, renew deadline 2 s, retry period 500 ms. Failover times are measured
//! on `CLOCK_MONOTONIC` (kill → the new leader's witnessed `start`) and printed. The tests of
//! this file run one at a time: each starts its own control plane and three replicas, and
//! running them side by side on a small machine would measure the machine, not the elector.
//!
//! A failing test prints the witness, the history of the Lease and each replica's log, and
//! keeps the directory with the logs.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bonny::testing::{Proxy, TestEnv};
use bonny_e2e::{
    eventually,
    widget::{Widget, WidgetSpec},
    witness::{self, Event, Interval, Record, Witness, monotonic_now},
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, CustomResourceExt,
    api::{DynamicObject, PostParams},
    discovery::ApiResource,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
};

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// Slack for process scheduling, request latency and stopping controllers on a busy machine.
const MARGIN: Duration = Duration::from_secs(1);
/// Crash failover: a standby sees the last renewal (by watch) and takes over one lease
/// duration later; the renewal may be up to a retry period older than the kill.
const CRASH_BOUND: Duration = LEASE_DURATION
    .saturating_add(RETRY_PERIOD)
    .saturating_add(MARGIN);
/// Graceful failover: the leader stops its controllers, releases the Lease, and a standby
/// sees the release by watch (polling would take at most a jittered retry period).
const RELEASE_BOUND: Duration = RETRY_PERIOD.saturating_add(MARGIN);
/// From spawning replicas to the first leader: process start, client setup, first election.
const STARTUP: Duration = Duration::from_secs(60);
/// How long a probe waits before failing; measured times are asserted against the bounds.
const PATIENCE: Duration = Duration::from_secs(30);

const NAMESPACE: &str = "default";
const OPERATOR: &str = "le-e2e";
const REPLICAS: [&str; 3] = ["le-a", "le-b", "le-c"];

/// The tests of this file run one at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a replica reaches the API server, and whether its wall clock is faked.
#[derive(Clone, Debug, Default)]
struct Options {
    /// A kubeconfig other than the environment's (a proxy's).
    kubeconfig: Option<PathBuf>,
    /// `(libfaketime path, FAKETIME offset)`.
    faketime: Option<(PathBuf, String)>,
    /// Run the scribe (a write on every reconcile) instead of the Widget controller.
    scribe: bool,
}

impl Options {
    fn via(proxy: &Proxy) -> Self {
        Self {
            kubeconfig: Some(proxy.kubeconfig_path().to_path_buf()),
            ..Self::default()
        }
    }

    fn skewed(offset: &str) -> Self {
        Self {
            faketime: Some((libfaketime(), offset.to_owned())),
            ..Self::default()
        }
    }
}

struct Replica {
    child: Child,
    log: PathBuf,
    options: Options,
}

/// What the Lease looked like when the test's watch saw it.
#[derive(Clone, Debug)]
struct Seen {
    at: Duration,
    holder: Option<String>,
    line: String,
}

/// One control plane, the replicas, the witness, and a watch on the Lease for diagnostics.
struct Election {
    // Declared first, dropped first: replicas are killed before the control plane goes.
    replicas: BTreeMap<String, Replica>,
    env: TestEnv,
    dir: Option<tempfile::TempDir>,
    witness: Witness,
    origin: Duration,
    leases: Api<Lease>,
    lease_name: String,
    spawned: usize,
    history: Arc<Mutex<Vec<Seen>>>,
    history_task: JoinHandle<()>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Election {
    async fn start() -> Self {
        let serial = SERIAL.lock().await;
        bonny_e2e::init_tracing();
        let env = TestEnv::start().await.unwrap();
        env.install_crd(Widget::crd()).await.unwrap();
        let dir = tempfile::Builder::new()
            .prefix("bonny-leader-election-")
            .tempdir()
            .unwrap();
        let witness = Witness::new(dir.path().join("witness"));
        let origin = monotonic_now();
        let leases: Api<Lease> = Api::namespaced(env.client(), NAMESPACE);
        let lease_name = bonny::leader::default_lease_name(NAMESPACE, OPERATOR);
        let history = Arc::new(Mutex::new(Vec::new()));
        let history_task = tokio::spawn(record_history(
            leases.clone(),
            lease_name.clone(),
            history.clone(),
        ));
        println!(
            "timings: lease {LEASE_DURATION:?}, renew deadline {RENEW_DEADLINE:?}, retry period {RETRY_PERIOD:?}; logs in {}",
            dir.path().display()
        );
        Self {
            env,
            dir: Some(dir),
            witness,
            origin,
            leases,
            lease_name,
            replicas: BTreeMap::new(),
            spawned: 0,
            history,
            history_task,
            _serial: serial,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Seconds since the test started, for messages.
    fn rel(&self, at: Duration) -> f64 {
        at.as_secs_f64() - self.origin.as_secs_f64()
    }

    fn spawn(&mut self, name: &str, options: Options) {
        self.spawned += 1;
        let log = self.dir().join(format!("{}-{name}.log", self.spawned));
        // bonny logs to stdout; both streams go to the replica's log.
        let stdout = std::fs::File::create(&log).unwrap();
        let stderr = stdout.try_clone().unwrap();
        let kubeconfig = options
            .kubeconfig
            .clone()
            .unwrap_or_else(|| self.env.kubeconfig_path().to_path_buf());
        let mut command = Command::new(env!("CARGO_BIN_EXE_le-operator"));
        command
            .env("KUBECONFIG", kubeconfig)
            .env("WITNESS_FILE", self.witness.path())
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", NAMESPACE)
            .env("BONNY_LEASE_DURATION", "3s")
            .env("BONNY_RENEW_DEADLINE", "2s")
            .env("BONNY_RETRY_PERIOD", "500ms")
            .env("RUST_LOG", "info,bonny=debug")
            .env("NO_COLOR", "1")
            .env_remove("LD_PRELOAD")
            .env_remove("FAKETIME")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        if options.scribe {
            command.env("SCRIBE", "1");
        }
        if let Some((library, offset)) = &options.faketime {
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.spawn().unwrap();
        let replaced = self.replicas.insert(
            name.to_owned(),
            Replica {
                child,
                log,
                options,
            },
        );
        assert!(replaced.is_none(), "{name} was already running");
    }

    fn spawn_all(&mut self) {
        for name in REPLICAS {
            self.spawn(name, Options::default());
        }
    }

    /// SIGKILL, reap, and witness the kill. Returns the instant just before the signal.
    async fn kill(&mut self, name: &str) -> Duration {
        let replica = self.replicas.get_mut(name).unwrap();
        let at = monotonic_now();
        replica.child.start_kill().unwrap();
        replica.child.wait().await.unwrap();
        self.witness.append(name, Event::Kill).unwrap();
        at
    }

    /// SIGTERM and wait for the exit. Returns the instant just before the signal.
    async fn terminate(&mut self, name: &str) -> (Duration, ExitStatus) {
        let replica = self.replicas.get_mut(name).unwrap();
        let pid = rustix::process::Pid::from_raw(replica.child.id().unwrap() as i32).unwrap();
        let at = monotonic_now();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = tokio::time::timeout(PATIENCE, replica.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit within {PATIENCE:?} of SIGTERM"))
            .unwrap();
        (at, status)
    }

    /// Forgets an exited replica, keeping how to start it again.
    fn remove(&mut self, name: &str) -> Options {
        self.replicas.remove(name).unwrap().options
    }

    /// Kills and forgets `name`, returning the kill instant and how to start it again.
    async fn kill_and_respawn_later(&mut self, name: &str) -> (Duration, Options) {
        let at = self.kill(name).await;
        (at, self.remove(name))
    }

    fn records(&self) -> Vec<Record> {
        self.witness.records().unwrap()
    }

    fn intervals(&self) -> Vec<Interval> {
        self.witness.intervals().unwrap()
    }

    async fn lease(&self) -> Option<Lease> {
        self.leases.get_opt(&self.lease_name).await.ok().flatten()
    }

    async fn holder(&self) -> Option<String> {
        self.lease()
            .await?
            .spec?
            .holder_identity
            .filter(|holder| !holder.is_empty())
    }

    /// Waits until the Lease names a holder and the witness shows it, and only it, running.
    async fn leader(&self, within: Duration) -> String {
        eventually("a leader (Lease holder running alone)", within, || async {
            let holder = self.holder().await?;
            (witness::running(&self.intervals()) == [holder.as_str()]).then_some(holder)
        })
        .await
    }

    /// The first witnessed `start` after `after` by anyone but `except`.
    async fn next_start(&self, after: Duration, except: Option<&str>) -> Record {
        eventually("a replica to start its controllers", PATIENCE, || async {
            witness::first_start_after(&self.records(), after, except).cloned()
        })
        .await
    }

    /// Waits until `name`'s current process has read the Lease and stands by behind `holder`.
    async fn standing_by(&self, name: &str, holder: &str) {
        let log = self.replicas[name].log.clone();
        let wanted = format!("holder={holder}");
        eventually(
            &format!("{name} to observe {holder} as the leader"),
            PATIENCE,
            || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.lines()
                    .rev()
                    .find(|line| line.contains("new leader observed"))
                    .filter(|line| line.split_whitespace().any(|word| word == wanted))
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Waits until every replica but the leader stands by behind it.
    async fn all_standing_by(&self, leader: &str) {
        let names: Vec<String> = self.replicas.keys().cloned().collect();
        for name in names.iter().filter(|name| *name != leader) {
            self.standing_by(name, leader).await;
        }
    }

    /// Asserts that for `window` nobody but `leader` starts and `leader` keeps the Lease.
    async fn stays_with(&self, leader: &str, window: Duration) {
        let from = monotonic_now();
        while monotonic_now() < from + window {
            if let Some(start) = witness::first_start_after(&self.records(), from, None) {
                panic!(
                    "{} started at {:.3}s while {leader} should have kept leading",
                    start.identity,
                    self.rel(start.at)
                );
            }
            assert_eq!(
                self.holder().await.as_deref(),
                Some(leader),
                "the Lease changed hands"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints a failover time and asserts it is within `bound`.
    fn failover(&self, what: &str, from: Duration, to: &Record, bound: Duration) -> Duration {
        let took = to.at.saturating_sub(from);
        println!(
            "failover ({what}): {} started {:.3}s after t={:.3}s (bound {:.1}s)",
            to.identity,
            took.as_secs_f64(),
            self.rel(from),
            bound.as_secs_f64()
        );
        assert!(
            took <= bound,
            "{what}: {} started {took:?} after the event, beyond the bound {bound:?}",
            to.identity
        );
        took
    }

    fn assert_alive(&mut self) {
        for (name, replica) in &mut self.replicas {
            if let Some(status) = replica.child.try_wait().unwrap() {
                panic!("{name} exited ({status}); see {}", replica.log.display());
            }
        }
    }

    fn assert_no_overlap(&self) {
        let intervals = self.intervals();
        witness::assert_no_overlap(&intervals);
        println!(
            "witness: {} controller-running intervals, no two overlap",
            intervals.len()
        );
    }

    /// A Widget created now is reconciled: the leader's controllers work.
    async fn widget_reconciled(&self, name: &str) {
        let widgets: Api<Widget> = Api::namespaced(self.env.client(), NAMESPACE);
        widgets
            .create(
                &PostParams::default(),
                &Widget::new(name, WidgetSpec { size: 7 }),
            )
            .await
            .unwrap();
        eventually(&format!("Widget {name} reconciled"), PATIENCE, || async {
            let widget = widgets.get(name).await.ok()?;
            (widget.status?.size == Some(7)).then_some(())
        })
        .await;
    }

    fn history(&self) -> Vec<Seen> {
        self.history.lock().unwrap().clone()
    }

    /// Seconds between the Lease's renewTime and the true wall clock now.
    async fn renew_time_skew(&self) -> f64 {
        let renew = self
            .lease()
            .await
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .unwrap();
        let real = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        renew.0.as_millisecond() as f64 / 1000.0 - real
    }

    /// Overwrites the Lease's spec as another (broken) writer would, retrying on conflicts
    /// with the leader's renewals. Returns the instant just before the successful write.
    async fn overwrite_spec(&self, spec: Value) -> Result<Duration, kube::Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.env.client(),
            NAMESPACE,
            &ApiResource::erase::<Lease>(&()),
        );
        loop {
            let mut lease = api.get(&self.lease_name).await?;
            lease.data["spec"] = spec.clone();
            let at = monotonic_now();
            match api
                .replace(&self.lease_name, &PostParams::default(), &lease)
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(error),
                Ok(_) => return Ok(at),
            }
        }
    }

    fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        let records = self.witness.records().unwrap_or_default();
        let _ = writeln!(out, "--- witness (seconds since the test started)");
        out.push_str(&witness::render(&records, self.origin));
        let _ = writeln!(out, "--- Lease history");
        for seen in self.history() {
            let _ = writeln!(out, "  {:>9.3}s  {}", self.rel(seen.at), seen.line);
        }
        for (name, replica) in &mut self.replicas {
            let state = match replica.child.try_wait() {
                Ok(None) => "running".to_owned(),
                Ok(Some(status)) => format!("exited: {status}"),
                Err(error) => format!("unknown: {error}"),
            };
            let _ = writeln!(
                out,
                "--- {name} ({state}), last lines of {}",
                replica.log.display()
            );
            let text = std::fs::read_to_string(&replica.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(60)..] {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.history_task.abort();
        if std::thread::panicking() {
            let report = self.diagnostics();
            eprintln!("{report}");
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "--- logs of every replica process kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Records every version of the Lease the test's own watch sees.
async fn record_history(leases: Api<Lease>, name: String, history: Arc<Mutex<Vec<Seen>>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(leases, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let at = monotonic_now();
        let seen = match event {
            Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
                Seen {
                    at,
                    line: format!(
                        "rv={} holder={:?} duration={:?} renewTime={:?} transitions={:?}",
                        lease.metadata.resource_version.unwrap_or_default(),
                        holder,
                        spec.lease_duration_seconds,
                        spec.renew_time.map(|t| t.0.to_string()),
                        spec.lease_transitions,
                    ),
                    holder,
                }
            }
            Ok(watcher::Event::Delete(_)) => Seen {
                at,
                holder: None,
                line: "deleted".to_owned(),
            },
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(error) => Seen {
                at,
                holder: None,
                line: format!("(watch error: {error})"),
            },
        };
        history.lock().unwrap().push(seen);
    }
}

/// libfaketime's multi-threaded library, from the Debian/Ubuntu package `faketime`.
fn libfaketime() -> PathBuf {
    if let Some(path) = std::env::var_os("BONNY_LIBFAKETIME") {
        return path.into();
    }
    let mut dirs = vec![
        PathBuf::from("/usr/lib/faketime"),
        PathBuf::from("/usr/local/lib/faketime"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("-linux-gnu"))
                .map(|e| e.path().join("faketime")),
        );
    }
    dirs.into_iter()
        .map(|dir| dir.join("libfaketimeMT.so.1"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "the clock-skew test needs libfaketime, which is not installed: run \
                 `sudo apt-get install -y faketime` (Debian/Ubuntu), or set BONNY_LIBFAKETIME \
                 to the path of libfaketimeMT.so.1"
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_lease_duration_plus_retry_period() {
    let mut election = Election::start().await;
    election.spawn_all();
    for round in 1..=3 {
        let leader = election.leader(STARTUP).await;
        election.all_standing_by(&leader).await;
        let (killed_at, options) = election.kill_and_respawn_later(&leader).await;
        let next = election.next_start(killed_at, Some(&leader)).await;
        election.failover(
            &format!("SIGKILL, round {round}"),
            killed_at,
            &next,
            CRASH_BOUND,
        );
        election.spawn(&leader, options);
    }
    election.widget_reconciled("after-kills").await;
    election.assert_alive();
    election.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_releases_the_lease_and_is_replaced_within_a_retry_period() {
    let mut election = Election::start().await;
    election.spawn_all();
    for round in 1..=3 {
        let leader = election.leader(STARTUP).await;
        election.all_standing_by(&leader).await;
        let (stopped_at, status) = election.terminate(&leader).await;
        assert!(status.success(), "{leader} exited with {status} on SIGTERM");
        let options = election.remove(&leader);
        let next = election.next_start(stopped_at, Some(&leader)).await;
        election.failover(
            &format!("SIGTERM, round {round}"),
            stopped_at,
            &next,
            RELEASE_BOUND,
        );
        // The test's own watch sees every version, the release too (maybe after the takeover).
        eventually(
            &format!("the Lease released by {leader} (a version with no holder)"),
            PATIENCE,
            || async {
                election
                    .history()
                    .iter()
                    .any(|seen| {
                        seen.at > stopped_at
                            && seen.holder.is_none()
                            && seen.line.starts_with("rv=")
                    })
                    .then_some(())
            },
        )
        .await;
        election.spawn(&leader, options);
    }
    election.widget_reconciled("after-stops").await;
    election.assert_alive();
    election.assert_no_overlap();
}

#[derive(Clone, Copy, Debug)]
enum Partition {
    /// Connections dropped, new ones refused.
    Cut,
    /// Connections held: requests hang until their timeout.
    Stall,
}

async fn partitioned_leader_stops_before_anyone_starts(partition: Partition) {
    let mut election = Election::start().await;
    let proxy = election.env.proxy().await.unwrap();
    // The replica behind the proxy starts alone, so it leads.
    election.spawn("le-a", Options::via(&proxy));
    assert_eq!(election.leader(STARTUP).await, "le-a");
    election.spawn("le-b", Options::default());
    election.spawn("le-c", Options::default());
    election.all_standing_by("le-a").await;

    let partitioned_at = monotonic_now();
    match partition {
        Partition::Cut => proxy.cut(),
        Partition::Stall => proxy.stall(),
    }
    let stopped = eventually("le-a to stop its controllers", PATIENCE, || async {
        election
            .records()
            .into_iter()
            .find(|r| r.identity == "le-a" && r.event == Event::Stop && r.at > partitioned_at)
    })
    .await;
    let next = election.next_start(partitioned_at, Some("le-a")).await;
    println!(
        "partition ({partition:?}) at t={:.3}s: le-a stopped after {:.3}s (renew deadline {RENEW_DEADLINE:?}), {} started {:.3}s after le-a stopped",
        election.rel(partitioned_at),
        (stopped.at - partitioned_at).as_secs_f64(),
        next.identity,
        next.at.saturating_sub(stopped.at).as_secs_f64(),
    );
    assert!(
        stopped.at < next.at,
        "{} started at {:.3}s, before the partitioned leader stopped at {:.3}s",
        next.identity,
        election.rel(next.at),
        election.rel(stopped.at)
    );
    assert!(
        stopped.at - partitioned_at <= RENEW_DEADLINE + MARGIN,
        "le-a stopped {:?} after the partition, later than the renew deadline allows",
        stopped.at - partitioned_at
    );
    election.failover(
        &format!("{partition:?} leader"),
        partitioned_at,
        &next,
        CRASH_BOUND,
    );
    let new_leader = election.leader(PATIENCE).await;

    // Back on the network, the old leader sees the new one and stands by.
    proxy.heal();
    let healed_at = monotonic_now();
    election.standing_by("le-a", &new_leader).await;
    println!(
        "healed: le-a stood by behind {new_leader} {:.3}s later",
        (monotonic_now() - healed_at).as_secs_f64()
    );
    election.stays_with(&new_leader, 2 * LEASE_DURATION).await;
    election.assert_alive();
    election.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_the_api_server_stops_before_another_starts() {
    partitioned_leader_stops_before_anyone_starts(Partition::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_connection_stalls_stops_before_another_starts() {
    partitioned_leader_stops_before_anyone_starts(Partition::Stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clocks_minutes_apart_never_make_two_leaders() {
    let slow = Options::skewed("-10m");
    let fast = Options::skewed("+10m");
    let mut election = Election::start().await;
    let ten_minutes = 600.0;

    // A leader whose clock is 10 minutes slow: its renewTime always looks 10 minutes stale,
    // so an elector comparing renewTime with its own clock would take over at once.
    election.spawn("le-slow", slow);
    assert_eq!(election.leader(STARTUP).await, "le-slow");
    let skew = election.renew_time_skew().await;
    println!("le-slow (FAKETIME=-10m) writes renewTime {skew:+.1}s off the true clock");
    assert!(
        (skew + ten_minutes).abs() < 60.0,
        "libfaketime did not skew le-slow's wall clock: renewTime is {skew:+.1}s off, expected about -600s"
    );
    election.spawn("le-a", Options::default());
    election.spawn("le-fast", fast);
    election.all_standing_by("le-slow").await;
    election.stays_with("le-slow", 2 * LEASE_DURATION).await;

    for round in 1..=3 {
        let leader = election.leader(PATIENCE).await;
        election.all_standing_by(&leader).await;
        let (killed_at, options) = election.kill_and_respawn_later(&leader).await;
        let next = election.next_start(killed_at, Some(&leader)).await;
        election.failover(
            &format!("SIGKILL of {leader} under skew, round {round}"),
            killed_at,
            &next,
            CRASH_BOUND,
        );
        election.spawn(&leader, options);
    }

    // A leader whose clock is 10 minutes fast: its renewTime looks valid for 10 more minutes,
    // so a wall-clock elector would not take over after it dies. (Every replica has read the
    // Lease first: a SIGTERM before the signal handler is installed kills with status 15.)
    let leader = election.leader(PATIENCE).await;
    election.all_standing_by(&leader).await;
    for name in ["le-a", "le-slow"] {
        let (_, status) = election.terminate(name).await;
        assert!(status.success(), "{name} exited with {status}");
        election.remove(name);
    }
    assert_eq!(election.leader(PATIENCE).await, "le-fast");
    let skew = election.renew_time_skew().await;
    println!("le-fast (FAKETIME=+10m) writes renewTime {skew:+.1}s off the true clock");
    assert!(
        (skew - ten_minutes).abs() < 60.0,
        "libfaketime did not skew le-fast's wall clock: renewTime is {skew:+.1}s off, expected about +600s"
    );
    election.spawn("le-a", Options::default());
    election.standing_by("le-a", "le-fast").await;
    let killed_at = election.kill("le-fast").await;
    election.remove("le-fast");
    let next = election.next_start(killed_at, Some("le-fast")).await;
    election.failover("SIGKILL of le-fast", killed_at, &next, CRASH_BOUND);

    election.assert_alive();
    election.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_leases_are_waited_out_never_crash_and_never_make_two_leaders() {
    let mut election = Election::start().await;
    election.spawn_all();
    let leader = election.leader(STARTUP).await;
    election.all_standing_by(&leader).await;

    // What the API server refuses never reaches the replicas.
    for (what, spec) in [
        (
            "renewTime: not-a-time",
            json!({ "holderIdentity": "ghost", "renewTime": "not-a-time" }),
        ),
        (
            "leaseDurationSeconds: -5",
            json!({ "holderIdentity": "ghost", "leaseDurationSeconds": -5 }),
        ),
        (
            "leaseDurationSeconds: 0",
            json!({ "holderIdentity": "ghost", "leaseDurationSeconds": 0 }),
        ),
        (
            "leaseTransitions: -1",
            json!({ "holderIdentity": "ghost", "leaseTransitions": -1 }),
        ),
    ] {
        match election.overwrite_spec(spec).await {
            Err(kube::Error::Api(status)) => {
                println!(
                    "the API server refuses {what}: {} {}",
                    status.code, status.message
                );
            }
            other => panic!("expected the API server to refuse {what}, got {other:?}"),
        }
    }

    // A holder that does not exist, with no duration, times or transitions: the replicas wait
    // out their own lease duration from when they saw it, then one takes over.
    let written = election
        .overwrite_spec(json!({ "holderIdentity": "ghost" }))
        .await
        .unwrap();
    let next = election.next_start(written, None).await;
    let waited = next.at - written;
    println!(
        "ghost holder, no duration: {} took over {:.3}s after the write (no earlier than {LEASE_DURATION:?})",
        next.identity,
        waited.as_secs_f64()
    );
    assert!(
        waited >= LEASE_DURATION,
        "the ghost's Lease was taken over early"
    );
    election.failover("ghost holder, no duration", written, &next, CRASH_BOUND);

    // A ghost with a longer duration of its own, a renewTime far in the future and transitions
    // at the maximum: its duration is honoured, the future renewTime ignored, the count saturates.
    let ghost_duration = Duration::from_secs(8);
    let leader = election.leader(PATIENCE).await;
    election.all_standing_by(&leader).await;
    let written = election
        .overwrite_spec(json!({
            "holderIdentity": "ghost",
            "leaseDurationSeconds": ghost_duration.as_secs(),
            "acquireTime": "2100-01-01T00:00:00.000000Z",
            "renewTime": "2100-01-01T00:00:00.000000Z",
            "leaseTransitions": i32::MAX,
        }))
        .await
        .unwrap();
    let next = election.next_start(written, None).await;
    let waited = next.at - written;
    println!(
        "ghost holder, 8 s duration, renewTime in 2100: {} took over {:.3}s after the write",
        next.identity,
        waited.as_secs_f64()
    );
    assert!(
        waited >= ghost_duration,
        "the ghost's 8 s Lease was taken over early"
    );
    election.failover(
        "ghost holder, 8 s",
        written,
        &next,
        ghost_duration + RETRY_PERIOD + MARGIN,
    );
    let leader = election.leader(PATIENCE).await;
    let spec = election.lease().await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.as_str()));
    assert_eq!(spec.lease_transitions, Some(i32::MAX));

    election.widget_reconciled("after-garbage").await;
    election.assert_alive();
    election.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_resumes_after_an_api_server_restart() {
    let mut election = Election::start().await;
    election.spawn_all();
    let leader = election.leader(STARTUP).await;
    election.all_standing_by(&leader).await;

    let restart_at = monotonic_now();
    election.env.restart_apiserver().await.unwrap();
    let ready_at = monotonic_now();
    let outage = ready_at - restart_at;
    let after = election.leader(PATIENCE).await;
    let records = election.records();
    let stopped = records
        .iter()
        .any(|r| r.identity == leader && r.event == Event::Stop && r.at > restart_at);
    if stopped {
        // The outage outlasted the renew deadline: the leader stopped, and once the API
        // server is back the Lease (unchanged for longer than its duration) is taken at the
        // next attempt, by the old leader or a standby.
        let next = witness::first_start_after(&records, restart_at, None).unwrap();
        println!(
            "API server restart took {:.3}s; {leader} stopped; {} started {:+.3}s from when the test saw the API server ready",
            outage.as_secs_f64(),
            next.identity,
            next.at.as_secs_f64() - ready_at.as_secs_f64(),
        );
        election.failover("API server restart", ready_at, next, CRASH_BOUND);
    } else {
        // The API server was unreachable for less than the renew deadline (the restart's
        // duration also counts the readiness polling): a renewal got through in time.
        assert_eq!(after, leader);
        println!(
            "API server restart took {:.3}s, within the renew deadline: {leader} kept leading",
            outage.as_secs_f64()
        );
    }
    election.all_standing_by(&after).await;
    election.widget_reconciled("after-restart").await;
    election.assert_alive();
    election.assert_no_overlap();
}

/// Writes that hand the Lease to someone else behind the leader's back: a cleared holder
/// (not a release), a deleted Lease, a holder naming a live standby. The leader notices at
/// its next renewal; the standbys wait a full lease duration first, as only a leader's own
/// release is free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_handed_over_behind_the_leaders_back_never_makes_two_leaders() {
    let mut election = Election::start().await;
    election.spawn_all();
    let mut overlaps = Vec::new();
    for what in ["empty spec", "deleted", "holder = a standby"] {
        let leader = election.leader(STARTUP).await;
        election.all_standing_by(&leader).await;
        let standby = REPLICAS.iter().find(|r| **r != leader).unwrap();
        let written = match what {
            "empty spec" => election.overwrite_spec(json!({})).await.unwrap(),
            "deleted" => {
                let at = monotonic_now();
                election
                    .leases
                    .delete(&election.lease_name, &Default::default())
                    .await
                    .unwrap();
                at
            }
            _ => election
                .overwrite_spec(json!({ "holderIdentity": standby, "leaseDurationSeconds": 3 }))
                .await
                .unwrap(),
        };
        let next = election.next_start(written, Some(&leader)).await;
        let stopped = eventually("the old leader to stop", PATIENCE, || async {
            election
                .records()
                .into_iter()
                .find(|r| r.identity == leader && r.event == Event::Stop && r.at > written)
        })
        .await;
        println!(
            "{what}: {} started {:.3}s after the write, {leader} stopped {:.3}s after it",
            next.identity,
            (next.at - written).as_secs_f64(),
            (stopped.at - written).as_secs_f64()
        );
        let recent: Vec<Interval> = election
            .intervals()
            .into_iter()
            .filter(|i| i.end.is_none_or(|end| end > written))
            .collect();
        for overlap in witness::overlaps(&recent, monotonic_now()) {
            overlaps.push(format!("{what}: {overlap}"));
        }
        election.leader(PATIENCE).await;
    }
    election.assert_alive();
    assert!(overlaps.is_empty(), "two leaders:\n{}", overlaps.join("\n"));
    election.assert_no_overlap();
}

/// Sends `signal` to `name`'s process.
fn signal(election: &Election, name: &str, signal: rustix::process::Signal) {
    let pid = election.replicas[name].child.id().unwrap();
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Issue 11's frozen leader: SIGSTOP the leader for longer than the lease at a random point
/// of its renewal cycle, let a standby take over, SIGCONT. Witness: the writer annotation of
/// every version of the Widget as the API server stored them, in resourceVersion order. No
/// version written by the frozen leader may follow its successor's first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_lands_no_write_after_its_successor_took_over() {
    // Six by default; `FREEZES=20` for issue 11's count.
    let freezes: usize = std::env::var("FREEZES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let mut election = Election::start().await;
    let scribe = Options {
        scribe: true,
        ..Options::default()
    };
    for name in REPLICAS {
        election.spawn(name, scribe.clone());
    }
    let widgets: Api<Widget> = Api::namespaced(election.env.client(), NAMESPACE);
    widgets
        .create(
            &PostParams::default(),
            &Widget::new("scribbled", WidgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    // Every stored version's writer, in the order the API server stored them.
    let writers: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let recorder = {
        let writers = writers.clone();
        let mut events = watcher(widgets.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(widget)) = events.next().await {
                let version = widget.metadata.resource_version.clone().unwrap_or_default();
                let writer = widget
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("e2e.bonny.dev/writer"))
                    .cloned();
                if let (Ok(version), Some(writer)) = (version.parse::<u64>(), writer) {
                    writers.lock().unwrap().push((version, writer));
                }
            }
        })
    };
    let mut leader = election.leader(STARTUP).await;
    let mut stale_writes = 0;
    let mut rng_state = u64::from(std::process::id());
    for freeze in 0..freezes {
        eventually("the leader to write", PATIENCE, || async {
            writers
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take(3)
                .any(|(_, w)| *w == leader)
                .then_some(())
        })
        .await;
        // A random point of the renewal cycle (retry period 500 ms).
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((rng_state >> 33) % 500)).await;
        let frozen = leader.clone();
        signal(&election, &frozen, rustix::process::Signal::STOP);
        let stopped_at = monotonic_now();
        let successor = eventually("a standby to take over", PATIENCE, || async {
            election.holder().await.filter(|holder| *holder != frozen)
        })
        .await;
        eventually("the successor to write", PATIENCE, || async {
            writers
                .lock()
                .unwrap()
                .iter()
                .any(|(_, w)| *w == successor)
                .then_some(())
        })
        .await;
        // Frozen for longer than the lease, in any case.
        let held = monotonic_now().saturating_sub(stopped_at);
        tokio::time::sleep((LEASE_DURATION + RETRY_PERIOD).saturating_sub(held)).await;
        signal(&election, &frozen, rustix::process::Signal::CONT);
        let frozen_for = monotonic_now().saturating_sub(stopped_at);
        // Time for the resumed process to do what it would: its timers are all overdue.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stored = writers.lock().unwrap().clone();
        let first_successor = stored
            .iter()
            .position(|(_, w)| *w == successor)
            .expect("the successor wrote");
        let late: Vec<_> = stored[first_successor..]
            .iter()
            .filter(|(_, w)| *w == frozen)
            .collect();
        println!(
            "freeze {freeze}: {frozen} frozen {:.1}s, {successor} took over; {} write(s) by {frozen} after {successor}'s first",
            frozen_for.as_secs_f64(),
            late.len()
        );
        stale_writes += late.len();
        let log = std::fs::read_to_string(&election.replicas[&frozen].log).unwrap();
        assert!(
            log.contains("lost leadership late"),
            "{frozen} found its deadline passed on waking: see {}",
            election.replicas[&frozen].log.display()
        );
        writers.lock().unwrap().clear();
        leader = successor;
        election.assert_alive();
    }
    recorder.abort();
    assert_eq!(
        stale_writes, 0,
        "writes by a stale leader landed after its successor's"
    );
}
