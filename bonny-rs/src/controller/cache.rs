//! Reads from the controller's watch caches, for the author's `apply` and `cleanup`
//! ([`Axn::cache`](super::Axn::cache)): the objects of the owned and watched kinds, without a
//! request.
//!
//! The runtime fills [`Caches`] with the shared caches of its watches ([`KindCache`]: a store
//! and the index of its objects by owner) and keeps each index up to date from its watch's
//! events; this module defines them and reads them.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{Hash, Hasher},
    marker::PhantomData,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use kube::{
    Resource, ResourceExt,
    core::{Selector, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};

use super::{Cached, CachedKind, Object, ReconcileError, related::decode};

/// A cached object, compared and hashed by where it is (namespace and name) alone: a set of
/// them holds one version of each object, the store's own copy (shared, not cloned).
#[derive(Clone)]
struct Placed(Arc<Cached>);

impl PartialEq for Placed {
    fn eq(&self, other: &Self) -> bool {
        let (this, that) = (&self.0.metadata, &other.0.metadata);
        this.namespace == that.namespace && this.name == that.name
    }
}

impl Eq for Placed {}

impl Hash for Placed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.metadata.namespace.hash(state);
        self.0.metadata.name.hash(state);
    }
}

/// The indexed children of one owner; most owners have one (then no set is allocated).
enum Children {
    One(Placed),
    // Boxed so that every owner's map entry stays two words, not a whole set's header.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<Placed>>),
}

impl Children {
    /// Adds `child`, or replaces the version held of it.
    fn insert(&mut self, child: Placed) {
        match self {
            Self::One(one) if *one == child => *one = child,
            Self::One(one) => *self = Self::Many(Box::new(HashSet::from([one.clone(), child]))),
            Self::Many(many) => {
                many.replace(child);
            }
        }
    }

    /// Removes `child`; whether any child is left.
    fn remove(&mut self, child: &Placed) -> bool {
        match self {
            Self::One(one) => one != child,
            Self::Many(many) => {
                many.remove(child);
                !many.is_empty()
            }
        }
    }

    fn objects(&self) -> Vec<Arc<Cached>> {
        match self {
            Self::One(one) => vec![one.0.clone()],
            Self::Many(many) => many.iter().map(|child| child.0.clone()).collect(),
        }
    }
}

/// The cached objects of one kind by the UIDs their owner references name, so that "the
/// children of this owner" costs a lookup rather than a scan of the cache.
///
/// Only objects with owner references are indexed, each as the store's own copy. The index
/// follows its cache's watch ([`KindCache::applied`], [`KindCache::deleted`],
/// [`KindCache::listed`]), right after the store took each event.
#[derive(Default)]
struct OwnerIndex {
    state: Mutex<OwnerState>,
}

#[derive(Default)]
struct OwnerState {
    /// Every indexed object, as last indexed (its owner references say where it is filed).
    indexed: HashSet<Placed>,
    /// The objects naming each owner UID.
    children: HashMap<Box<str>, Children>,
}

impl OwnerIndex {
    fn lock(&self) -> MutexGuard<'_, OwnerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rebuild(&self, objects: Vec<Arc<Cached>>) {
        let mut state = OwnerState::default();
        for object in objects {
            state.index(object);
        }
        *self.lock() = state;
    }

    fn children(&self, owner: &str) -> Vec<Arc<Cached>> {
        self.lock()
            .children
            .get(owner)
            .map(Children::objects)
            .unwrap_or_default()
    }

    /// How many objects are indexed, and how many distinct owners they name.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.indexed.len(), state.children.len())
    }
}

impl OwnerState {
    /// Files `object` under the owners it names now, and no longer under those its indexed
    /// version named.
    fn index(&mut self, object: Arc<Cached>) {
        let placed = Placed(object);
        self.unindex(&placed);
        let owners = owner_uids(&placed.0);
        if owners.is_empty() {
            return;
        }
        for owner in owners {
            match self.children.get_mut(owner) {
                Some(children) => children.insert(placed.clone()),
                None => {
                    self.children
                        .insert(owner.into(), Children::One(placed.clone()));
                }
            }
        }
        self.indexed.insert(placed);
    }

    /// Forgets the object where `placed` is.
    fn unindex(&mut self, placed: &Placed) {
        let Some(old) = self.indexed.take(placed) else {
            return;
        };
        for owner in owner_uids(&old.0) {
            if let Some(children) = self.children.get_mut(owner)
                && !children.remove(&old)
            {
                self.children.remove(owner);
            }
        }
    }
}

/// The distinct owner UIDs `object` names.
fn owner_uids(object: &Cached) -> Vec<&str> {
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
    kind: CachedKind,
    store: Store<Cached>,
    owners: Arc<OwnerIndex>,
}

impl KindCache {
    /// `store` of `kind` objects, with an index of what it holds now, kept up to date by the
    /// watch filling the store ([`KindCache::applied`], [`KindCache::deleted`],
    /// [`KindCache::listed`]).
    pub(crate) fn new(kind: CachedKind, store: Store<Cached>) -> Self {
        let cache = Self {
            kind,
            store,
            owners: Arc::default(),
        };
        cache.listed();
        cache
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store<Cached> {
        &self.store
    }

    /// The kind of the cached objects.
    pub(crate) fn kind(&self) -> &CachedKind {
        &self.kind
    }

    /// Where `object` is in the store.
    pub(crate) fn reference(&self, object: &Cached) -> ObjectRef<Cached> {
        ObjectRef::from_obj_with(object, self.kind.clone())
    }

    /// The cached object `name` in `namespace`, if the store holds it.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<Cached>> {
        self.store
            .get(&ObjectRef::new_with(name, self.kind.clone()).within(namespace))
    }

    /// The store took `object` (its own copy): it is filed under the owners it names now,
    /// and no longer under those its previous version named.
    pub(crate) fn applied(&self, object: Arc<Cached>) {
        self.owners.lock().index(object);
    }

    /// The store dropped `object`: it is forgotten.
    pub(crate) fn deleted(&self, object: &Cached) {
        self.owners
            .lock()
            .unindex(&Placed(Arc::new(object.place())));
    }

    /// The store took a whole (re-)list: the index is rebuilt from it, so objects that
    /// vanished meanwhile go.
    pub(crate) fn listed(&self) {
        self.owners.rebuild(self.store.state());
    }

    /// The cached objects with an owner reference to the UID `owner`: a lookup, no scan of
    /// the cache.
    pub(crate) fn owned_by(&self, owner: &str) -> Vec<Arc<Cached>> {
        self.owners.children(owner)
    }
}

/// The watch caches of one controller scope, by kind (group and kind).
#[derive(Clone, Default)]
pub(crate) struct Caches {
    stores: HashMap<(String, String), KindCache>,
}

impl Caches {
    /// Serve reads of the objects of `cache`'s kind from it.
    pub(crate) fn add(&mut self, cache: KindCache) {
        let resource = cache.kind().resource();
        self.stores
            .insert((resource.group.clone(), resource.kind.clone()), cache);
    }

    fn store<R: Object>(&self) -> Option<&KindCache> {
        self.stores
            .get(&(R::group(&()).into_owned(), R::kind(&()).into_owned()))
    }

    /// The typed read handle of kind `R`, for the object whose uid is `owner`.
    pub(crate) fn cache<R: Object>(
        &self,
        owner: Option<String>,
        controller: &str,
    ) -> Result<Cache<R>, ReconcileError> {
        let cache = self.store::<R>().ok_or_else(|| {
            let kind = R::kind(&());
            ReconcileError::msg(format!(
                "the controller {controller} has no cache of {kind} objects: it neither owns nor \
                 watches the kind; declare it with `owns = [{kind}]` or \
                 `watches = [{kind}(field = ..)]` (or `Config::owns::<{kind}>()` / \
                 `Config::watches::<{kind}>(..)`)"
            ))
        })?;
        Ok(Cache {
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
    cache: KindCache,
    owner: Option<String>,
    kind: PhantomData<fn() -> R>,
}

impl<R: Object> Cache<R> {
    /// The object `name` in `namespace`, if the cache holds it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<R> {
        self.cache
            .get(namespace, name)
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
            .owned_by(owner)
            .iter()
            .filter_map(|object| decode(object))
            .collect()
    }

    fn matching(&self, keep: impl Fn(&Cached) -> bool) -> Vec<R> {
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
        api::{ApiResource, DynamicObject, ObjectMeta},
        runtime::{reflector::store::Writer, watcher::Event},
    };

    use super::*;

    fn kind() -> CachedKind {
        CachedKind::new(ApiResource::erase::<ConfigMap>(&()))
    }

    fn config_map(name: &str, app: &str, owner: Option<&str>) -> Cached {
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
        Cached::from(serde_json::from_value::<DynamicObject>(value).unwrap())
    }

    fn caches() -> Caches {
        let mut writer = Writer::new(kind());
        for object in [
            config_map("a", "web", Some("u1")),
            config_map("b", "db", Some("u2")),
            config_map("c", "web", None),
        ] {
            writer.apply_watcher_event(&Event::Apply(object));
        }
        let mut caches = Caches::default();
        caches.add(KindCache::new(kind(), writer.as_reader()));
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

    fn owned(name: &str, owners: &[&str]) -> Cached {
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
        writer: Writer<Cached>,
        cache: KindCache,
    }

    impl Watched {
        fn new() -> Self {
            let writer = Writer::new(kind());
            let cache = KindCache::new(kind(), writer.as_reader());
            Self { writer, cache }
        }

        /// The store takes `event`, then the index follows, as the runtime's watch does.
        fn event(&mut self, event: Event<Cached>) {
            self.writer.apply_watcher_event(&event);
            match &event {
                Event::Apply(object) => {
                    let reference = self.cache.reference(object);
                    self.cache
                        .applied(self.cache.store().get(&reference).unwrap());
                }
                Event::Delete(object) => self.cache.deleted(object),
                Event::InitDone => self.cache.listed(),
                Event::Init | Event::InitApply(_) => {}
            }
        }

        fn children(&self, owner: &str) -> Vec<String> {
            let mut names: Vec<_> = self
                .cache
                .owned_by(owner)
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
    fn the_index_holds_the_stores_own_newest_copy() {
        let mut watched = Watched::new();
        watched.event(Event::Apply(owned("a", &["u1"])));
        watched.event(Event::Apply(config_map("a", "db", Some("u1"))));
        let indexed = watched.cache.owned_by("u1");
        let cached = watched.cache.get("ns", "a").unwrap();
        assert_eq!(indexed.len(), 1);
        assert!(Arc::ptr_eq(&indexed[0], &cached), "shared, not copied");
        assert_eq!(indexed[0].labels()["app"], "db");
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
