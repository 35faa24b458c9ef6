//! The status stage: merge the status a reconcile set into the status subresource, unless the
//! live status already holds it; and the observed-generation check that can skip `apply`.

use std::sync::Arc;

use kube::{
    Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::diff::contains;
use crate::controller::{Object, ReconcileError, Scope};

/// The status to merge: the one set, plus `observedGeneration` after a successful apply when
/// the controller records it. `None` when there is nothing to write.
fn desired(
    status: Option<Value>,
    generation: Option<i64>,
    record_generation: bool,
) -> Option<Value> {
    let mut status = status;
    if record_generation && let Some(generation) = generation {
        let status = status.get_or_insert_with(|| json!({}));
        status["observedGeneration"] = json!(generation);
    }
    status
}

/// Writes `status` (see [`desired`]) unless the live status already holds it; `object` becomes
/// what the API server returned. Nothing is written to an object that no longer exists.
pub(crate) async fn write<K: Object>(
    client: &Client,
    object: &mut Arc<K>,
    status: Option<Value>,
    record_generation: bool,
) -> Result<(), ReconcileError> {
    let Some(status) = desired(status, object.meta().generation, record_generation) else {
        return Ok(());
    };
    let live = serde_json::to_value(&**object)?;
    if contains(live.get("status").unwrap_or(&Value::Null), &status) {
        return Ok(());
    }
    let api = <K as Resource>::Scope::api::<K>(client.clone(), object.namespace().as_deref());
    let patched = api
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await;
    match patched {
        Ok(patched) => *object = Arc::new(patched),
        // An object that is gone (cleaned up after it vanished) has no status left to write.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// Whether `status.observedGeneration` already equals `metadata.generation`.
pub(crate) fn generation_observed<K: Object>(object: &K) -> Result<bool, ReconcileError> {
    let generation = object.meta().generation;
    let observed = serde_json::to_value(object)?
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    Ok(generation.is_some() && observed == generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_recorded_only_when_asked() {
        assert_eq!(desired(None, Some(2), false), None);
        assert_eq!(
            desired(None, Some(2), true),
            Some(json!({"observedGeneration": 2}))
        );
        assert_eq!(
            desired(Some(json!({"size": 3})), Some(2), true),
            Some(json!({"size": 3, "observedGeneration": 2}))
        );
        assert_eq!(
            desired(Some(json!({"size": 3})), None, true),
            Some(json!({"size": 3}))
        );
    }
}
