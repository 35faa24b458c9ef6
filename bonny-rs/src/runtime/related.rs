//! Related kinds and event filters: the watches of kinds a controller does not own, the index
//! that answers "which primaries name this object" from memory, and the filters that drop
//! events not worth a reconcile.
//!
//! [`primary`] sits on the primary's event stream (after its reflector): it keeps the field
//! indexes up to date and applies the primary's filters. [`Related::watch`] subscribes the
//! kube-runtime controller to the operator's shared cache of each related kind (one watch per
//! kind and namespace scope, whoever owns or watches it), its events mapped to primaries by a
//! function or by an index, never by a LIST.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use futures::{Stream, StreamExt, future};
use kube::{
    Resource, ResourceExt,
    runtime::{
        Controller as KubeController,
        reflector::{ObjectRef, Store},
        watcher::{self, Event},
    },
};

use super::{cache::Caches, watches::OwnedCaches};
use crate::controller::{Cached, Config, Filter, KindCache, Map, Object, ReadFn, WatchedKind};

type Events<T> = Result<Event<T>, watcher::Error>;

/// A watched kind, with its field index when it maps by a field.
type Watch<K> = (WatchedKind<K>, Option<Arc<FieldIndex<K>>>);

/// The related watches of one controller scope, with the indexes the primary's watch fills.
pub(crate) struct Related<K: Object> {
    /// The watched kinds, each with its field index when it maps by a field.
    watched: Vec<Watch<K>>,
}

impl<K: Object> Clone for Related<K> {
    fn clone(&self) -> Self {
        Self {
            watched: self.watched.clone(),
        }
    }
}

/// The primary's events (after its reflector filled `store`) with the field indexes of
/// `config`'s watched kinds kept up to date and `config`'s filters applied; and the related
/// watches to add to the controller.
pub(crate) fn primary<K: Object>(
    events: impl Stream<Item = Events<K>> + Send + 'static,
    store: Store<K>,
    config: &Config<K>,
) -> (impl Stream<Item = Events<K>> + Send + 'static, Related<K>) {
    let watched: Vec<_> = config
        .watched_kinds()
        .iter()
        .map(|watched| {
            let index = match watched.map() {
                Map::Field { read, .. } => Some(Arc::new(FieldIndex::new(read.clone()))),
                Map::Function(_) => None,
            };
            (watched.clone(), index)
        })
        .collect();
    let indexes: Vec<_> = watched.iter().filter_map(|(_, i)| i.clone()).collect();
    let mut filter = EventFilter::new(config.filters().to_vec(), store, ());
    let events = events.filter(move |event| {
        if let Ok(event) = event {
            for index in &indexes {
                index.observe(event);
            }
        }
        future::ready(event.as_ref().map_or(true, |event| filter.admit(event)))
    });
    (events, Related { watched })
}

impl<K: Object> Related<K> {
    /// Subscribes `controller` to the shared cache of every related kind in `namespace` (all
    /// namespaces when `None`), its events mapped to primaries, and serves the author's reads
    /// of the kind from that cache (`cache`).
    pub(crate) fn watch(
        self,
        mut controller: KubeController<K>,
        caches: &Caches,
        namespace: Option<&str>,
        cache: &mut OwnedCaches,
    ) -> KubeController<K> {
        for (watched, index) in self.watched {
            let resource = watched.api_resource().clone();
            let Some((shared, touched)) = caches.subscribe(&resource, namespace) else {
                tracing::error!(kind = %resource.kind, "no cache was started for a watched kind; its changes will not trigger reconciles");
                continue;
            };
            let kind = shared.kind().clone();
            cache.add_readable(shared.clone());
            // The filters judge each change against the last version this controller saw.
            let touched = filter_touched(touched, watched.filters().to_vec(), shared);
            let map = watched.map().clone();
            // The field form needs only where the object is; the function form reads it whole.
            let by_field = index.is_some();
            let events = touched.map(move |object| {
                Ok::<_, watcher::Error>(if by_field {
                    object.place()
                } else {
                    (*object).clone()
                })
            });
            controller = controller.watches_stream_with(
                events,
                move |object: Cached| match (&map, &index) {
                    (_, Some(index)) => index.lookup(object.namespace(), &object.name_any()),
                    (Map::Function(map), None) => map(&object),
                    (Map::Field { .. }, None) => Vec::new(),
                },
                kind,
            );
        }
        controller
    }
}

/// The objects a shared cache touched, without the changes `filters` find not worth a
/// reconcile: each is judged against the previous version this stream saw of it. First sight,
/// deletion and an object being deleted always pass; a gone object's previous version is
/// dropped.
pub(crate) fn filter_touched(
    touched: impl Stream<Item = Arc<Cached>> + Send + 'static,
    filters: Vec<Filter<Cached>>,
    cache: KindCache,
) -> impl Stream<Item = Arc<Cached>> + Send + 'static {
    let mut previous: HashMap<ObjectRef<Cached>, Arc<Cached>> = HashMap::new();
    touched.filter(move |object| {
        if filters.is_empty() {
            return future::ready(true);
        }
        let reference = cache.reference(object);
        let pass = if cache.store().get(&reference).is_none() {
            previous.remove(&reference);
            true
        } else {
            match previous.insert(reference, object.clone()) {
                None => true,
                Some(old) => {
                    object.meta().deletion_timestamp.is_some()
                        || filters.iter().any(|filter| filter.passes(&old, object))
                }
            }
        };
        future::ready(pass)
    })
}

/// The key of a referenced object: its namespace and name.
type Target = (Option<String>, String);

/// Which primaries name which object in a field: (namespace, referenced name) to the primaries,
/// kept from the primary's watch events, so a related event is mapped without a request.
pub(crate) struct FieldIndex<K: Object> {
    read: ReadFn<K>,
    state: Mutex<IndexState<K>>,
}

struct IndexState<K: Object> {
    /// What each primary names now.
    by_primary: HashMap<ObjectRef<K>, Target>,
    /// The primaries naming each object.
    by_target: HashMap<Target, HashSet<ObjectRef<K>>>,
    /// The primaries seen in a re-list in progress: the others vanished meanwhile.
    relist: Option<HashSet<ObjectRef<K>>>,
}

impl<K: Object> FieldIndex<K> {
    pub(crate) fn new(read: ReadFn<K>) -> Self {
        Self {
            read,
            state: Mutex::new(IndexState {
                by_primary: HashMap::new(),
                by_target: HashMap::new(),
                relist: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follow one event of the primary's watch.
    pub(crate) fn observe(&self, event: &Event<K>) {
        let mut state = self.lock();
        match event {
            Event::Init => state.relist = Some(HashSet::new()),
            Event::InitApply(object) => {
                let reference = ObjectRef::from_obj(object);
                if let Some(seen) = &mut state.relist {
                    seen.insert(reference.clone());
                }
                state.set(reference, self.target(object));
            }
            Event::Apply(object) => state.set(ObjectRef::from_obj(object), self.target(object)),
            Event::Delete(object) => state.set(ObjectRef::from_obj(object), None),
            Event::InitDone => {
                if let Some(seen) = state.relist.take() {
                    let gone: Vec<_> = state
                        .by_primary
                        .keys()
                        .filter(|reference| !seen.contains(*reference))
                        .cloned()
                        .collect();
                    for reference in gone {
                        state.set(reference, None);
                    }
                }
            }
        }
    }

    fn target(&self, object: &K) -> Option<Target> {
        Some((object.namespace(), (self.read)(object)?))
    }

    /// The primaries that name `name` in `namespace`.
    pub(crate) fn lookup(&self, namespace: Option<String>, name: &str) -> Vec<ObjectRef<K>> {
        self.lock()
            .by_target
            .get(&(namespace, name.to_owned()))
            .map(|primaries| primaries.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many primaries name something, and how many distinct objects are named.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.by_primary.len(), state.by_target.len())
    }
}

impl<K: Object> IndexState<K> {
    /// `primary` now names `target` (or nothing).
    fn set(&mut self, primary: ObjectRef<K>, target: Option<Target>) {
        let old = match &target {
            Some(target) => self.by_primary.insert(primary.clone(), target.clone()),
            None => self.by_primary.remove(&primary),
        };
        if old == target {
            return;
        }
        if let Some(old) = old
            && let Some(primaries) = self.by_target.get_mut(&old)
        {
            primaries.remove(&primary);
            if primaries.is_empty() {
                self.by_target.remove(&old);
            }
        }
        if let Some(target) = target {
            self.by_target.entry(target).or_default().insert(primary);
        }
    }
}

/// The filters of one watch, with the previous version of each object they compare against:
/// the cache's own copy (shared, not cloned), forgotten when the object is deleted.
struct EventFilter<T: Resource + 'static>
where
    T::DynamicType: Eq + std::hash::Hash + Clone,
{
    filters: Vec<Filter<T>>,
    store: Store<T>,
    dyntype: T::DynamicType,
    previous: HashMap<ObjectRef<T>, Arc<T>>,
    relist: Option<HashSet<ObjectRef<T>>>,
}

impl<T> EventFilter<T>
where
    T: Resource + Clone + 'static,
    T::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn new(filters: Vec<Filter<T>>, store: Store<T>, dyntype: T::DynamicType) -> Self {
        Self {
            filters,
            store,
            dyntype,
            previous: HashMap::new(),
            relist: None,
        }
    }

    /// Whether `event` (already in the cache) may trigger a reconcile.
    fn admit(&mut self, event: &Event<T>) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        match event {
            Event::Init => {
                self.relist = Some(HashSet::new());
                true
            }
            Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    self.previous
                        .retain(|reference, _| seen.contains(reference));
                }
                true
            }
            Event::Delete(object) => {
                self.previous
                    .remove(&ObjectRef::from_obj_with(object, self.dyntype()));
                true
            }
            Event::Apply(object) | Event::InitApply(object) => {
                let reference = ObjectRef::from_obj_with(object, self.dyntype());
                if let Some(seen) = &mut self.relist {
                    seen.insert(reference.clone());
                }
                let current = self
                    .store
                    .get(&reference)
                    .unwrap_or_else(|| Arc::new(object.clone()));
                let Some(old) = self.previous.insert(reference, current) else {
                    return true;
                };
                object.meta().deletion_timestamp.is_some()
                    || self
                        .filters
                        .iter()
                        .any(|filter| filter.passes(&old, object))
            }
        }
    }

    fn dyntype(&self) -> T::DynamicType {
        self.dyntype.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Time};
    use kube::{api::ObjectMeta, runtime::reflector};

    use super::*;

    fn primary(name: &str, source: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            data: source.map(|s| [("source".to_owned(), s.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn index() -> FieldIndex<ConfigMap> {
        FieldIndex::new(Arc::new(|c: &ConfigMap| {
            c.data.as_ref()?.get("source").cloned()
        }))
    }

    fn names(refs: Vec<ObjectRef<ConfigMap>>) -> Vec<String> {
        let mut names: Vec<_> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    fn ns() -> Option<String> {
        Some("ns".into())
    }

    #[test]
    fn the_index_follows_references_as_they_change_and_go() {
        let index = index();
        index.observe(&Event::Apply(primary("p1", Some("s"))));
        index.observe(&Event::Apply(primary("p2", Some("s"))));
        index.observe(&Event::Apply(primary("p3", Some("t"))));
        index.observe(&Event::Apply(primary("p4", None)));
        assert_eq!(names(index.lookup(ns(), "s")), ["p1", "p2"]);
        assert!(index.lookup(Some("other".into()), "s").is_empty());
        // p2 moves to t, p1 drops its reference, p3 is deleted.
        index.observe(&Event::Apply(primary("p2", Some("t"))));
        index.observe(&Event::Apply(primary("p1", None)));
        index.observe(&Event::Delete(primary("p3", Some("t"))));
        assert!(index.lookup(ns(), "s").is_empty());
        assert_eq!(names(index.lookup(ns(), "t")), ["p2"]);
        assert_eq!(
            index.sizes(),
            (1, 1),
            "nothing is kept for what no one names"
        );
    }

    #[test]
    fn a_relist_forgets_primaries_that_vanished_meanwhile() {
        let index = index();
        index.observe(&Event::Apply(primary("p1", Some("s"))));
        index.observe(&Event::Apply(primary("p2", Some("s"))));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(primary("p2", Some("s"))));
        index.observe(&Event::InitDone);
        assert_eq!(names(index.lookup(ns(), "s")), ["p2"]);
        assert_eq!(index.sizes(), (1, 1));
    }

    fn filter_with(
        filters: Vec<Filter<ConfigMap>>,
    ) -> (EventFilter<ConfigMap>, reflector::store::Writer<ConfigMap>) {
        let writer = reflector::store::Writer::default();
        (EventFilter::new(filters, writer.as_reader(), ()), writer)
    }

    fn admit(
        filter: &mut EventFilter<ConfigMap>,
        writer: &mut reflector::store::Writer<ConfigMap>,
        event: Event<ConfigMap>,
    ) -> bool {
        writer.apply_watcher_event(&event);
        filter.admit(&event)
    }

    #[test]
    fn a_filtered_change_is_dropped_and_first_sight_and_deletion_pass() {
        let (mut filter, mut writer) = filter_with(vec![Filter::labels_changed()]);
        let first = primary("p", Some("s"));
        assert!(admit(&mut filter, &mut writer, Event::Apply(first.clone())));
        let mut data_only = first.clone();
        data_only.data = None;
        assert!(!admit(
            &mut filter,
            &mut writer,
            Event::Apply(data_only.clone())
        ));
        let mut labelled = data_only.clone();
        labelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
        assert!(admit(
            &mut filter,
            &mut writer,
            Event::Apply(labelled.clone())
        ));
        let mut deleting = labelled.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(admit(
            &mut filter,
            &mut writer,
            Event::Apply(deleting.clone())
        ));
        assert!(admit(&mut filter, &mut writer, Event::Delete(deleting)));
        assert!(filter.previous.is_empty(), "a deleted object is forgotten");
    }

    #[test]
    fn the_filter_shares_the_cached_copy_and_forgets_after_a_relist() {
        let (mut filter, mut writer) = filter_with(vec![Filter::generation_changed()]);
        admit(&mut filter, &mut writer, Event::Apply(primary("a", None)));
        admit(&mut filter, &mut writer, Event::Apply(primary("b", None)));
        let cached = writer
            .as_reader()
            .get(&ObjectRef::new("a").within("ns"))
            .unwrap();
        assert!(Arc::ptr_eq(
            &cached,
            &filter.previous[&ObjectRef::new("a").within("ns")]
        ));
        admit(&mut filter, &mut writer, Event::Init);
        assert!(!admit(
            &mut filter,
            &mut writer,
            Event::InitApply(primary("b", None))
        ));
        admit(&mut filter, &mut writer, Event::InitDone);
        assert_eq!(filter.previous.len(), 1);
    }

    #[test]
    fn without_filters_nothing_is_kept() {
        let (mut filter, mut writer) = filter_with(Vec::new());
        assert!(admit(
            &mut filter,
            &mut writer,
            Event::Apply(primary("a", None))
        ));
        assert!(admit(
            &mut filter,
            &mut writer,
            Event::Apply(primary("a", None))
        ));
        assert!(filter.previous.is_empty());
    }
}
