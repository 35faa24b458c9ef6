//! The operator's watch caches of owned and watched kinds: one per kind and namespace scope,
//! shared by every controller of the operator that owns or watches the kind, indexed by owner,
//! lean and compact.
//!
//! - **Shared**: controllers declare what they own ([`Caches::declare`]) and watch
//!   ([`Caches::declare_watched`]) before anything starts; each kind and namespace scope then
//!   gets one watch and one store, whose selector is the union of its controllers'
//!   (`bonny.dev/controller in (a,b)`), or every object once one controller watches the kind.
//!   Each controller subscribes to the objects the watch touched ([`Caches::subscribe`]).
//! - **Indexed by owner**: each cache keeps its objects by owner UID ([`KindCache`]), so the
//!   prune stage and `Cache::owned_by_me` look up one owner's children instead of scanning.
//! - **Label-selected**: by default only objects carrying a declaring controller's
//!   [`DESCENDANT_LABEL`] are watched, so objects the SDK did not create are neither streamed
//!   nor cached. A controller that adopts existing children
//!   ([`Config::adopt_existing`](crate::controller::Config::adopt_existing)) makes its caches
//!   watch every object of the kind.
//! - **Lean**: what the SDK never reads is dropped before an object is cached ([`lean`]).
//! - **Compact**: objects are held as [`Cached`] (typed metadata, the body as JSON text), not as
//!   the `DynamicObject`s the watch decodes ([`metadata::watch`] turns one into the other).
//!
//! kube-runtime's own shared streams (`Writer::new_shared`) need a `Default` dynamic type,
//! which the erased owned kinds (typed by an `ApiResource`) lack; [`Feed`] is the small
//! fan-out used instead, for the reconciled kind's caches as well.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use futures::{StreamExt, channel::mpsc};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ObjectMeta},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    intake,
    metadata::{self, Shape},
};
use crate::{
    controller::{Cached, CachedKind, DESCENDANT_LABEL, KindCache},
    observe::Metrics,
};

/// The annotation kubectl's client-side apply leaves: a second copy of the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from an object's metadata what the SDK never reads, before the object is cached:
/// `managedFields` (server-side apply's bookkeeping, often most of a small object's size) and
/// kubectl's last-applied copy of the object.
pub(crate) fn lean(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Hands each object a cache's watch touched to every subscriber, in order.
///
/// A subscriber that went away is forgotten at the next object. The queues are unbounded so
/// that a slow controller never holds up the watch (and every other controller behind it);
/// they hold references to objects, not copies.
pub(crate) struct Feed<T> {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<T>>>>,
}

impl<T> Default for Feed<T> {
    fn default() -> Self {
        Self {
            subscribers: Mutex::default(),
        }
    }
}

impl<T> Feed<T> {
    fn lock(&self) -> MutexGuard<'_, Vec<mpsc::UnboundedSender<Arc<T>>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The objects touched from now on.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<T>> {
        let (sender, receiver) = mpsc::unbounded();
        self.lock().push(sender);
        receiver
    }

    pub(crate) fn publish(&self, object: &Arc<T>) {
        self.lock()
            .retain(|subscriber| subscriber.unbounded_send(object.clone()).is_ok());
    }
}

/// Publishes every object of `store` once a (re-)list is in it.
///
/// A watch hands over listed objects before the reflector moves them into the store, at the
/// end of the list. Publishing them only then, and every other change after the store took
/// it, means a subscriber that reads the store right after subscribing misses nothing: what
/// was published before it subscribed is in the store. The published objects are the store's
/// own, not copies.
pub(crate) fn publish_listed<K>(store: &Store<K>, feed: &Feed<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    for object in store.state() {
        feed.publish(&object);
    }
}

/// Which objects of its kind a shared cache holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selection {
    /// Those labelled by one of these controllers.
    Controllers(BTreeSet<String>),
    /// All of them: a controller adopts existing children, or watches the kind.
    Everything,
}

impl Selection {
    /// The label selector of the watch (`None`: every object).
    fn selector(&self) -> Option<String> {
        match self {
            Self::Everything => None,
            Self::Controllers(names) => match names.iter().collect::<Vec<_>>().as_slice() {
                [one] => Some(format!("{DESCENDANT_LABEL}={one}")),
                many => Some(format!(
                    "{DESCENDANT_LABEL} in ({})",
                    many.iter()
                        .map(|name| name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )),
            },
        }
    }

    fn add(&mut self, controller: &str, adopt: bool) {
        match self {
            Self::Everything => {}
            Self::Controllers(_) if adopt => *self = Self::Everything,
            Self::Controllers(names) => {
                names.insert(controller.to_owned());
            }
        }
    }
}

/// A kind in a namespace scope (`None`: all namespaces).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    resource: ApiResource,
    namespace: Option<String>,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ApiResource { plural, group, .. } = &self.resource;
        let namespace = self.namespace.as_deref().unwrap_or("*");
        if group.is_empty() {
            write!(f, "{plural}/{namespace}")
        } else {
            write!(f, "{plural}.{group}/{namespace}")
        }
    }
}

/// A started cache: its store and owner index, and the feed of what its watch touched.
#[derive(Clone)]
struct Started {
    cache: KindCache,
    feed: Arc<Feed<Cached>>,
}

#[derive(Default)]
struct Inner {
    declared: HashMap<Key, Selection>,
    /// What each declared cache holds of its objects (the union of its declarers' shapes).
    shapes: HashMap<Key, Shape>,
    started: HashMap<Key, Started>,
}

impl Inner {
    /// One more declarer of `key` asks for `shape`: the cache holds what all of them need.
    fn widen_shape(&mut self, key: &Key, shape: Shape) {
        let held = self.shapes.entry(key.clone()).or_insert(shape);
        *held = held.union(shape);
    }
}

/// The registry of the operator's caches of owned and watched kinds, created once per operator
/// run and shared by every controller registration. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Caches {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_map()
            .entries(
                inner
                    .declared
                    .iter()
                    .map(|(key, selection)| (key.to_string(), selection.selector())),
            )
            .finish()
    }
}

impl Caches {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `controller` owns `resource` in `namespace` (`None`: all namespaces); with `adopt`, it
    /// wants every object of the kind, not only its own descendants; `shape` is what it needs
    /// of each object (the cache is metadata-only when every declarer asks for that). Call
    /// before [`start`].
    ///
    /// [`start`]: Self::start
    pub(crate) fn declare(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        controller: &str,
        adopt: bool,
        shape: Shape,
    ) {
        let key = Key {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
        };
        let mut inner = self.lock();
        inner.widen_shape(&key, shape);
        inner
            .declared
            .entry(key)
            .or_insert_with(|| Selection::Controllers(BTreeSet::new()))
            .add(controller, adopt);
    }

    /// A controller watches `resource` (a related kind) in `namespace`: its cache holds every
    /// object of the kind, since related kinds are not label-selected; `shape` as for
    /// [`declare`](Self::declare). Call before [`start`].
    ///
    /// [`start`]: Self::start
    pub(crate) fn declare_watched(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        shape: Shape,
    ) {
        let key = Key {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
        };
        let mut inner = self.lock();
        inner.widen_shape(&key, shape);
        inner.declared.insert(key, Selection::Everything);
    }

    /// Starts one watch per declared cache into `tasks`, each ending when `stop` is cancelled.
    /// A new start replaces the stores of the previous one.
    pub(crate) fn start(
        &self,
        client: &Client,
        metrics: &Metrics,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        let mut inner = self.lock();
        let declared: Vec<_> = inner
            .declared
            .iter()
            .map(|(key, selection)| (key.clone(), selection.selector()))
            .collect();
        for (key, selector) in declared {
            let api: Api<DynamicObject> = match &key.namespace {
                Some(namespace) => Api::namespaced_with(client.clone(), namespace, &key.resource),
                None => Api::all_with(client.clone(), &key.resource),
            };
            let mut config = watcher::Config::default().any_semantic();
            if let Some(selector) = &selector {
                config = config.labels(selector);
            }
            let kind = CachedKind::new(key.resource.clone());
            let writer = reflector::store::Writer::new(kind.clone());
            let store = writer.as_reader();
            let cache = KindCache::new(kind, store.clone());
            let feed = Arc::new(Feed::default());
            let started = Started {
                cache: cache.clone(),
                feed: feed.clone(),
            };
            let name = key.to_string();
            let span = tracing::info_span!("cache", cache = %name, selector = selector.as_deref().unwrap_or("*"));
            let shape = inner.shapes.get(&key).copied().unwrap_or_default();
            // A list of thousands is taken in chunks, so the stop is seen in between.
            let events = intake::cooperative(
                metadata::watch(api, config, &key.resource, shape)
                    .default_backoff()
                    .modify(|object| lean(&mut object.metadata))
                    .reflect(writer),
            )
            .take_until(stop.clone().cancelled_owned());
            let metrics = metrics.clone();
            tasks.spawn(
                async move {
                    tracing::debug!("cache started");
                    let mut events = std::pin::pin!(events);
                    while let Some(event) = events.next().await {
                        // The owner index follows the store before a subscriber hears of
                        // the change.
                        match event {
                            Ok(Event::Apply(object)) => {
                                metrics.cache_size(&name, store.len());
                                if let Some(cached) = store.get(&cache.reference(&object)) {
                                    cache.applied(cached.clone());
                                    feed.publish(&cached);
                                }
                            }
                            Ok(Event::Delete(object)) => {
                                metrics.cache_size(&name, store.len());
                                cache.deleted(&object);
                                feed.publish(&Arc::new(object));
                            }
                            // Published once the list is in the store (see `publish_listed`).
                            Ok(Event::Init | Event::InitApply(_)) => {}
                            Ok(Event::InitDone) => {
                                metrics.cache_size(&name, store.len());
                                cache.listed();
                                publish_listed(&store, &feed);
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "cache watch failed; retrying with backoff");
                            }
                        }
                    }
                }
                .instrument(span),
            );
            inner.started.insert(key, started);
        }
    }

    /// The started cache of `resource` in `namespace` (store and owner index), and the objects
    /// its watch touches from now on (for triggering the owners' or the mapped primaries'
    /// reconciles).
    pub(crate) fn subscribe(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> Option<(KindCache, mpsc::UnboundedReceiver<Arc<Cached>>)> {
        let key = Key {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
        };
        let inner = self.lock();
        let started = inner.started.get(&key)?;
        Some((started.cache.clone(), started.feed.subscribe()))
    }

    /// The declared caches as `(cache, label selector)`, sorted (for logs and tests).
    #[cfg(test)]
    fn selectors(&self) -> Vec<(String, Option<String>)> {
        let mut all: Vec<_> = self
            .lock()
            .declared
            .iter()
            .map(|(key, selection)| (key.to_string(), selection.selector()))
            .collect();
        all.sort();
        all
    }
}

/// What the owner's trigger needs of a touched owned object: its name and owner references
/// (so that the feed's shared object is not copied whole for every controller).
pub(crate) fn owner_stub(object: &Cached) -> DynamicObject {
    DynamicObject {
        types: None,
        metadata: ObjectMeta {
            name: object.metadata.name.clone(),
            namespace: object.metadata.namespace.clone(),
            owner_references: object.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        data: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
    use serde_json::json;

    use super::*;

    #[test]
    fn lean_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "a", "namespace": "n", "labels": {"app": "x"},
                "annotations": {LAST_APPLIED: "{\"big\":true}", "keep": "me"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:k": {}}}}],
            },
            "data": {"k": "v"},
        }))
        .unwrap();
        lean(&mut object.metadata);
        let value = serde_json::to_value(&object).unwrap();
        assert_eq!(
            value["metadata"],
            json!({"name": "a", "namespace": "n", "labels": {"app": "x"},
                "annotations": {"keep": "me"}})
        );
        assert_eq!(value["data"], json!({"k": "v"}));
    }

    #[test]
    fn controllers_owning_a_kind_share_one_cache_selecting_all_their_labels() {
        let caches = Caches::default();
        let configmaps = ApiResource::erase::<ConfigMap>(&());
        let deployments = ApiResource::erase::<Deployment>(&());
        caches.declare(&configmaps, Some("n"), "b", false, Shape::Full);
        caches.declare(&configmaps, Some("n"), "a", false, Shape::Full);
        caches.declare(&configmaps, Some("n"), "a", false, Shape::Full);
        caches.declare(&deployments, Some("n"), "a", false, Shape::Full);
        caches.declare(&configmaps, None, "c", false, Shape::Full);
        assert_eq!(
            caches.selectors(),
            [
                (
                    "configmaps/*".to_owned(),
                    Some("bonny.dev/controller=c".to_owned())
                ),
                (
                    "configmaps/n".to_owned(),
                    Some("bonny.dev/controller in (a,b)".to_owned())
                ),
                (
                    "deployments.apps/n".to_owned(),
                    Some("bonny.dev/controller=a".to_owned())
                ),
            ]
        );
        // One controller adopting existing children widens the shared cache to every object.
        caches.declare(&configmaps, Some("n"), "d", true, Shape::Full);
        caches.declare(&configmaps, Some("n"), "e", false, Shape::Full);
        assert_eq!(caches.selectors()[1], ("configmaps/n".to_owned(), None));
    }

    #[test]
    fn a_shared_cache_is_metadata_only_when_every_declarer_asks() {
        let caches = Caches::default();
        let configmaps = ApiResource::erase::<ConfigMap>(&());
        let shape = |namespace: &str| {
            let key = Key {
                resource: configmaps.clone(),
                namespace: Some(namespace.to_owned()),
            };
            caches.lock().shapes.get(&key).copied()
        };
        caches.declare(&configmaps, Some("a"), "x", false, Shape::Metadata);
        caches.declare(&configmaps, Some("a"), "y", false, Shape::Metadata);
        caches.declare(&configmaps, Some("b"), "x", false, Shape::Metadata);
        caches.declare(&configmaps, Some("b"), "y", false, Shape::Full);
        caches.declare(&configmaps, Some("b"), "z", false, Shape::Metadata);
        assert_eq!(shape("a"), Some(Shape::Metadata));
        assert_eq!(shape("b"), Some(Shape::Full));
    }

    #[test]
    fn a_watched_kind_widens_its_shared_cache_to_every_object() {
        let caches = Caches::default();
        let configmaps = ApiResource::erase::<ConfigMap>(&());
        caches.declare(&configmaps, Some("n"), "a", false, Shape::Full);
        caches.declare_watched(&configmaps, Some("n"), Shape::Full);
        caches.declare(&configmaps, Some("n"), "b", false, Shape::Full);
        caches.declare_watched(&configmaps, Some("m"), Shape::Metadata);
        assert_eq!(
            caches.selectors(),
            [
                ("configmaps/m".to_owned(), None),
                ("configmaps/n".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_feed_reaches_every_subscriber_and_forgets_those_gone() {
        let feed = Feed::<u32>::default();
        let mut first = feed.subscribe();
        let second = feed.subscribe();
        feed.publish(&Arc::new(1));
        drop(second);
        feed.publish(&Arc::new(2));
        assert_eq!(feed.lock().len(), 1);
        assert_eq!(*first.try_recv().unwrap(), 1);
        assert_eq!(*first.try_recv().unwrap(), 2);
    }

    #[test]
    fn a_subscriber_that_reads_the_store_after_subscribing_misses_no_listed_object() {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let object = |name: &str| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "n"}}))
            .unwrap()
        };
        let mut writer = reflector::store::Writer::<DynamicObject>::new(resource);
        let store = writer.as_reader();
        let feed = Feed::default();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(object("a")));
        // Subscribed mid-list: the store does not hold `a` yet, the list's end will bring it.
        let mut subscriber = feed.subscribe();
        assert!(store.is_empty());
        writer.apply_watcher_event(&Event::InitApply(object("b")));
        writer.apply_watcher_event(&Event::InitDone);
        publish_listed(&store, &feed);
        let mut names: Vec<_> = std::iter::from_fn(|| subscriber.try_recv().ok())
            .map(|object| object.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn the_owner_stub_keeps_what_the_trigger_reads() {
        let object: Cached = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"},
                "ownerReferences": [{"apiVersion": "e2e/v1", "kind": "W", "name": "w",
                    "uid": "u", "controller": true}]},
            "data": {"k": "v"},
        }))
        .unwrap();
        let stub = owner_stub(&object);
        assert_eq!(
            stub.metadata.owner_references,
            object.metadata.owner_references
        );
        assert_eq!(stub.metadata.name.as_deref(), Some("a"));
        assert!(stub.metadata.labels.is_none());
        assert!(stub.data.is_null());
    }
}
