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
            for namespace in namespaces.scopes() {
                let api = api_for::<C::Resource>(client.clone(), namespace.as_deref());
                if let Err(err) = api.list_metadata(&ListParams::default().limit(1)).await {
                    return Err(Error::from_preflight::<C::Resource>(
                        err,
                        namespace.as_deref(),
                    ));
                }
            }
            Ok(())
        })
    }

    fn spawn(&self, runtime: &RunContext, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
        for namespace in runtime.namespaces.scopes() {
            let api = api_for::<C::Resource>(runtime.client.clone(), namespace.as_deref());
            let mut kube_controller =
                KubeController::new(api, watcher::Config::default().any_semantic()).with_config(
                    controller::Config::default().concurrency(self.config.concurrency),
                );
            for owned in self.config.owned_kinds() {
                kube_controller = owned.attach(
                    kube_controller,
                    runtime.client.clone(),
                    namespace.as_deref(),
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
        let mut axn = Axn::new(object.clone(), ctx.client.clone(), ctx.name.clone());
        let outcome = AssertUnwindSafe(pipeline(&ctx, &mut axn))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
        if let Err(err) = &outcome {
            tracing::warn!(error = %err, reason = err.reason(), "reconcile failed");
            axn.warning_event(err.reason(), truncate(&err.to_string(), 1024));
        }
        publish_events(&ctx.recorder, &*object, std::mem::take(&mut axn.events)).await;
        for callback in std::mem::take(&mut axn.after) {
            callback(outcome.as_ref());
        }
        let result = match &outcome {
            Ok(action) if action.requeue_after().is_some() => ReconcileResult::requeue_after,
            Ok(_) => ReconcileResult::success,
            Err(_) => ReconcileResult::error,
        };
        ctx.metrics
            .reconcile_finished(&ctx.name, result, started.elapsed());
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

fn error_policy<C: Controller>(
    object: Arc<C::Resource>,
    _err: &Failed,
    ctx: Arc<Context<C>>,
) -> KubeAction {
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from_obj(&*object)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = ctx.config.backoff.delay(failures);
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
