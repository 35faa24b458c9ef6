//! The prune stage: after a successful `apply`, delete the descendants of the object that an
//! earlier reconcile registered and this one did not, for the owned kinds that are pruned.
//!
//! The candidates come from the owned kinds' watch caches, so a reconcile with nothing stale
//! sends no request. Only an object that carries [`DESCENDANT_LABEL`] with this controller's
//! name and an owner reference with `controller: true` to the object's UID qualifies: both say
//! the SDK applied it for this object. Each delete is conditional on the UID and resource
//! version the cache showed, so an object recreated or changed since is left for the next
//! reconcile to judge. What was deleted is remembered until the cache no longer shows it, so
//! a reconcile that runs before the watch reports the deletion does not delete it again.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, PoisonError},
};

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Preconditions, PropagationPolicy},
};

use super::watches::OwnedCaches;
use crate::controller::{DESCENDANT_LABEL, Descendant, ReconcileError};

/// The UIDs of descendants deleted by this controller scope that its cache still shows, per
/// kind: at most the deletions whose watch event has not arrived yet.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pending: Mutex<HashMap<(String, String), HashSet<String>>>,
}

impl Pruned {
    /// Forgets the deletions of `resource` objects the cache (`cached`) no longer shows, and
    /// returns those it still shows.
    fn still_cached(&self, resource: &ApiResource, cached: &[&DynamicObject]) -> HashSet<String> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(uids) = pending.get_mut(&kind(resource)) else {
            return HashSet::new();
        };
        let shown: HashSet<&str> = cached
            .iter()
            .filter_map(|object| object.metadata.uid.as_deref())
            .collect();
        uids.retain(|uid| shown.contains(uid.as_str()));
        let left = uids.clone();
        if uids.is_empty() {
            pending.remove(&kind(resource));
        }
        left
    }

    fn deleted(&self, resource: &ApiResource, uid: String) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind(resource))
            .or_default()
            .insert(uid);
    }
}

fn kind(resource: &ApiResource) -> (String, String) {
    (resource.group.clone(), resource.kind.clone())
}

/// A descendant to delete, as the cache showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stale {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) resource_version: Option<String>,
}

/// Whether `object` is a descendant this controller applied for the owner with UID `owner`,
/// still alive. Pure.
fn applied_for(object: &DynamicObject, controller: &str, owner: &str) -> bool {
    let labelled = object
        .labels()
        .get(DESCENDANT_LABEL)
        .is_some_and(|value| value == controller);
    let owned = object
        .owner_references()
        .iter()
        .any(|reference| reference.uid == owner && reference.controller == Some(true));
    labelled && owned && object.metadata.deletion_timestamp.is_none()
}

/// The objects among `cached` (of kind `resource`) that are descendants applied by
/// `controller` for `owner` and not among `registered`. Pure.
pub(crate) fn stale<'a>(
    cached: impl IntoIterator<Item = &'a DynamicObject>,
    resource: &ApiResource,
    controller: &str,
    owner: &str,
    registered: &[Descendant],
) -> Vec<Stale> {
    let kept = |namespace: &str, name: &str| {
        registered.iter().any(|descendant| {
            descendant.resource.group == resource.group
                && descendant.resource.kind == resource.kind
                && descendant.namespace == namespace
                && descendant.name == name
        })
    };
    cached
        .into_iter()
        .filter(|object| applied_for(object, controller, owner))
        .filter_map(|object| {
            let namespace = object.namespace()?;
            let name = object.metadata.name.clone()?;
            let uid = object.metadata.uid.clone()?;
            (!kept(&namespace, &name)).then(|| Stale {
                namespace,
                name,
                uid,
                resource_version: object.metadata.resource_version.clone(),
            })
        })
        .collect()
}

/// Deletes the stale descendants of the owner with UID `owner` among the cached objects of
/// each kind in `kinds`. A descendant already gone, or changed since the cache showed it, is
/// skipped: its watch event brings the owner back for another look.
pub(crate) async fn prune(
    client: &Client,
    controller: &str,
    cache: &OwnedCaches,
    pruned: &Pruned,
    kinds: &[&ApiResource],
    owner: &str,
    registered: &[Descendant],
) -> Result<(), ReconcileError> {
    for &resource in kinds {
        let listed = cache.list(resource);
        let cached: Vec<&DynamicObject> = listed.iter().map(|object| &**object).collect();
        let deleted = pruned.still_cached(resource, &cached);
        let stale = stale(cached, resource, controller, owner, registered)
            .into_iter()
            .filter(|stale| !deleted.contains(&stale.uid));
        for Stale {
            namespace,
            name,
            uid,
            resource_version,
        } in stale
        {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, resource);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version,
                }),
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {
                    pruned.deleted(resource, uid);
                    tracing::info!(kind = %resource.kind, %namespace, %name, "pruned a descendant no longer registered");
                }
                // Gone already, or changed or recreated since the cache showed it.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    tracing::debug!(kind = %resource.kind, %namespace, %name, code = status.code, "not pruned: no longer as cached");
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::{Value, json};

    use super::*;

    fn object(name: &str, labels: Value, owner: &str, controller: bool) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "resourceVersion": "5", "labels": labels,
                "ownerReferences": [{"apiVersion": "test.bonny.dev/v1", "kind": "Thing",
                    "name": "thing", "uid": owner, "controller": controller}]},
        }))
        .unwrap()
    }

    fn registered(name: &str) -> Descendant {
        Descendant {
            resource: ApiResource::erase::<ConfigMap>(&()),
            namespace: "default".into(),
            name: name.into(),
            body: json!({}),
        }
    }

    #[test]
    fn only_unregistered_descendants_labelled_and_owned_by_us_are_stale() {
        let ours = json!({DESCENDANT_LABEL: "thing"});
        let cached = [
            object("kept", ours.clone(), "owner", true),
            object("old", ours.clone(), "owner", true),
            object("unlabelled", json!({"app": "x"}), "owner", true),
            object(
                "other-controller",
                json!({DESCENDANT_LABEL: "gadget"}),
                "owner",
                true,
            ),
            object("other-owner", ours.clone(), "someone-else", true),
            object("not-controller", ours.clone(), "owner", false),
        ];
        let resource = ApiResource::erase::<ConfigMap>(&());
        let stale = stale(&cached, &resource, "thing", "owner", &[registered("kept")]);
        assert_eq!(
            stale,
            vec![Stale {
                namespace: "default".into(),
                name: "old".into(),
                uid: "uid-old".into(),
                resource_version: Some("5".into()),
            }]
        );
    }

    #[test]
    fn a_deletion_is_remembered_until_the_cache_drops_the_object() {
        let pruned = Pruned::default();
        let resource = ApiResource::erase::<ConfigMap>(&());
        let old = object("old", json!({}), "owner", true);
        assert!(pruned.still_cached(&resource, &[&old]).is_empty());
        pruned.deleted(&resource, "uid-old".into());
        let secret = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        assert!(pruned.still_cached(&secret, &[&old]).is_empty(), "per kind");
        assert_eq!(
            pruned.still_cached(&resource, &[&old]),
            HashSet::from(["uid-old".to_owned()])
        );
        assert!(pruned.still_cached(&resource, &[]).is_empty());
        assert!(
            pruned.still_cached(&resource, &[&old]).is_empty(),
            "forgotten"
        );
        assert!(pruned.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn a_descendant_being_deleted_or_of_another_kind_is_not_stale() {
        let ours = json!({DESCENDANT_LABEL: "thing"});
        let mut going = object("going", ours.clone(), "owner", true);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let resource = ApiResource::erase::<ConfigMap>(&());
        assert!(stale([&going], &resource, "thing", "owner", &[]).is_empty());
        // Registered under the same name but as another kind: this one is still stale.
        let mut secret = registered("same");
        secret.resource = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        let same = object("same", ours, "owner", true);
        assert_eq!(
            stale([&same], &resource, "thing", "owner", &[secret]).len(),
            1
        );
    }
}
