//! Prometheus metrics, named like controller-runtime's so existing dashboards work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, atomic::AtomicU64},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::{process::ProcessCollector, workqueue::WorkQueue};

/// How a reconcile ended, as the `result` label of `controller_runtime_reconcile_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ReconcileResult {
    /// Succeeded and waits for the next change.
    success,
    /// Succeeded and asked to run again after a delay.
    requeue_after,
    /// Failed (including a panic in the author's code).
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: ReconcileResult,
}

/// controller-runtime names each controller's work queue after the controller and labels its
/// series with both.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: String,
    controller: String,
}

impl QueueLabels {
    fn of(controller: &str) -> Self {
        Self {
            name: controller.to_owned(),
            controller: controller.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: String,
    method: String,
    host: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

/// The operator's metrics and the registry they live in. Cheap to clone.
///
/// Authors register their own metrics on the same registry with [`Metrics::register`], and
/// they are served on the same `/metrics` endpoint.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    active_workers: Family<ControllerLabels, Gauge>,
    retries: Family<QueueLabels, Counter>,
    leader_status: Family<LeaseLabels, Gauge>,
    leader_transitions: Family<LeaseLabels, Counter>,
    decode_errors: Family<ControllerLabels, Counter>,
    cache_objects: Family<CacheLabels, Gauge>,
    max_concurrent: Family<ControllerLabels, Gauge>,
    terminal_errors: Family<ControllerLabels, Counter>,
    panics: Family<ControllerLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_adds: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
    work_duration: Family<QueueLabels, Histogram>,
    unfinished_work: Family<QueueLabels, FloatGauge>,
    longest_running: Family<QueueLabels, FloatGauge>,
    /// The live work queue of each controller; a stopped controller's is gone.
    queues: Arc<Mutex<HashMap<String, Weak<WorkQueue>>>>,
    requests: Family<RequestLabels, Counter>,
}

/// client-go's buckets for the work queue's durations: 10 ns to 1,000 s, by tens.
fn queue_buckets() -> Histogram {
    Histogram::new(exponential_buckets(10e-9, 10.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with the SDK's metrics in it.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        let reconcile_time = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        let active_workers = Family::<ControllerLabels, Gauge>::default();
        let retries = Family::<QueueLabels, Counter>::default();
        let leader_status = Family::<LeaseLabels, Gauge>::default();
        let leader_transitions = Family::<LeaseLabels, Counter>::default();
        let decode_errors = Family::<ControllerLabels, Counter>::default();
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        let max_concurrent = Family::<ControllerLabels, Gauge>::default();
        let terminal_errors = Family::<ControllerLabels, Counter>::default();
        let panics = Family::<ControllerLabels, Counter>::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let queue_adds = Family::<QueueLabels, Counter>::default();
        let queue_duration = Family::<QueueLabels, Histogram>::new_with_constructor(queue_buckets);
        let work_duration = Family::<QueueLabels, Histogram>::new_with_constructor(queue_buckets);
        let unfinished_work = Family::<QueueLabels, FloatGauge>::default();
        let longest_running = Family::<QueueLabels, FloatGauge>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            reconcile_time.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Number of reconciles running now per controller",
            active_workers.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            retries.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue",
            queue_depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            queue_adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            work_duration.clone(),
        );
        registry.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been \
             observed by work_duration. Large values indicate stuck threads. One can deduce \
             the number of stuck threads by observing the rate at which this increases",
            unfinished_work.clone(),
        );
        registry.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            longest_running.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller (0: no limit)",
            max_concurrent.clone(),
        );
        registry.register(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller",
            terminal_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_panics",
            "Total number of reconciliation panics per controller",
            panics.clone(),
        );
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host",
            requests.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register(
            "leader_election_master_status",
            "1 while this replica holds the leader Lease, else 0",
            leader_status.clone(),
        );
        registry.register(
            "leader_election_transitions",
            "Times this replica acquired the leader Lease",
            leader_transitions.clone(),
        );
        registry.register(
            "bonny_decode_errors",
            "Watched objects skipped because they do not decode into the controller's type, \
             counted once per object version",
            decode_errors.clone(),
        );
        registry.register(
            "bonny_cache_objects",
            "Objects held by each watch cache of owned kinds, by `<plural>.<group>/<namespace>` \
             (`*` for all namespaces)",
            cache_objects.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            reconcile_total,
            reconcile_errors,
            reconcile_time,
            active_workers,
            retries,
            leader_status,
            leader_transitions,
            decode_errors,
            cache_objects,
            max_concurrent,
            terminal_errors,
            panics,
            queue_depth,
            queue_adds,
            queue_duration,
            work_duration,
            unfinished_work,
            longest_running,
            queues: Arc::default(),
            requests,
        }
    }

    /// Lock the registry to register the author's own metrics.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    /// let metrics = bonny::observe::Metrics::new();
    /// let widgets_resized = Counter::<u64>::default();
    /// metrics.register().register("widgets_resized", "Widgets whose size changed", widgets_resized.clone());
    /// widgets_resized.inc();
    /// assert!(metrics.encode().contains("widgets_resized_total 1"));
    /// ```
    pub fn register(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.refresh_queues(Instant::now());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.register());
        out
    }

    pub(crate) fn reconcile_started(&self, controller: &str) {
        self.active_workers
            .get_or_create(&controller_labels(controller))
            .inc();
    }

    pub(crate) fn reconcile_finished(
        &self,
        controller: &str,
        result: ReconcileResult,
        elapsed: Duration,
    ) {
        let labels = controller_labels(controller);
        self.active_workers.get_or_create(&labels).dec();
        self.reconcile_time
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.reconcile_total
            .get_or_create(&ResultLabels {
                controller: controller.to_owned(),
                result,
            })
            .inc();
        if result == ReconcileResult::error {
            self.reconcile_errors.get_or_create(&labels).inc();
        }
    }

    /// A reconcile ended without a result: stopped because this replica may no longer write
    /// (it lost leadership). Counted neither as a success nor as an error.
    pub(crate) fn reconcile_stopped(&self, controller: &str) {
        self.active_workers
            .get_or_create(&controller_labels(controller))
            .dec();
    }

    pub(crate) fn retry_scheduled(&self, controller: &str) {
        self.retries
            .get_or_create(&QueueLabels::of(controller))
            .inc();
    }

    /// A controller starts with at most `limit` reconciles at once (0: no limit); its series
    /// that count rare things are shown from the start, at 0.
    pub(crate) fn controller_started(&self, controller: &str, limit: u16) {
        let labels = controller_labels(controller);
        self.max_concurrent
            .get_or_create(&labels)
            .set(i64::from(limit));
        let _ = self.terminal_errors.get_or_create(&labels);
        let _ = self.panics.get_or_create(&labels);
        let _ = self.reconcile_errors.get_or_create(&labels);
        let _ = self.retries.get_or_create(&QueueLabels::of(controller));
    }

    /// The author's code panicked in a reconcile (counted as an error too).
    pub(crate) fn reconcile_panicked(&self, controller: &str) {
        self.panics
            .get_or_create(&controller_labels(controller))
            .inc();
    }

    /// The work queue of `controller`: the one its running scopes share, or a new one when
    /// none runs.
    pub(crate) fn work_queue(&self, controller: &str) -> Arc<WorkQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(controller).and_then(Weak::upgrade) {
            return queue;
        }
        let labels = QueueLabels::of(controller);
        let queue = Arc::new(WorkQueue::new(
            self.queue_adds.get_or_create(&labels).clone(),
            self.queue_duration.get_or_create(&labels).clone(),
            self.work_duration.get_or_create(&labels).clone(),
        ));
        queues.insert(controller.to_owned(), Arc::downgrade(&queue));
        queue
    }

    /// Sets the queue gauges from the live queues (a stopped controller's read 0).
    fn refresh_queues(&self, now: Instant) {
        let queues: Vec<(String, Option<Arc<WorkQueue>>)> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, queue)| (name.clone(), queue.upgrade()))
            .collect();
        for (name, queue) in queues {
            let gauges = queue.map(|queue| queue.gauges(now)).unwrap_or_default();
            let labels = QueueLabels::of(&name);
            self.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(gauges.depth).unwrap_or(i64::MAX));
            self.unfinished_work
                .get_or_create(&labels)
                .set(gauges.unfinished);
            self.longest_running
                .get_or_create(&labels)
                .set(gauges.longest);
        }
    }

    /// A request to the API server got a response with status `code` (or none: `<error>`).
    pub(crate) fn request_sent(&self, code: String, method: &str, host: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                code,
                method: method.to_owned(),
                host: host.to_owned(),
            })
            .inc();
    }

    pub(crate) fn decode_failed(&self, controller: &str) {
        self.decode_errors
            .get_or_create(&controller_labels(controller))
            .inc();
    }

    pub(crate) fn set_leader(&self, lease: &str, leading: bool) {
        let labels = LeaseLabels {
            name: lease.to_owned(),
        };
        let was = self
            .leader_status
            .get_or_create(&labels)
            .set(i64::from(leading));
        if leading && was == 0 {
            self.leader_transitions.get_or_create(&labels).inc();
        }
    }
}

impl Metrics {
    /// The watch cache `cache` now holds `objects` objects.
    pub(crate) fn cache_size(&self, cache: &str, objects: usize) {
        self.cache_objects
            .get_or_create(&CacheLabels {
                cache: cache.to_owned(),
            })
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }
}

fn controller_labels(controller: &str) -> ControllerLabels {
    ControllerLabels {
        controller: controller.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_counts_by_result() {
        let metrics = Metrics::new();
        metrics.reconcile_started("widget");
        metrics.reconcile_finished("widget", ReconcileResult::success, Duration::from_millis(3));
        metrics.reconcile_started("widget");
        metrics.reconcile_finished("widget", ReconcileResult::error, Duration::from_millis(3));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"controller_runtime_reconcile_total{controller="widget",result="success"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"controller_runtime_reconcile_total{controller="widget",result="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_errors_total{controller="widget"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_active_workers{controller="widget"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn decode_errors_count_per_controller() {
        let metrics = Metrics::new();
        metrics.decode_failed("widget");
        metrics.decode_failed("widget");
        let text = metrics.encode();
        assert!(
            text.contains(r#"bonny_decode_errors_total{controller="widget"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn leader_transitions_count_acquisitions_only() {
        let metrics = Metrics::new();
        metrics.set_leader("lease", true);
        metrics.set_leader("lease", true);
        metrics.set_leader("lease", false);
        metrics.set_leader("lease", true);
        let text = metrics.encode();
        assert!(
            text.contains(r#"leader_election_master_status{name="lease"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leader_election_transitions_total{name="lease"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn a_controllers_scopes_share_one_queue_and_a_new_term_starts_empty() {
        use super::super::QueueKey;

        let metrics = Metrics::new();
        metrics.controller_started("widget", 4);
        let scope_a = metrics.work_queue("widget");
        let scope_b = metrics.work_queue("widget");
        scope_a.added(QueueKey::new(Some("a"), "w1"));
        scope_b.added(QueueKey::new(Some("b"), "w1"));
        let text = metrics.encode();
        for series in [
            r#"workqueue_depth{name="widget",controller="widget"} 2"#,
            r#"workqueue_adds_total{name="widget",controller="widget"} 2"#,
            r#"controller_runtime_max_concurrent_reconciles{controller="widget"} 4"#,
            r#"controller_runtime_reconcile_panics_total{controller="widget"} 0"#,
            r#"controller_runtime_terminal_reconcile_errors_total{controller="widget"} 0"#,
            r#"workqueue_retries_total{name="widget",controller="widget"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
        // The controller stops (leadership lost): its queue goes, and the next term's is new.
        drop((scope_a, scope_b));
        let text = metrics.encode();
        assert!(
            text.contains(r#"workqueue_depth{name="widget",controller="widget"} 0"#),
            "{text}"
        );
        let next = metrics.work_queue("widget");
        next.added(QueueKey::new(Some("a"), "w2"));
        let text = metrics.encode();
        assert!(
            text.contains(r#"workqueue_depth{name="widget",controller="widget"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"workqueue_adds_total{name="widget",controller="widget"} 3"#),
            "{text}"
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookCodeLabels {
    webhook: String,
    code: String,
}

/// The webhook server's metrics, named like controller-runtime's; the `webhook` label is the
/// URL path. Registered on the operator's registry once, when the operator serves webhooks.
#[derive(Clone, Debug)]
pub(crate) struct WebhookMetrics {
    requests: Family<WebhookCodeLabels, Counter>,
    latency: Family<WebhookLabels, Histogram>,
    in_flight: Family<WebhookLabels, Gauge>,
    panics: Counter,
}

impl WebhookMetrics {
    /// Register the webhook metrics on `metrics`' registry.
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let requests = Family::<WebhookCodeLabels, Counter>::default();
        let latency = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let in_flight = Family::<WebhookLabels, Gauge>::default();
        let panics = Counter::default();
        let mut registry = metrics.register();
        registry.register(
            "controller_runtime_webhook_requests",
            "Total number of admission and conversion requests by webhook and HTTP status code",
            requests.clone(),
        );
        registry.register(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission and conversion requests",
            latency.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission and conversion requests being served",
            in_flight.clone(),
        );
        registry.register(
            "controller_runtime_webhook_panics",
            "Total number of panics in webhook code, each answered as an internal error",
            panics.clone(),
        );
        Self {
            requests,
            latency,
            in_flight,
            panics,
        }
    }

    /// A request to `webhook` arrived.
    pub(crate) fn request_started(&self, webhook: &str) {
        self.in_flight
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .inc();
    }

    /// A request to `webhook` was answered with `code` after `elapsed`.
    pub(crate) fn request_finished(&self, webhook: &str, code: u16, elapsed: Duration) {
        let labels = WebhookLabels {
            webhook: webhook.to_owned(),
        };
        self.in_flight.get_or_create(&labels).dec();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&WebhookCodeLabels {
                webhook: webhook.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The author's webhook code panicked.
    pub(crate) fn panicked(&self) {
        self.panics.inc();
    }
}
