//! The SDK on its worst days, on a real kube-apiserver: objects that do not decode into the
//! author's type, and objects deleted while (or before) their first reconcile runs.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{prelude::*, testing::TestEnv};
use bonny_e2e::{
    events_for, eventually,
    in_process::InProcess,
    init_tracing,
    widget::{Widget, WidgetController, widget},
};
use k8s_openapi::{
    api::core::v1::ConfigMap,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, DynamicObject, PostParams},
    core::{ApiResource, GroupVersionKind},
};

const WAIT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "faults";

/// The operator `faults-e2e` with `controller`, watching the test namespace.
fn start<C: Controller>(client: Client, controller: C) -> InProcess {
    InProcess::start(InProcess::builder("faults-e2e", client, NAMESPACE).controller(controller))
}

/// Records, per widget name, whether `apply` reached it and how often `cleanup` ran.
#[bonny::controller(resource = Widget, finalizer = "e2e.bonny.dev/cleanup")]
#[derive(Clone, Default)]
struct Tally {
    applied: Arc<Mutex<BTreeSet<String>>>,
    cleaned: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Reconcile<Widget> for Tally {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.applied.lock().unwrap().insert(axn.name());
        Ok(Action::await_change())
    }

    async fn cleanup(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        *self.cleaned.lock().unwrap().entry(axn.name()).or_default() += 1;
        Ok(Action::await_change())
    }
}

#[tokio::test]
async fn cleanup_runs_for_every_widget_that_reached_apply_even_when_deleted_at_once() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env.create_namespace(NAMESPACE).await.unwrap();
    let client = env.client();
    let tally = Tally::default();
    let running = start(client.clone(), tally.clone());
    eventually("the operator to be ready", WAIT, || async {
        running.health().ready().ok()
    })
    .await;

    let widgets: Api<Widget> = Api::namespaced(client.clone(), NAMESPACE);
    const CYCLES: u64 = 50;
    for cycle in 0..CYCLES {
        let name = format!("race-{cycle}");
        widgets
            .create(&PostParams::default(), &widget(&name, 1))
            .await
            .unwrap();
        // The fault injected: the deletion follows the creation by 0 to 50 ms.
        tokio::time::sleep(Duration::from_millis(cycle * 37 % 51)).await;
        widgets
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually("every widget to be gone", WAIT, || async {
        widgets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    // Cleanup of a widget that reached apply may still be running: poll with a deadline.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (applied, cleaned, missed) = loop {
        let applied = tally.applied.lock().unwrap().clone();
        let cleaned = tally.cleaned.lock().unwrap().clone();
        let missed: Vec<String> = applied
            .iter()
            .filter(|name| !cleaned.contains_key(*name))
            .cloned()
            .collect();
        if missed.is_empty() || tokio::time::Instant::now() >= deadline {
            break (applied, cleaned, missed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let twice: Vec<_> = cleaned.iter().filter(|(_, runs)| **runs > 1).collect();
    eprintln!(
        "create-then-delete race: {CYCLES} cycles, {} reached apply, {} cleaned up ({} twice), \
         {} never cleaned up",
        applied.len(),
        cleaned.len(),
        twice.len(),
        missed.len()
    );
    assert!(
        missed.is_empty(),
        "cleanup never ran for {missed:?}, though apply ran for them"
    );
    // Nothing here makes a cleanup or a finalizer removal fail, so none runs twice.
    assert!(twice.is_empty(), "cleanup ran more than once for {twice:?}");
    running.stop().await;
}

/// The Widget CRD with a spec the API server does not check, so that a widget whose
/// `spec.size` is not a number can be stored (as after a schema change or a looser version).
fn loose_widget_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = Widget::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    schema.properties.as_mut().unwrap().insert(
        "spec".to_owned(),
        JSONSchemaProps {
            type_: Some("object".to_owned()),
            x_kubernetes_preserve_unknown_fields: Some(true),
            ..JSONSchemaProps::default()
        },
    );
    crd
}

async fn create_poisoned(client: &Client, name: &str) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("e2e.bonny.dev", "v1", "Widget"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "e2e.bonny.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": "three"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// Waits for the one Warning event naming why `name` does not decode, and returns its note.
async fn decode_failure_of(client: &Client, name: &str) -> String {
    let events = eventually(&format!("a DecodeFailed event on {name}"), WAIT, || async {
        let events: Vec<_> = events_for(client, NAMESPACE, name)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DecodeFailed"))
            .collect();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert!(
        events[0].series.is_none(),
        "reported more than once: {events:#?}"
    );
    events[0].note.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_widget_that_does_not_decode_is_named_and_the_others_converge() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(loose_widget_crd()).await.unwrap();
    env.create_namespace(NAMESPACE).await.unwrap();
    let client = env.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NAMESPACE);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    // One poisoned widget is there before the operator starts, beside a good one.
    create_poisoned(&client, "poison-early").await;
    widgets
        .create(&PostParams::default(), &widget("good-early", 2))
        .await
        .unwrap();

    let running = start(client.clone(), WidgetController::default());
    eventually(
        "readiness: the cache synced despite the poisoned widget",
        WAIT,
        || async { running.health().ready().ok() },
    )
    .await;
    eventually("the good widget's child", WAIT, || async {
        configmaps.get_opt("good-early-data").await.unwrap()
    })
    .await;
    let note = decode_failure_of(&client, "poison-early").await;
    assert!(
        note.contains("spec.size") && note.contains("three"),
        "the event names the field and the bad value: {note}"
    );
    assert_eq!(running.sum("bonny_decode_errors_total"), 1);

    // Another appears while the operator runs; a good widget created after it still converges.
    create_poisoned(&client, "poison-late").await;
    widgets
        .create(&PostParams::default(), &widget("good-late", 4))
        .await
        .unwrap();
    eventually("the later good widget's child", WAIT, || async {
        configmaps.get_opt("good-late-data").await.unwrap()
    })
    .await;
    let note = decode_failure_of(&client, "poison-late").await;
    assert!(note.contains("spec.size"), "{note}");
    assert_eq!(running.sum("bonny_decode_errors_total"), 2);
    assert!(
        configmaps
            .get_opt("poison-early-data")
            .await
            .unwrap()
            .is_none()
    );
    assert!(running.health().ready().is_ok());
    running.stop().await;
}
