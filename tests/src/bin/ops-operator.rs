//! The Widget operator as a process, for tests of what only a process shows: signals, exit
//! codes, leader election between replicas, the probe endpoint and settings read from the
//! environment (`KUBECONFIG`, `BONNY_HTTP_ADDR`, `BONNY_LEASE_DURATION`, ...).
//!
//! `ops-operator [run]` runs it with leader election on; `ops-operator manifests` prints its
//! manifests.

use bonny::Operator;
use bonny_e2e::widget::WidgetController;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bonny::operator::init_logging();
    let result = match Operator::builder()
        .name("ops-operator")
        .controller(WidgetController::default())
        .leader_election(true)
        .build()
    {
        Ok(operator) => operator.main().await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
