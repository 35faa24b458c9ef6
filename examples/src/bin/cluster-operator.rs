//! The SharedConfig operator (a cluster-scoped resource copied into namespaces): `cluster-operator run` or `cluster-operator manifests`.

#[tokio::main]
async fn main() -> Result<(), bonny::Error> {
    bonny::operator::init_logging();
    bonny_examples::cluster::operator()?.main().await
}
