//! One operator replica for the fencing proof: [`TickerController`] (a write on every
//! reconcile) behind `.leader_election(true)`, witnessing its controller-running intervals.
//!
//! Environment:
//! - `WITNESS_FILE` (required): where `<identity> start|stop <CLOCK_MONOTONIC ns>` lines are
//!   appended, see [`bonny_e2e::witness`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease, in the ticks and in the
//!   witness; with the fence it must be the name of the pod the token is bound to;
//! - `KUBECONFIG`, `BONNY_POD_NAMESPACE`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails, 2 when the witness
//! cannot be written.
//!
//! [`TickerController`]: bonny_e2e::ticker::TickerController

use std::{process::ExitCode, time::Duration};

use bonny::Operator;
use bonny_e2e::{
    replica::{self, Failure, Recorder},
    ticker::{OPERATOR, TickerController},
};

const BIN: &str = "fence-operator";

/// In-flight reconciles get this long after a stop, as in the report.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    replica::main(BIN, run())
}

async fn run() -> Result<(), Failure> {
    let identity = replica::required(BIN, "BONNY_POD_NAME")?;
    let recorder = Recorder::open(BIN, &identity)?;
    Operator::builder()
        .name(OPERATOR)
        .controller(TickerController::new(&identity))
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| recorder.record(event))
        .run()
        .await
        .map_err(Failure::operator)
}
