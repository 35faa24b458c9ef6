//! The bonny-rs side of the benchmark: the Widget controller of the end-to-end tests
//! (`bonny_e2e::widget`, `tests/src/widget.rs`) run as an operator process. It reads
//! `KUBECONFIG`, watches all namespaces, and runs without leader election and without the
//! `/metrics` and probe server, like the peers.
//!
//! `BENCH_LEADER_ELECTION=1` turns leader election on (the failover scenario runs two
//! replicas); its timings come from the SDK's own `BONNY_LEASE_DURATION` & co., and
//! `BONNY_WARM_STANDBY` is read by the SDK where it knows it.

use std::process::ExitCode;

use bonny::Operator;
use bonny_e2e::widget::WidgetController;

#[tokio::main]
async fn main() -> ExitCode {
    bonny::operator::init_logging();
    let leader_election = std::env::var("BENCH_LEADER_ELECTION").is_ok_and(|v| v == "1");
    let result = Operator::builder()
        .name("bonny-widget")
        .without_http()
        .leader_election(leader_election)
        .controller(WidgetController::default())
        .build();
    let result = match result {
        Ok(operator) => operator.run().await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
