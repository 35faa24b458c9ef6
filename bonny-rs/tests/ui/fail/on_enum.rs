use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: u32,
}

#[bonny::controller(resource = Widget)]
pub enum WidgetController {
    Fast,
    Slow,
}

fn main() {}
