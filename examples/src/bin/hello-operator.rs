//! The hello-world operator: `hello-operator run` or `hello-operator manifests`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bonny::observe::init_logging();
    let result = match bonny_examples::hello::operator() {
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
