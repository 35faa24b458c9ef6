//! Every key but the CRD ones, on a custom resource.

use std::time::Duration;

use bonny::controller::StepFuture;
use bonny::prelude::*;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: u32,
}

struct SkipPaused;

impl<K: Send + Sync> Step<K> for SkipPaused {
    fn call<'a>(&'a self, _axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async { Ok(Flow::Continue) })
    }
}

struct AtMost(u32);

impl AtMost {
    fn new(size: u32) -> Self {
        Self(size)
    }
}

impl Step<Widget> for AtMost {
    fn call<'a>(&'a self, axn: &'a mut Axn<Widget>) -> StepFuture<'a> {
        let too_big = axn.object().spec.size > self.0;
        Box::pin(async move {
            Ok(if too_big {
                Flow::Halt(Action::await_change())
            } else {
                Flow::Continue
            })
        })
    }
}

#[bonny::controller(
    resource = Widget,
    name = "widgets",
    finalizer = "example.com/cleanup",
    owns = [ConfigMap, Deployment],
    rbac(group = "", resources = ["secrets"], verbs = ["get", "list", "watch"]),
    rbac(group = "apps", resources = ["deployments/scale"], verbs = ["patch"]),
    requeue_after = "5m",
    backoff(base = "500ms", max = "2m"),
    concurrency = 4,
    steps = [SkipPaused, AtMost::new(3)],
    skip_observed_generation,
)]
pub struct WidgetController;

impl Reconcile<Widget> for WidgetController {
    async fn apply(&self, _axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

fn main() {
    let config = WidgetController.config();
    assert_eq!(config.controller_name(), "widgets");
    assert_eq!(config.finalizer_name(), Some("example.com/cleanup"));
    let owned: Vec<&str> = config
        .owned_kinds()
        .iter()
        .map(|owned| owned.api_resource().kind.as_str())
        .collect();
    assert_eq!(owned, ["ConfigMap", "Deployment"]);
    assert_eq!(
        config.rules(),
        [
            Rule::new("", ["secrets"], ["get", "list", "watch"]),
            Rule::new("apps", ["deployments/scale"], ["patch"]),
        ]
    );
    assert_eq!(config.requeue_interval(), Some(Duration::from_secs(300)));

    let crd = WidgetController
        .crd()
        .expect("one version merges")
        .expect("a custom resource");
    assert_eq!(crd.spec.group, "example.com");
    assert_eq!(crd.spec.names.kind, "Widget");
    assert_eq!(crd.spec.versions.len(), 1);
}
