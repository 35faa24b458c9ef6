//! An operator run inside the test process, against a [`TestEnv`](bonny::testing::TestEnv)'s
//! client: built with the settings every in-process test shares, stopped on request, and read
//! through its own metrics registry.

use std::time::Duration;

use bonny::{
    Operator, OperatorBuilder,
    observe::{Health, Metrics},
};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stop may take before the test fails.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// An operator running in this process.
pub struct InProcess {
    stop: CancellationToken,
    task: JoinHandle<Result<(), bonny::Error>>,
    metrics: Metrics,
    health: Health,
}

impl InProcess {
    /// The builder every in-process test starts from: operator `name` on `client`, watching
    /// `namespace`, no HTTP server, a 5 s shutdown grace.
    pub fn builder(name: &str, client: Client, namespace: &str) -> OperatorBuilder {
        Operator::builder()
            .name(name)
            .client(client)
            .watch_namespace(namespace)
            .without_http()
            .shutdown_timeout(Duration::from_secs(5))
    }

    /// Builds the operator with a metrics registry of its own and runs it until [`stop`].
    ///
    /// [`stop`]: InProcess::stop
    pub fn start(builder: OperatorBuilder) -> Self {
        let metrics = Metrics::new();
        let operator = builder.metrics(metrics.clone()).build().unwrap();
        let health = operator.health().clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(operator.run_until(stop.clone()));
        Self {
            stop,
            task,
            metrics,
            health,
        }
    }

    /// Stops the operator and asserts it stopped cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(STOP_WITHIN, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Whether the operator is still running (it has not returned or panicked).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The operator's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The operator's health (probe) state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The sum over every label set of the series `name` (e.g.
    /// `controller_runtime_reconcile_total`), 0 when absent.
    pub fn sum(&self, name: &str) -> u64 {
        let prefix = format!("{name}{{");
        self.metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with(&prefix) || line.split(' ').next() == Some(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}
