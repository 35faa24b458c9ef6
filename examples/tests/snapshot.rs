//! The snapshot example end to end: a `Snapshot` copies a ConfigMap it does not own into
//! versioned children as the source changes, prunes all but the newest `keep`, leaves a
//! look-alike made by hand alone, and keeps its copies when the source goes. The requests per
//! reconcile (0: the source and the children are read from the watch caches) are counted from
//! the API server's metrics.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use bonny::{
    controller::DESCENDANT_LABEL,
    observe::Metrics,
    testing::{RequestCounts, TestEnv},
};
use bonny_examples::snapshot::{self, SNAPSHOT_LABEL, Snapshot, SnapshotSpec, VERSION_LABEL};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{Running, WAIT, eventually, init_tracing};

const NS: &str = "snaps";

fn configmap(name: &str, labels: &[(&str, &str)], mode: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([("mode".to_owned(), mode.to_owned())].into()),
        ..ConfigMap::default()
    }
}

async fn set_source(configmaps: &Api<ConfigMap>, mode: &str) {
    configmaps
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mode": mode}})),
        )
        .await
        .unwrap();
}

/// The ConfigMaps labelled as copies of `nightly`, by name.
async fn labelled(configmaps: &Api<ConfigMap>) -> BTreeSet<String> {
    configmaps
        .list(&ListParams::default().labels(&format!("{SNAPSHOT_LABEL}=nightly")))
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

fn reconciles(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|line| {
            line.starts_with("controller_runtime_reconcile_total{")
                && line.contains(r#"controller="snapshot""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn configmap_reads(counts: &RequestCounts) -> u64 {
    counts.count("GET", "configmaps") + counts.count("LIST", "configmaps")
}

#[tokio::test]
async fn a_snapshot_copies_its_source_keeps_the_newest_and_prunes_the_rest() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Snapshot::crd()).await.unwrap();
    let client = env.client();
    env.create_namespace(NS).await.unwrap();
    let metrics = Metrics::new();
    let running = Running::start(snapshot::builder().metrics(metrics.clone()), client.clone());

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let snapshots: Api<Snapshot> = Api::namespaced(client.clone(), NS);
    configmaps
        .create(&PostParams::default(), &configmap("settings", &[], "a"))
        .await
        .unwrap();
    snapshots
        .create(
            &PostParams::default(),
            &Snapshot::new(
                "nightly",
                SnapshotSpec {
                    source: "settings".into(),
                    keep: 2,
                },
            ),
        )
        .await
        .unwrap();
    let first = eventually("the first copy", WAIT, || async {
        configmaps.get_opt("nightly-v1").await.unwrap()
    })
    .await;
    assert_eq!(first.data.as_ref().unwrap()["mode"], "a");
    assert_eq!(first.labels()[DESCENDANT_LABEL], "snapshot");
    assert_eq!(first.labels()[VERSION_LABEL], "1");
    assert_eq!(first.owner_references()[0].name, "nightly");
    assert_eq!(first.immutable, Some(true));
    // Looks like an old copy, but was made by hand: not the SDK's to delete.
    configmaps
        .create(
            &PostParams::default(),
            &configmap(
                "nightly-v0",
                &[
                    (SNAPSHOT_LABEL, "nightly"),
                    (VERSION_LABEL, "0"),
                    (DESCENDANT_LABEL, "snapshot"),
                ],
                "by hand",
            ),
        )
        .await
        .unwrap();

    set_source(&configmaps, "b").await;
    eventually("the second copy", WAIT, || async {
        configmaps.get_opt("nightly-v2").await.unwrap()
    })
    .await;
    let before_prune = env.request_counts().await.unwrap();
    set_source(&configmaps, "c").await;
    eventually("the third copy, and the first pruned", WAIT, || async {
        let names = labelled(&configmaps).await;
        (names.contains("nightly-v3") && !names.contains("nightly-v1")).then_some(())
    })
    .await;
    let live = eventually("the status to name the copies kept", WAIT, || async {
        let status = snapshots.get("nightly").await.unwrap().status?;
        (status.kept == ["nightly-v3", "nightly-v2"]).then_some(status)
    })
    .await;
    let after_prune = env.request_counts().await.unwrap();
    let pruning =
        |verb: &str| after_prune.count(verb, "configmaps") - before_prune.count(verb, "configmaps");
    eprintln!(
        "snapshot, a new copy: {} APPLY and {} DELETE of configmaps by the SDK, {} PATCH (the \
         test's edit of the source)",
        pruning("APPLY"),
        pruning("DELETE"),
        pruning("PATCH")
    );
    assert_eq!(pruning("DELETE"), 1, "only the oldest copy is pruned, once");
    assert_eq!(live.latest.as_deref(), Some("nightly-v3"));
    assert_eq!(live.version, 3);
    assert_eq!(
        labelled(&configmaps).await,
        BTreeSet::from(["nightly-v0", "nightly-v2", "nightly-v3"].map(str::to_owned)),
        "the newest two copies, and the look-alike made by hand"
    );
    assert_eq!(
        configmaps.get("nightly-v3").await.unwrap().data.unwrap()["mode"],
        "c"
    );

    // A quiet source: reconciles (each woken by an annotation on the snapshot, which sends no
    // ConfigMap request) read the source and the children from the caches: no ConfigMap
    // request at all. With API reads this was 2 reads per reconcile.
    let (reconciles_before, counts_before) =
        (reconciles(&metrics), env.request_counts().await.unwrap());
    for poke in 0..3 {
        snapshots
            .patch(
                "nightly",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"e2e.bonny.dev/poke": poke.to_string()}}}),
                ),
            )
            .await
            .unwrap();
        eventually("the poked snapshot reconciled", WAIT, || async {
            (reconciles(&metrics) > reconciles_before + poke).then_some(())
        })
        .await;
    }
    let counts_after = env.request_counts().await.unwrap();
    let rounds = reconciles(&metrics) - reconciles_before;
    let reads = configmap_reads(&counts_after) - configmap_reads(&counts_before);
    let writes = counts_after.writes_to(&["configmaps"]) - counts_before.writes_to(&["configmaps"]);
    eprintln!(
        "snapshot, quiet source: {rounds} reconciles, {reads} reads and {writes} writes of \
         configmaps ({:.2} requests per reconcile, cache reads)",
        (reads + writes) as f64 / rounds as f64
    );
    assert!(rounds >= 3, "{rounds} reconciles");
    assert_eq!(writes, 0, "a reconcile with nothing new writes nothing");
    assert_eq!(
        reads, 0,
        "cache reads send no request: {reads} in {rounds} reconciles"
    );

    // The source goes: the copies stay, the status says why nothing new comes.
    configmaps
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    let missing = eventually("the SourceMissing condition", WAIT, || async {
        let status = snapshots.get("nightly").await.unwrap().status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "SourceMissing").then_some(ready.clone())
    })
    .await;
    assert_eq!(missing.status, "False");
    assert_eq!(
        labelled(&configmaps).await,
        BTreeSet::from(["nightly-v0", "nightly-v2", "nightly-v3"].map(str::to_owned))
    );
    running.stop().await;
}
