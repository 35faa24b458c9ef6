//! Reads from the controller's watch caches, for the author's `apply` and `cleanup`
//! ([`Axn::cache`](super::Axn::cache)): the objects of the owned and watched kinds, without a
//! request.
//!
//! The runtime fills [`Caches`] with the shared caches of its watches ([`KindCache`]: a store
//! and the index of its objects by owner) and keeps each index up to date from its watch's
//! events; this module only defines and reads them.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    marker::PhantomData,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use kube::{
    Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    core::{Selector, SelectorExt},
    runtime::{
        reflector::{ObjectRef, Store},
        watcher::Event,
    },
};

use super::{Object, ReconcileError, related::decode};

/// Where an object is: its namespace and name.
type Place = (Option<String>, String);

/// The cached objects of one kind by the UIDs their owner references name, so that "the
/// children of this owner" costs a lookup per child rather than a scan of the cache.
///
/// Only objects with owner references are indexed. The index follows its cache's watch
/// ([`KindCache::observe`]); it may lag the store by the event in flight, so what it names
/// is read back from the store and checked there.
#[derive(Default)]
struct OwnerIndex {
    state: Mutex<OwnerState>,
}

#[derive(Default)]
struct OwnerState {
    /// The owner UIDs each indexed object names.
    owners_of: HashMap<Arc<Place>, Box<[Arc<str>]>>,
    /// The objects naming each owner UID.
    owned_by: HashMap<Arc<str>, HashSet<Arc<Place>>>,
}

impl OwnerIndex {
    fn lock(&self) -> MutexGuard<'_, OwnerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rebuild<'a>(&self, objects: impl IntoIterator<Item = &'a DynamicObject>) {
        let mut state = OwnerState::default();
        for object in objects {
            state.set(place(object), owner_uids(object));
        }
        *self.lock() = state;
    }

    fn owned_by(&self, owner: &str) -> Vec<Arc<Place>> {
        self.lock()
            .owned_by
            .get(owner)
            .map(|places| places.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects are indexed, and how many distinct owners they name.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.owners_of.len(), state.owned_by.len())
    }
}

impl OwnerState {
    /// The object at `place` now names `owners` (sorted, distinct; none: it is forgotten).
    fn set(&mut self, place: Place, owners: Vec<&str>) {
        if let Some(old) = self.owners_of.get(&place)
            && old.iter().map(|uid| &**uid).eq(owners.iter().copied())
        {
            // Unchanged, the common case: nothing to do.
            return;
        }
        let place = match self.owners_of.remove_entry(&place) {
            Some((shared, old)) => {
                for uid in old.iter() {
                    if let Some(places) = self.owned_by.get_mut(uid) {
                        places.remove(&shared);
                        if places.is_empty() {
                            self.owned_by.remove(uid);
                        }
                    }
                }
                shared
            }
            None if owners.is_empty() => return,
            None => Arc::new(place),
        };
        if owners.is_empty() {
            return;
        }
        // Owner UIDs are shared by the owner's children.
        let owners: Box<[Arc<str>]> = owners
            .into_iter()
            .map(|uid| match self.owned_by.get_key_value(uid) {
                Some((shared, _)) => shared.clone(),
                None => Arc::from(uid),
            })
            .collect();
        for uid in owners.iter() {
            self.owned_by
                .entry(uid.clone())
                .or_default()
                .insert(place.clone());
        }
        self.owners_of.insert(place, owners);
    }
}

fn place(object: &DynamicObject) -> Place {
    (object.namespace(), object.name_any())
}

fn owner_uids(object: &DynamicObject) -> Vec<&str> {
    let mut uids: Vec<&str> = object
        .owner_references()
        .iter()
        .map(|reference| reference.uid.as_str())
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// One shared watch cache as controllers read it: the store of one kind in one namespace
/// scope, and the index of its objects by owner UID. Cheap to clone; clones share both.
#[derive(Clone)]
pub(crate) struct KindCache {
    store: Store<DynamicObject>,
    owners: Arc<OwnerIndex>,
}

impl From<Store<DynamicObject>> for KindCache {
    /// `store` with an index of what it holds now, kept up to date by [`KindCache::observe`].
    fn from(store: Store<DynamicObject>) -> Self {
        let cache = Self {
            store,
            owners: Arc::default(),
        };
        cache
            .owners
            .rebuild(cache.store.state().iter().map(|o| &**o));
        cache
    }
}

impl KindCache {
    /// The store.
    pub(crate) fn store(&self) -> &Store<DynamicObject> {
        &self.store
    }

    /// Follow one event of the cache's watch, after the store took it: an applied object's
    /// owners are set anew (stale ones dropped), a deleted object is forgotten, and the end of
    /// a (re-)list rebuilds the index from the store, so objects that vanished meanwhile go.
    pub(crate) fn observe(&self, event: &Event<DynamicObject>) {
        match event {
            Event::Apply(object) => self.owners.lock().set(place(object), owner_uids(object)),
            Event::Delete(object) => self.owners.lock().set(place(object), Vec::new()),
            // The store swaps in the listed objects at the list's end.
            Event::Init | Event::InitApply(_) => {}
            Event::InitDone => self
                .owners
                .rebuild(self.store.state().iter().map(|object| &**object)),
        }
    }

    /// The cached objects of `resource`'s kind with an owner reference to the UID `owner`:
    /// a lookup per child, no scan of the cache.
    pub(crate) fn owned_by(&self, resource: &ApiResource, owner: &str) -> Vec<Arc<DynamicObject>> {
        let places = self.owners.owned_by(owner);
        let mut reference = ObjectRef::new_with("", resource.clone());
        places
            .iter()
            .filter_map(|place| {
                let (namespace, name) = &**place;
                reference.namespace.clone_from(namespace);
                reference.name.clone_from(name);
                self.store.get(&reference)
            })
            .filter(|object| {
                object
                    .owner_references()
                    .iter()
                    .any(|reference| reference.uid == owner)
            })
            .collect()
    }
}

/// The watch caches of one controller scope, by kind (group and kind).
#[derive(Clone, Default)]
pub(crate) struct Caches {
    stores: HashMap<(String, String), (ApiResource, KindCache)>,
}

impl Caches {
    /// Serve reads of `resource` objects from `cache`.
    pub(crate) fn add(&mut self, resource: ApiResource, cache: impl Into<KindCache>) {
        self.stores.insert(
            (resource.group.clone(), resource.kind.clone()),
            (resource, cache.into()),
        );
    }

    fn store<R: Object>(&self) -> Option<&(ApiResource, KindCache)> {
        self.stores
            .get(&(R::group(&()).into_owned(), R::kind(&()).into_owned()))
    }

    /// The typed read handle of kind `R`, for the object whose uid is `owner`.
    pub(crate) fn cache<R: Object>(
        &self,
        owner: Option<String>,
        controller: &str,
    ) -> Result<Cache<R>, ReconcileError> {
        let (resource, cache) = self.store::<R>().ok_or_else(|| {
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
            cache: cache.clone(),
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
    cache: KindCache,
    owner: Option<String>,
    kind: PhantomData<fn() -> R>,
}

impl<R: Object> Cache<R> {
    /// The object `name` in `namespace`, if the cache holds it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<R> {
        let reference = ObjectRef::new_with(name, self.resource.clone()).within(namespace);
        self.cache
            .store
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
    ///
    /// Served from an index by owner: the cost grows with the children of this object, not
    /// with the objects cached.
    pub fn owned_by_me(&self) -> Vec<R> {
        let Some(owner) = self.owner.as_deref() else {
            return Vec::new();
        };
        self.cache
            .owned_by(&self.resource, owner)
            .iter()
            .filter_map(|object| decode(object))
            .collect()
    }

    fn matching(&self, keep: impl Fn(&DynamicObject) -> bool) -> Vec<R> {
        self.cache
            .store
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
            .field("objects", &self.cache.store.len())
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

    fn owned(name: &str, owners: &[&str]) -> DynamicObject {
        let mut object = config_map(name, "web", None);
        object.metadata.owner_references = Some(
            owners
                .iter()
                .map(|uid| OwnerReference {
                    uid: (*uid).into(),
                    name: "w".into(),
                    kind: "Widget".into(),
                    api_version: "example.com/v1".into(),
                    ..OwnerReference::default()
                })
                .collect(),
        );
        object
    }

    /// A cache and its writer, the writer's events followed by the index as the runtime does.
    struct Watched {
        writer: Writer<DynamicObject>,
        cache: KindCache,
        resource: ApiResource,
    }

    impl Watched {
        fn new() -> Self {
            let resource = ApiResource::erase::<ConfigMap>(&());
            let writer = Writer::new(resource.clone());
            let cache = KindCache::from(writer.as_reader());
            Self {
                writer,
                cache,
                resource,
            }
        }

        fn event(&mut self, event: Event<DynamicObject>) {
            self.writer.apply_watcher_event(&event);
            self.cache.observe(&event);
        }

        fn children(&self, owner: &str) -> Vec<String> {
            let mut names: Vec<_> = self
                .cache
                .owned_by(&self.resource, owner)
                .iter()
                .map(|object| object.name_any())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn the_owner_index_follows_applies_owner_changes_and_deletes() {
        let mut watched = Watched::new();
        watched.event(Event::Apply(owned("a", &["u1"])));
        watched.event(Event::Apply(owned("b", &["u1", "u2"])));
        watched.event(Event::Apply(owned("c", &[])));
        assert_eq!(watched.children("u1"), ["a", "b"]);
        assert_eq!(watched.children("u2"), ["b"]);
        assert!(watched.children("u3").is_empty());
        assert_eq!(watched.cache.owners.sizes(), (2, 2), "c names no owner");
        // b moves from u1 and u2 to u3; a changes but keeps its owner.
        watched.event(Event::Apply(owned("b", &["u3"])));
        watched.event(Event::Apply(config_map("a", "db", Some("u1"))));
        assert_eq!(watched.children("u1"), ["a"]);
        assert!(watched.children("u2").is_empty());
        assert_eq!(watched.children("u3"), ["b"]);
        assert_eq!(watched.cache.owners.sizes(), (2, 2), "u2 is forgotten");
        // b drops its owners, a is deleted: nothing is left.
        watched.event(Event::Apply(owned("b", &[])));
        watched.event(Event::Delete(owned("a", &["u1"])));
        assert!(watched.children("u1").is_empty());
        assert!(watched.children("u3").is_empty());
        assert_eq!(watched.cache.owners.sizes(), (0, 0));
    }

    #[test]
    fn a_relist_rebuilds_the_owner_index_without_what_vanished() {
        let mut watched = Watched::new();
        watched.event(Event::Apply(owned("a", &["u1"])));
        watched.event(Event::Apply(owned("b", &["u1"])));
        watched.event(Event::Apply(owned("c", &["u2"])));
        // The watch lost its place; meanwhile a vanished, b changed owner, d appeared.
        watched.event(Event::Init);
        watched.event(Event::InitApply(owned("b", &["u2"])));
        watched.event(Event::InitApply(owned("c", &["u2"])));
        watched.event(Event::InitApply(owned("d", &["u1"])));
        watched.event(Event::InitDone);
        assert_eq!(watched.children("u1"), ["d"]);
        assert_eq!(watched.children("u2"), ["b", "c"]);
        assert_eq!(watched.cache.owners.sizes(), (3, 2));
    }

    #[test]
    fn what_the_index_names_is_checked_against_the_store() {
        let mut watched = Watched::new();
        watched.event(Event::Apply(owned("a", &["u1"])));
        // The store took a change the index has not followed yet (the event in flight).
        watched
            .writer
            .apply_watcher_event(&Event::Apply(owned("a", &["u2"])));
        assert!(watched.children("u1").is_empty());
        watched
            .writer
            .apply_watcher_event(&Event::Delete(owned("a", &["u2"])));
        assert!(watched.children("u2").is_empty());
    }

    #[test]
    fn a_cache_made_from_a_filled_store_indexes_what_it_holds() {
        let cache = caches()
            .cache::<ConfigMap>(Some("u2".into()), "widget")
            .unwrap();
        let mine: Vec<_> = cache
            .owned_by_me()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(mine, ["b"]);
        assert!(
            caches()
                .cache::<ConfigMap>(None, "widget")
                .unwrap()
                .owned_by_me()
                .is_empty()
        );
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
