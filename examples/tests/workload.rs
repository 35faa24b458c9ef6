//! The workload example end to end: a `WebApp` gets its Deployment and Service, follows the
//! Deployment's readiness, has drift repaired, and takes both along when deleted.
//!
//! The control plane has no scheduler and no kubelets, so no pod ever runs. The test writes the
//! Deployment's status itself, as the deployment controller would.
#![allow(clippy::unwrap_used)]

mod support;

use bonny::testing::TestEnv;
use bonny_examples::workload::{self, WebApp, WebAppPhase, WebAppSpec};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{Running, WAIT, eventually, init_tracing};

const NS: &str = "shop";
/// The garbage collector learns about the WebApp resource, installed after it started, only
/// on its periodic discovery resync (every 30 s); until then it cannot tell that the owner is
/// gone.
const GC_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Writes the Deployment's status as the deployment controller would with `ready` pods ready.
async fn report_ready(deployments: &Api<Deployment>, replicas: i32, ready: i32) {
    let generation = deployments.get("web").await.unwrap().metadata.generation;
    let status = json!({"status": {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }});
    deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn phase_becomes(webapps: &Api<WebApp>, phase: WebAppPhase, ready: u32) -> WebApp {
    eventually(
        &format!("phase {phase:?} with {ready} ready"),
        WAIT,
        || async {
            let app = webapps.get("web").await.unwrap();
            let status = app.status.as_ref()?;
            (status.phase == Some(phase) && status.ready_replicas == ready).then_some(app)
        },
    )
    .await
}

fn ready_condition(app: &WebApp) -> (String, String) {
    let status = app.status.as_ref().unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (ready.status.clone(), ready.reason.clone())
}

#[tokio::test]
async fn a_webapp_runs_as_a_deployment_and_service_follows_readiness_and_repairs_drift() {
    init_tracing();
    // The controller manager runs the garbage collector: deleting the WebApp deletes its
    // descendants through their owner references.
    let env = TestEnv::builder()
        .controller_manager(true)
        .start()
        .await
        .unwrap();
    env.install_crd(WebApp::crd()).await.unwrap();
    let client = env.client();
    env.create_namespace(NS).await.unwrap();
    let running = Running::start(workload::builder(), client.clone());

    let webapps: Api<WebApp> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let spec = WebAppSpec {
        image: "nginx:1.27".into(),
        replicas: 2,
        port: 8080,
    };
    webapps
        .create(&PostParams::default(), &WebApp::new("web", spec))
        .await
        .unwrap();

    // Both descendants, owned by the WebApp.
    let deployment = eventually("the Deployment", WAIT, || async {
        deployments.get_opt("web").await.unwrap()
    })
    .await;
    assert_eq!(deployment.spec.replicas, Some(2));
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("nginx:1.27"));
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("WebApp", "web")
    );
    let service = eventually("the Service", WAIT, || async {
        services.get_opt("web").await.unwrap()
    })
    .await;
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(service_spec.ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(
        service_spec.selector,
        deployment.spec.template.metadata.as_ref().unwrap().labels
    );
    assert_eq!(service.owner_references()[0].name, "web");

    // No status from the Deployment yet: Pending, not Ready.
    let app = phase_becomes(&webapps, WebAppPhase::Pending, 0).await;
    assert_eq!(
        ready_condition(&app),
        ("False".into(), "DeploymentPending".into())
    );
    assert_eq!(
        app.status.unwrap().url.as_deref(),
        Some("http://web.shop.svc:8080")
    );

    // One pod ready, then both: the WebApp's status follows the Deployment's.
    report_ready(&deployments, 2, 1).await;
    let app = phase_becomes(&webapps, WebAppPhase::Progressing, 1).await;
    assert_eq!(
        ready_condition(&app),
        ("False".into(), "ReplicasNotReady".into())
    );
    report_ready(&deployments, 2, 2).await;
    let app = phase_becomes(&webapps, WebAppPhase::Running, 2).await;
    assert_eq!(
        ready_condition(&app),
        ("True".into(), "ReplicasReady".into())
    );
    assert_eq!(app.status.unwrap().available_replicas, 2);

    // Drift: someone scales the Deployment by hand; the WebApp's replica count wins.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually("the replica count to be restored", WAIT, || async {
        let live = deployments.get("web").await.unwrap();
        (live.spec.replicas == Some(2)).then_some(())
    })
    .await;

    // Drift: someone deletes the Service; it comes back as a new object.
    let old_uid = service.uid().unwrap();
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Service to be recreated", WAIT, || async {
        let live = services.get_opt("web").await.unwrap()?;
        (live.uid().as_deref() != Some(old_uid.as_str())).then_some(())
    })
    .await;

    // A spec change: the Deployment follows, and the WebApp is progressing again.
    webapps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("the Deployment to ask for 3 replicas", WAIT, || async {
        let live = deployments.get("web").await.unwrap();
        (live.spec.replicas == Some(3)).then_some(())
    })
    .await;
    phase_becomes(&webapps, WebAppPhase::Progressing, 2).await;

    // Deleting the WebApp deletes its descendants (garbage collection via owner references).
    webapps
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    eventually(
        "the Deployment and Service to be collected",
        GC_WAIT,
        || async {
            let deployment = deployments.get_opt("web").await.unwrap();
            let service = services.get_opt("web").await.unwrap();
            (deployment.is_none() && service.is_none()).then_some(())
        },
    )
    .await;
    tracing::info!(after = ?deleted.elapsed(), "descendants garbage-collected");
    running.stop().await;
}
