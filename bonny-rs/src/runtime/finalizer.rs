//! The finalizer lifecycle, all of it: added on first sight, the switch to cleanup when an
//! object carrying it is being deleted, its removal once cleanup succeeded, and objects being
//! deleted without it (left alone). Objects that vanish while carrying it are kept for their
//! cleanup by the watch's intake ([`Vanished`]).
//!
//! The patches are built by pure functions; the two that send them are the only I/O here.

use kube::{
    Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::intake::Vanished;
use crate::controller::{Action, Axn, Flow, Object, Phase, ReconcileError, Scope};

/// What the finalizer asks of the pipeline for an object, given the controller's finalizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go on and apply.
    Apply,
    /// Add the finalizer with this patch, then apply.
    Add(json_patch::Patch),
    /// The object is being deleted and carries our finalizer: run cleanup.
    Cleanup,
    /// The object is being deleted without our finalizer (or the controller has none): there
    /// is nothing left to do for it.
    LeaveAlone,
}

/// Decides, without I/O, what the finalizer means for `object`.
pub(crate) fn decide<K: Object>(
    finalizer: Option<&str>,
    object: &K,
) -> Result<Decision, ReconcileError> {
    let has_it = finalizer.is_some_and(|name| object.finalizers().iter().any(|f| f == name));
    if object.meta().deletion_timestamp.is_some() {
        return Ok(if has_it {
            Decision::Cleanup
        } else {
            Decision::LeaveAlone
        });
    }
    match finalizer {
        Some(name) if !has_it => Ok(Decision::Add(add_patch(object, name)?)),
        _ => Ok(Decision::Apply),
    }
}

/// The first stage of the pipeline: add the finalizer, or switch to cleanup, or stop.
pub(crate) async fn on_sight<K: Object>(
    finalizer: Option<&str>,
    axn: &mut Axn<K>,
) -> Result<Flow, ReconcileError> {
    match decide(finalizer, axn.object())? {
        Decision::Apply => {}
        Decision::Add(patch) => {
            let patched = api::<K>(axn.client(), axn.object())
                .patch(
                    &axn.name(),
                    &PatchParams::default(),
                    &Patch::<()>::Json(patch),
                )
                .await?;
            axn.set_object(patched);
        }
        Decision::Cleanup => axn.set_phase(Phase::Cleanup),
        Decision::LeaveAlone => return Ok(Flow::Halt(Action::await_change())),
    }
    Ok(Flow::Continue)
}

/// Removes the finalizer once cleanup succeeded; an object that is already gone counts as done.
/// `vanished` learns of it first, so that the object's DELETED event (which still shows the
/// finalizer) is not taken for an object that vanished before its cleanup.
pub(crate) async fn remove<K: Object>(
    client: &Client,
    finalizer: &str,
    object: &K,
    vanished: &Vanished<K>,
) -> Result<(), ReconcileError> {
    let Some(patch) = remove_patch(object, finalizer)? else {
        return Ok(());
    };
    let uid = object.uid().unwrap_or_default();
    vanished.release(&uid);
    let removed = match api::<K>(client, object)
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    };
    if removed.is_err() {
        vanished.release_failed(&uid);
    }
    removed
}

/// Adds `finalizer`, only if the object is still at the version we saw.
fn add_patch<K: Object>(object: &K, finalizer: &str) -> Result<json_patch::Patch, ReconcileError> {
    let mut patch = vec![json!({ "op": "test", "path": "/metadata/resourceVersion",
        "value": object.resource_version() })];
    if object.finalizers().is_empty() {
        patch.push(json!({ "op": "add", "path": "/metadata/finalizers", "value": [finalizer] }));
    } else {
        patch.push(json!({ "op": "add", "path": "/metadata/finalizers/-", "value": finalizer }));
    }
    Ok(serde_json::from_value(Value::Array(patch))?)
}

/// Removes `finalizer` at its position, testing the position first, so a concurrent change
/// fails the patch instead of removing another controller's finalizer. `None` when absent.
fn remove_patch<K: Object>(
    object: &K,
    finalizer: &str,
) -> Result<Option<json_patch::Patch>, ReconcileError> {
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(None);
    };
    let pointer = format!("/metadata/finalizers/{index}");
    Ok(Some(serde_json::from_value(json!([
        { "op": "test", "path": pointer, "value": finalizer },
        { "op": "remove", "path": pointer },
    ]))?))
}

fn api<K: Object>(client: &Client, object: &K) -> kube::Api<K> {
    <K as Resource>::Scope::api::<K>(client.clone(), object.namespace().as_deref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Time};
    use kube::api::ObjectMeta;

    use super::*;

    fn object(finalizers: &[&str], deleting: bool) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("thing".into()),
                resource_version: Some("7".into()),
                finalizers: Some(finalizers.iter().map(|f| (*f).to_owned()).collect()),
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn each_state_of_an_object_gets_one_decision() {
        let ours = Some("x/cleanup");
        assert!(matches!(
            decide(ours, &object(&[], false)),
            Ok(Decision::Add(_))
        ));
        assert_eq!(
            decide(ours, &object(&["x/cleanup"], false)).unwrap(),
            Decision::Apply
        );
        assert_eq!(decide(None, &object(&[], false)).unwrap(), Decision::Apply);
        assert_eq!(
            decide(ours, &object(&["x/cleanup"], true)).unwrap(),
            Decision::Cleanup
        );
        assert_eq!(
            decide(ours, &object(&["other"], true)).unwrap(),
            Decision::LeaveAlone
        );
        assert_eq!(
            decide(None, &object(&["x/cleanup"], true)).unwrap(),
            Decision::LeaveAlone
        );
    }

    #[test]
    fn the_finalizer_is_appended_after_others() {
        let Decision::Add(patch) = decide(Some("x/cleanup"), &object(&["other"], false)).unwrap()
        else {
            panic!("expected an add");
        };
        assert_eq!(
            serde_json::to_value(patch).unwrap(),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "x/cleanup"},
            ])
        );
        assert!(
            remove_patch(&object(&["other"], true), "x/cleanup")
                .unwrap()
                .is_none()
        );
    }
}
