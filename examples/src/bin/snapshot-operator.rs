//! The snapshot operator (versioned copies of a ConfigMap, the oldest pruned): `snapshot-operator run` or `snapshot-operator manifests`.

#[tokio::main]
async fn main() -> Result<(), bonny::Error> {
    bonny::operator::init_logging();
    bonny_examples::snapshot::operator()?.main().await
}
