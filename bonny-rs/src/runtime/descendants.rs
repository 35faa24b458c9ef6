//! The descendant stage: server-side apply the registered descendants whose live copy lacks a
//! declared field. The watch cache answers first; the API server only when the cache differs.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};

use super::{diff::contains, watches::OwnedCaches};
use crate::controller::{Descendant, ReconcileError};

/// Applies `descendants` with field manager `manager`, skipping those already in place.
pub(crate) async fn apply(
    client: &Client,
    manager: &str,
    cache: &OwnedCaches,
    descendants: Vec<Descendant>,
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
        // Not cached, or the cache (which may lag) differs: ask the API server.
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &descendant.namespace, &descendant.resource);
        if let Some(live) = api.get_opt(&descendant.name).await?
            && contains(&serde_json::to_value(&live)?, &descendant.body)
        {
            continue;
        }
        tracing::debug!(kind = %descendant.resource.kind, name = %descendant.name, "applying descendant");
        api.patch(&descendant.name, &params, &Patch::Apply(&descendant.body))
            .await?;
    }
    Ok(())
}
