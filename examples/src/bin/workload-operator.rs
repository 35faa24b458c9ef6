//! The WebApp operator (Deployment + Service per WebApp): `workload-operator run` or `workload-operator manifests`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bonny::observe::init_logging();
    let result = match bonny_examples::workload::operator() {
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
