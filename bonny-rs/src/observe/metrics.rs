//! Prometheus metrics, named like controller-runtime's so existing dashboards work.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    name: String,
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
            "Total number of retries after a failed reconcile, per controller",
            retries.clone(),
        );
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
            .get_or_create(&QueueLabels {
                name: controller.to_owned(),
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
