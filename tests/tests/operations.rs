//! Operating an operator on a real kube-apiserver: Prometheus metrics that count every
//! reconcile, probes that follow the caches, graceful shutdown on SIGTERM with the Lease
//! handed to a standby, and clear startup errors for bad settings and arguments.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bonny::{Operator, leader::default_lease_name, operator::ControllersEvent, testing::TestEnv};
use bonny_e2e::{
    eventually, init_tracing,
    widget::{Counters, Widget, WidgetController, widget},
};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, CustomResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
/// The test operator binary: the Widget controller with leader election on.
const OPS_OPERATOR: &str = env!("CARGO_BIN_EXE_ops-operator");

const SUCCESS: &str = r#"controller_runtime_reconcile_total{controller="widget",result="success"}"#;
const ERROR: &str = r#"controller_runtime_reconcile_total{controller="widget",result="error"}"#;
const ERRORS: &str = r#"controller_runtime_reconcile_errors_total{controller="widget"}"#;
const ACTIVE: &str = r#"controller_runtime_active_workers{controller="widget"}"#;
const TIMED: &str = r#"controller_runtime_reconcile_time_seconds_count{controller="widget"}"#;

async fn env() -> TestEnv {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env
}

/// A loopback address nothing listens on right now.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// GETs `path` from the operator's plain-HTTP endpoint: the status code and the body, or
/// `None` while nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8(response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).await.map(|(status, _)| status)
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series in Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// What the controller did and what `/metrics` says about it, read while nothing ran.
#[derive(Debug, PartialEq)]
struct Tally {
    applies: usize,
    cleanups: usize,
    success: u64,
    error: u64,
    errors: u64,
    timed: u64,
}

/// Scrapes until no reconcile is running and two scrapes in a row agree: the counters read
/// before and after the scrape are equal and no worker is active, so every `apply` counted
/// has finished and been recorded.
async fn settled(addr: SocketAddr, counters: &Counters) -> Tally {
    let deadline = Instant::now() + WAIT;
    let mut previous: Option<Tally> = None;
    loop {
        let applies = counters.applies.load(Ordering::SeqCst);
        let cleanups = counters.cleanups();
        let metrics = scrape(addr).await;
        let quiet = sample(&metrics, ACTIVE) == 0
            && counters.applies.load(Ordering::SeqCst) == applies
            && counters.cleanups() == cleanups;
        let tally = Tally {
            applies,
            cleanups,
            success: sample(&metrics, SUCCESS),
            error: sample(&metrics, ERROR),
            errors: sample(&metrics, ERRORS),
            timed: sample(&metrics, TIMED),
        };
        if quiet && previous.as_ref() == Some(&tally) {
            return tally;
        }
        assert!(
            Instant::now() < deadline,
            "reconciles did not settle within {WAIT:?}; last seen {tally:?}"
        );
        previous = quiet.then_some(tally);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_every_reconcile_by_result() {
    const WIDGETS: u32 = 5;
    let env = env().await;
    let client = env.client();
    env.create_namespace("metrics").await.unwrap();
    let addr = free_addr();
    let controller = WidgetController::default();
    let operator = Operator::builder()
        .name("widget-ops")
        .client(client.clone())
        .watch_namespace("metrics")
        .http_addr(addr)
        .shutdown_timeout(Duration::from_secs(5))
        .controller(controller.clone())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "metrics");
    for i in 1..=WIDGETS {
        widgets
            .create(&PostParams::default(), &widget(&format!("w{i}"), i))
            .await
            .unwrap();
    }
    for i in 1..=WIDGETS {
        eventually("every widget's status", WAIT, || async {
            let w = widgets.get(&format!("w{i}")).await.unwrap();
            w.status.and_then(|s| s.size).filter(|size| *size == i)
        })
        .await;
    }

    let healthy = settled(addr, &controller.counters).await;
    tracing::info!(?healthy, "settled with healthy widgets");
    assert!(healthy.success >= u64::from(WIDGETS), "{healthy:?}");
    assert_eq!(
        healthy.success, healthy.applies as u64,
        "every reconcile ran `apply` once and was counted once: {healthy:?}"
    );
    assert_eq!((healthy.error, healthy.errors), (0, 0), "{healthy:?}");
    assert_eq!(healthy.timed, healthy.success, "{healthy:?}");

    // A panicking reconcile counts as an error, on both series, each time it is retried.
    widgets
        .create(&PostParams::default(), &widget("unlucky", 13))
        .await
        .unwrap();
    eventually(
        "two failed reconciles of the panicking widget",
        WAIT,
        || async {
            let metrics = scrape(addr).await;
            (sample(&metrics, ERROR) >= 2 && sample(&metrics, ERRORS) >= 2).then_some(())
        },
    )
    .await;
    widgets
        .delete("unlucky", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the panicking widget to be gone", WAIT, || async {
        widgets
            .get_opt("unlucky")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    let after = settled(addr, &controller.counters).await;
    tracing::info!(?after, "settled after the panicking widget");
    assert!(after.error >= 2, "{after:?}");
    assert_eq!(after.errors, after.error, "{after:?}");
    assert_eq!(after.cleanups, 1, "{after:?}");
    // Each reconcile ran either `apply` (the panics among them) or `cleanup`.
    assert_eq!(
        after.success + after.error,
        (after.applies + after.cleanups) as u64,
        "{after:?}"
    );
    assert_eq!(after.timed, after.success + after.error, "{after:?}");

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn readyz_fails_until_the_caches_sync_and_healthz_passes_while_running() {
    let env = env().await;
    env.create_namespace("probes").await.unwrap();
    let proxy = Arc::new(env.proxy().await.unwrap());
    let addr = free_addr();
    let stall = proxy.clone();
    let operator = Operator::builder()
        .name("widget-ops")
        .client(proxy.client().await.unwrap())
        .watch_namespace("probes")
        .http_addr(addr)
        .shutdown_timeout(Duration::from_secs(5))
        .controller(WidgetController::default())
        // The preflight LIST has passed when the controllers start: stalling the connection
        // now holds the first LIST of their watches, so the caches cannot sync until `heal`.
        .on_controllers(move |event| {
            if event == ControllersEvent::Starting {
                stall.stall();
            }
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));

    let body = eventually("/readyz to fail while the cache syncs", WAIT, || async {
        get(addr, "/readyz")
            .await
            .filter(|(status, _)| *status == 503)
            .map(|(_, body)| body)
    })
    .await;
    assert!(
        body.contains("caches not synced") && body.contains("widget/probes"),
        "{body}"
    );
    assert_eq!(status_of(addr, "/healthz").await, Some(200));
    // Still held: nothing can sync while the proxy stalls.
    assert_eq!(status_of(addr, "/readyz").await, Some(503));

    proxy.heal();
    eventually("/readyz to pass once the cache synced", WAIT, || async {
        (status_of(addr, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(status_of(addr, "/healthz").await, Some(200));

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The test operator binary with every inherited `BONNY_*` setting and `KUBECONFIG` removed.
fn ops_operator() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(OPS_OPERATOR);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BONNY_") {
            command.env_remove(key);
        }
    }
    command.env_remove("KUBECONFIG").kill_on_drop(true);
    command
}

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_PERIOD: Duration = Duration::from_millis(500);

/// One operator process, logging to a file in the environment's directory.
struct Replica {
    name: &'static str,
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn start(env: &TestEnv, name: &'static str) -> Self {
        let addr = free_addr();
        let log = env.dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = ops_operator()
            .arg("run")
            .env("KUBECONFIG", env.kubeconfig_path())
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", "default")
            .env("BONNY_HTTP_ADDR", addr.to_string())
            .env("BONNY_SHUTDOWN_TIMEOUT", "5s")
            .env("BONNY_LEASE_DURATION", "3s")
            .env("BONNY_RENEW_DEADLINE", "2s")
            .env("BONNY_RETRY_PERIOD", "500ms")
            .env("RUST_LOG", "info,bonny=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            name,
            child,
            addr,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("the replica is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Sends SIGTERM and asserts a clean exit within the shutdown timeout.
    async fn terminate_cleanly(&mut self) {
        self.terminate();
        let signalled = Instant::now();
        let exit = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await;
        let logs = self.logs();
        let name = self.name;
        let status = exit
            .unwrap_or_else(|_| {
                panic!("{name} still runs {SHUTDOWN_TIMEOUT:?} after SIGTERM\n{logs}")
            })
            .unwrap();
        assert!(status.success(), "{name} exited with {status}\n{logs}");
        tracing::info!(replica = name, elapsed = ?signalled.elapsed(), "exited after SIGTERM");
    }
}

/// When the watched Lease next has `wanted` as its holder (`None`: released).
async fn next_holder(
    seen: &mut mpsc::UnboundedReceiver<(Instant, Option<String>)>,
    wanted: Option<&str>,
) -> Result<Instant, tokio::time::error::Elapsed> {
    tokio::time::timeout(WAIT, async {
        loop {
            let (at, holder) = seen.recv().await.expect("the Lease watch runs");
            if holder.as_deref() == wanted {
                return at;
            }
        }
    })
    .await
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|holder| !holder.is_empty())
}

#[tokio::test]
async fn sigterm_exits_cleanly_releases_the_lease_and_a_standby_takes_over() {
    let env = env().await;
    let client = env.client();
    let lease_name = default_lease_name("default", "ops-operator");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let current_holder = || async {
        leases
            .get_opt(&lease_name)
            .await
            .unwrap()
            .and_then(|lease| holder(&lease))
    };

    let mut leader = Replica::start(&env, "ops-a");
    eventually("ops-a to hold the Lease", WAIT, || async {
        (current_holder().await.as_deref() == Some("ops-a")).then_some(())
    })
    .await;
    let mut standby = Replica::start(&env, "ops-b");
    for replica in [&leader, &standby] {
        eventually("both replicas to be alive and ready", WAIT, || async {
            let live = status_of(replica.addr, "/healthz").await == Some(200);
            let ready = status_of(replica.addr, "/readyz").await == Some(200);
            (live && ready).then_some(())
        })
        .await;
    }
    let leading = format!(r#"leader_election_master_status{{name="{lease_name}"}}"#);
    assert_eq!(sample(&scrape(leader.addr).await, &leading), 1);
    assert_eq!(sample(&scrape(standby.addr).await, &leading), 0);
    assert_eq!(current_holder().await.as_deref(), Some("ops-a"));

    // The leader reconciles.
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("before", 1))
        .await
        .unwrap();
    eventually("the leader to reconcile", WAIT, || async {
        widgets.get("before").await.unwrap().status?.size
    })
    .await;

    // Every change of the Lease, as seen by a watch opened before the signal.
    let (changes, mut seen) = mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let config = watcher::Config::default().fields(&format!("metadata.name={lease_name}"));
        let leases = leases.clone();
        async move {
            let mut stream = watcher(leases, config).applied_objects().boxed();
            while let Some(Ok(lease)) = stream.next().await {
                if changes.send((Instant::now(), holder(&lease))).is_err() {
                    break;
                }
            }
        }
    });
    next_holder(&mut seen, Some("ops-a"))
        .await
        .expect("the watch sees ops-a leading");

    leader.terminate_cleanly().await;
    let released = next_holder(&mut seen, None)
        .await
        .unwrap_or_else(|_| panic!("the Lease was not released\n{}", leader.logs()));
    let acquired = next_holder(&mut seen, Some("ops-b"))
        .await
        .unwrap_or_else(|_| panic!("ops-b did not take over\n{}", standby.logs()));
    let handover = acquired - released;
    tracing::info!(?handover, "ops-b took over");
    assert!(
        handover <= RETRY_PERIOD + Duration::from_secs(1),
        "ops-b took over {handover:?} after the release\n{}",
        standby.logs()
    );

    // The new leader reconciles, and is ready once its cache synced.
    widgets
        .create(&PostParams::default(), &widget("after", 2))
        .await
        .unwrap();
    eventually("the new leader to reconcile", WAIT, || async {
        widgets.get("after").await.unwrap().status?.size
    })
    .await;
    eventually("the new leader to be ready", WAIT, || async {
        (status_of(standby.addr, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(sample(&scrape(standby.addr).await, &leading), 1);

    standby.terminate_cleanly().await;
    watch.abort();
    assert_eq!(
        current_holder().await,
        None,
        "the last leader released the Lease too"
    );
}

#[tokio::test]
async fn bad_settings_stop_the_operator_at_startup_naming_the_variable_or_rule() {
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "BONNY_HTTP_ADDR",
            "nope",
            &["BONNY_HTTP_ADDR", "\"nope\"", "0.0.0.0:8080"],
        ),
        (
            "BONNY_SHUTDOWN_TIMEOUT",
            "30",
            &["BONNY_SHUTDOWN_TIMEOUT", "\"30\"", "30s"],
        ),
        // Shorter than the default renew deadline (10 s): a standby could start controllers
        // while the leader still runs its own.
        (
            "BONNY_LEASE_DURATION",
            "1s",
            &["lease_duration > renew_deadline", "BONNY_LEASE_DURATION=1s"],
        ),
    ];
    for (var, value, expected) in cases {
        let output = ops_operator()
            .arg("run")
            .env(var, value)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{var}={value} was accepted: {stderr}"
        );
        for part in expected {
            assert!(
                stderr.contains(part),
                "{var}={value}: the error should mention {part:?}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn the_command_line_explains_itself_and_rejects_unknown_arguments() {
    let output = ops_operator().arg("--bogus").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--bogus") && stderr.contains("--help"),
        "{stderr}"
    );

    let output = ops_operator().args(["run", "now"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("now"), "{stderr}");

    let output = ops_operator().arg("--help").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("run") && stdout.contains("manifests"),
        "{stdout}"
    );

    let output = ops_operator()
        .args(["manifests", "--image", "img:1", "--namespace", "ops"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("kind: CustomResourceDefinition")
            && stdout.contains("kind: Deployment")
            && stdout.contains("image: img:1"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("warning"),
        "no warning with --image: {stderr}"
    );

    let output = ops_operator().arg("manifests").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: no --image given")
            && stderr.contains("operator:latest")
            && String::from_utf8_lossy(&output.stdout).contains("image: operator:latest"),
        "{stderr}"
    );
    let output = ops_operator()
        .args(["manifests", "--crds"])
        .output()
        .await
        .unwrap();
    assert!(output.stderr.is_empty(), "only CRDs: no image, no warning");
}
