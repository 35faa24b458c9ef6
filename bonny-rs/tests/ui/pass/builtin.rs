//! `crd = false` on a built-in kind, on a struct with fields.

use bonny::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;

#[bonny::controller(resource = ConfigMap, crd = false, finalizer = "example.com/mirror")]
pub struct Mirror {
    target_namespace: String,
}

impl Reconcile<ConfigMap> for Mirror {
    async fn apply(&self, _axn: &mut Axn<ConfigMap>) -> Result<Action, ReconcileError> {
        let _ = &self.target_namespace;
        Ok(Action::await_change())
    }
}

fn main() {
    let mirror = Mirror {
        target_namespace: "mirror".to_owned(),
    };
    let config = mirror.config();
    assert_eq!(config.controller_name(), "configmap");
    assert_eq!(config.finalizer_name(), Some("example.com/mirror"));
    assert!(config.owned_kinds().is_empty());
    assert!(config.rules().is_empty());
    assert_eq!(config.requeue_interval(), None);
    assert!(matches!(mirror.crd(), Ok(None)));
}
