//! The descendant stage: server-side apply the registered descendants whose cached copy lacks
//! a declared field. The watch cache is the only check: a server-side apply creates or updates
//! in one request, so asking the API server first would only add a request.
//!
//! A descendant of a metadata-only kind has no body in the cache: it is applied with the
//! [`APPLIED_HASH`](crate::controller::APPLIED_HASH) of its body, and skipped when the cached
//! metadata shows that hash and the version the SDK's own last apply left ([`metadata`]).

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::Value;

use super::{
    diff::contains,
    metadata::{self, Applied},
    watches::OwnedCaches,
};
use crate::controller::{Descendant, ReconcileError};

/// Applies `descendants` with field manager `manager`, skipping those the cache shows in place;
/// those of the `metadata_only` kinds are decided by their hash and `applied`.
///
/// A descendant the cache lacks (not created yet, or not seen yet) or shows differently (it
/// drifted, or the cache lags) is applied at once: one request either way. When the cache
/// merely lagged, the apply changes nothing on the server.
pub(crate) async fn apply(
    client: &Client,
    manager: &str,
    cache: &OwnedCaches,
    descendants: &[Descendant],
    metadata_only: &[&ApiResource],
    applied: &Applied,
) -> Result<(), ReconcileError> {
    let params = PatchParams::apply(manager).force();
    for descendant in descendants {
        let Descendant {
            resource,
            namespace,
            name,
            body,
        } = descendant;
        let cached = cache.get(resource, namespace, name);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
        if !metadata_only.contains(&resource) {
            if cached.is_some_and(|live| contains(&live, body)) {
                continue;
            }
            tracing::debug!(kind = %resource.kind, %name, "applying descendant");
            api.patch(name, &params, &Patch::Apply(body)).await?;
            continue;
        }
        let stamped = metadata::stamp(body);
        let remembered = applied.get(resource, namespace, name);
        if cached
            .as_ref()
            .is_some_and(|live| metadata::in_place(live, &stamped, remembered.as_ref()))
        {
            continue;
        }
        tracing::debug!(kind = %resource.kind, %name, "applying metadata-only descendant");
        let written = api.patch(name, &params, &Patch::Apply(&stamped)).await?;
        let replaced = cached
            .as_ref()
            .and_then(|live| live.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        applied.remember(
            resource,
            namespace,
            name,
            replaced,
            written.metadata.resource_version,
        );
    }
    Ok(())
}
