//! The Gizmo operator (one resource in two versions): `versions-operator run` or `versions-operator manifests`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bonny::observe::init_logging();
    let result = match bonny_examples::versions::operator() {
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
