//! One operator replica for the cache tests (`tests/tests/caches.rs`): the Widget controller
//! behind leader election, serving `/metrics` where `BONNY_HTTP_ADDR` says.
//!
//! Environment:
//! - `ADOPT=1`: the Widget controller watches every ConfigMap
//!   (`Config::adopt_existing::<ConfigMap>()`), not only its own descendants;
//! - `BONNY_WARM_STANDBY`, `BONNY_HTTP_ADDR`, `BONNY_POD_NAME`, `BONNY_POD_NAMESPACE`,
//!   `BONNY_WATCH_NAMESPACES`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `KUBECONFIG`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails.

use std::{process::ExitCode, time::Duration};

use bonny::Operator;
use bonny_e2e::{
    replica::{self, Failure},
    widget::{AdoptingWidgetController, WidgetController},
};

const BIN: &str = "cache-operator";

fn main() -> ExitCode {
    replica::main(BIN, run())
}

async fn run() -> Result<(), Failure> {
    let builder = Operator::builder().name("cache-e2e");
    let builder = if std::env::var("ADOPT").is_ok_and(|value| value == "1") {
        builder.controller(AdoptingWidgetController::default())
    } else {
        builder.controller(WidgetController::default())
    };
    builder
        .leader_election(true)
        .shutdown_timeout(Duration::from_millis(500))
        .run()
        .await
        .map_err(Failure::operator)
}
