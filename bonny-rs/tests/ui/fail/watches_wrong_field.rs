use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use k8s_openapi::api::core::v1::Secret;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
pub struct CopierSpec {
    source: String,
    replicas: u32,
}

// A field the resource does not have.
#[bonny::controller(resource = Copier, watches = [Secret(field = spec.sourse)])]
pub struct Misspelled;

// A field that cannot hold a name.
#[bonny::controller(resource = Copier, watches = [Secret(field = spec.replicas)])]
pub struct NotAName;

impl bonny::prelude::Reconcile<Copier> for Misspelled {
    async fn apply(
        &self,
        _axn: &mut bonny::prelude::Axn<Copier>,
    ) -> Result<bonny::prelude::Action, bonny::prelude::ReconcileError> {
        Ok(bonny::prelude::Action::await_change())
    }
}

impl bonny::prelude::Reconcile<Copier> for NotAName {
    async fn apply(
        &self,
        _axn: &mut bonny::prelude::Axn<Copier>,
    ) -> Result<bonny::prelude::Action, bonny::prelude::ReconcileError> {
        Ok(bonny::prelude::Action::await_change())
    }
}

fn main() {}
