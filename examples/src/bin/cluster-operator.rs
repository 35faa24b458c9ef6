//! The SharedConfig operator (a cluster-scoped resource copied into namespaces): `cluster-operator run` or `cluster-operator manifests`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bonny::observe::init_logging();
    let result = match bonny_examples::cluster::operator() {
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
