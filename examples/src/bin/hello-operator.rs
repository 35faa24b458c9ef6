//! The hello-world operator: `hello-operator run` or `hello-operator manifests`.

#[tokio::main]
async fn main() -> Result<(), bonny::Error> {
    bonny::operator::init_logging();
    bonny_examples::hello::operator()?.main().await
}
