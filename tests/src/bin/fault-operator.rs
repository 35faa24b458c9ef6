//! One operator replica for the fault suite (`tests/tests/fault_suite.rs`): the
//! [`GatedWidgetController`] behind `.leader_election(true)`, witnessing its controller-running
//! intervals and writing its cleanups to a ledger.
//!
//! Environment:
//! - `WITNESS_FILE` (required): controller start/stop lines, see [`bonny_e2e::witness`];
//! - `LEDGER_FILE` (required): cleanup begin/done lines, see [`bonny_e2e::ledger`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease, the witness and the ledger;
//! - `KUBECONFIG`, `BONNY_POD_NAMESPACE`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails, 2 when the witness
//! cannot be written.

use std::{process::ExitCode, time::Duration};

use bonny::Operator;
use bonny_e2e::{
    gated::GatedWidgetController,
    ledger::Ledger,
    replica::{self, Failure, Recorder},
};

const BIN: &str = "fault-operator";

/// In-flight reconciles get this long after a stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    replica::main(BIN, run())
}

async fn run() -> Result<(), Failure> {
    let ledger = Ledger::new(replica::required(BIN, "LEDGER_FILE")?);
    let identity = replica::required(BIN, "BONNY_POD_NAME")?;
    let recorder = Recorder::open(BIN, &identity)?;
    tracing::info!(%identity, ledger = %ledger.path().display(), "fault-operator starting");
    Operator::builder()
        .name("fault-e2e")
        .controller(GatedWidgetController::new(identity, ledger))
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| recorder.record(event))
        .run()
        .await
        .map_err(Failure::operator)
}
