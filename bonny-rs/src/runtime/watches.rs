//! Watch wiring: one kube-runtime controller per namespace scope, fed by a raw watch of the
//! reconciled kind decoded object by object ([`Intake`]); the owned kinds' watches that trigger
//! it and fill the caches the descendant stage reads; readiness per scope; and the report of
//! objects that do not decode.

use std::{collections::HashMap, sync::Arc};

use futures::{StreamExt, channel::mpsc};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{
        Controller as KubeController, WatchStreamExt,
        controller::{self, Config as ControllerConfig},
        events::{Event, EventType, Recorder},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    decode::DecodeError,
    intake::Intake,
    reconcile::{self, Context},
    registration::RunContext,
    related,
};
use crate::{
    controller::{Caches, Controller, Object, Scope},
    observe::Metrics,
};

/// The watch caches of one controller scope's owned kinds, read by the descendant stage.
///
/// A cache can be stale or not yet filled. The descendant stage therefore trusts it only to
/// say "the live object already holds what we would write" (then nothing is sent at all), and
/// asks the API server in every other case.
#[derive(Default)]
pub(crate) struct OwnedCaches {
    stores: HashMap<(String, String), (ApiResource, Store<DynamicObject>)>,
    /// Every cache of the scope (owned and watched kinds), for the author's reads.
    readable: Arc<Caches>,
}

impl OwnedCaches {
    /// Serve lookups of `resource` objects from `store`.
    pub(crate) fn add(&mut self, resource: ApiResource, store: Store<DynamicObject>) {
        self.add_readable(resource.clone(), store.clone());
        self.stores.insert(key(&resource), (resource, store));
    }

    /// Serve the author's reads (only) of `resource` objects from `store`.
    pub(crate) fn add_readable(&mut self, resource: ApiResource, store: Store<DynamicObject>) {
        Arc::make_mut(&mut self.readable).add(resource, store);
    }

    /// The caches the author reads through `Axn::cache`.
    pub(crate) fn readable(&self) -> Arc<Caches> {
        self.readable.clone()
    }

    /// The cached copy of a descendant, if its kind is watched and the cache holds it.
    pub(crate) fn get(&self, resource: &ApiResource, namespace: &str, name: &str) -> Option<Value> {
        let (resource, store) = self.stores.get(&key(resource))?;
        let object = store.get(&ObjectRef::new_with(name, resource.clone()).within(namespace))?;
        let mut value = serde_json::to_value(&*object).ok()?;
        // Listed items carry no type; the descendant declares it, so the cache must too.
        value["apiVersion"] = Value::String(resource.api_version.clone());
        value["kind"] = Value::String(resource.kind.clone());
        Some(value)
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

/// Watch `resource` for `controller`, keeping the watched objects in `cache`: one watch both
/// triggers the owner's reconcile and fills the cache, so an unchanged descendant costs no
/// request at all.
fn watch_owned<K: Object>(
    controller: KubeController<K>,
    client: Client,
    namespace: Option<&str>,
    resource: &ApiResource,
    cache: &mut OwnedCaches,
    filters: Vec<crate::controller::Filter<DynamicObject>>,
) -> KubeController<K> {
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, resource),
        None => Api::all_with(client, resource),
    };
    let writer = reflector::store::Writer::new(resource.clone());
    cache.add(resource.clone(), writer.as_reader());
    let store = writer.as_reader();
    let events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    let events = related::filtered(events, filters, store, resource.clone()).touched_objects();
    controller.owns_stream_with(events, resource.clone())
}

/// Spawns one watch-and-reconcile task per namespace scope of `C` into `tasks`.
pub(crate) fn spawn<C: Controller>(
    controller: &Arc<C>,
    config: &Arc<crate::controller::Config<C::Resource>>,
    name: &str,
    runtime: &RunContext,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let namespaced = <<C::Resource as kube::Resource>::Scope as Scope>::NAMESPACED;
    let resource = ApiResource::erase::<C::Resource>(&());
    for namespace in runtime.namespaces.scopes(namespaced) {
        let api: Api<DynamicObject> = match namespace.as_deref() {
            Some(namespace) if namespaced => {
                Api::namespaced_with(runtime.client.clone(), namespace, &resource)
            }
            _ => Api::all_with(runtime.client.clone(), &resource),
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
        let raw = watcher(api, watcher::Config::default().any_semantic());
        let (events, related) = related::primary(
            reflector::reflector(writer, intake.run(raw, evicted)),
            store.clone(),
            config,
        );
        let objects = events.applied_objects();
        let mut kube_controller = KubeController::for_stream(objects, store)
            .with_config(ControllerConfig::default().concurrency(config.concurrency_limit()));
        let mut cache = OwnedCaches::default();
        for owned in config.owned_kinds() {
            kube_controller = watch_owned(
                kube_controller,
                runtime.client.clone(),
                namespace.as_deref(),
                owned.api_resource(),
                &mut cache,
                config.owned_filters(owned.api_resource()),
            );
        }
        kube_controller = related.watch(
            kube_controller,
            &runtime.client,
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
            vanished,
        ));
        let report = report_decode_failures(
            reported,
            Recorder::new(runtime.client.clone(), runtime.reporter.clone()),
            runtime.metrics.clone(),
            name.to_owned(),
        );
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
                let run = stream.for_each(|result| async move {
                    if let Err(err) = result {
                        log_controller_error(&err);
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
    mut failures: mpsc::UnboundedReceiver<DecodeError>,
    recorder: Recorder,
    metrics: Metrics,
    controller: String,
) {
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
