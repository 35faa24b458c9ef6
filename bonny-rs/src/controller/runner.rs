//! Runs a declared controller on kube-runtime: one watch per namespace scope, the reconcile
//! pipeline per object, per-object backoff, panics caught.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::crd::MergeError,
    runtime::{
        Controller as KubeController,
        controller::{self, Action as KubeAction},
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Action, Axn, Config, Controller, Flow, Object, Phase, ReconcileError, Scope, Step,
    cache::Descendants,
    steps::{ApplyDescendants, ApplyStatus, Finalizer, SkipObservedGeneration},
};
use crate::{
    Error,
    manifest::Rule,
    observe::{Health, Metrics, ReconcileResult},
    operator::Namespaces,
};

/// What the operator needs from a controller, whatever its resource type.
pub(crate) trait Registration: Send + Sync {
    /// The controller's name.
    fn name(&self) -> &str;

    /// Checks that the resource is served and listable before anything starts.
    fn preflight<'a>(
        &'a self,
        client: &'a Client,
        namespaces: &'a Namespaces,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

    /// Spawns one watch-and-reconcile task per namespace scope into `tasks`; each stops
    /// taking new work when `shutdown` is cancelled and ends once in-flight reconciles finish.
    fn spawn(&self, runtime: &RunContext, shutdown: &CancellationToken, tasks: &mut JoinSet<()>);

    /// Every RBAC rule the controller needs: the author's and the SDK's own.
    fn rules(&self) -> Vec<Rule>;

    /// The resource's CRD, when it is a custom resource declared with the controller.
    fn crd(&self) -> Result<Option<CustomResourceDefinition>, MergeError>;

    /// Whether the resource is namespaced.
    fn namespaced(&self) -> bool;
}

/// What every controller of one operator shares.
#[derive(Clone)]
pub(crate) struct RunContext {
    pub(crate) client: Client,
    pub(crate) namespaces: Namespaces,
    pub(crate) reporter: Reporter,
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
}

pub(crate) struct Registered<C: Controller> {
    controller: Arc<C>,
    config: Arc<Config<C::Resource>>,
    name: String,
}

impl<C: Controller> Registered<C> {
    pub(crate) fn new(controller: C) -> Self {
        let config = controller.config();
        let name = config.controller_name();
        Self {
            controller: Arc::new(controller),
            config: Arc::new(config),
            name,
        }
    }
}

impl<C: Controller> Registration for Registered<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight<'a>(
        &'a self,
        client: &'a Client,
        namespaces: &'a Namespaces,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(async move {
            for namespace in scopes::<C::Resource>(namespaces) {
                let api = api_for::<C::Resource>(client.clone(), namespace.as_deref());
                if let Err(err) = api.list_metadata(&ListParams::default().limit(1)).await {
                    return Err(Error::from_preflight::<C::Resource>(
                        err,
                        namespace.as_deref(),
                    ));
                }
                // Owned kinds are watched too: a missing permission is named now, not retried
                // forever by a watch in the background.
                for owned in self.config.owned_kinds() {
                    let resource = owned.api_resource();
                    let api: Api<kube::api::DynamicObject> = match namespace.as_deref() {
                        Some(namespace) => {
                            Api::namespaced_with(client.clone(), namespace, resource)
                        }
                        None => Api::all_with(client.clone(), resource),
                    };
                    if let Err(err) = api.list_metadata(&ListParams::default().limit(1)).await {
                        let name = if resource.group.is_empty() {
                            resource.plural.clone()
                        } else {
                            format!("{}.{}", resource.plural, resource.group)
                        };
                        return Err(Error::from_preflight_of(err, name, namespace.as_deref()));
                    }
                }
            }
            Ok(())
        })
    }

    fn spawn(&self, runtime: &RunContext, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
        for namespace in scopes::<C::Resource>(&runtime.namespaces) {
            let api = api_for::<C::Resource>(runtime.client.clone(), namespace.as_deref());
            let mut kube_controller =
                KubeController::new(api, watcher::Config::default().any_semantic()).with_config(
                    controller::Config::default().concurrency(self.config.concurrency),
                );
            let mut cache = Descendants::default();
            for owned in self.config.owned_kinds() {
                kube_controller = owned.attach(
                    kube_controller,
                    runtime.client.clone(),
                    namespace.as_deref(),
                    &mut cache,
                );
            }
            let scope_name = match &namespace {
                Some(namespace) => format!("{}/{namespace}", self.name),
                None => self.name.clone(),
            };
            let store = kube_controller.store();
            let health = runtime.health.clone();
            health.cache_started(&scope_name);
            let context = Arc::new(Context {
                controller: self.controller.clone(),
                config: self.config.clone(),
                client: runtime.client.clone(),
                recorder: Recorder::new(runtime.client.clone(), runtime.reporter.clone()),
                name: Arc::from(self.name.as_str()),
                failures: Mutex::default(),
                metrics: runtime.metrics.clone(),
                cache: Arc::new(cache),
                written: Mutex::default(),
            });
            let stream = kube_controller
                .graceful_shutdown_on(shutdown.clone().cancelled_owned())
                .run(reconcile::<C>, error_policy::<C>, context);
            let span = tracing::info_span!("controller", controller = %self.name, namespace = namespace.as_deref().unwrap_or("*"));
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
                    }
                    tracing::info!(shutdown = stopped.is_cancelled(), "controller stopped");
                }
                .instrument(span),
            );
        }
    }

    fn rules(&self) -> Vec<Rule> {
        let resource = kube::api::ApiResource::erase::<C::Resource>(&());
        let mut rules = vec![Rule::new(
            &resource.group,
            [resource.plural.clone()],
            ["get", "list", "watch", "patch", "update"],
        )];
        rules.push(Rule::new(
            &resource.group,
            [format!("{}/status", resource.plural)],
            ["get", "patch", "update"],
        ));
        if self.config.finalizer_name().is_some() {
            rules.push(Rule::new(
                &resource.group,
                [format!("{}/finalizers", resource.plural)],
                ["update"],
            ));
        }
        for owned in self.config.owned_kinds() {
            let owned = owned.api_resource();
            rules.push(Rule::new(
                &owned.group,
                [owned.plural.clone()],
                [
                    "get", "list", "watch", "create", "patch", "update", "delete",
                ],
            ));
        }
        rules.extend(self.config.rules().iter().cloned());
        rules
    }

    fn crd(&self) -> Result<Option<CustomResourceDefinition>, MergeError> {
        self.controller.crd()
    }

    fn namespaced(&self) -> bool {
        <<C::Resource as Resource>::Scope as Scope>::NAMESPACED
    }
}

/// One watch per watched namespace for namespaced resources; one cluster-wide watch for
/// cluster-scoped ones, whatever namespaces are listed.
fn scopes<K: Object>(namespaces: &Namespaces) -> Vec<Option<String>> {
    if <<K as Resource>::Scope as Scope>::NAMESPACED {
        namespaces.scopes()
    } else {
        vec![None]
    }
}

pub(crate) fn resource_name<K: Object>() -> String {
    let group = K::group(&());
    let plural = K::plural(&());
    if group.is_empty() {
        plural.into_owned()
    } else {
        format!("{plural}.{group}")
    }
}

fn api_for<K: Object>(client: Client, namespace: Option<&str>) -> Api<K> {
    <K as Resource>::Scope::api::<K>(client, namespace)
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

struct Context<C: Controller> {
    controller: Arc<C>,
    config: Arc<Config<C::Resource>>,
    client: Client,
    recorder: Recorder,
    name: Arc<str>,
    failures: Mutex<HashMap<ObjectRef<C::Resource>, u32>>,
    metrics: Metrics,
    cache: Arc<Descendants>,
    written: WrittenObjects<C::Resource>,
}

type WrittenObjects<K> = Mutex<HashMap<ObjectRef<K>, Written<K>>>;

/// The object as our last write returned it, and the version the watch showed before it.
struct Written<K> {
    over: Option<String>,
    object: Arc<K>,
    at: Instant,
}

/// How long a written object is remembered; the watch normally catches up within
/// milliseconds, and an object deleted without a final reconcile must not be kept forever.
const WRITTEN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl<C: Controller> Context<C> {
    /// Read-your-writes: while the watch still shows the version our last write replaced,
    /// reconcile the object as that write returned it. Otherwise a reconcile triggered before
    /// the watch caught up would write the same status (and publish the same event) again.
    fn freshest(
        &self,
        reference: &ObjectRef<C::Resource>,
        seen: Arc<C::Resource>,
    ) -> Arc<C::Resource> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get(reference) {
            Some(entry) if entry.over == seen.resource_version() => entry.object.clone(),
            Some(_) => {
                written.remove(reference);
                seen
            }
            None => seen,
        }
    }

    /// Remember what this reconcile wrote, if anything.
    fn remember(
        &self,
        reference: ObjectRef<C::Resource>,
        seen: &C::Resource,
        after: Arc<C::Resource>,
    ) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        written.retain(|_, entry| now.duration_since(entry.at) < WRITTEN_TTL);
        if after.resource_version() == seen.resource_version() {
            return;
        }
        written.insert(
            reference,
            Written {
                over: seen.resource_version(),
                object: after,
                at: now,
            },
        );
    }
}

/// A failed reconcile, as kube-runtime's error policy sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Failed(ReconcileError);

async fn reconcile<C: Controller>(
    object: Arc<C::Resource>,
    ctx: Arc<Context<C>>,
) -> Result<KubeAction, Failed> {
    let reference = ObjectRef::from_obj(&*object);
    let span = tracing::info_span!("reconcile", controller = %ctx.name, object = %reference);
    async move {
        let started = Instant::now();
        ctx.metrics.reconcile_started(&ctx.name);
        let seen = object;
        let object = ctx.freshest(&reference, seen.clone());
        let mut axn = Axn::new(
            object.clone(),
            ctx.client.clone(),
            ctx.name.clone(),
            ctx.cache.clone(),
        );
        let outcome = AssertUnwindSafe(pipeline(&ctx, &mut axn))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
        // A write refused because this replica no longer leads: the controller is stopping,
        // nothing failed. No Warning event, no backoff, no error metric.
        let fenced = matches!(&outcome, Err(err) if is_fenced(err));
        match &outcome {
            Err(err) if fenced => {
                tracing::debug!(error = %err, "reconcile stopped: this replica no longer leads");
            }
            Err(err) => {
                tracing::warn!(error = %err, reason = err.reason(), "reconcile failed");
                axn.warning_event(err.reason(), truncate(&err.to_string(), 1024));
            }
            Ok(_) => {}
        }
        ctx.remember(reference.clone(), &seen, axn.object_arc());
        if !fenced {
            publish_events(&ctx.recorder, &*object, std::mem::take(&mut axn.events)).await;
        }
        for callback in std::mem::take(&mut axn.after) {
            callback(outcome.as_ref());
        }
        let result = match &outcome {
            Ok(action) if action.requeue_after().is_some() => ReconcileResult::requeue_after,
            Ok(_) => ReconcileResult::success,
            Err(_) => ReconcileResult::error,
        };
        if fenced {
            ctx.metrics.reconcile_stopped(&ctx.name);
        } else {
            ctx.metrics
                .reconcile_finished(&ctx.name, result, started.elapsed());
        }
        match outcome {
            Ok(action) => {
                ctx.failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&reference);
                tracing::debug!(?action, "reconciled");
                Ok(action.into_kube(ctx.config.periodic()))
            }
            Err(err) => Err(Failed(err)),
        }
    }
    .instrument(span)
    .await
}

async fn pipeline<C: Controller>(
    ctx: &Context<C>,
    axn: &mut Axn<C::Resource>,
) -> Result<Action, ReconcileError> {
    let finalizer = ctx.config.finalizer_name().map(Finalizer::new);
    match &finalizer {
        Some(finalizer) => {
            if let Flow::Halt(action) = finalizer.call(axn).await? {
                return Ok(action);
            }
        }
        // Without a finalizer there is nothing to do for an object on its way out.
        None if axn.object().meta().deletion_timestamp.is_some() => {
            return Ok(Action::await_change());
        }
        None => {}
    }
    let status = ApplyStatus {
        observed_generation: ctx.config.skip_observed_generation,
    };
    if ctx.config.skip_observed_generation
        && let Flow::Halt(action) = SkipObservedGeneration.call(axn).await?
    {
        return Ok(action);
    }
    for step in &ctx.config.steps {
        let flow = step
            .call(axn)
            .instrument(tracing::debug_span!("step", name = step.name()))
            .await?;
        if let Flow::Halt(action) = flow {
            status.write(axn, false).await?;
            return Ok(action);
        }
    }
    let phase = axn.phase();
    let result = match phase {
        Phase::Apply => ctx.controller.apply(axn).await,
        Phase::Cleanup => ctx.controller.cleanup(axn).await,
    };
    match result {
        Ok(action) => {
            if phase == Phase::Apply {
                let _ = ApplyDescendants.call(axn).await?;
            }
            status.write(axn, phase == Phase::Apply).await?;
            if let (Phase::Cleanup, Some(finalizer)) = (phase, &finalizer) {
                finalizer.remove(axn).await?;
                tracing::info!("cleanup done; finalizer removed");
            }
            Ok(action)
        }
        Err(err) => {
            // The status explains the failure (for example an invalid spec), so it is written
            // even though the reconcile failed.
            if let Err(status_err) = status.write(axn, false).await {
                tracing::warn!(error = %status_err, "could not write the status of a failed reconcile");
            }
            Err(err)
        }
    }
}

/// Whether `err` is a write the leader election's guard refused.
fn is_fenced(err: &ReconcileError) -> bool {
    crate::leader::Fenced::is_fenced(err.source_error())
}

fn error_policy<C: Controller>(
    object: Arc<C::Resource>,
    err: &Failed,
    ctx: Arc<Context<C>>,
) -> KubeAction {
    if is_fenced(&err.0) {
        // Stopping, not failing: the next leader (or our next term) reconciles it afresh.
        return KubeAction::await_change();
    }
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from_obj(&*object)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = ctx.config.backoff.delay(failures);
    ctx.metrics.retry_scheduled(&ctx.name);
    tracing::debug!(object = %object.name_any(), failures, ?delay, "retrying after backoff");
    KubeAction::requeue(delay)
}

async fn publish_events<K: Object>(
    recorder: &Recorder,
    object: &K,
    events: Vec<kube::runtime::events::Event>,
) {
    if events.is_empty() {
        return;
    }
    let reference = object.object_ref(&());
    for event in events {
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, reason = %event.reason, "could not publish event");
        }
    }
}

fn panicked(panic: &(dyn Any + Send)) -> ReconcileError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ReconcileError::with_reason(
        "ReconcilePanicked",
        Panicked(format!("the reconcile panicked: {message}")),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Panicked(String);

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    //! The pipeline against a mock HTTP client: which requests each situation sends.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{CustomResource, api::ObjectMeta, client::Body};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;
    use crate::controller::{Reconcile, StepFuture};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "test.bonny.dev",
        version = "v1",
        kind = "Thing",
        namespaced,
        status = "ThingStatus"
    )]
    struct ThingSpec {
        size: u32,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    struct ThingStatus {
        size: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        observed_generation: Option<i64>,
    }

    #[derive(Default)]
    struct ThingController {
        applies: AtomicUsize,
        cleanups: AtomicUsize,
        fail: bool,
    }

    impl Controller for ThingController {
        type Resource = Thing;
        fn config(&self) -> Config<Thing> {
            Config::new()
                .finalizer("test.bonny.dev/cleanup")
                .owns::<ConfigMap>()
        }
    }

    impl Reconcile<Thing> for ThingController {
        async fn apply(&self, axn: &mut Axn<Thing>) -> Result<Action, ReconcileError> {
            self.applies.fetch_add(1, Ordering::SeqCst);
            let size = axn.object().spec.size;
            axn.set_status(ThingStatus {
                size: Some(size),
                observed_generation: None,
            })?;
            if self.fail {
                return Err(ReconcileError::invalid_spec("size is wrong"));
            }
            axn.register_descendant(ConfigMap {
                metadata: ObjectMeta {
                    name: Some("thing-data".into()),
                    ..ObjectMeta::default()
                },
                data: Some([("size".to_owned(), size.to_string())].into()),
                ..ConfigMap::default()
            })?;
            Ok(Action::await_change())
        }

        async fn cleanup(&self, _axn: &mut Axn<Thing>) -> Result<Action, ReconcileError> {
            self.cleanups.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        }
    }

    /// A request the mock API server received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        content_type: String,
        body: Value,
    }

    impl Seen {
        fn is_write(&self) -> bool {
            !matches!(self.method.as_str(), "GET")
        }
    }

    /// A client whose API server answers GETs from `objects` (by path) and echoes writes.
    fn mock_client(objects: Vec<(&str, Value)>) -> (Client, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let objects: Arc<HashMap<String, Value>> = Arc::new(
            objects
                .into_iter()
                .map(|(path, value)| (path.to_owned(), value))
                .collect(),
        );
        let service = tower::service_fn(move |request: Request<Body>| {
            let log = log.clone();
            let objects = objects.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default(),
                    body: body.clone(),
                };
                log.lock().unwrap().push(seen);
                let (status, answer) = match parts.method.as_str() {
                    "GET" => match objects.get(&path) {
                        Some(object) => (StatusCode::OK, object.clone()),
                        None => (
                            StatusCode::NOT_FOUND,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": "not found"}),
                        ),
                    },
                    _ => (
                        StatusCode::OK,
                        objects
                            .get(path.trim_end_matches("/status"))
                            .cloned()
                            .unwrap_or(body),
                    ),
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                )
            }
        });
        (Client::new(service, "default"), seen)
    }

    const THING: &str = "/apis/test.bonny.dev/v1/namespaces/default/things/thing";
    const CHILD: &str = "/api/v1/namespaces/default/configmaps/thing-data";

    fn thing(finalizers: &[&str], deleting: bool, status: Option<u32>) -> Thing {
        let mut thing = Thing::new("thing", ThingSpec { size: 3 });
        thing.metadata.namespace = Some("default".into());
        thing.metadata.uid = Some("uid-1".into());
        thing.metadata.resource_version = Some("7".into());
        thing.metadata.generation = Some(2);
        thing.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        if deleting {
            thing.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        thing.status = status.map(|size| ThingStatus {
            size: Some(size),
            observed_generation: None,
        });
        thing
    }

    fn live_child(size: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "thing-data", "namespace": "default", "uid": "c-1", "resourceVersion": "9",
                "ownerReferences": [{"apiVersion": "test.bonny.dev/v1", "kind": "Thing", "name": "thing",
                    "uid": "uid-1", "controller": true, "blockOwnerDeletion": true}]},
            "data": {"size": size},
        })
    }

    type Outcome = (
        Result<Action, ReconcileError>,
        Vec<Seen>,
        Arc<ThingController>,
    );

    async fn run(
        controller: ThingController,
        config: Config<Thing>,
        object: Thing,
        objects: Vec<(&str, Value)>,
    ) -> Outcome {
        run_cached(controller, config, object, objects, Descendants::default()).await
    }

    async fn run_cached(
        controller: ThingController,
        config: Config<Thing>,
        object: Thing,
        mut objects: Vec<(&str, Value)>,
        cache: Descendants,
    ) -> Outcome {
        objects.push((THING, serde_json::to_value(&object).unwrap()));
        let (client, seen) = mock_client(objects);
        let controller = Arc::new(controller);
        let ctx = context(controller.clone(), config, client.clone(), cache);
        let mut axn = Axn::new(
            Arc::new(object),
            client,
            ctx.name.clone(),
            ctx.cache.clone(),
        );
        let result = pipeline(&ctx, &mut axn).await;
        let seen = seen.lock().unwrap().clone();
        (result, seen, controller)
    }

    fn context(
        controller: Arc<ThingController>,
        config: Config<Thing>,
        client: Client,
        cache: Descendants,
    ) -> Context<ThingController> {
        Context {
            controller,
            config: Arc::new(config),
            client: client.clone(),
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "test".into(),
                    instance: None,
                },
            ),
            name: Arc::from("thing"),
            failures: Mutex::default(),
            metrics: Metrics::new(),
            cache: Arc::new(cache),
            written: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn a_write_refused_by_the_leader_guard_stops_the_reconcile_without_failing() {
        let object = thing(&[], false, None);
        let (client, seen) = mock_client(vec![(THING, serde_json::to_value(&object).unwrap())]);
        // A guard without a tenure: this replica does not lead, every write is refused.
        let guarded = crate::leader::WriteGuard::new().client(client);
        let controller = Arc::new(ThingController::default());
        let ctx = Arc::new(context(
            controller.clone(),
            controller.config(),
            guarded,
            Descendants::default(),
        ));
        let object = Arc::new(object);
        let err = reconcile(object.clone(), ctx.clone())
            .await
            .expect_err("the finalizer's write is refused");
        assert!(is_fenced(&err.0), "{}", err.0);
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().all(|s| !s.is_write()),
            "nothing written: {seen:?}"
        );
        assert_eq!(
            error_policy(object, &err, ctx.clone()),
            KubeAction::await_change(),
            "no backoff"
        );
        assert!(ctx.failures.lock().unwrap().is_empty());
        let metrics = ctx.metrics.encode();
        assert!(!metrics.contains(r#"result="error""#), "{metrics}");
        assert!(
            !metrics.contains(r#"controller_runtime_reconcile_errors_total{controller="thing"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"controller_runtime_active_workers{controller="thing"} 0"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_reconcile_sees_its_own_last_write_until_the_watch_catches_up() {
        let (client, _) = mock_client(vec![]);
        let controller = Arc::new(ThingController::default());
        let ctx = context(
            controller.clone(),
            controller.config(),
            client,
            Descendants::default(),
        );
        let seen = Arc::new(thing(&[], false, None));
        let reference = ObjectRef::from_obj(&*seen);
        let mut after = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        after.metadata.resource_version = Some("8".into());
        ctx.remember(reference.clone(), &seen, Arc::new(after));
        // The watch still shows version 7: reconcile what our write returned.
        let fresh = ctx.freshest(&reference, seen.clone());
        assert_eq!(fresh.resource_version().as_deref(), Some("8"));
        assert_eq!(fresh.status.as_ref().and_then(|s| s.size), Some(3));
        // The watch moved on (to our write or anyone else's): trust it, forget ours.
        let mut newer = thing(&[], false, None);
        newer.metadata.resource_version = Some("9".into());
        let newer = Arc::new(newer);
        assert_eq!(
            ctx.freshest(&reference, newer.clone())
                .resource_version()
                .as_deref(),
            Some("9")
        );
        assert_eq!(
            ctx.freshest(&reference, seen.clone())
                .resource_version()
                .as_deref(),
            Some("7")
        );
        // A reconcile that wrote nothing leaves nothing behind.
        ctx.remember(reference.clone(), &seen, seen.clone());
        assert!(ctx.written.lock().unwrap().is_empty());
    }

    fn writes(seen: &[Seen]) -> Vec<&Seen> {
        seen.iter().filter(|s| s.is_write()).collect()
    }

    #[tokio::test]
    async fn first_sight_adds_the_finalizer_then_applies_child_and_status() {
        let controller = ThingController::default();
        let config = controller.config();
        let (result, seen, controller) =
            run(controller, config, thing(&[], false, None), vec![]).await;
        assert!(result.is_ok());
        assert_eq!(controller.applies.load(Ordering::SeqCst), 1);
        let writes = writes(&seen);
        assert_eq!(writes.len(), 3, "{writes:#?}");
        assert_eq!(
            (writes[0].path.as_str(), writes[0].content_type.as_str()),
            (THING, "application/json-patch+json")
        );
        assert_eq!(
            writes[0].body[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
        );
        assert_eq!(
            writes[0].body[1],
            json!({"op": "add", "path": "/metadata/finalizers", "value": ["test.bonny.dev/cleanup"]})
        );
        assert_eq!(
            (writes[1].path.as_str(), writes[1].content_type.as_str()),
            (CHILD, "application/apply-patch+yaml")
        );
        assert_eq!(
            writes[1].body["metadata"]["ownerReferences"][0]["uid"],
            "uid-1"
        );
        assert_eq!(writes[1].body["data"]["size"], "3");
        assert_eq!(writes[2].path, format!("{THING}/status"));
        assert_eq!(writes[2].body, json!({"status": {"size": 3}}));
    }

    #[tokio::test]
    async fn nothing_is_written_when_child_and_status_already_match() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, _) =
            run(controller, config, object, vec![(CHILD, live_child("3"))]).await;
        assert!(result.is_ok());
        assert!(writes(&seen).is_empty(), "{seen:#?}");
    }

    fn cached(child: Value) -> Descendants {
        let (reader, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
            serde_json::from_value(child).unwrap(),
        ));
        let mut cache = Descendants::default();
        cache.add(reader);
        cache
    }

    #[tokio::test]
    async fn a_cached_matching_child_costs_no_request_at_all() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, _) =
            run_cached(controller, config, object, vec![], cached(live_child("3"))).await;
        assert!(result.is_ok());
        assert!(seen.is_empty(), "{seen:#?}");
    }

    #[tokio::test]
    async fn a_stale_cache_is_checked_against_the_api_server_before_writing() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        // The cache still shows the old size; the API server already has the new one.
        let (_, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![(CHILD, live_child("3"))],
            cached(live_child("2")),
        )
        .await;
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("GET", CHILD)
        );
    }

    #[tokio::test]
    async fn a_drifted_child_is_applied_again() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (_, seen, _) = run(controller, config, object, vec![(CHILD, live_child("999"))]).await;
        let writes = writes(&seen);
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(writes[0].path, CHILD);
    }

    #[tokio::test]
    async fn deletion_runs_cleanup_and_removes_only_our_finalizer() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["other/keep", "test.bonny.dev/cleanup"], true, Some(3));
        let (result, seen, controller) = run(controller, config, object, vec![]).await;
        assert!(result.is_ok());
        assert_eq!(controller.cleanups.load(Ordering::SeqCst), 1);
        assert_eq!(controller.applies.load(Ordering::SeqCst), 0);
        let writes = writes(&seen);
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(
            writes[0].body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": "test.bonny.dev/cleanup"},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
    }

    #[tokio::test]
    async fn deletion_without_our_finalizer_does_nothing() {
        let controller = ThingController::default();
        let config = controller.config();
        let (result, seen, controller) = run(
            controller,
            config,
            thing(&["other/keep"], true, None),
            vec![],
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(controller.cleanups.load(Ordering::SeqCst), 0);
        assert!(seen.is_empty(), "{seen:#?}");
    }

    struct Halt;

    impl Step<Thing> for Halt {
        fn call<'a>(&'a self, _axn: &'a mut Axn<Thing>) -> StepFuture<'a> {
            Box::pin(async {
                Ok(Flow::Halt(Action::requeue(std::time::Duration::from_secs(
                    7,
                ))))
            })
        }
    }

    #[tokio::test]
    async fn a_step_can_halt_the_pipeline_before_apply() {
        let controller = ThingController::default();
        let config = controller.config().step(Halt);
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, controller) = run(controller, config, object, vec![]).await;
        assert_eq!(
            result.unwrap(),
            Action::requeue(std::time::Duration::from_secs(7))
        );
        assert_eq!(controller.applies.load(Ordering::SeqCst), 0);
        assert!(seen.is_empty(), "{seen:#?}");
    }

    #[tokio::test]
    async fn an_observed_generation_skips_apply() {
        let controller = ThingController::default();
        let config = controller.config().skip_observed_generation();
        let mut object = thing(&["test.bonny.dev/cleanup"], false, None);
        object.status = None;
        let mut value = serde_json::to_value(&object).unwrap();
        value["status"] = json!({"size": 3, "observedGeneration": 2});
        let object: Thing = serde_json::from_value(value).unwrap();
        let (result, seen, controller) = run(controller, config, object, vec![]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(controller.applies.load(Ordering::SeqCst), 0);
        assert!(seen.is_empty(), "{seen:#?}");
    }

    #[tokio::test]
    async fn a_new_generation_is_applied_and_recorded() {
        let controller = ThingController::default();
        let config = controller.config().skip_observed_generation();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (_, seen, controller) =
            run(controller, config, object, vec![(CHILD, live_child("3"))]).await;
        assert_eq!(controller.applies.load(Ordering::SeqCst), 1);
        let writes = writes(&seen);
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(
            writes[0].body,
            json!({"status": {"size": 3, "observedGeneration": 2}})
        );
    }

    #[tokio::test]
    async fn a_failed_apply_writes_its_status_but_no_descendants() {
        let controller = ThingController {
            fail: true,
            ..ThingController::default()
        };
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, None);
        let (result, seen, _) = run(controller, config, object, vec![]).await;
        assert_eq!(result.unwrap_err().reason(), "InvalidSpec");
        let writes = writes(&seen);
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(writes[0].path, format!("{THING}/status"));
    }

    #[test]
    fn panics_become_errors_with_their_message() {
        let err = panicked(&"boom");
        assert_eq!(err.reason(), "ReconcilePanicked");
        assert!(err.to_string().contains("boom"));
        let err = panicked(&String::from("owned boom"));
        assert!(err.to_string().contains("owned boom"));
    }
}
