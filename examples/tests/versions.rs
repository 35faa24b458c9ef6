//! The versions example end to end: the merged CRD serves `v1alpha1` and `v1` and stores `v1`.
//! A `Gizmo` written in one version reads back in the other, and the `v1` controller
//! reconciles gizmos written in either.
#![allow(clippy::unwrap_used)]

mod support;

use bonny::{controller::Controller, testing::TestEnv};
use bonny_examples::versions::{self, GizmoController, v1, v1alpha1};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{Running, WAIT, eventually, init_tracing};

const NS: &str = "default";

async fn description(gizmos: &Api<v1::Gizmo>, name: &str) -> String {
    eventually(&format!("gizmo {name} to be built"), WAIT, || async {
        let gizmo = gizmos.get(name).await.unwrap();
        let status = gizmo.status?;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(status.description?)
    })
    .await
}

#[tokio::test]
async fn a_gizmo_is_served_in_both_versions_stored_as_v1_and_reconciled() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    let crd = GizmoController.crd().unwrap().unwrap();
    env.install_crd(crd.clone()).await.unwrap();
    let client = env.client();

    // The CRD as the API server has it: both versions served, exactly one stored.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = crds
        .get(crd.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let mut versions: Vec<(String, bool, bool)> = installed
        .spec
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.served, v.storage))
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [("v1".into(), true, true), ("v1alpha1".into(), true, false)]
    );
    let alpha = installed
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .unwrap();
    assert_eq!(alpha.deprecated, Some(true));
    assert_eq!(
        installed.status.unwrap().stored_versions,
        Some(vec!["v1".to_owned()])
    );

    let running = Running::start(versions::builder(), client.clone());
    let gizmos: Api<v1::Gizmo> = Api::namespaced(client.clone(), NS);
    let old_gizmos: Api<v1alpha1::Gizmo> = Api::namespaced(client.clone(), NS);

    // Written as v1, read as v1alpha1: the same size, under the other apiVersion.
    let sprocket = v1::Gizmo::new(
        "sprocket",
        v1::GizmoSpec {
            size: 3,
            color: Some("teal".into()),
        },
    );
    gizmos
        .create(&PostParams::default(), &sprocket)
        .await
        .unwrap();
    assert_eq!(
        description(&gizmos, "sprocket").await,
        "a size-3 teal gizmo"
    );
    let as_alpha = old_gizmos.get("sprocket").await.unwrap();
    assert_eq!(as_alpha.spec.size, 3);
    assert_eq!(
        as_alpha.status.and_then(|s| s.description).as_deref(),
        Some("a size-3 teal gizmo"),
        "the status reads back in v1alpha1 too"
    );

    // v1alpha1 has no `color`: the API server prunes it from what it returns in v1alpha1,
    // while v1 still has it.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<v1alpha1::Gizmo>(&()),
    );
    let raw = raw.get("sprocket").await.unwrap();
    assert_eq!(raw.data["spec"], json!({"size": 3}));
    let stored = gizmos.get("sprocket").await.unwrap();
    assert_eq!(stored.spec.color.as_deref(), Some("teal"));

    // Any write through v1alpha1 stores what v1alpha1 sees: even a merge patch of the size
    // drops the colour. The controller follows.
    old_gizmos
        .patch(
            "sprocket",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    let stored = gizmos.get("sprocket").await.unwrap();
    assert_eq!((stored.spec.size, stored.spec.color), (4, None));
    eventually("the description to follow", WAIT, || async {
        let status = gizmos.get("sprocket").await.unwrap().status?;
        (status.description.as_deref() == Some("a size-4 grey gizmo")).then_some(())
    })
    .await;

    // Written as v1alpha1 (no colour there): stored as v1, reconciled by the v1 controller.
    let cog = v1alpha1::Gizmo::new("cog", v1alpha1::GizmoSpec { size: 1 });
    old_gizmos
        .create(&PostParams::default(), &cog)
        .await
        .unwrap();
    assert_eq!(description(&gizmos, "cog").await, "a size-1 grey gizmo");
    let as_v1 = gizmos.get("cog").await.unwrap();
    assert_eq!(as_v1.spec.size, 1);
    assert_eq!(as_v1.spec.color, None);
    running.stop().await;
}
