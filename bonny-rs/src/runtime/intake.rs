//! What the watch of the reconciled kind hands to the controller's cache, object by object.
//!
//! Between the raw watch (objects as the API server sends them) and the reflector:
//! - each object is decoded on its own ([`decode`](super::decode)): one that does not fit the
//!   author's type is reported once per resourceVersion and left out, never failing a list;
//! - an object that vanished while carrying this controller's finalizer (a DELETED event that
//!   still shows it, or an object missing from a re-list) is kept in the cache as being deleted
//!   (a "vanished" object), so that its reconcile runs `cleanup` with its last known state;
//!   once that cleanup succeeded, the reconcile asks for it to be evicted;
//! - every object taken in spends a unit of the task's tokio budget ([`cooperative`]): a
//!   list of thousands of objects, all at hand at once, is decoded in short stretches, between
//!   which the runtime runs its other tasks (the elector among them) and the watch's stop is
//!   seen.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use futures::{Stream, StreamExt, channel::mpsc, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{
        reflector::{ObjectRef, Store},
        watcher::{self, Event},
    },
};

use super::decode::{DecodeError, decode};
use crate::controller::Object;

/// Objects that vanished while carrying our finalizer and whose cleanup is still owed, shared
/// by the intake (which finds them) and the reconcile (which cleans them up); and the objects
/// whose finalizer we are removing after their cleanup.
///
/// The API server's DELETED event for an object whose last finalizer was just removed shows
/// the object as it was before that removal, finalizer included. So a DELETED event showing
/// our finalizer means "vanished before cleanup" only for objects we are not releasing.
pub(crate) struct Vanished<K: Resource<DynamicType = ()>> {
    pending: Mutex<HashMap<ObjectRef<K>, Arc<K>>>,
    releasing: Mutex<HashSet<String>>,
    evictions: mpsc::UnboundedSender<Arc<K>>,
}

impl<K: Object> Vanished<K> {
    pub(crate) fn new(evictions: mpsc::UnboundedSender<Arc<K>>) -> Self {
        Self {
            pending: Mutex::default(),
            releasing: Mutex::default(),
            evictions,
        }
    }

    fn releasing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Cleanup of the object with `uid` succeeded and its finalizer is about to be removed
    /// (called before the removal is sent, so that its DELETED event always finds it).
    pub(crate) fn release(&self, uid: &str) {
        self.releasing().insert(uid.to_owned());
    }

    /// The finalizer's removal failed: cleanup will run again.
    pub(crate) fn release_failed(&self, uid: &str) {
        self.releasing().remove(uid);
    }

    /// Whether the object with `uid` had its finalizer removed by us (and forget it).
    fn released(&self, uid: Option<&str>) -> bool {
        uid.is_some_and(|uid| self.releasing().remove(uid))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Arc<K>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The vanished object of this name whose cleanup is owed, if any.
    pub(crate) fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        self.lock().get(reference).cloned()
    }

    /// Cleanup of `object` succeeded: forget it and evict it from the cache (unless the cache
    /// holds a newer object of the same name by then).
    pub(crate) fn cleaned_up(&self, object: &K) {
        let reference = ObjectRef::from_obj(object);
        let mut pending = self.lock();
        if let Some(vanished) = pending.get(&reference)
            && vanished.uid() == object.uid()
            && let Some(vanished) = pending.remove(&reference)
        {
            // The intake ends only with the controller; a failed send has no one to tell.
            let _ = self.evictions.unbounded_send(vanished);
        }
    }

    fn insert(&self, object: Arc<K>) {
        self.lock().insert(ObjectRef::from_obj(&*object), object);
    }
}

/// `items`, each spending a unit of the task's tokio budget before it is handed on.
///
/// A watch hands over a whole list page (or a whole list served from the API server's watch
/// cache, thousands of objects) without ever being pending, so the task decoding it would hold
/// its worker thread for the whole list: the elector's timer and the stop of the controllers
/// would wait for it. Once the budget is spent (tokio's default: 128 units per poll) the stream
/// is pending for one turn of the scheduler, so the stop is seen within that many objects.
pub(crate) fn cooperative<S: Stream>(items: S) -> impl Stream<Item = S::Item> {
    items.then(|item| async move {
        tokio::task::consume_budget().await;
        item
    })
}

/// The state of the intake of one watch.
pub(crate) struct Intake<K: Object> {
    resource: ApiResource,
    finalizer: Option<String>,
    cache: Store<K>,
    vanished: Arc<Vanished<K>>,
    reports: mpsc::UnboundedSender<DecodeError>,
    /// The resourceVersion last reported per object that does not decode.
    reported: HashMap<ObjectRef<K>, Option<String>>,
    relist: Option<Relist<K>>,
}

/// A re-list in progress: the objects that carried our finalizer before it, and those seen.
struct Relist<K: Object> {
    before: Vec<Arc<K>>,
    seen: HashSet<ObjectRef<K>>,
}

// Each input is moved once, straight through the stream: boxing the larger variant would only
// add an allocation per watch event.
#[allow(clippy::large_enum_variant)]
enum Input<K> {
    Watch(Result<Event<DynamicObject>, watcher::Error>),
    Evict(Arc<K>),
}

type Output<K> = Result<Event<K>, watcher::Error>;

impl<K: Object> Intake<K> {
    /// An intake for a watch of `resource` whose reflector fills `cache`; decode failures are
    /// sent to `reports`. Returns the intake and the vanished objects it will keep.
    pub(crate) fn new(
        resource: ApiResource,
        finalizer: Option<String>,
        cache: Store<K>,
        reports: mpsc::UnboundedSender<DecodeError>,
    ) -> (Self, Arc<Vanished<K>>, mpsc::UnboundedReceiver<Arc<K>>) {
        let (evictions, evicted) = mpsc::unbounded();
        let vanished = Arc::new(Vanished::new(evictions));
        let intake = Self {
            resource,
            finalizer,
            cache,
            vanished: vanished.clone(),
            reports,
            reported: HashMap::new(),
            relist: None,
        };
        (intake, vanished, evicted)
    }

    /// The watch of decoded objects, evictions merged in.
    pub(crate) fn run(
        mut self,
        watch: impl Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send + 'static,
        evicted: mpsc::UnboundedReceiver<Arc<K>>,
    ) -> impl Stream<Item = Output<K>> + Send + 'static {
        cooperative(stream::select(
            watch.map(Input::Watch),
            evicted.map(Input::Evict),
        ))
        .flat_map(move |input| stream::iter(self.handle(input)))
    }

    fn handle(&mut self, input: Input<K>) -> Vec<Output<K>> {
        let event = match input {
            Input::Watch(Ok(event)) => event,
            Input::Watch(Err(err)) => return vec![Err(err)],
            Input::Evict(object) => return self.evict(&object),
        };
        match event {
            Event::Init => {
                let before = self
                    .cache
                    .state()
                    .into_iter()
                    .filter(|object| self.carries_ours(object.finalizers()))
                    .collect();
                self.relist = Some(Relist {
                    before,
                    seen: HashSet::new(),
                });
                vec![Ok(Event::Init)]
            }
            Event::InitApply(object) => {
                let reference = self.reference(&object);
                if let Some(relist) = &mut self.relist {
                    relist.seen.insert(reference);
                }
                self.decode(object)
                    .map(|object| Ok(Event::InitApply(object)))
                    .into_iter()
                    .collect()
            }
            Event::InitDone => {
                let mut out = vec![Ok(Event::InitDone)];
                if let Some(Relist { before, seen }) = self.relist.take() {
                    for object in before {
                        if !seen.contains(&ObjectRef::from_obj(&*object)) {
                            tracing::info!(object = %ObjectRef::from_obj(&*object), "an object with our finalizer vanished while the watch was away; cleanup runs with its last known state");
                            out.push(Ok(Event::Apply(self.keep_vanished(&object))));
                        }
                    }
                }
                out
            }
            Event::Apply(object) => {
                let reference = self.reference(&object);
                match self.decode(object) {
                    Some(object) => vec![Ok(Event::Apply(object))],
                    // What the cache holds of it is outdated: nobody should act on it.
                    None => self
                        .cache
                        .get(&reference)
                        .map(|stale| Ok(Event::Delete((*stale).clone())))
                        .into_iter()
                        .collect(),
                }
            }
            Event::Delete(raw) => {
                let released = self.vanished.released(raw.uid().as_deref());
                let ours = self.carries_ours(raw.finalizers()) && !released;
                let reference = self.reference(&raw);
                self.reported.remove(&reference);
                let last = match decode::<K>(raw, &self.resource) {
                    Ok(object) => Some(object),
                    Err(_) => self.cache.get(&reference).map(|cached| (*cached).clone()),
                };
                match last {
                    Some(object) if ours => {
                        tracing::info!(object = %ObjectRef::from_obj(&object), "deleted while still carrying our finalizer; cleanup runs with its last known state");
                        vec![Ok(Event::Apply(self.keep_vanished(&object)))]
                    }
                    Some(object) => vec![Ok(Event::Delete(object))],
                    None => Vec::new(),
                }
            }
        }
    }

    fn carries_ours(&self, finalizers: &[String]) -> bool {
        self.finalizer
            .as_ref()
            .is_some_and(|ours| finalizers.iter().any(|f| f == ours))
    }

    fn reference(&self, object: &DynamicObject) -> ObjectRef<K> {
        let mut reference = ObjectRef::new(&object.name_any());
        reference.namespace = object.namespace();
        reference
    }

    /// `object` decoded, or `None` after reporting why not (once per resourceVersion).
    fn decode(&mut self, object: DynamicObject) -> Option<K> {
        let reference = self.reference(&object);
        let version = object.resource_version();
        match decode::<K>(object, &self.resource) {
            Ok(decoded) => {
                self.reported.remove(&reference);
                Some(decoded)
            }
            Err(err) => {
                if self.reported.get(&reference) != Some(&version) {
                    self.reported.insert(reference, version);
                    // The reporter ends only with the controller.
                    let _ = self.reports.unbounded_send(err);
                }
                None
            }
        }
    }

    /// The object as kept in the cache until its cleanup ran: marked as being deleted.
    fn keep_vanished(&self, object: &K) -> K {
        let mut kept = object.clone();
        if kept.meta().deletion_timestamp.is_none() {
            kept.meta_mut().deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        self.vanished.insert(Arc::new(kept.clone()));
        kept
    }

    fn evict(&self, object: &K) -> Vec<Output<K>> {
        match self.cache.get(&ObjectRef::from_obj(object)) {
            Some(cached) if cached.uid() == object.uid() => {
                vec![Ok(Event::Delete((*cached).clone()))]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::{self, store::Writer};
    use serde_json::{Value, json};

    use super::*;

    const OURS: &str = "x/cleanup";

    fn raw(name: &str, version: &str, finalizers: &[&str], data: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "n", "uid": format!("uid-{name}"),
                "resourceVersion": version, "finalizers": finalizers},
            "data": data,
        }))
        .unwrap()
    }

    struct Harness {
        intake: Intake<ConfigMap>,
        writer: Writer<ConfigMap>,
        vanished: Arc<Vanished<ConfigMap>>,
        reports: mpsc::UnboundedReceiver<DecodeError>,
        evicted: mpsc::UnboundedReceiver<Arc<ConfigMap>>,
    }

    impl Harness {
        fn new() -> Self {
            let (cache, writer) = reflector::store::<ConfigMap>();
            let (reports_tx, reports) = mpsc::unbounded();
            let (intake, vanished, evicted) = Intake::new(
                ApiResource::erase::<ConfigMap>(&()),
                Some(OURS.to_owned()),
                cache,
                reports_tx,
            );
            Self {
                intake,
                writer,
                vanished,
                reports,
                evicted,
            }
        }

        /// Feeds `event` through the intake into the cache, returning what came out.
        fn feed(&mut self, event: Event<DynamicObject>) -> Vec<Event<ConfigMap>> {
            self.feed_input(Input::Watch(Ok(event)))
        }

        fn feed_input(&mut self, input: Input<ConfigMap>) -> Vec<Event<ConfigMap>> {
            let out: Vec<_> = self
                .intake
                .handle(input)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            for event in &out {
                self.writer.apply_watcher_event(event);
            }
            out
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<_> = self
                .intake
                .cache
                .state()
                .iter()
                .map(|o| o.name_any())
                .collect();
            names.sort();
            names
        }

        fn reported(&mut self) -> Vec<String> {
            let mut paths = Vec::new();
            while let Ok(err) = self.reports.try_recv() {
                paths.push(format!("{}@{}", err.object.name.unwrap(), err.path));
            }
            paths
        }
    }

    #[test]
    fn an_object_that_does_not_decode_is_left_out_and_reported_once_per_version() {
        let mut h = Harness::new();
        h.feed(Event::Init);
        h.feed(Event::InitApply(raw("good", "1", &[], json!({"k": "v"}))));
        h.feed(Event::InitApply(raw("bad", "2", &[], json!({"k": 3}))));
        h.feed(Event::InitDone);
        assert_eq!(h.names(), ["good"]);
        assert_eq!(h.reported(), ["bad@data.k"]);
        // A re-list shows the same version: no second report.
        h.feed(Event::Init);
        h.feed(Event::InitApply(raw("bad", "2", &[], json!({"k": 3}))));
        h.feed(Event::InitApply(raw("good", "1", &[], json!({"k": "v"}))));
        h.feed(Event::InitDone);
        assert!(h.reported().is_empty());
        // A new version that still does not decode is reported again.
        h.feed(Event::Apply(raw("bad", "3", &[], json!({"k": 4}))));
        assert_eq!(h.reported(), ["bad@data.k"]);
        // A good object turning bad leaves the cache: its old version must not be acted on.
        let out = h.feed(Event::Apply(raw("good", "4", &[], json!({"k": []}))));
        assert!(matches!(&out[..], [Event::Delete(_)]), "{out:?}");
        assert!(h.names().is_empty());
    }

    #[test]
    fn a_deletion_that_still_shows_our_finalizer_is_kept_until_cleanup_ran() {
        let mut h = Harness::new();
        h.feed(Event::Apply(raw("a", "1", &[OURS], json!({}))));
        let out = h.feed(Event::Delete(raw("a", "2", &[OURS], json!({}))));
        let [Event::Apply(kept)] = &out[..] else {
            panic!("expected the object to be kept: {out:?}");
        };
        assert!(kept.metadata.deletion_timestamp.is_some());
        assert_eq!(h.names(), ["a"]);
        let reference = ObjectRef::from_obj(kept);
        assert!(h.vanished.get(&reference).is_some());
        // Cleanup ran: the object is evicted.
        h.vanished.cleaned_up(kept);
        assert!(h.vanished.get(&reference).is_none());
        let evicted = h.evicted.try_recv().unwrap();
        let out = h.feed_input(Input::Evict(evicted));
        assert!(matches!(&out[..], [Event::Delete(_)]), "{out:?}");
        assert!(h.names().is_empty());
        // A deletion after our cleanup removed the finalizer shows it still (the API server
        // reports the object as before the removal): it is passed on as it is.
        h.feed(Event::Apply(raw("c", "5", &[OURS], json!({}))));
        h.vanished.release("uid-c");
        let out = h.feed(Event::Delete(raw("c", "5", &[OURS], json!({}))));
        assert!(matches!(&out[..], [Event::Delete(_)]), "{out:?}");
        // So is a deletion without our finalizer.
        h.feed(Event::Apply(raw("b", "3", &["other"], json!({}))));
        let out = h.feed(Event::Delete(raw("b", "4", &["other"], json!({}))));
        assert!(matches!(&out[..], [Event::Delete(_)]), "{out:?}");
    }

    #[test]
    fn an_object_with_our_finalizer_missing_from_a_relist_is_kept_for_cleanup() {
        let mut h = Harness::new();
        h.feed(Event::Init);
        h.feed(Event::InitApply(raw("stays", "1", &[OURS], json!({}))));
        h.feed(Event::InitApply(raw("goes", "2", &[OURS], json!({}))));
        h.feed(Event::InitApply(raw("plain", "3", &[], json!({}))));
        h.feed(Event::InitDone);
        h.feed(Event::Init);
        h.feed(Event::InitApply(raw("stays", "1", &[OURS], json!({}))));
        let out = h.feed(Event::InitDone);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(h.names(), ["goes", "stays"]);
        let goes = h
            .intake
            .cache
            .get(&ObjectRef::new("goes").within("n"))
            .unwrap();
        assert!(goes.metadata.deletion_timestamp.is_some());
    }

    /// A list of `n` ConfigMaps of about 1.5 KiB as a watch hands it over: all at hand at once.
    fn long_list(n: usize) -> Vec<Result<Event<DynamicObject>, watcher::Error>> {
        let data: serde_json::Map<_, _> = (0..10)
            .map(|i| (format!("key-{i}"), Value::String("v".repeat(100))))
            .collect();
        let objects = (0..n).map(|i| {
            let mut object = raw(
                &format!("o-{i}"),
                &i.to_string(),
                &[],
                Value::Object(data.clone()),
            );
            object.metadata.labels = Some([("app".to_owned(), "bench".to_owned())].into());
            Ok(Event::InitApply(object))
        });
        std::iter::once(Ok(Event::Init))
            .chain(objects)
            .chain(std::iter::once(Ok(Event::InitDone)))
            .collect()
    }

    /// The primary watch's stages over `list`: the intake into the cache, until `stop`. Counts
    /// each event that went through in `through`; returns at the stop or the list's end.
    async fn take_in_until(
        list: Vec<Result<Event<DynamicObject>, watcher::Error>>,
        stop: tokio_util::sync::CancellationToken,
        through: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (cache, writer) = reflector::store::<ConfigMap>();
        let (reports, _reported) = mpsc::unbounded();
        let (intake, _vanished, evicted) = Intake::new(
            ApiResource::erase::<ConfigMap>(&()),
            Some(OURS.to_owned()),
            cache,
            reports,
        );
        let events = reflector::reflector(writer, intake.run(stream::iter(list), evicted))
            .take_until(stop.cancelled_owned());
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            through.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if matches!(event, Ok(Event::InitDone)) {
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_stop_is_seen_while_a_long_list_is_decoded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const OBJECTS: usize = 5_000;
        let stop = tokio_util::sync::CancellationToken::new();
        let through = Arc::new(AtomicUsize::new(0));
        // One thread: the stopper runs only when the intake lets go of it.
        let intake = tokio::spawn(take_in_until(
            long_list(OBJECTS),
            stop.clone(),
            through.clone(),
        ));
        let stopper = tokio::spawn({
            let through = through.clone();
            async move {
                // Asks for the stop only once the list is under way.
                while through.load(Ordering::Relaxed) == 0 {
                    tokio::task::yield_now().await;
                }
                stop.cancel();
                through.load(Ordering::Relaxed)
            }
        });
        let asked = stopper.await.unwrap();
        intake.await.unwrap();
        let seen = through.load(Ordering::Relaxed);
        // Without yielding, the whole list goes through in one go before the stopper runs.
        assert!(
            asked < 1_000 && seen < 1_000,
            "the stop ran after {asked} and was seen after {seen} of {OBJECTS} objects"
        );
    }

    /// The figures behind the yields: how long a 5,000-object list takes to go through, and
    /// how late a stop asked 20 ms into it (a timer, as the elector's) is seen.
    #[tokio::test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    async fn measure_how_late_a_stop_is_seen_during_a_long_list() {
        use std::{
            sync::atomic::{AtomicUsize, Ordering},
            time::{Duration, Instant},
        };
        const OBJECTS: usize = 5_000;
        for round in 0..2 {
            let started = Instant::now();
            let through = Arc::new(AtomicUsize::new(0));
            take_in_until(long_list(OBJECTS), Default::default(), through).await;
            println!(
                "round {round}: {OBJECTS} objects through the intake in {:?}",
                started.elapsed()
            );
        }
        for after in [5, 20, 60].map(Duration::from_millis) {
            let stop = tokio_util::sync::CancellationToken::new();
            let through = Arc::new(AtomicUsize::new(0));
            let list = long_list(OBJECTS);
            let due = Instant::now() + after;
            let intake = tokio::spawn({
                let (stop, through) = (stop.clone(), through.clone());
                async move {
                    take_in_until(list, stop, through).await;
                    Instant::now()
                }
            });
            let stopper = tokio::spawn({
                let through = through.clone();
                async move {
                    tokio::time::sleep_until(due.into()).await;
                    stop.cancel();
                    (Instant::now(), through.load(Ordering::Relaxed))
                }
            });
            let (ran, asked) = stopper.await.unwrap();
            let ended = intake.await.unwrap();
            let seen = through.load(Ordering::Relaxed);
            println!(
                "stop due {after:?} in: the stopper ran {:?} late, after {asked} objects; the intake ended {:?} after the stop was due, after {seen} of {} events",
                ran.saturating_duration_since(due),
                ended.saturating_duration_since(due),
                OBJECTS + 2,
            );
        }
    }

    #[test]
    fn an_eviction_spares_a_newer_object_of_the_same_name() {
        let mut h = Harness::new();
        h.feed(Event::Apply(raw("a", "1", &[OURS], json!({}))));
        let out = h.feed(Event::Delete(raw("a", "2", &[OURS], json!({}))));
        let [Event::Apply(kept)] = &out[..] else {
            panic!("{out:?}");
        };
        let kept = kept.clone();
        let mut newer = raw("a", "5", &[], json!({}));
        newer.metadata.uid = Some("uid-newer".into());
        h.feed(Event::Apply(newer));
        h.vanished.cleaned_up(&kept);
        let evicted = h.evicted.try_recv().unwrap();
        assert!(h.feed_input(Input::Evict(evicted)).is_empty());
        assert_eq!(h.names(), ["a"]);
    }
}
