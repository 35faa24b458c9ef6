//! What the example tests share: running an operator in-process, polling with a deadline.
// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

/// How long any one expectation may take to come true.
pub const WAIT: Duration = Duration::from_secs(30);

pub use bonny::testing::eventually;

/// An operator running in this process until [`Running::stop`].
pub struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), bonny::Error>>,
}

impl Running {
    /// Runs the example's operator against the test's API server: its controllers and
    /// settings as shipped, but with the test's client, without leader election (one replica)
    /// and without the HTTP server (tests run in parallel).
    pub fn start(builder: bonny::OperatorBuilder, client: Client) -> Self {
        let operator = builder
            .client(client)
            .leader_election(false)
            .without_http()
            .shutdown_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(operator.run_until(stop.clone()));
        Self { stop, task }
    }

    /// Stops the operator and checks it ended without an error.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the operator to stop in time")
            .unwrap()
            .unwrap();
    }
}

/// Logs to the test output (`RUST_LOG` filters; by default `info`, without the client's
/// complaints while the API server starts), once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
            }),
        )
        .with_test_writer()
        .try_init();
}
