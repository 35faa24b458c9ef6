use bonny::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;

// A built-in kind has no CustomResourceDefinition: `crd = false` is needed.
#[bonny::controller(resource = ConfigMap)]
pub struct Mirror;

impl Reconcile<ConfigMap> for Mirror {
    async fn apply(&self, _axn: &mut Axn<ConfigMap>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

fn main() {}
