//! The descendant stage: server-side apply the registered descendants whose cached copy lacks
//! a declared field. The watch cache is the only check: a server-side apply creates or updates
//! in one request, so asking the API server first would only add a request.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};

use super::{diff::contains, watches::OwnedCaches};
use crate::controller::{Descendant, ReconcileError};

/// Applies `descendants` with field manager `manager`, skipping those the cache shows in place.
///
/// A descendant the cache lacks (not created yet, or not seen yet) or shows differently (it
/// drifted, or the cache lags) is applied at once: one request either way. When the cache
/// merely lagged, the apply changes nothing on the server.
pub(crate) async fn apply(
    client: &Client,
    manager: &str,
    cache: &OwnedCaches,
    descendants: &[Descendant],
) -> Result<(), ReconcileError> {
    let params = PatchParams::apply(manager).force();
    for descendant in descendants {
        let cached = cache.get(
            &descendant.resource,
            &descendant.namespace,
            &descendant.name,
        );
        if cached.is_some_and(|live| contains(&live, &descendant.body)) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &descendant.namespace, &descendant.resource);
        tracing::debug!(kind = %descendant.resource.kind, name = %descendant.name, "applying descendant");
        api.patch(&descendant.name, &params, &Patch::Apply(&descendant.body))
            .await?;
    }
    Ok(())
}
