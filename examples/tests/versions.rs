//! The versions example end to end: the merged CRD serves `v1alpha1` and `v1` and stores `v1`.
//! A `Gizmo` written in one version reads back in the other, and the `v1` controller
//! reconciles gizmos written in either.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use bonny::{controller::Controller, manifest::Options, testing::TestEnv};
use bonny_examples::versions::{self, COLOR_ANNOTATION, GizmoController, v1, v1alpha1};
use k8s_openapi::{
    api::admissionregistration::v1::ValidatingWebhookConfiguration,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams},
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

    // The CRD has no conversion stanza here: the API server converts with `None`.
    let running = Running::start(
        versions::builder().webhooks(versions::webhooks().port(free_port())),
        client.clone(),
    );
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const GIZMOS: &str = "gizmos.versions.bonny.dev";

async fn get_raw(env: &TestEnv, version: &str, name: &str) -> serde_json::Value {
    let path = format!("/apis/versions.bonny.dev/{version}/namespaces/{NS}/gizmos/{name}");
    let mut kubectl = env.kubectl().unwrap();
    kubectl.args(["get", "--raw", &path]);
    let out = tokio::task::spawn_blocking(move || kubectl.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Which version the CRD stores, by a replace of its versions' `storage` flags.
async fn store(client: &Client, version: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = crds.get(GIZMOS).await.unwrap();
    for v in &mut crd.spec.versions {
        v.storage = v.name == version;
    }
    crds.replace(GIZMOS, &PostParams::default(), &crd)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_conversion_webhook_keeps_every_field_across_versions_and_the_validator_sees_both() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    let port = free_port();
    let webhooks = versions::webhooks().port(port).host("127.0.0.1");
    let manifests = versions::builder()
        .webhooks(webhooks.clone())
        .build()
        .unwrap()
        .manifests(
            &Options::new("img:1")
                .namespace("ops")
                .webhook_url(format!("https://127.0.0.1:{port}")),
        )
        .unwrap();
    let crd = manifests.crds[0].clone();
    let conversion = crd.spec.conversion.clone().unwrap();
    assert_eq!(conversion.strategy, "Webhook");
    env.install_crd(crd).await.unwrap();
    let webhook_manifests = manifests.webhooks.unwrap();

    // Before the operator serves conversion, store a gizmo as v1alpha1: a stored version of
    // its own. (Reading it needs no conversion, writing it no validator yet: failurePolicy
    // Fail would refuse it, so the validator is only added once the operator is up.)
    store(&client, "v1alpha1").await;
    let old_gizmos: Api<v1alpha1::Gizmo> = Api::namespaced(client.clone(), NS);
    let gizmos: Api<v1::Gizmo> = Api::namespaced(client.clone(), NS);
    eventually(
        "a v1alpha1 gizmo to be stored as v1alpha1",
        WAIT,
        || async {
            old_gizmos
                .create(
                    &PostParams::default(),
                    &v1alpha1::Gizmo::new("stored-old", v1alpha1::GizmoSpec { size: 7 }),
                )
                .await
                .ok()
        },
    )
    .await;
    store(&client, "v1").await;

    let running = Running::start(versions::builder().webhooks(webhooks), client.clone());
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(
            &PostParams::default(),
            &webhook_manifests.validating.unwrap(),
        )
        .await
        .unwrap();
    eventually(
        "the operator to write the validator's CA bundle",
        WAIT,
        || async {
            let config = Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .get("versions-operator")
                .await
                .unwrap();
            config.webhooks?[0]
                .client_config
                .ca_bundle
                .as_ref()
                .map(|_| ())
        },
    )
    .await;
    // Conversion works once the operator has written the CA bundle into the CRD.
    let first = eventually("v1 reads to convert", WAIT, || async {
        gizmos
            .get("stored-old")
            .await
            .map_err(|err| tracing::info!(error = %err, "not converting yet"))
            .ok()
    })
    .await;
    assert_eq!((first.spec.size, first.spec.color), (7, None));

    // Written as v1alpha1 with a colour kept in the annotation: stored as v1 with the colour
    // in its field, and read back as v1alpha1 unchanged.
    let mut cog = v1alpha1::Gizmo::new("cog", v1alpha1::GizmoSpec { size: 2 });
    cog.metadata.annotations = Some(BTreeMap::from([
        (COLOR_ANNOTATION.to_owned(), "teal".to_owned()),
        ("team".to_owned(), "gears".to_owned()),
    ]));
    // The API server's webhook informer follows the CA bundle a moment after it is written.
    eventually("the first write through the validator", WAIT, || async {
        old_gizmos
            .create(&PostParams::default(), &cog)
            .await
            .map_err(|err| tracing::info!(error = %err, "not admitting yet"))
            .ok()
    })
    .await;
    let raw_v1 = get_raw(&env, "v1", "cog").await;
    assert_eq!(raw_v1["apiVersion"], "versions.bonny.dev/v1");
    assert_eq!(raw_v1["spec"], json!({"size": 2, "color": "teal"}));
    assert_eq!(raw_v1["metadata"]["annotations"], json!({"team": "gears"}));
    let raw_alpha = get_raw(&env, "v1alpha1", "cog").await;
    assert_eq!(raw_alpha["spec"], json!({"size": 2}));
    assert_eq!(
        raw_alpha["metadata"]["annotations"],
        json!({COLOR_ANNOTATION: "teal", "team": "gears"}),
        "read back as written"
    );
    let installed = Api::<CustomResourceDefinition>::all(client.clone())
        .get(GIZMOS)
        .await
        .unwrap();
    assert_eq!(
        installed
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .unwrap()
            .name,
        "v1"
    );

    // Written as v1: a merge patch through v1alpha1 no longer erases the colour.
    let sprocket = v1::Gizmo::new(
        "sprocket",
        v1::GizmoSpec {
            size: 3,
            color: Some("red".into()),
        },
    );
    gizmos
        .create(&PostParams::default(), &sprocket)
        .await
        .unwrap();
    old_gizmos
        .patch(
            "sprocket",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    let stored = gizmos.get("sprocket").await.unwrap();
    assert_eq!(
        (stored.spec.size, stored.spec.color.as_deref()),
        (4, Some("red"))
    );

    // The validator, declared for v1, refuses a v1alpha1 write (converted for it).
    let refused = old_gizmos
        .create(
            &PostParams::default(),
            &v1alpha1::Gizmo::new("empty", v1alpha1::GizmoSpec { size: 0 }),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("expected a refusal, got {refused}");
    };
    assert!(
        status
            .message
            .contains("a gizmo needs a size of at least 1"),
        "{}",
        status.message
    );

    // A LIST of objects stored in both versions, in both versions.
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(GIZMOS)
        .await
        .unwrap();
    let mut stored_versions = crd.status.unwrap().stored_versions.unwrap();
    stored_versions.sort();
    assert_eq!(stored_versions, ["v1", "v1alpha1"]);
    let as_v1: BTreeMap<String, (u32, Option<String>)> = gizmos
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|g| (g.metadata.name.unwrap(), (g.spec.size, g.spec.color)))
        .collect();
    assert_eq!(
        as_v1,
        BTreeMap::from([
            ("cog".to_owned(), (2, Some("teal".to_owned()))),
            ("sprocket".to_owned(), (4, Some("red".to_owned()))),
            ("stored-old".to_owned(), (7, None)),
        ])
    );
    let as_alpha: BTreeMap<String, u32> = old_gizmos
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|g| (g.metadata.name.unwrap(), g.spec.size))
        .collect();
    assert_eq!(
        as_alpha,
        BTreeMap::from([
            ("cog".to_owned(), 2),
            ("sprocket".to_owned(), 4),
            ("stored-old".to_owned(), 7),
        ])
    );
    running.stop().await;
}
