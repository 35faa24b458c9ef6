//! The scale metrics on a real kube-apiserver, under controller-runtime's names: the work
//! queue rises under a burst of creates and drains to 0, its counters and histograms move,
//! `rest_client_requests_total` agrees with the API server's own `apiserver_request_total`,
//! the process metrics are sane and a panicking reconcile is counted.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bonny::{
    Operator,
    observe::{CountRequests, Metrics},
    prelude::*,
    testing::{RequestCounts, TestEnv},
};
use bonny_e2e::{
    eventually, init_tracing,
    widget::{Widget, WidgetStatus, widget},
};
use futures::{StreamExt, stream};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, PostParams},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::Layer;

const WAIT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "scale";
const WIDGETS: u32 = 200;
const CONTROLLER: &str = "slow-widget";

/// A Widget controller that takes its time (one reconcile at once, 5 ms each), so a burst of
/// creates queues up; size 13 panics.
#[bonny::controller(resource = Widget, name = "slow-widget", concurrency = 1, backoff(base = "200ms", max = "1s"))]
#[derive(Clone, Default)]
struct SlowWidgets;

impl Reconcile<Widget> for SlowWidgets {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        let size = axn.object().spec.size;
        if size == 13 {
            panic!("size 13 is unlucky");
        }
        // The work being measured, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(5)).await;
        axn.set_status(WidgetStatus {
            size: Some(size),
            conditions: Vec::new(),
        })?;
        Ok(Action::await_change())
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("/metrics at {addr}: {err}"));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the series `name{labels}` (labels exactly as written), if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The value of a series of the controller's work queue.
fn queue(metrics: &str, name: &str) -> f64 {
    value(
        metrics,
        &format!(r#"{name}{{name="{CONTROLLER}",controller="{CONTROLLER}"}}"#),
    )
    .unwrap_or_else(|| panic!("no {name} series:\n{metrics}"))
}

/// The value of a `controller_runtime_*` series of the controller.
fn of_controller(metrics: &str, name: &str) -> f64 {
    value(metrics, &format!(r#"{name}{{controller="{CONTROLLER}"}}"#))
        .unwrap_or_else(|| panic!("no {name} series:\n{metrics}"))
}

/// `rest_client_requests_total` summed over the samples whose labels satisfy `keep`.
fn rest_requests(metrics: &str, keep: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("rest_client_requests_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(labels, _)| keep(labels))
        .map(|(_, count)| count.parse::<f64>().unwrap())
        .sum()
}

/// A client whose requests are counted in `metrics`, like the operator's.
fn counted(client: Client, metrics: &Metrics) -> Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let client = client.clone();
        async move { client.send(request).await }
    });
    Client::new(
        CountRequests::new(metrics.clone(), "").layer(service),
        "default",
    )
}

/// What the watcher of `/metrics` saw while the burst ran.
#[derive(Debug, Default)]
struct Peaks {
    depth: f64,
    longest: f64,
    unfinished: f64,
    scrapes: usize,
}

#[tokio::test]
async fn scale_metrics_follow_a_burst_of_creates() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env.create_namespace(NAMESPACE).await.unwrap();
    // The test's own requests are counted too, to tell them from the operator's.
    let ours = Metrics::new();
    let client = counted(env.client(), &ours);
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NAMESPACE);

    let before = env.request_counts().await.unwrap();
    let addr = free_addr();
    let metrics = Metrics::new();
    let operator = Operator::builder()
        .name("scale-ops")
        .client(env.client())
        .metrics(metrics.clone())
        .watch_namespace(NAMESPACE)
        .http_addr(addr)
        .shutdown_timeout(Duration::from_secs(5))
        .controller(SlowWidgets)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    let idle = eventually("/metrics to show the idle queue", WAIT, || async {
        // Nothing listens until the operator has bound its address.
        tokio::net::TcpStream::connect(addr).await.ok()?;
        let text = scrape(addr).await;
        text.contains("workqueue_depth{").then_some(text)
    })
    .await;
    assert_eq!(queue(&idle, "workqueue_depth"), 0.0, "{idle}");
    assert_eq!(
        of_controller(&idle, "controller_runtime_max_concurrent_reconciles"),
        1.0
    );
    assert_eq!(
        of_controller(&idle, "controller_runtime_reconcile_panics_total"),
        0.0
    );
    assert_eq!(
        of_controller(&idle, "controller_runtime_terminal_reconcile_errors_total"),
        0.0
    );

    // Watch /metrics through the burst.
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (peaks, done) = (peaks.clone(), done.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                let text = scrape(addr).await;
                {
                    let mut peaks = peaks.lock().unwrap();
                    peaks.depth = peaks.depth.max(queue(&text, "workqueue_depth"));
                    peaks.longest = peaks
                        .longest
                        .max(queue(&text, "workqueue_longest_running_processor_seconds"));
                    peaks.unfinished = peaks
                        .unfinished
                        .max(queue(&text, "workqueue_unfinished_work_seconds"));
                    peaks.scrapes += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    stream::iter(1..=WIDGETS)
        .for_each_concurrent(32, |i| {
            let widgets = widgets.clone();
            async move {
                let size = if i == 13 { 1013 } else { i };
                widgets
                    .create(&PostParams::default(), &widget(&format!("w{i}"), size))
                    .await
                    .unwrap();
            }
        })
        .await;
    let drained = eventually("every widget reconciled and the queue drained", WAIT, || async {
        let text = scrape(addr).await;
        let reconciled = value(
            &text,
            &format!(r#"controller_runtime_reconcile_total{{controller="{CONTROLLER}",result="success"}}"#),
        )
        .unwrap_or(0.0);
        (reconciled >= f64::from(WIDGETS)
            && queue(&text, "workqueue_depth") == 0.0
            && of_controller(&text, "controller_runtime_active_workers") == 0.0)
            .then_some(text)
    })
    .await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    let peaks = std::mem::take(&mut *peaks.lock().unwrap());
    let adds = queue(&drained, "workqueue_adds_total");
    let queued = queue(&drained, "workqueue_queue_duration_seconds_count");
    let waited = queue(&drained, "workqueue_queue_duration_seconds_sum");
    let worked = queue(&drained, "workqueue_work_duration_seconds_count");
    let work_time = queue(&drained, "workqueue_work_duration_seconds_sum");
    println!(
        "burst of {WIDGETS}: {peaks:?}; adds {adds}, queue durations {queued} (sum {waited:.3} s), \
         work durations {worked} (sum {work_time:.3} s)"
    );
    assert!(peaks.depth >= 10.0, "the queue never rose: {peaks:?}");
    assert!(peaks.longest > 0.0 && peaks.unfinished > 0.0, "{peaks:?}");
    assert!(adds >= f64::from(WIDGETS), "adds {adds}");
    assert!(queued >= f64::from(WIDGETS) && worked >= f64::from(WIDGETS));
    assert!(queued <= adds, "more starts ({queued}) than adds ({adds})");
    // One reconcile at once, each at least 5 ms: the last of the burst waited for the others.
    assert!(work_time >= 0.005 * f64::from(WIDGETS), "{work_time}");
    assert!(
        waited > work_time / 4.0,
        "queue time {waited} s, work {work_time} s"
    );
    assert_eq!(queue(&drained, "workqueue_unfinished_work_seconds"), 0.0);
    assert_eq!(
        queue(&drained, "workqueue_longest_running_processor_seconds"),
        0.0
    );

    // Process metrics, read from /proc.
    let rss = value(&drained, "process_resident_memory_bytes").unwrap();
    let cpu = value(&drained, "process_cpu_seconds_total").unwrap();
    let fds = value(&drained, "process_open_fds").unwrap();
    let started = value(&drained, "process_start_time_seconds").unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    println!("process: rss {rss} B, cpu {cpu} s, fds {fds}, started {started}");
    assert!(
        (1024.0 * 1024.0..16.0 * 1024.0 * 1024.0 * 1024.0).contains(&rss),
        "{rss}"
    );
    assert!(cpu > 0.0 && fds >= 3.0, "cpu {cpu}, fds {fds}");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );

    // A panicking reconcile: counted as a panic, an error and a retry.
    widgets
        .create(&PostParams::default(), &widget("unlucky", 13))
        .await
        .unwrap();
    // The panic is counted a moment before the failed reconcile it ends: both are waited for.
    let panicked = eventually("two panics and their errors counted", WAIT, || async {
        let text = scrape(addr).await;
        (of_controller(&text, "controller_runtime_reconcile_panics_total") >= 2.0
            && of_controller(&text, "controller_runtime_reconcile_errors_total") >= 2.0)
            .then_some(text)
    })
    .await;
    assert!(queue(&panicked, "workqueue_retries_total") >= 1.0);
    assert_eq!(
        of_controller(
            &panicked,
            "controller_runtime_terminal_reconcile_errors_total"
        ),
        0.0
    );
    widgets
        .delete("unlucky", &DeleteParams::default())
        .await
        .unwrap();
    // Its retries stop once it is gone, and it leaves the queue.
    eventually("the queue to drain after the delete", WAIT, || async {
        let text = scrape(addr).await;
        (queue(&text, "workqueue_depth") == 0.0
            && of_controller(&text, "controller_runtime_active_workers") == 0.0)
            .then_some(())
    })
    .await;

    // Stop the operator: its watches end, so the API server has counted them too.
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let after = env.request_counts().await.unwrap();
    let operator_text = metrics.encode();
    let operator_total = rest_requests(&operator_text, |_| true);
    let operator_writes =
        rest_requests(&operator_text, |labels| !labels.contains(r#"method="GET""#));
    let test_text = ours.encode();
    let test_total = rest_requests(&test_text, |_| true);
    let test_writes = rest_requests(&test_text, |labels| !labels.contains(r#"method="GET""#));
    let delta = |counts: &RequestCounts, writes: bool| {
        counts.sum(|sample| !writes || sample.is_write()) as f64
    };
    // The scrape that read `before` is counted in `after`.
    let server_total = delta(&after, false) - delta(&before, false) - 1.0;
    let server_writes = delta(&after, true) - delta(&before, true);
    println!(
        "requests: operator {operator_total} ({operator_writes} writes), test {test_total} \
         ({test_writes} writes), API server {server_total} ({server_writes} writes)"
    );
    assert!(
        operator_text.contains(r#"rest_client_requests_total{code="201",method="POST",host=""}"#),
        "{operator_text}"
    );
    // The API server counts its own background requests too (a few a second): a tolerance.
    let tolerance = |of: f64| (of * 0.05).max(25.0);
    let expected = operator_total + test_total;
    assert!(
        (server_total - expected).abs() <= tolerance(expected),
        "API server {server_total} requests, operator + test {expected}"
    );
    let expected_writes = operator_writes + test_writes;
    assert!(
        (server_writes - expected_writes).abs() <= tolerance(expected_writes),
        "API server {server_writes} writes, operator + test {expected_writes}"
    );
}
