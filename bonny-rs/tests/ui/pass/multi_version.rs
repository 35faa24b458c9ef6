//! A resource served in two versions: `crd()` merges them, storing the one named by `storage`.

use bonny::prelude::*;

mod v1alpha1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "example.com",
        version = "v1alpha1",
        kind = "Widget",
        namespaced
    )]
    pub struct WidgetSpec {
        pub size: String,
    }
}

mod v1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
    pub struct WidgetSpec {
        pub size: u32,
    }
}

#[bonny::controller(resource = v1::Widget, versions = [v1alpha1::Widget, v1::Widget], storage = "v1")]
pub struct WidgetController;

impl Reconcile<v1::Widget> for WidgetController {
    async fn apply(&self, _axn: &mut Axn<v1::Widget>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

fn main() {
    let crd = WidgetController
        .crd()
        .expect("the versions merge")
        .expect("a custom resource");
    assert_eq!(crd.spec.names.kind, "Widget");
    let versions: Vec<(&str, bool)> = crd
        .spec
        .versions
        .iter()
        .map(|version| (version.name.as_str(), version.storage))
        .collect();
    assert_eq!(versions, [("v1", true), ("v1alpha1", false)]);
}
