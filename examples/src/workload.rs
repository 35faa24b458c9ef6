//! A workload: a `WebApp` owns a Deployment and a Service, reports readiness from the
//! Deployment, and puts both back when someone changes or deletes them.
//!
//! What it shows:
//! - **Descendants of built-in kinds.** Each reconcile registers the Deployment and the Service
//!   with [`Axn::register_descendant`]. The SDK server-side applies them with an owner
//!   reference to the `WebApp` and skips the write when the live object already holds every
//!   declared field. Deleting the `WebApp` lets Kubernetes' garbage collector delete both.
//! - **Drift repair.** `owns = [Deployment, Service]` watches both kinds, so a change to either
//!   triggers a reconcile of the owning `WebApp`. If someone runs `kubectl scale` on the
//!   Deployment, the replica count goes back to `spec.replicas`. A deleted Service is created
//!   again.
//! - **Status from a descendant.** The reconcile reads the Deployment's
//!   `status.readyReplicas` and turns it into `status.readyReplicas`, a `phase`
//!   (`Pending`, `Progressing`, `Running`) and a `Ready` condition. A change to the
//!   Deployment's status is a change to an owned object, so the `WebApp`'s status follows it.
//!
//! ```yaml
//! apiVersion: workload.bonny.dev/v1
//! kind: WebApp
//! metadata: { name: shop, namespace: default }
//! spec:
//!   image: nginx:1.27
//!   replicas: 2
//!   port: 80
//! ```
//!
//! ```text
//! $ kubectl get webapps
//! NAME   IMAGE        DESIRED   READY   PHASE
//! shop   nginx:1.27   2         2       Running
//! ```
//!
//! Run it with `cargo run -p bonny-examples --bin workload-operator -- run` against the cluster
//! in your kubeconfig, after installing the CRD with
//! `cargo run -p bonny-examples --bin workload-operator -- manifests --crds | kubectl apply -f -`.

use std::collections::BTreeMap;

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{Condition, LabelSelector},
        util::intstr::IntOrString,
    },
};
use kube::{Api, CustomResource, api::ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label that ties the pods, the Deployment's selector and the Service's selector to one
/// `WebApp`.
pub const APP_LABEL: &str = "workload.bonny.dev/webapp";

/// A stateless web application: an image, how many copies, and the port it listens on.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "workload.bonny.dev",
    version = "v1",
    kind = "WebApp",
    namespaced,
    status = "WebAppStatus",
    shortname = "web",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#
)]
pub struct WebAppSpec {
    /// The container image, e.g. `nginx:1.27`.
    pub image: String,
    /// How many pods to run.
    pub replicas: u32,
    /// The port the container listens on; the Service exposes it under the same number.
    pub port: u16,
}

/// Where a `WebApp` stands, as seen in its Deployment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WebAppPhase {
    /// The Deployment reports no status yet.
    Pending,
    /// Fewer pods are ready than asked for.
    Progressing,
    /// Every pod asked for is ready.
    Running,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebAppStatus {
    /// Pods of the Deployment that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Pods that have been ready for the Deployment's `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: u32,
    /// `Pending`, `Progressing` or `Running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WebAppPhase>,
    /// The in-cluster address of the Service, `http://<name>.<namespace>.svc:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `Ready`: every pod asked for is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Runs each `WebApp` as a Deployment behind a Service.
#[bonny::controller(resource = WebApp, owns = [Deployment, Service])]
#[derive(Clone, Debug, Default)]
pub struct WebAppController;

impl Reconcile<WebApp> for WebAppController {
    async fn apply(&self, axn: &mut Axn<WebApp>) -> Result<Action, ReconcileError> {
        let app = axn.object().clone();
        if app.spec.image.trim().is_empty() {
            return Err(ReconcileError::invalid_spec(
                "spec.image is empty: name a container image, e.g. nginx:1.27",
            ));
        }
        if app.spec.port == 0 {
            return Err(ReconcileError::invalid_spec(
                "spec.port is 0: give the port the container listens on (1-65535)",
            ));
        }
        let name = axn.name();
        let namespace = axn.namespace().unwrap_or_default();
        axn.register_descendant(deployment(&name, &app.spec))?
            .register_descendant(service(&name, &app.spec))?;

        // The Deployment as it is now: its status is what the kubelets and the deployment
        // controller report. On the first reconcile it does not exist yet; the watch on owned
        // Deployments brings us back once it does.
        let deployments: Api<Deployment> = Api::namespaced(axn.client().clone(), &namespace);
        // A status without `observedGeneration` is the empty one the API server starts with:
        // the deployment controller has not looked at the Deployment yet.
        let observed = deployments
            .get_opt(&name)
            .await?
            .and_then(|deployment| deployment.status)
            .filter(|status| status.observed_generation.is_some());
        let ready = observed
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .map_or(0, clamp);
        let available = observed
            .as_ref()
            .and_then(|s| s.available_replicas)
            .map_or(0, clamp);
        let phase = readiness(observed.is_some(), ready, app.spec.replicas);

        let mut status = app.status.clone().unwrap_or_default();
        if status.phase != Some(phase) && phase == WebAppPhase::Running {
            axn.normal_event(
                "Running",
                format!("{ready} of {} replicas ready", app.spec.replicas),
            );
        }
        status.ready_replicas = ready;
        status.available_replicas = available;
        status.phase = Some(phase);
        status.url = Some(format!("http://{name}.{namespace}.svc:{}", app.spec.port));
        let (is_ready, reason) = match phase {
            WebAppPhase::Running => (true, "ReplicasReady"),
            WebAppPhase::Progressing => (false, "ReplicasNotReady"),
            WebAppPhase::Pending => (false, "DeploymentPending"),
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            is_ready,
            reason,
            format!("{ready} of {} replicas ready", app.spec.replicas),
            app.metadata.generation,
        );
        axn.set_status(&status)?;
        Ok(Action::await_change())
    }
}

/// The phase for a Deployment that reports a status (`reported`) with `ready` of `desired`
/// pods ready.
pub fn readiness(reported: bool, ready: u32, desired: u32) -> WebAppPhase {
    if ready >= desired && (reported || desired == 0) {
        WebAppPhase::Running
    } else if reported {
        WebAppPhase::Progressing
    } else {
        WebAppPhase::Pending
    }
}

fn clamp(count: i32) -> u32 {
    u32::try_from(count).unwrap_or(0)
}

fn labels(name: &str) -> BTreeMap<String, String> {
    [(APP_LABEL.to_owned(), name.to_owned())].into()
}

/// The Deployment for a `WebApp` named `name`: `spec.replicas` pods of one container.
pub fn deployment(name: &str, spec: &WebAppSpec) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(name)),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(spec.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".to_owned(),
                        image: Some(spec.image.clone()),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: i32::from(spec.port),
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The Service for a `WebApp` named `name`: `spec.port` on the pods, under the same number.
pub fn service(name: &str, spec: &WebAppSpec) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(name)),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(spec.port),
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The workload operator: one controller, leader election on.
///
/// # Errors
/// When the environment holds an invalid setting.
pub fn operator() -> Result<bonny::Operator, bonny::Error> {
    builder().build()
}

/// The workload operator's builder, for callers that add settings (a client, a namespace)
/// before building; [`operator`] builds it as is.
pub fn builder() -> bonny::OperatorBuilder {
    bonny::Operator::builder()
        .name("workload-operator")
        .controller(WebAppController)
        .leader_election(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_follows_ready_replicas() {
        assert_eq!(readiness(false, 0, 2), WebAppPhase::Pending);
        assert_eq!(readiness(true, 1, 2), WebAppPhase::Progressing);
        assert_eq!(readiness(true, 2, 2), WebAppPhase::Running);
        assert_eq!(readiness(false, 0, 0), WebAppPhase::Running);
    }

    #[test]
    fn the_service_selects_the_deployments_pods() {
        let spec = WebAppSpec {
            image: "nginx".into(),
            replicas: 1,
            port: 8080,
        };
        let deployment = deployment("shop", &spec);
        let service = service("shop", &spec);
        let pod_labels = deployment.spec.template.metadata.and_then(|m| m.labels);
        assert_eq!(service.spec.and_then(|s| s.selector), pod_labels);
    }
}
