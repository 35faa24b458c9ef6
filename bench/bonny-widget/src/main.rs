//! The bonny-rs side of the benchmark: the Widget controller of the end-to-end tests
//! (`bonny_e2e::widget`, `tests/src/widget.rs`) run as an operator process. It reads
//! `KUBECONFIG`, watches all namespaces, and runs without leader election and without the
//! `/metrics` and probe server, like the peers.

use std::process::ExitCode;

use bonny::Operator;
use bonny_e2e::widget::WidgetController;

#[tokio::main]
async fn main() -> ExitCode {
    bonny::operator::init_logging();
    let result = Operator::builder()
        .name("bonny-widget")
        .without_http()
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
