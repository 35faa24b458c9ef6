//! The cluster example end to end: a cluster-scoped `SharedConfig` is copied into the
//! namespaces it lists. A namespace removed from the list loses its copy, and deleting the
//! `SharedConfig` runs the finalizer's cleanup exactly once. That cleanup deletes each
//! remaining copy with one DELETE request.
#![allow(clippy::unwrap_used)]

mod support;

use bonny::testing::TestEnv;
use bonny_examples::cluster::{self, COPY_LABEL, SharedConfig, SharedConfigSpec};
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{Running, WAIT, eventually, init_tracing};

const NAMESPACES: [&str; 3] = ["team-a", "team-b", "team-c"];

/// The namespaces that hold a copy of `flags`, sorted.
async fn copies(client: &Client) -> Vec<String> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let mut namespaces: Vec<String> = all
        .list(&ListParams::default().labels(&format!("{COPY_LABEL}=flags")))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(ResourceExt::namespace)
        .collect();
    namespaces.sort();
    namespaces
}

/// Events about the SharedConfig `flags` with `reason`. Events about cluster-scoped objects
/// are recorded in the `default` namespace.
async fn events(client: &Client, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("flags"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn a_shared_config_is_copied_into_listed_namespaces_and_cleaned_up_once() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(SharedConfig::crd()).await.unwrap();
    let client = env.client();
    for namespace in NAMESPACES {
        env.create_namespace(namespace).await.unwrap();
    }
    // A ConfigMap that is not a copy, in a namespace listed later: never to be touched.
    let team_c: Api<ConfigMap> = Api::namespaced(client.clone(), "team-c");
    let foreign = ConfigMap {
        metadata: ObjectMeta {
            name: Some("flags".into()),
            ..ObjectMeta::default()
        },
        data: Some([("owner".to_owned(), "someone else".to_owned())].into()),
        ..ConfigMap::default()
    };
    team_c
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let running = Running::start(cluster::builder(), client.clone());

    let shared: Api<SharedConfig> = Api::all(client.clone());
    let spec = SharedConfigSpec {
        namespaces: vec![
            "team-a".into(),
            "team-b".into(),
            "team-c".into(),
            "team-z".into(),
        ],
        data: [("checkout.v2".to_owned(), "true".to_owned())].into(),
    };
    shared
        .create(&PostParams::default(), &SharedConfig::new("flags", spec))
        .await
        .unwrap();

    // Copies where they may go; team-c is a conflict, team-z does not exist.
    let status = eventually("the status to list the copies", WAIT, || async {
        let status = shared.get("flags").await.unwrap().status?;
        (status.copied_to.len() == 2).then_some(status)
    })
    .await;
    assert_eq!(status.copied_to, ["team-a", "team-b"]);
    assert_eq!(status.conflicts, ["team-c"]);
    assert_eq!(status.missing, ["team-z"]);
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(copies(&client).await, ["team-a", "team-b"]);
    let copy = Api::<ConfigMap>::namespaced(client.clone(), "team-a")
        .get("flags")
        .await
        .unwrap();
    assert_eq!(copy.data.as_ref().unwrap()["checkout.v2"], "true");
    assert!(
        copy.owner_references().is_empty(),
        "copies are managed explicitly, without owner references"
    );
    let untouched = team_c.get("flags").await.unwrap();
    assert_eq!(untouched.data, foreign.data);
    assert!(untouched.labels().get(COPY_LABEL).is_none());

    // A data change reaches every copy; a key removed from the spec leaves the copies.
    shared
        .patch(
            "flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "namespaces": ["team-a", "team-b"],
                "data": {"checkout.v2": null, "banner": "spring sale"},
            }})),
        )
        .await
        .unwrap();
    eventually("the copies to hold the new data", WAIT, || async {
        for namespace in ["team-a", "team-b"] {
            let copy = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get("flags")
                .await
                .unwrap();
            let data = copy.data.unwrap_or_default();
            if data.len() != 1 || data.get("banner").map(String::as_str) != Some("spring sale") {
                return None;
            }
        }
        Some(())
    })
    .await;
    eventually("the SharedConfig to be Ready", WAIT, || async {
        let status = shared.get("flags").await.unwrap().status?;
        (status.conditions[0].status == "True" && status.conflicts.is_empty()).then_some(())
    })
    .await;

    // A namespace removed from the list loses its copy.
    shared
        .patch(
            "flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["team-a"]}})),
        )
        .await
        .unwrap();
    eventually("the team-b copy to be deleted", WAIT, || async {
        (copies(&client).await == ["team-a"]).then_some(())
    })
    .await;

    // Re-list team-b: the remaining copies are then in two namespaces.
    shared
        .patch(
            "flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": ["team-a", "team-b"]}})),
        )
        .await
        .unwrap();
    eventually("the team-b copy to be back", WAIT, || async {
        (copies(&client).await == ["team-a", "team-b"]).then_some(())
    })
    .await;

    // Deleting the SharedConfig: cleanup deletes each copy once (one DELETE per namespace and
    // no more), then the finalizer goes and the SharedConfig with it.
    let deletes_before = env.request_count("DELETE", "configmaps").await.unwrap();
    shared
        .delete("flags", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the SharedConfig to be gone", WAIT, || async {
        shared
            .get_opt("flags")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(copies(&client).await.is_empty(), "copies left behind");
    let deletes = env.request_count("DELETE", "configmaps").await.unwrap() - deletes_before;
    assert_eq!(deletes, 2, "one DELETE per copy, during one cleanup");
    let cleanups = eventually("the CleanedUp event", WAIT, || async {
        let found = events(&client, "CleanedUp").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(cleanups.len(), 1);
    assert!(
        cleanups[0].series.is_none(),
        "cleanup ran more than once: {:?}",
        cleanups[0].series
    );
    assert_eq!(
        team_c.get("flags").await.unwrap().data,
        foreign.data,
        "the ConfigMap that was not a copy survives"
    );
    running.stop().await;
}
