//! The WebApp operator (Deployment + Service per WebApp): `workload-operator run` or `workload-operator manifests`.

#[tokio::main]
async fn main() -> Result<(), bonny::Error> {
    bonny::operator::init_logging();
    bonny_examples::workload::operator()?.main().await
}
