//! Reads from the controller's watch caches, for the author's `apply` and `cleanup`
//! ([`Axn::cache`](super::Axn::cache)): the objects of the owned and watched kinds, without a
//! request.
//!
//! The runtime fills [`Caches`] with the stores of its watches; this module only reads them.

use std::{collections::HashMap, fmt, marker::PhantomData};

use kube::{
    Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    core::{Selector, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};

use super::{Object, ReconcileError, related::decode};

/// The watch caches of one controller scope, by kind (group and kind).
#[derive(Clone, Default)]
pub(crate) struct Caches {
    stores: HashMap<(String, String), (ApiResource, Store<DynamicObject>)>,
}

impl Caches {
    /// Serve reads of `resource` objects from `store`.
    pub(crate) fn add(&mut self, resource: ApiResource, store: Store<DynamicObject>) {
        self.stores.insert(
            (resource.group.clone(), resource.kind.clone()),
            (resource, store),
        );
    }

    fn store<R: Object>(&self) -> Option<&(ApiResource, Store<DynamicObject>)> {
        self.stores
            .get(&(R::group(&()).into_owned(), R::kind(&()).into_owned()))
    }

    /// The typed read handle of kind `R`, for the object whose uid is `owner`.
    pub(crate) fn cache<R: Object>(
        &self,
        owner: Option<String>,
        controller: &str,
    ) -> Result<Cache<R>, ReconcileError> {
        let (resource, store) = self.store::<R>().ok_or_else(|| {
            let kind = R::kind(&());
            ReconcileError::msg(format!(
                "the controller {controller} has no cache of {kind} objects: it neither owns nor \
                 watches the kind; declare it with `owns = [{kind}]` or \
                 `watches = [{kind}(field = ..)]` (or `Config::owns::<{kind}>()` / \
                 `Config::watches::<{kind}>(..)`)"
            ))
        })?;
        Ok(Cache {
            resource: resource.clone(),
            store: store.clone(),
            owner,
            kind: PhantomData,
        })
    }
}

impl fmt::Debug for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.stores.keys()).finish()
    }
}

/// Typed reads of one kind from the controller's watch cache: no request is sent.
///
/// Got from [`Axn::cache`](super::Axn::cache) for a kind the controller owns or watches.
///
/// **Eventually consistent.** The cache holds what the watch has shown so far: a change made a
/// moment ago (by anyone, this controller included) may not be in it yet, and an object
/// deleted a moment ago may still be. Every change reaches the cache and, for an owned or
/// watched kind, triggers a new reconcile, so a reconcile that read a stale cache is followed
/// by one that reads the change. The SDK's own writes are read-your-writes where it
/// matters: the object being reconciled ([`Axn::object`](super::Axn::object)) is never older
/// than the SDK's last write of it, and a descendant registered in an earlier reconcile is
/// not re-applied only because the cache still shows an older copy (the descendant stage asks
/// the API server when the cache disagrees). Reads of descendants written by this reconcile
/// see them only once their watch event arrived.
///
/// Each read decodes the cached objects it returns (the caches are untyped, shared by kind).
pub struct Cache<R> {
    resource: ApiResource,
    store: Store<DynamicObject>,
    owner: Option<String>,
    kind: PhantomData<fn() -> R>,
}

impl<R: Object> Cache<R> {
    /// The object `name` in `namespace`, if the cache holds it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<R> {
        let reference = ObjectRef::new_with(name, self.resource.clone()).within(namespace);
        self.store
            .get(&reference)
            .and_then(|object| decode(&object))
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<R> {
        self.matching(|_| true)
    }

    /// The cached objects whose labels match `selector`, e.g.
    /// `Selector::from_iter([("app", "web")])` (`bonny::kube::core::Selector`).
    pub fn list_labelled(&self, selector: &Selector) -> Vec<R> {
        self.matching(|object| selector.matches(object.labels()))
    }

    /// The cached objects with an owner reference to the object being reconciled (by uid).
    pub fn owned_by_me(&self) -> Vec<R> {
        let Some(owner) = self.owner.as_deref() else {
            return Vec::new();
        };
        self.matching(|object| {
            object
                .owner_references()
                .iter()
                .any(|reference| reference.uid == owner)
        })
    }

    fn matching(&self, keep: impl Fn(&DynamicObject) -> bool) -> Vec<R> {
        self.store
            .state()
            .iter()
            .filter(|object| keep(object))
            .filter_map(|object| decode(object))
            .collect()
    }
}

impl<R: Resource<DynamicType = ()>> fmt::Debug for Cache<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &R::kind(&()))
            .field("objects", &self.store.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::{
        api::core::v1::{ConfigMap, Secret},
        apimachinery::pkg::apis::meta::v1::OwnerReference,
    };
    use kube::{
        api::ObjectMeta,
        runtime::{reflector::store::Writer, watcher::Event},
    };

    use super::*;

    fn config_map(name: &str, app: &str, owner: Option<&str>) -> DynamicObject {
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        name: "w".into(),
                        kind: "Widget".into(),
                        api_version: "example.com/v1".into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let mut value = serde_json::to_value(object).unwrap();
        // Listed items carry no type: the cache must not need it.
        value.as_object_mut().unwrap().remove("apiVersion");
        value.as_object_mut().unwrap().remove("kind");
        serde_json::from_value(value).unwrap()
    }

    fn caches() -> Caches {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let mut writer = Writer::new(resource.clone());
        for object in [
            config_map("a", "web", Some("u1")),
            config_map("b", "db", Some("u2")),
            config_map("c", "web", None),
        ] {
            writer.apply_watcher_event(&Event::Apply(object));
        }
        let mut caches = Caches::default();
        caches.add(resource, writer.as_reader());
        caches
    }

    #[test]
    fn reads_by_name_label_and_owner() {
        let cache = caches()
            .cache::<ConfigMap>(Some("u1".into()), "widget")
            .unwrap();
        assert_eq!(cache.get("ns", "b").unwrap().metadata.name.unwrap(), "b");
        assert!(cache.get("other", "b").is_none());
        let mut web: Vec<_> = cache
            .list_labelled(&Selector::from_iter([("app", "web")]))
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        web.sort();
        assert_eq!(web, ["a", "c"]);
        let mine: Vec<_> = cache
            .owned_by_me()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(mine, ["a"]);
        assert_eq!(cache.list().len(), 3);
    }

    #[test]
    fn a_kind_without_a_cache_names_the_fix() {
        let err = caches()
            .cache::<Secret>(None, "widget")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither owns nor watches"), "{err}");
        assert!(err.contains("owns = [Secret]"), "{err}");
        assert!(err.contains("watches = [Secret("), "{err}");
    }
}
