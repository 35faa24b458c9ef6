//! What `#[bonny::controller]` expands to, read back through the public `Config` and `crd()`:
//! every key an attribute here sets is checked, and so is every key it leaves out.

use std::time::Duration;

use bonny::controller::StepFuture;
use bonny::prelude::*;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
/// A test resource.
pub struct WidgetSpec {
    size: u32,
}

struct Noop;

impl<K: Send + Sync> Step<K> for Noop {
    fn call<'a>(&'a self, _axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async { Ok(Flow::Continue) })
    }
}

/// A second step, to see that the order is kept.
struct Second;

impl<K: Send + Sync> Step<K> for Second {
    fn call<'a>(&'a self, _axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async { Ok(Flow::Continue) })
    }
}

/// The short names of a config's steps, in order.
fn step_names<K>(steps: &[std::sync::Arc<dyn Step<K>>]) -> Vec<&'static str> {
    steps
        .iter()
        .map(|step| step.name().rsplit("::").next().unwrap_or_default())
        .collect()
}

#[bonny::controller(
    resource = Widget,
    name = "widgets",
    finalizer = "example.com/cleanup",
    owns = [ConfigMap, Secret, Deployment],
    rbac(group = "", resources = ["events"], verbs = ["create", "patch"]),
    rbac(group = "apps", resources = ["deployments", "deployments/scale"], verbs = ["get", "update"]),
    requeue_after = "90s",
    backoff(base = "250ms", max = "1m"),
    concurrency = 8,
    steps = [Noop, Second],
    skip_observed_generation,
    prune = true,
)]
struct WidgetController;

impl Reconcile<Widget> for WidgetController {
    async fn apply(&self, _axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

#[test]
fn config_follows_the_attribute() {
    let config = WidgetController.config();
    assert_eq!(config.controller_name(), "widgets");
    assert_eq!(config.finalizer_name(), Some("example.com/cleanup"));
    let owned: Vec<(&str, &str)> = config
        .owned_kinds()
        .iter()
        .map(|owned| {
            let resource = owned.api_resource();
            (resource.api_version.as_str(), resource.kind.as_str())
        })
        .collect();
    assert_eq!(
        owned,
        [
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("apps/v1", "Deployment")
        ]
    );
    assert_eq!(
        config.rules(),
        [
            Rule::new("", ["events"], ["create", "patch"]),
            Rule::new(
                "apps",
                ["deployments", "deployments/scale"],
                ["get", "update"]
            ),
        ]
    );
    assert_eq!(config.requeue_interval(), Some(Duration::from_secs(90)));
    assert_eq!(
        config.backoff_policy(),
        Backoff::new(Duration::from_millis(250), Duration::from_secs(60))
    );
    assert_eq!(config.concurrency_limit(), 8);
    assert_eq!(step_names(config.steps()), ["Noop", "Second"]);
    assert!(config.skips_observed_generation());
    assert!(config.prunes());
    assert_eq!(config.pruned_kinds().count(), 3);
}

#[test]
fn crd_is_the_resource_s_own() {
    let crd = WidgetController
        .crd()
        .expect("a single version always merges")
        .expect("a custom resource has a CRD");
    assert_eq!(crd.metadata.name.as_deref(), Some("widgets.example.com"));
    assert_eq!(crd.spec.versions.len(), 1);
    assert_eq!(crd.spec.versions[0].name, "v1");
}

/// A built-in kind: no CRD, and the keys left out stay unset.
#[bonny::controller(
    resource = ConfigMap,
    crd = false,
    rbac(group = "", resources = ["configmaps"], verbs = ["get", "list", "watch"]),
)]
struct BuiltIn;

impl Reconcile<ConfigMap> for BuiltIn {
    async fn apply(&self, _axn: &mut Axn<ConfigMap>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

#[test]
fn crd_false_and_unset_keys() {
    let config = BuiltIn.config();
    assert_eq!(config.controller_name(), "configmap");
    assert_eq!(
        config.rules(),
        [Rule::new("", ["configmaps"], ["get", "list", "watch"])]
    );
    assert!(matches!(BuiltIn.crd(), Ok(None)));
    assert_eq!(config.finalizer_name(), None);
    assert!(config.owned_kinds().is_empty());
    assert_eq!(config.requeue_interval(), None);
    assert_eq!(config.backoff_policy(), Backoff::default());
    assert_eq!(config.concurrency_limit(), 0);
    assert!(config.steps().is_empty());
    assert!(!config.skips_observed_generation());
    assert!(!config.prunes());
}

/// Two versions of one kind, each its own type.
mod v1alpha1 {
    use super::*;

    /// The first version.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "example.com",
        version = "v1alpha1",
        kind = "Gadget",
        namespaced
    )]
    pub struct GadgetSpec {
        size: u32,
    }
}

mod v1 {
    use super::*;

    /// The stored version.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "example.com", version = "v1", kind = "Gadget", namespaced)]
    pub struct GadgetSpec {
        size: u64,
    }
}

#[bonny::controller(resource = v1::Gadget, versions = [v1alpha1::Gadget, v1::Gadget], storage = "v1")]
struct GadgetController;

impl Reconcile<v1::Gadget> for GadgetController {
    async fn apply(&self, _axn: &mut Axn<v1::Gadget>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

#[test]
fn versions_merge_with_the_storage_version_stored() {
    let crd = GadgetController
        .crd()
        .expect("two versions of one kind merge")
        .expect("a custom resource has a CRD");
    assert_eq!(crd.metadata.name.as_deref(), Some("gadgets.example.com"));
    let versions: Vec<(&str, bool)> = crd
        .spec
        .versions
        .iter()
        .map(|version| (version.name.as_str(), version.storage))
        .collect();
    assert_eq!(versions, [("v1", true), ("v1alpha1", false)]);
}
