//! The core SDK end to end on a real kube-apiserver: descendants, status, events, finalizers,
//! drift repair, zero writes on a no-op reconcile, panics and invalid specs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bonny::{Operator, testing::TestEnv};
use bonny_e2e::{
    events_for, eventually, has_event,
    in_process::InProcess,
    init_tracing,
    widget::{Gadget, GadgetController, GadgetSpec, Widget, WidgetController, widget},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

struct Running {
    process: InProcess,
    controller: WidgetController,
}

impl Running {
    async fn start(client: Client, namespace: &str) -> Self {
        let controller = WidgetController::default();
        let process = InProcess::start(
            InProcess::builder("widget-e2e", client, namespace).controller(controller.clone()),
        );
        Self {
            process,
            controller,
        }
    }

    async fn stop(self) {
        self.process.stop().await;
    }

    fn reconciles(&self) -> u64 {
        self.process.sum("controller_runtime_reconcile_total")
    }
}

async fn env() -> TestEnv {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Widget::crd()).await.unwrap();
    env
}

#[tokio::test]
async fn a_widget_gets_its_child_status_event_and_finalizer_and_cleanup_runs_once() {
    let env = env().await;
    let client = env.client();
    env.create_namespace("lifecycle").await.unwrap();
    let running = Running::start(client.clone(), "lifecycle").await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "lifecycle");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "lifecycle");
    widgets
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();

    let child = eventually("the ConfigMap child", WAIT, || async {
        configmaps.get_opt("w1-data").await.unwrap()
    })
    .await;
    assert_eq!(child.data.unwrap()["size"], "3");
    let owner = &child.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Widget", "w1", Some(true))
    );
    assert_eq!(
        child.metadata.labels.unwrap()[bonny::controller::DESCENDANT_LABEL],
        "widget",
        "the SDK marks what it applies with the controller's name"
    );

    let live = eventually("the status", WAIT, || async {
        let w = widgets.get("w1").await.unwrap();
        w.status.as_ref().and_then(|s| s.size).map(|_| w)
    })
    .await;
    let status = live.status.unwrap();
    assert_eq!(status.size, Some(3));
    assert_eq!(status.conditions[0].status, "True");
    assert!(
        live.metadata
            .finalizers
            .unwrap()
            .contains(&"e2e.bonny.dev/cleanup".to_owned())
    );
    eventually("a Normal Resized event", WAIT, || async {
        has_event(
            &events_for(&client, "lifecycle", "w1").await,
            "Normal",
            "Resized",
        )
        .then_some(())
    })
    .await;

    // Update: the child follows the spec.
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    eventually("the child to follow the new size", WAIT, || async {
        let cm = configmaps.get("w1-data").await.unwrap();
        (cm.data.unwrap()["size"] == "5").then_some(())
    })
    .await;

    // Delete: cleanup runs exactly once, then the finalizer goes and the object with it.
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the widget to be gone", WAIT, || async {
        widgets.get_opt("w1").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(running.controller.counters.cleanups(), 1);
    running.stop().await;
}

#[tokio::test]
async fn an_edited_child_is_restored_and_a_deleted_one_recreated() {
    let env = env().await;
    let client = env.client();
    env.create_namespace("drift").await.unwrap();
    let running = Running::start(client.clone(), "drift").await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "drift");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "drift");
    widgets
        .create(&PostParams::default(), &widget("w2", 7))
        .await
        .unwrap();
    eventually("the child", WAIT, || async {
        configmaps.get_opt("w2-data").await.unwrap()
    })
    .await;

    configmaps
        .patch(
            "w2-data",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"size": "999"}})),
        )
        .await
        .unwrap();
    eventually("the edited child to be restored", WAIT, || async {
        let cm = configmaps.get("w2-data").await.unwrap();
        (cm.data.unwrap()["size"] == "7").then_some(())
    })
    .await;

    let uid = configmaps.get("w2-data").await.unwrap().uid();
    configmaps
        .delete("w2-data", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted child to be recreated", WAIT, || async {
        let cm = configmaps.get_opt("w2-data").await.unwrap()?;
        (cm.uid() != uid).then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_reconcile_with_nothing_to_change_writes_nothing() {
    let env = env().await;
    let client = env.client();
    env.create_namespace("noop").await.unwrap();
    let running = Running::start(client.clone(), "noop").await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "noop");
    let counts_start = env.request_counts().await.unwrap();
    widgets
        .create(&PostParams::default(), &widget("w3", 4))
        .await
        .unwrap();
    eventually("the status", WAIT, || async {
        widgets.get("w3").await.unwrap().status.and_then(|s| s.size)
    })
    .await;
    // Let the reconciles caused by our own writes (finalizer, child, status) settle: the count
    // stops moving once the controller sees a world that matches. Quiescence can only be
    // seen over a window; a reconcile landing late makes the test fail, never pass.
    let mut settled = running.reconciles();
    eventually("reconciles to settle", WAIT, || {
        let now = running.reconciles();
        let stable = now == settled;
        settled = now;
        async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            stable.then_some(())
        }
    })
    .await;

    let watched = ["widgets", "configmaps", "events"];
    let counts_before = env.request_counts().await.unwrap();
    // Creating the child: the test never touches ConfigMaps, so these are the SDK's requests.
    let child_requests = |verb: &str| {
        counts_before.count(verb, "configmaps") - counts_start.count(verb, "configmaps")
    };
    let (created_gets, created_writes) = (
        child_requests("GET"),
        counts_before.writes_to(&["configmaps"]) - counts_start.writes_to(&["configmaps"]),
    );
    eprintln!(
        "creating one widget's child: {created_gets} GET, {created_writes} writes to configmaps"
    );
    assert_eq!(
        (created_gets, created_writes),
        (0, 1),
        "a child the cache lacks is applied in one request, never fetched first"
    );
    let before = counts_before.writes_to(&watched);
    let child_gets_before = counts_before.count("GET", "configmaps");
    // A label change reconciles the widget (a write by the test, to `widgets`, counted apart).
    widgets
        .patch(
            "w3",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touch": "1"}}})),
        )
        .await
        .unwrap();
    eventually("the labelled widget's reconcile to end", WAIT, || async {
        running
            .controller
            .counters
            .processed_label("touch", "1")
            .then_some(())
    })
    .await;
    let counts_after = env.request_counts().await.unwrap();
    let after = counts_after.writes_to(&watched);
    assert_eq!(
        after - before,
        1,
        "only the test's own label patch may write; the reconcile must write nothing"
    );
    let child_gets_after = counts_after.count("GET", "configmaps");
    assert_eq!(
        child_gets_after - child_gets_before,
        0,
        "the unchanged child is checked against the watch cache, not fetched"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_panicking_or_invalid_widget_does_not_stop_the_others() {
    let env = env().await;
    let client = env.client();
    env.create_namespace("faults").await.unwrap();
    let running = Running::start(client.clone(), "faults").await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "faults");
    widgets
        .create(&PostParams::default(), &widget("unlucky", 13))
        .await
        .unwrap();
    widgets
        .create(&PostParams::default(), &widget("huge", 500))
        .await
        .unwrap();
    eventually("a ReconcilePanicked warning", WAIT, || async {
        has_event(
            &events_for(&client, "faults", "unlucky").await,
            "Warning",
            "ReconcilePanicked",
        )
        .then_some(())
    })
    .await;
    eventually("an InvalidSpec warning", WAIT, || async {
        has_event(
            &events_for(&client, "faults", "huge").await,
            "Warning",
            "InvalidSpec",
        )
        .then_some(())
    })
    .await;
    let huge = eventually("the InvalidSpec condition", WAIT, || async {
        let w = widgets.get("huge").await.unwrap();
        w.status
            .as_ref()
            .filter(|s| !s.conditions.is_empty())
            .cloned()
    })
    .await;
    assert_eq!(huge.conditions[0].status, "False");
    assert_eq!(huge.conditions[0].reason, "InvalidSpec");

    // The operator is still up: a healthy widget created after the faults is reconciled.
    widgets
        .create(&PostParams::default(), &widget("fine", 2))
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "faults");
    eventually("the healthy widget's child", WAIT, || async {
        configmaps.get_opt("fine-data").await.unwrap()
    })
    .await;
    assert!(running.process.is_running());
    let errors = running.process.metrics().encode();
    assert!(
        errors.contains(r#"controller_runtime_reconcile_errors_total{controller="widget"}"#),
        "{errors}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_missing_crd_is_named_with_the_command_that_installs_it() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    let operator = Operator::builder()
        .name("widget-e2e")
        .client(env.client())
        .without_http()
        .controller(WidgetController::default())
        .build()
        .unwrap();
    let err = operator
        .run_until(CancellationToken::new())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            bonny::Error::Startup(bonny::runtime::StartupError::CrdNotInstalled { .. })
        ),
        "{message}"
    );
    assert!(
        message.contains("widgets.e2e.bonny.dev") && message.contains("manifests"),
        "{message}"
    );
}

#[tokio::test]
async fn one_operator_runs_controllers_of_several_resource_types() {
    let env = env().await;
    env.install_crd(Gadget::crd()).await.unwrap();
    let client = env.client();
    env.create_namespace("multi").await.unwrap();
    let operator = Operator::builder()
        .name("multi-e2e")
        .client(client.clone())
        .watch_namespace("multi")
        .without_http()
        .controller(WidgetController::default())
        .controller(GadgetController)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "multi");
    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), "multi");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    gadgets
        .create(
            &PostParams::default(),
            &Gadget::new(
                "g",
                GadgetSpec {
                    label: "blue".into(),
                },
            ),
        )
        .await
        .unwrap();
    eventually("the widget's status", WAIT, || async {
        widgets.get("w").await.unwrap().status.and_then(|s| s.size)
    })
    .await;
    let seen = eventually("the gadget's status", WAIT, || async {
        gadgets.get("g").await.unwrap().status.and_then(|s| s.seen)
    })
    .await;
    assert_eq!(seen, "blue");
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
