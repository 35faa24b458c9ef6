use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
pub struct CopierSpec {
    source: String,
}

#[bonny::controller(resource = Copier, watches = [Secret(field = spec["source"])])]
pub struct NotAPath;

#[bonny::controller(resource = Copier, watches = [Secret])]
pub struct NoMapper;

#[bonny::controller(resource = Copier, filters = [generation])]
pub struct UnknownFilter;

fn main() {}
