//! The Gizmo operator (one resource in two versions): `versions-operator run` or `versions-operator manifests`.

#[tokio::main]
async fn main() -> Result<(), bonny::Error> {
    bonny::operator::init_logging();
    bonny_examples::versions::operator()?.main().await
}
