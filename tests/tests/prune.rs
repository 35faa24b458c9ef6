//! Pruning end to end on a real kube-apiserver: a descendant no longer registered is deleted,
//! and nothing the SDK did not apply for that object is: an unlabelled look-alike, one
//! labelled for another controller, one labelled by hand without an owner, and another
//! object's descendants all survive. The API server's request counters say what was sent.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{
    controller::DESCENDANT_LABEL,
    prelude::*,
    testing::{RequestCounts, TestEnv},
};
use bonny_e2e::{eventually, in_process::InProcess, init_tracing};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, CustomResource, CustomResourceExt, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "prune";

/// A shelf holds one ConfigMap per item.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "e2e.bonny.dev", version = "v1", kind = "Shelf", namespaced)]
pub struct ShelfSpec {
    /// One descendant `<shelf>-<item>` each.
    pub items: Vec<String>,
}

/// Registers one ConfigMap per item and prunes the rest; records the labels of every shelf
/// whose processing ended.
#[bonny::controller(resource = Shelf, owns = [ConfigMap], prune = true)]
#[derive(Clone, Default)]
struct ShelfController {
    processed: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl Reconcile<Shelf> for ShelfController {
    async fn apply(&self, axn: &mut Axn<Shelf>) -> Result<Action, ReconcileError> {
        let labels = axn.object().labels().clone();
        let processed = self.processed.clone();
        axn.after_processed(move |_| processed.lock().unwrap().push(labels));
        for item in axn.object().spec.items.clone() {
            axn.register_descendant(ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{item}", axn.name())),
                    ..ObjectMeta::default()
                },
                data: Some([("item".to_owned(), item)].into()),
                ..ConfigMap::default()
            })?;
        }
        Ok(Action::await_change())
    }
}

impl ShelfController {
    fn processed(&self, key: &str, value: &str) -> bool {
        self.processed
            .lock()
            .unwrap()
            .iter()
            .any(|labels| labels.get(key).map(String::as_str) == Some(value))
    }
}

fn shelf(name: &str, items: &[&str]) -> Shelf {
    Shelf::new(
        name,
        ShelfSpec {
            items: items.iter().map(|item| (*item).to_owned()).collect(),
        },
    )
}

/// A ConfigMap made by hand, with `labels` and, when given, `owner` as its controller.
fn by_hand(name: &str, labels: &[(&str, &str)], owner: Option<&Shelf>) -> ConfigMap {
    let owner: Option<OwnerReference> = owner.and_then(|shelf| shelf.controller_owner_ref(&()));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            owner_references: owner.map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Requests to ConfigMaps other than watches (a standing watch is counted once, when opened).
fn configmap_requests(counts: &RequestCounts) -> u64 {
    counts.sum(|s| s.resource == "configmaps" && !s.verb.eq_ignore_ascii_case("WATCH"))
}

#[tokio::test]
async fn pruning_deletes_exactly_the_stale_descendants() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Shelf::crd()).await.unwrap();
    env.create_namespace(NS).await.unwrap();
    let client = env.client();
    let controller = ShelfController::default();
    let running = InProcess::start(
        InProcess::builder("prune-e2e", client.clone(), NS).controller(controller.clone()),
    );

    let shelves: Api<Shelf> = Api::namespaced(client.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let s1 = shelves
        .create(&PostParams::default(), &shelf("s1", &["a", "b", "c"]))
        .await
        .unwrap();
    shelves
        .create(&PostParams::default(), &shelf("s2", &["x"]))
        .await
        .unwrap();
    for name in ["s1-a", "s1-b", "s1-c", "s2-x"] {
        let child = eventually(name, WAIT, || async {
            configmaps.get_opt(name).await.unwrap()
        })
        .await;
        assert_eq!(child.labels()[DESCENDANT_LABEL], "shelf");
    }
    // Look-alikes, none of which the SDK applied for s1.
    for look_alike in [
        by_hand("s1-unlabelled", &[("app", "s1")], Some(&s1)),
        by_hand("s1-other", &[(DESCENDANT_LABEL, "another")], Some(&s1)),
        by_hand("s1-no-owner", &[(DESCENDANT_LABEL, "shelf")], None),
    ] {
        configmaps
            .create(&PostParams::default(), &look_alike)
            .await
            .unwrap();
    }

    let before = env.request_counts().await.unwrap();
    shelves
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"items": ["a"]}})),
        )
        .await
        .unwrap();
    eventually("s1-b and s1-c to be pruned", WAIT, || async {
        let gone = configmaps.get_opt("s1-b").await.unwrap().is_none()
            && configmaps.get_opt("s1-c").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    // Two more reconciles of s1 after the pruning, so that every look-alike has long been in
    // the cache when the last one looks for stale descendants.
    for touch in ["1", "2"] {
        shelves
            .patch(
                "s1",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touch": touch}}})),
            )
            .await
            .unwrap();
        eventually("the touched shelf's reconcile to end", WAIT, || async {
            controller.processed("touch", touch).then_some(())
        })
        .await;
    }
    let after = env.request_counts().await.unwrap();
    for survivor in ["s1-a", "s1-unlabelled", "s1-other", "s1-no-owner", "s2-x"] {
        assert!(
            configmaps.get_opt(survivor).await.unwrap().is_some(),
            "{survivor} must not be pruned"
        );
    }
    let deletes = after.count("DELETE", "configmaps") - before.count("DELETE", "configmaps");
    let writes = after.writes_to(&["configmaps"]) - before.writes_to(&["configmaps"]);
    eprintln!(
        "pruning two of three descendants, then two reconciles: {deletes} DELETE, {writes} \
         writes to configmaps in all"
    );
    assert_eq!(
        deletes, 2,
        "exactly the two stale descendants are deleted, once each"
    );
    assert_eq!(writes, 2, "the kept descendant is not applied again");

    // A reconcile with nothing stale and nothing to apply sends nothing about ConfigMaps.
    let quiet = env.request_counts().await.unwrap();
    shelves
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touch": "3"}}})),
        )
        .await
        .unwrap();
    eventually("the no-op reconcile to end", WAIT, || async {
        controller.processed("touch", "3").then_some(())
    })
    .await;
    let done = env.request_counts().await.unwrap();
    assert_eq!(
        configmap_requests(&done) - configmap_requests(&quiet),
        0,
        "a no-op reconcile of a pruning controller sends no request: {:?}",
        done.by_verb_resource()
    );
    eprintln!("a no-op reconcile of a pruning controller: 0 requests to configmaps");

    running.stop().await;
}
