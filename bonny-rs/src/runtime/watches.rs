//! Watch wiring: the watches of the reconciled kind ([`Primary`], a raw watch decoded object by
//! object by the [`Intake`]), started with the caches; one kube-runtime controller per
//! namespace scope fed by them and by the operator's shared owned-kind caches
//! ([`Caches`](super::cache::Caches)), which also fill the [`OwnedCaches`] the descendant stage
//! reads; readiness per scope; and the report of objects that do not decode.

use std::{collections::HashMap, sync::Arc};

use futures::{StreamExt, channel::mpsc};
use kube::{
    Api,
    api::{ApiResource, DynamicObject},
    runtime::{
        Controller as KubeController, WatchStreamExt,
        controller::{self, Config as ControllerConfig},
        events::{Event, EventType},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    cache::{Feed, lean, owner_stub, publish_listed},
    decode::DecodeError,
    events::Publisher,
    intake::{Intake, Vanished},
    metadata::Shape,
    queue,
    read_your_writes::Written,
    reconcile::{self, Context},
    registration::RunContext,
    related::{self, Related},
};
use crate::{
    controller::{Cached, Caches, Controller, KindCache, Object, Scope},
    observe::Metrics,
};

/// The watch caches of one controller scope's owned kinds, read by the descendant stage.
///
/// A cache can be stale or not yet filled. The descendant stage therefore trusts it only to
/// say "the live object already holds what we would write" (then nothing is sent at all), and
/// asks the API server in every other case.
#[derive(Default)]
pub(crate) struct OwnedCaches {
    stores: HashMap<(String, String), KindCache>,
    /// Every cache of the scope (owned and watched kinds), for the author's reads.
    readable: Arc<Caches>,
}

impl OwnedCaches {
    /// Serve lookups of the objects of `cache`'s kind from it.
    pub(crate) fn add(&mut self, cache: KindCache) {
        self.add_readable(cache.clone());
        self.stores.insert(key(cache.kind().resource()), cache);
    }

    /// Serve the author's reads (only) of the objects of `cache`'s kind from it.
    pub(crate) fn add_readable(&mut self, cache: KindCache) {
        Arc::make_mut(&mut self.readable).add(cache);
    }

    /// The caches the author reads through `Axn::cache`.
    pub(crate) fn readable(&self) -> Arc<Caches> {
        self.readable.clone()
    }

    /// The cached copy of a descendant, if its kind is watched and the cache holds it.
    pub(crate) fn get(&self, resource: &ApiResource, namespace: &str, name: &str) -> Option<Value> {
        // Listed items carry no type; the descendant declares it, so the cache must too.
        match self.object(resource, namespace, name)?.to_value(resource) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!(kind = %resource.kind, %name, error = %err, "a cached descendant does not read back as JSON; asking the API server");
                None
            }
        }
    }

    /// The cached object `name` in `namespace` of `resource`'s kind, if its kind is watched
    /// and the cache holds it.
    pub(crate) fn object(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Cached>> {
        self.stores.get(&key(resource))?.get(namespace, name)
    }

    /// The cached objects of `resource`'s kind with an owner reference to the UID `owner`
    /// (from the cache's owner index: no scan); none when the kind is not watched.
    pub(crate) fn owned_by(&self, resource: &ApiResource, owner: &str) -> Vec<Arc<Cached>> {
        self.stores
            .get(&key(resource))
            .map(|cache| cache.owned_by(owner))
            .unwrap_or_default()
    }
}

fn key(resource: &ApiResource) -> (String, String) {
    (resource.group.clone(), resource.kind.clone())
}

impl std::fmt::Debug for OwnedCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.stores.keys()).finish()
    }
}

/// The watch of one namespace scope of a controller's reconciled kind: the raw watch,
/// decoded object by object ([`Intake`]), filling `store`; each applied object is handed on
/// through `feed` to the controller running while this replica leads.
///
/// Started with the caches, so with warm standby it runs (and stays synced) while the replica
/// waits for the Lease, and outlives each term of leadership.
pub(crate) struct Primary<K: Object> {
    namespace: Option<String>,
    store: Store<K>,
    feed: Arc<Feed<K>>,
    vanished: Arc<Vanished<K>>,
    /// What the controller's own writes returned, until this watch shows them.
    written: Arc<Written<K>>,
    /// The related watches and the field indexes this watch keeps up to date.
    related: Related<K>,
    /// Decode failures, reported (with an event: a write) only while the controller runs.
    reports: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<DecodeError>>>,
}

/// The namespace scopes `C` is watched in (`None`: all namespaces); its owned kinds are
/// watched in the same ones.
fn scopes<C: Controller>(runtime: &RunContext) -> Vec<Option<String>> {
    let namespaced = <<C::Resource as kube::Resource>::Scope as Scope>::NAMESPACED;
    runtime.namespaces.scopes(namespaced)
}

/// Declares the owned kinds of `C` in the operator's shared caches, per namespace scope.
pub(crate) fn declare<C: Controller>(
    config: &crate::controller::Config<C::Resource>,
    name: &str,
    runtime: &RunContext,
) {
    for namespace in scopes::<C>(runtime) {
        for owned in config.owned_kinds() {
            runtime.caches.declare(
                owned.api_resource(),
                namespace.as_deref(),
                name,
                owned.adopts_existing(),
                Shape::of(owned.is_metadata_only()),
            );
        }
        // Related kinds share the caches too: one watch of every object of the kind.
        for watched in config.watched_kinds() {
            runtime.caches.declare_watched(
                watched.api_resource(),
                namespace.as_deref(),
                Shape::of(watched.is_metadata_only()),
            );
        }
    }
}

/// Starts the watches of `C`'s reconciled kind, one per namespace scope, into `tasks`.
pub(crate) fn start_primaries<C: Controller>(
    config: &crate::controller::Config<C::Resource>,
    runtime: &RunContext,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Vec<Primary<C::Resource>> {
    let resource = ApiResource::erase::<C::Resource>(&());
    let mut primaries = Vec::new();
    for namespace in scopes::<C>(runtime) {
        let api: Api<DynamicObject> = match namespace.as_deref() {
            Some(namespace) => Api::namespaced_with(runtime.client.clone(), namespace, &resource),
            None => Api::all_with(runtime.client.clone(), &resource),
        };
        // Objects arrive raw and are decoded one by one, so that one the author's type does
        // not accept is reported and skipped instead of failing every list.
        let (store, writer) = reflector::store::<C::Resource>();
        let (reports, reported) = mpsc::unbounded();
        let (intake, vanished, evicted) = Intake::new(
            resource.clone(),
            config.finalizer_name().map(str::to_owned),
            store.clone(),
            reports,
        );
        let raw = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|object| lean(&mut object.metadata));
        // Every version the cache takes ends the memory of the writes it supersedes, before
        // any filter drops the event.
        let written = Arc::new(Written::watching(store.clone()));
        let observer = written.clone();
        let reflected =
            reflector::reflector(writer, intake.run(raw, evicted)).inspect(move |event| {
                if let Ok(watcher::Event::Apply(object)) = event {
                    observer.observed(object);
                }
            });
        // The field indexes of related kinds follow every event; the filters drop those not
        // worth a reconcile before they are handed on.
        let (events, related) = related::primary(reflected, store.clone(), config);
        let events = events.take_until(stop.clone().cancelled_owned());
        let feed = Arc::new(Feed::default());
        let handed = feed.clone();
        let listed = store.clone();
        let span = tracing::info_span!("cache", kind = %resource.kind, namespace = namespace.as_deref().unwrap_or("*"));
        tasks.spawn(
            async move {
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(object)) => {
                            if let Some(cached) = listed.get(&ObjectRef::from_obj(&object)) {
                                handed.publish(&cached);
                            }
                        }
                        Ok(watcher::Event::InitDone) => publish_listed(&listed, &handed),
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "watch failed; retrying with backoff");
                        }
                    }
                }
            }
            .instrument(span),
        );
        primaries.push(Primary {
            namespace,
            store,
            feed,
            vanished,
            written,
            related,
            reports: Arc::new(tokio::sync::Mutex::new(reported)),
        });
    }
    primaries
}

/// Spawns one reconcile task per namespace scope of `C` into `tasks`, fed by the started
/// caches: `primaries` (the reconciled kind) and the operator's shared owned-kind caches.
pub(crate) fn spawn<C: Controller>(
    controller: &Arc<C>,
    config: &Arc<crate::controller::Config<C::Resource>>,
    name: &str,
    runtime: &RunContext,
    primaries: &[Primary<C::Resource>],
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for primary in primaries {
        let namespace = primary.namespace.clone();
        // Subscribed before the store is read: an object changed in between comes twice,
        // which the scheduler merges, rather than not at all (see `publish_listed`).
        let touched = primary.feed.subscribe();
        let known = primary.store.state();
        // The work queue's adds are counted where the triggers enter kube-runtime.
        let work_queue = runtime.metrics.work_queue(name);
        let trigger = queue::count_triggers(
            futures::stream::iter(known).chain(touched),
            work_queue.clone(),
        );
        let mut kube_controller = KubeController::for_shared_stream(trigger, primary.store.clone())
            .with_config(ControllerConfig::default().concurrency(config.concurrency_limit()));
        let mut cache = OwnedCaches::default();
        for owned in config.owned_kinds() {
            let resource = owned.api_resource();
            let Some((shared, touched)) = runtime.caches.subscribe(resource, namespace.as_deref())
            else {
                tracing::error!(kind = %resource.kind, "no cache was started for an owned kind; its changes will not trigger reconciles");
                continue;
            };
            cache.add(shared.clone());
            // The author's filters on this kind judge each change against the last one seen.
            let touched = related::filter_touched(touched, config.owned_filters(resource), shared);
            let children = queue::count_owner_triggers::<C::Resource, _>(
                touched.map(|object| Ok::<_, watcher::Error>(owner_stub(&object))),
                work_queue.clone(),
            );
            kube_controller = kube_controller.owns_stream_with(children, resource.clone());
        }
        // Related kinds come from the shared caches too; the indexes that map their events are
        // kept by the primary's watch, warm with it.
        kube_controller = primary.related.clone().watch(
            kube_controller,
            &runtime.caches,
            namespace.as_deref(),
            &mut cache,
        );
        let scope_name = match &namespace {
            Some(namespace) => format!("{name}/{namespace}"),
            None => name.to_owned(),
        };
        let store = kube_controller.store();
        let health = runtime.health.clone();
        health.cache_started(&scope_name);
        let context = Arc::new(Context::new(
            controller.clone(),
            config.clone(),
            runtime,
            Arc::from(name),
            cache,
            primary.vanished.clone(),
            primary.written.clone(),
        ));
        let report = report_decode_failures(
            primary.reports.clone(),
            Publisher::new(runtime.client.clone(), runtime.reporter.clone()),
            runtime.metrics.clone(),
            name.to_owned(),
        );
        let gone = context.clone();
        let stream = kube_controller
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(
                reconcile::reconcile::<C>,
                reconcile::error_policy::<C>,
                context,
            );
        let span = tracing::info_span!("controller", controller = %name, namespace = namespace.as_deref().unwrap_or("*"));
        let sync_scope = scope_name.clone();
        let stopped = shutdown.clone();
        tasks.spawn(
            async move {
                let synced = async move {
                    if store.wait_until_ready().await.is_ok() {
                        health.cache_synced(&sync_scope);
                        tracing::info!("cache synced");
                    }
                };
                let run = stream.for_each(|result| {
                    // A request for an object no longer there: what is kept about it goes.
                    if let Err(controller::Error::ObjectNotFound(object)) = &result {
                        gone.object_gone(object);
                    }
                    async move {
                        if let Err(err) = result {
                            log_controller_error(&err);
                        }
                    }
                });
                tokio::select! {
                    () = run => {}
                    () = async { synced.await; std::future::pending::<()>().await } => {}
                    () = async { report.await; std::future::pending::<()>().await } => {}
                }
                tracing::info!(shutdown = stopped.is_cancelled(), "controller stopped");
            }
            .instrument(span),
        );
    }
}

/// Names each object that does not decode: one log line, one Warning event on the object and
/// one count in `bonny_decode_errors_total`, per object version (the intake sends each once).
async fn report_decode_failures(
    failures: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<DecodeError>>>,
    recorder: Publisher,
    metrics: Metrics,
    controller: String,
) {
    let mut failures = failures.lock().await;
    while let Some(failure) = failures.next().await {
        metrics.decode_failed(&controller);
        tracing::warn!(
            namespace = failure.object.namespace.as_deref().unwrap_or(""),
            name = failure.object.name.as_deref().unwrap_or(""),
            path = %failure.path,
            error = %failure.message,
            "skipping an object that does not decode into the controller's type"
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "DecodeFailed".to_owned(),
            note: Some(failure.to_string()),
            action: "Decode".to_owned(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &failure.object).await {
            tracing::warn!(error = %err, "could not publish the DecodeFailed event");
        }
    }
}

fn log_controller_error<E1: std::fmt::Display, E2: std::fmt::Display>(
    err: &controller::Error<E1, E2>,
) {
    match err {
        // Reconcile failures are logged (with the object) where they happen.
        controller::Error::ReconcilerFailed(..) => {}
        controller::Error::ObjectNotFound(object) => {
            tracing::debug!(%object, "object gone before its reconcile ran");
        }
        other => {
            tracing::warn!(error = %other, "controller stream error; kube-runtime retries with backoff")
        }
    }
}
