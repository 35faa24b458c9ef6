//! The prune stage: after a successful `apply`, delete the descendants of the object that an
//! earlier reconcile registered and this one did not, for the owned kinds that are pruned.
//!
//! The candidates come from the owned kinds' watch caches, looked up by the object's UID in
//! their owner index (no scan of the cache), so a reconcile with nothing stale sends no
//! request and costs what the object's own children cost. Only an object that carries
//! [`DESCENDANT_LABEL`] with this controller's name and an owner reference with
//! `controller: true` to the object's UID qualifies: both say the SDK applied it for this
//! object. Each delete is conditional on the UID and resource
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
use crate::controller::{Cached, DESCENDANT_LABEL, Descendant, ReconcileError};

/// The descendants deleted by this controller scope that its cache still shows, per kind, by
/// UID with their namespace and name: at most the deletions whose watch event has not arrived
/// yet.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pending: Mutex<HashMap<(String, String), HashMap<String, Place>>>,
}

/// Where a deleted descendant was: its namespace and name.
type Place = (String, String);

impl Pruned {
    /// Forgets the deletions of `resource` objects the cache no longer shows, and returns the
    /// UIDs of those it still shows. `shows(namespace, name, uid)` asks the cache about one
    /// object, so the cost grows with the pending deletions, not with the cache.
    fn still_cached(
        &self,
        resource: &ApiResource,
        shows: impl Fn(&str, &str, &str) -> bool,
    ) -> HashSet<String> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(deleted) = pending.get_mut(&kind(resource)) else {
            return HashSet::new();
        };
        deleted.retain(|uid, (namespace, name)| shows(namespace, name, uid));
        let left = deleted.keys().cloned().collect();
        if deleted.is_empty() {
            pending.remove(&kind(resource));
        }
        left
    }

    fn deleted(&self, resource: &ApiResource, stale: &Stale) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind(resource))
            .or_default()
            .insert(
                stale.uid.clone(),
                (stale.namespace.clone(), stale.name.clone()),
            );
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
fn applied_for(object: &Cached, controller: &str, owner: &str) -> bool {
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
    cached: impl IntoIterator<Item = &'a Cached>,
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
        let children = cache.owned_by(resource, owner);
        let deleted = pruned.still_cached(resource, |namespace, name, uid| {
            cache
                .object(resource, namespace, name)
                .is_some_and(|object| object.metadata.uid.as_deref() == Some(uid))
        });
        let stale = stale(
            children.iter().map(|object| &**object),
            resource,
            controller,
            owner,
            registered,
        )
        .into_iter()
        .filter(|stale| !deleted.contains(&stale.uid));
        for stale in stale {
            let Stale {
                namespace, name, ..
            } = &stale;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(stale.uid.clone()),
                    resource_version: stale.resource_version.clone(),
                }),
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {
                    pruned.deleted(resource, &stale);
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

    fn object(name: &str, labels: Value, owner: &str, controller: bool) -> Cached {
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
        // The cache as `shows` asks it: whether it holds `uid` at `namespace/name`.
        let holding = |objects: &'static [&'static str]| {
            move |namespace: &str, name: &str, uid: &str| {
                namespace == "default" && objects.contains(&name) && uid == format!("uid-{name}")
            }
        };
        assert!(pruned.still_cached(&resource, holding(&["old"])).is_empty());
        pruned.deleted(
            &resource,
            &Stale {
                namespace: "default".into(),
                name: "old".into(),
                uid: "uid-old".into(),
                resource_version: None,
            },
        );
        let secret = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        assert!(
            pruned.still_cached(&secret, holding(&["old"])).is_empty(),
            "per kind"
        );
        assert_eq!(
            pruned.still_cached(&resource, holding(&["old"])),
            HashSet::from(["uid-old".to_owned()])
        );
        // Recreated under the same name: another UID, so the deletion is done.
        assert!(
            pruned
                .still_cached(&resource, |_, _, uid| uid == "uid-new")
                .is_empty()
        );
        assert!(
            pruned.still_cached(&resource, holding(&["old"])).is_empty(),
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
