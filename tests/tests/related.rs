//! Related-kind watches end to end on a real kube-apiserver: a change to a watched object
//! reconciles exactly the primaries that name it (by a field, served from the index, and by a
//! function), within a second and with no LIST per event; without the watch nothing notices
//! the change; a filtered event costs no reconcile.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bonny::testing::TestEnv;
use bonny_e2e::{
    copier::{Copier, CopierController, Reconciles, UnwatchedCopierController, copier},
    eventually,
    in_process::InProcess,
    init_tracing,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, CustomResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
/// How soon a related change must have reconciled its primaries.
const PROMPT: Duration = Duration::from_secs(1);

/// The copier operator in this process, watching `namespace`.
fn start(
    client: Client,
    namespace: &str,
    controller: impl bonny::controller::Controller,
) -> InProcess {
    InProcess::start(InProcess::builder("copier-e2e", client, namespace).controller(controller))
}

/// `controller_runtime_reconcile_total`, summed over results.
fn reconciles_of(running: &InProcess) -> u64 {
    running.sum("controller_runtime_reconcile_total")
}

fn source(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([("value".to_owned(), value.to_owned())].into()),
        ..ConfigMap::default()
    }
}

fn labelled_secret(name: &str, copier: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("copier".to_owned(), copier.to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

async fn set_value(maps: &Api<ConfigMap>, name: &str, value: &str) {
    maps.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "value": value } })),
    )
    .await
    .unwrap();
}

async fn copied(copiers: &Api<Copier>, name: &str) -> Option<String> {
    copiers.get(name).await.unwrap().status?.copied
}

/// LISTs of the kinds involved, and GETs of the related kinds, as the API server counts them.
async fn reads(env: &TestEnv) -> (u64, u64) {
    let counts = env.request_counts().await.unwrap();
    let lists = ["configmaps", "secrets", "copiers"]
        .iter()
        .map(|resource| counts.count("LIST", resource))
        .sum();
    let gets = ["configmaps", "secrets"]
        .iter()
        .map(|resource| counts.count("GET", resource))
        .sum();
    (lists, gets)
}

/// Waits until `names` were each reconciled more often than in `before`, and returns how
/// long that took from `since`.
async fn reconciled(
    reconciles: &Reconciles,
    before: &HashMap<String, usize>,
    names: &[&str],
    since: Instant,
) -> Duration {
    eventually(
        "the primaries that name the object reconciled",
        WAIT,
        || async {
            names
                .iter()
                .all(|name| reconciles.of(name) > before.get(*name).copied().unwrap_or(0))
                .then_some(())
        },
    )
    .await;
    since.elapsed()
}

async fn setup(env: &TestEnv, namespace: &str) -> (Api<ConfigMap>, Api<Secret>, Api<Copier>) {
    env.create_namespace(namespace).await.unwrap();
    let client = env.client();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let copiers: Api<Copier> = Api::namespaced(client, namespace);
    let post = PostParams::default();
    maps.create(&post, &source("src-a", "1")).await.unwrap();
    maps.create(&post, &source("src-b", "1")).await.unwrap();
    for (name, from) in [("c1", "src-a"), ("c2", "src-a"), ("c3", "src-b")] {
        copiers
            .create(&post, &copier(name, Some(from)))
            .await
            .unwrap();
    }
    copiers.create(&post, &copier("c4", None)).await.unwrap();
    (maps, secrets, copiers)
}

/// The counts of `before` for `name`.
/// The reconciles counted once none has come for `QUIET`: the reconciles that follow a
/// controller's own writes (its status, its children) are over, so a count taken now moves only
/// for what the test does next.
async fn settled(reconciles: &Reconciles) -> HashMap<String, usize> {
    const QUIET: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + WAIT;
    let mut seen = reconciles.all();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = reconciles.all();
        if now == seen {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "reconciles never settled: {now:?}"
        );
        seen = now;
    }
}

fn of(before: &HashMap<String, usize>, name: &str) -> usize {
    before.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_related_change_reconciles_exactly_the_primaries_that_name_it_without_a_list() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Copier::crd()).await.unwrap();
    let (maps, secrets, copiers) = setup(&env, "related").await;
    let controller = CopierController::default();
    let reconciles = controller.reconciles.clone();
    let running = start(env.client(), "related", controller);
    for name in ["c1", "c2", "c3"] {
        eventually("the first copy", WAIT, || async {
            (copied(&copiers, name).await.as_deref() == Some("1")).then_some(())
        })
        .await;
    }

    // Field form: src-a is named by c1 and c2, not by c3 (src-b) nor c4 (nothing).
    let (before, reads_before) = (settled(&reconciles).await, reads(&env).await);
    let since = Instant::now();
    set_value(&maps, "src-a", "2").await;
    let took = reconciled(&reconciles, &before, &["c1", "c2"], since).await;
    eprintln!("field form: c1 and c2 reconciled {took:?} after the change");
    assert!(took < PROMPT, "the field-form watch took {took:?}");
    for name in ["c1", "c2"] {
        eventually("the new value copied", WAIT, || async {
            (copied(&copiers, name).await.as_deref() == Some("2")).then_some(())
        })
        .await;
    }
    // A change that reconciles nothing else: c3 and c4 were left alone.
    set_value(&maps, "src-b", "2").await;
    reconciled(&reconciles, &before, &["c3"], Instant::now()).await;
    assert_eq!(
        reconciles.of("c4"),
        of(&before, "c4"),
        "{:?}",
        reconciles.all()
    );

    // Function form: a Secret labelled copier=c4 reconciles c4 only.
    let (before, since) = (reconciles.all(), Instant::now());
    secrets
        .create(&PostParams::default(), &labelled_secret("s4", "c4"))
        .await
        .unwrap();
    let took = reconciled(&reconciles, &before, &["c4"], since).await;
    eprintln!("function form: c4 reconciled {took:?} after the change");
    assert!(took < PROMPT, "the function-form watch took {took:?}");
    eventually("the Secret counted from the cache", WAIT, || async {
        let status = copiers.get("c4").await.unwrap().status?;
        (status.secrets == Some(1)).then_some(())
    })
    .await;
    for name in ["c1", "c2", "c3"] {
        assert_eq!(
            reconciles.of(name),
            of(&before, name),
            "{name}: {:?}",
            reconciles.all()
        );
    }

    // The index follows the primaries: c2 now copies from src-b, so src-a names c1 only.
    copiers
        .patch(
            "c2",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "source": "src-b" } })),
        )
        .await
        .unwrap();
    eventually("c2 copies src-b", WAIT, || async {
        (copied(&copiers, "c2").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    let before = settled(&reconciles).await;
    set_value(&maps, "src-a", "3").await;
    reconciled(&reconciles, &before, &["c1"], Instant::now()).await;
    eventually("c1 copies 3", WAIT, || async {
        (copied(&copiers, "c1").await.as_deref() == Some("3")).then_some(())
    })
    .await;
    assert_eq!(
        reconciles.of("c2"),
        of(&before, "c2"),
        "{:?}",
        reconciles.all()
    );
    assert_eq!(
        reconciles.of("c3"),
        of(&before, "c3"),
        "{:?}",
        reconciles.all()
    );

    let reads_after = reads(&env).await;
    let (listed, got) = (
        reads_after.0 - reads_before.0,
        reads_after.1 - reads_before.1,
    );
    eprintln!("five related events: {listed} LIST, {got} GET of related kinds");
    assert_eq!(listed, 0, "LIST requests during five related events");
    assert_eq!(
        got, 0,
        "GETs of related kinds: the controller reads them from its cache"
    );

    // A filtered event (labels only, generation unchanged) costs no reconcile; a spec change
    // after it does reconcile, so the filter is not simply dropping everything.
    let (before, total_before) = (reconciles.all(), reconciles_of(&running));
    copiers
        .patch(
            "c3",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await
        .unwrap();
    copiers
        .patch(
            "c3",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "source": "src-a" } })),
        )
        .await
        .unwrap();
    eventually("c3 copies src-a", WAIT, || async {
        (copied(&copiers, "c3").await.as_deref() == Some("3")).then_some(())
    })
    .await;
    let c3 = reconciles.of("c3") - of(&before, "c3");
    let total = reconciles_of(&running) - total_before;
    assert_eq!(
        (c3, total),
        (1, 1),
        "the label change must cost no reconcile, the spec change exactly one"
    );

    running.stop().await;
}

#[tokio::test]
async fn without_the_watch_a_related_change_goes_unnoticed() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Copier::crd()).await.unwrap();
    let (maps, _secrets, copiers) = setup(&env, "unwatched").await;
    let controller = UnwatchedCopierController::default();
    let reconciles = controller.reconciles.clone();
    let running = start(env.client(), "unwatched", controller);
    for name in ["c1", "c2"] {
        eventually("the first copy", WAIT, || async {
            (copied(&copiers, name).await.as_deref() == Some("1")).then_some(())
        })
        .await;
    }
    let before = reconciles.all();
    set_value(&maps, "src-a", "2").await;
    // The watched test's assertion, given three times its deadline, fails here.
    let noticed = tokio::time::timeout(
        3 * PROMPT,
        reconciled(&reconciles, &before, &["c1", "c2"], Instant::now()),
    )
    .await;
    assert!(
        noticed.is_err(),
        "reconciled without a watch: {:?}",
        reconciles.all()
    );
    assert_eq!(copied(&copiers, "c1").await.as_deref(), Some("1"));
    running.stop().await;
}
