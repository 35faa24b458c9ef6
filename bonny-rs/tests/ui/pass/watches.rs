//! `watches` in both forms, with filters on the related kind and on the resource itself.

use bonny::kube::runtime::reflector::ObjectRef;
use bonny::prelude::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
pub struct CopierSpec {
    source: Option<String>,
    template: String,
}

fn copier_of(secret: &Secret) -> Option<ObjectRef<Copier>> {
    let name = secret.metadata.labels.as_ref()?.get("copier")?;
    Some(ObjectRef::new(name).within(secret.metadata.namespace.as_deref()?))
}

fn data_changed(old: &ConfigMap, new: &ConfigMap) -> bool {
    old.data != new.data
}

#[bonny::controller(
    resource = Copier,
    owns = [ConfigMap],
    watches = [
        ConfigMap(field = spec.source, filters = [changed(data_changed)]),
        ConfigMap(field = spec.template),
        Secret(map = copier_of, filters = [labels_changed]),
    ],
    filters = [generation_changed, annotations_changed],
)]
pub struct CopierController;

impl Reconcile<Copier> for CopierController {
    async fn apply(&self, axn: &mut Axn<Copier>) -> Result<Action, ReconcileError> {
        let _children = axn.cache::<ConfigMap>()?.owned_by_me();
        Ok(Action::await_change())
    }
}

fn main() {
    let config = CopierController.config();
    let watched: Vec<_> = config
        .watched_kinds()
        .iter()
        .map(|w| (w.api_resource().kind.clone(), w.field_path()))
        .collect();
    assert_eq!(
        watched,
        [
            ("ConfigMap".to_owned(), Some("spec.source")),
            ("ConfigMap".to_owned(), Some("spec.template")),
            ("Secret".to_owned(), None),
        ]
    );
    assert_eq!(config.filters().len(), 2);
}
