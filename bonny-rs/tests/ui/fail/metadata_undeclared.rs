use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: u32,
}

// `Secret` is cached as metadata only, but neither owned nor watched.
#[bonny::controller(resource = Widget, owns = [ConfigMap], metadata = [ConfigMap, Secret])]
pub struct WidgetController;

fn main() {}
