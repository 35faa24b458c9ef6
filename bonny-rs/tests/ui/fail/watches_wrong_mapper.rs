use bonny::kube::runtime::reflector::ObjectRef;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
pub struct CopierSpec {
    source: String,
}

// Maps the wrong related kind.
fn from_config_map(_map: &ConfigMap) -> Vec<ObjectRef<Copier>> {
    Vec::new()
}

#[bonny::controller(resource = Copier, watches = [Secret(map = from_config_map)])]
pub struct WrongKind;

// Names the wrong primaries.
fn to_strings(_secret: &Secret) -> Vec<String> {
    Vec::new()
}

#[bonny::controller(resource = Copier, watches = [Secret(map = to_strings)])]
pub struct WrongTarget;

// A filter of the wrong kind.
fn copier_changed(_old: &Copier, _new: &Copier) -> bool {
    true
}

#[bonny::controller(resource = Copier, watches = [Secret(field = spec.source, filters = [changed(copier_changed)])])]
pub struct WrongFilter;

impl bonny::prelude::Reconcile<Copier> for WrongKind {
    async fn apply(
        &self,
        _axn: &mut bonny::prelude::Axn<Copier>,
    ) -> Result<bonny::prelude::Action, bonny::prelude::ReconcileError> {
        Ok(bonny::prelude::Action::await_change())
    }
}

impl bonny::prelude::Reconcile<Copier> for WrongTarget {
    async fn apply(
        &self,
        _axn: &mut bonny::prelude::Axn<Copier>,
    ) -> Result<bonny::prelude::Action, bonny::prelude::ReconcileError> {
        Ok(bonny::prelude::Action::await_change())
    }
}

impl bonny::prelude::Reconcile<Copier> for WrongFilter {
    async fn apply(
        &self,
        _axn: &mut bonny::prelude::Axn<Copier>,
    ) -> Result<bonny::prelude::Action, bonny::prelude::ReconcileError> {
        Ok(bonny::prelude::Action::await_change())
    }
}

fn main() {}
