//! One reconcile as kube-runtime calls it: read-your-writes, the pipeline, events, callbacks,
//! metrics; the error policy (per-object backoff); panics turned into errors.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kube::{
    Resource, ResourceExt,
    api::DynamicObject,
    runtime::{controller::Action as KubeAction, events::Event, reflector::ObjectRef},
};
use tracing::Instrument;

use super::{
    events::Publisher,
    intake::Vanished,
    pipeline::{Pipeline, Processed},
    queue,
    read_your_writes::{Fresh, Written},
    registration::RunContext,
    watches::OwnedCaches,
};
use crate::{
    controller::{Action, Axn, Config, Controller, Object, Phase, ReconcileError},
    observe::{Metrics, QueueKey, ReconcileResult, WorkQueue},
};

/// What every reconcile of one controller scope shares.
pub(crate) struct Context<C: Controller> {
    pipeline: Pipeline<C>,
    events: Publisher,
    /// Consecutive failures per object, for the backoff: emptied by a success and when the
    /// object is gone.
    failures: Mutex<HashMap<ObjectRef<C::Resource>, u32>>,
    metrics: Metrics,
    /// The controller's work queue, as far as the SDK sees it.
    queue: Arc<WorkQueue>,
    written: Arc<Written<C::Resource>>,
    vanished: Arc<Vanished<C::Resource>>,
    /// The operator's binary, named where a refused permission is granted.
    binary: Arc<str>,
}

impl<C: Controller> Context<C> {
    pub(crate) fn new(
        controller: Arc<C>,
        config: Arc<Config<C::Resource>>,
        runtime: &RunContext,
        name: Arc<str>,
        cache: OwnedCaches,
        vanished: Arc<Vanished<C::Resource>>,
        written: Arc<Written<C::Resource>>,
    ) -> Self {
        runtime
            .metrics
            .controller_started(&name, config.concurrency_limit());
        Self {
            queue: runtime.metrics.work_queue(&name),
            pipeline: Pipeline {
                controller,
                config,
                client: runtime.client.clone(),
                name,
                cache,
                vanished: vanished.clone(),
                pruned: Default::default(),
                applied: Default::default(),
            },
            events: Publisher::new(runtime.client.clone(), runtime.reporter.clone()),
            failures: Mutex::default(),
            metrics: runtime.metrics.clone(),
            written,
            vanished,
            binary: runtime.binary.clone(),
        }
    }

    /// kube-runtime dropped a request for `object`: it is not in the cache any more (deleted).
    /// What is kept about it (its place in the queue, its failures, our last write) goes.
    pub(crate) fn object_gone(&self, object: &ObjectRef<DynamicObject>) {
        self.queue.forget(queue::key(object));
        let mut reference = ObjectRef::<C::Resource>::new(&object.name);
        reference.namespace.clone_from(&object.namespace);
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&reference);
        self.written.forget(&reference);
    }
}

/// A reconcile of one key running: it ends in the queue's books when dropped, whether the
/// reconcile finished or was aborted.
struct Running<'a> {
    queue: &'a WorkQueue,
    key: QueueKey,
}

impl<'a> Running<'a> {
    fn start(queue: &'a WorkQueue, key: QueueKey) -> Self {
        queue.started(key);
        Self { queue, key }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.queue.finished(self.key);
    }
}

/// A failed reconcile, as kube-runtime's error policy sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Failed(ReconcileError);

pub(crate) async fn reconcile<C: Controller>(
    object: Arc<C::Resource>,
    ctx: Arc<Context<C>>,
) -> Result<KubeAction, Failed> {
    let reference = ObjectRef::from_obj(&*object);
    let span =
        tracing::info_span!("reconcile", controller = %ctx.pipeline.name, object = %reference);
    let key = queue::key(&reference);
    let running = Running::start(&ctx.queue, key);
    let result = async {
        // An object of this name that vanished with our finalizer, replaced in the cache by a
        // newer one before its cleanup ran: it is cleaned up first.
        if let Some(vanished) = ctx.vanished.get(&reference)
            && vanished.uid() != object.uid()
        {
            // Its action does not matter: there is no object left to requeue.
            let _: Action = process(&ctx, &reference, vanished).await?;
        }
        let action = process(&ctx, &reference, object).await?;
        Ok(action
            .requeue_after()
            .or(ctx.pipeline.config.requeue_interval()))
    }
    .instrument(span)
    .await;
    drop(running);
    let after = result?;
    if let Some(after) = after {
        ctx.queue.requeued(key, after);
    }
    Ok(into_kube(after))
}

/// One run of the pipeline on `seen` (or its newer version), with its events, callbacks and
/// metrics.
async fn process<C: Controller>(
    ctx: &Context<C>,
    reference: &ObjectRef<C::Resource>,
    seen: Arc<C::Resource>,
) -> Result<Action, Failed> {
    let name = &ctx.pipeline.name;
    let started = Instant::now();
    ctx.metrics.reconcile_started(name);
    // The newest version the watch has shown (`seen` may have been replaced since the
    // reconcile was queued), and our own last write while the watch still lags behind it.
    let Fresh { base: seen, object } = ctx.written.freshest(reference, seen);
    let uid = seen.uid();
    if seen.meta().deletion_timestamp.is_some()
        && uid
            .as_deref()
            .is_some_and(|uid| ctx.written.is_finalized(uid))
    {
        // Our cleanup of this object finished and removed the finalizer; the cache has not
        // caught up with that yet. Running cleanup again would do it twice.
        tracing::debug!("cleanup already done; waiting for the watch to catch up");
        ctx.metrics
            .reconcile_finished(name, ReconcileResult::success, started.elapsed());
        return Ok(Action::await_change());
    }
    let axn = Axn::new(object.clone(), ctx.pipeline.client.clone(), name.clone())
        .with_caches(ctx.pipeline.cache.readable());
    let Processed {
        result: outcome,
        mut effects,
    } = ctx.pipeline.run(axn).await;
    // A write refused because this replica no longer leads: the controller is stopping,
    // nothing failed. No Warning event, no backoff, no error metric.
    let fenced = matches!(&outcome, Err(err) if is_fenced(err));
    match &outcome {
        Err(err) if fenced => {
            tracing::debug!(error = %err, "reconcile stopped: this replica no longer leads");
        }
        Err(err) => {
            if err.reason() == PANICKED {
                ctx.metrics.reconcile_panicked(name);
            }
            let message = describe(err, &ctx.binary);
            tracing::warn!(error = %message, reason = err.reason(), "reconcile failed");
            effects.warning_event(err.reason(), truncate(&message, 1024));
        }
        Ok(_) => {}
    }
    ctx.written.remember(
        reference.clone(),
        &seen,
        effects.object.clone(),
        &effects.produced,
        Instant::now(),
    );
    let cleaned = effects.phase == Phase::Cleanup;
    // A cleanup that succeeded ends with our finalizer removed (the last stage).
    if cleaned
        && outcome.is_ok()
        && let Some(uid) = uid
    {
        ctx.written.finalized(uid, Instant::now());
    }
    if !fenced {
        publish_events(&ctx.events, &*object, effects.events).await;
    }
    for callback in effects.after {
        callback(outcome.as_ref());
    }
    let result = match &outcome {
        Ok(action) if action.requeue_after().is_some() => ReconcileResult::requeue_after,
        Ok(_) => ReconcileResult::success,
        Err(_) => ReconcileResult::error,
    };
    if fenced {
        ctx.metrics.reconcile_stopped(name);
    } else {
        ctx.metrics
            .reconcile_finished(name, result, started.elapsed());
    }
    match outcome {
        Ok(action) => {
            ctx.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(reference);
            // A vanished object whose cleanup ran leaves the cache. Only a cleanup: a reconcile
            // that applied a version read before the object vanished (the intake kept it
            // meanwhile) must leave it for the cleanup still to come.
            if cleaned {
                ctx.vanished.cleaned_up(&seen);
            }
            tracing::debug!(?action, "reconciled");
            Ok(action)
        }
        Err(err) => Err(Failed(err)),
    }
}

/// When to run again, as kube-runtime's action.
fn into_kube(after: Option<Duration>) -> KubeAction {
    match after {
        Some(after) => KubeAction::requeue(after),
        None => KubeAction::await_change(),
    }
}

/// The error as its Warning event and log say it: a refused permission names where to grant it.
fn describe(err: &ReconcileError, binary: &str) -> String {
    if err.is_forbidden() {
        format!(
            "{err}; grant it in the operator's ClusterRole (generate it with `{binary} manifests`)"
        )
    } else {
        err.to_string()
    }
}

/// Whether `err` is a write the leader election's guard refused.
fn is_fenced(err: &ReconcileError) -> bool {
    crate::leader::Fenced::is_fenced(err.source_error())
}

pub(crate) fn error_policy<C: Controller>(
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
    let delay = ctx.pipeline.config.backoff_policy().delay(failures);
    ctx.metrics.retry_scheduled(&ctx.pipeline.name);
    ctx.queue
        .requeued(queue::key(&ObjectRef::from_obj(&*object)), delay);
    tracing::debug!(object = %object.name_any(), failures, ?delay, "retrying after backoff");
    KubeAction::requeue(delay)
}

async fn publish_events<K: Object>(publisher: &Publisher, object: &K, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let reference = object.object_ref(&());
    for event in events {
        if let Err(err) = publisher.publish(&event, &reference).await {
            tracing::warn!(error = %err, reason = %event.reason, "could not publish event");
        }
    }
}

/// A panic of a pipeline stage (the author's code, usually) as a reconcile error.
pub(crate) fn panicked(panic: &(dyn Any + Send)) -> ReconcileError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ReconcileError::with_reason(
        PANICKED,
        Panicked(format!("the reconcile panicked: {message}")),
    )
}

/// The reason of the error a panic becomes.
const PANICKED: &str = "ReconcilePanicked";

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
    use super::*;

    #[test]
    fn panics_become_errors_with_their_message() {
        let err = panicked(&"boom");
        assert_eq!(err.reason(), "ReconcilePanicked");
        assert!(err.to_string().contains("boom"));
        let err = panicked(&String::from("owned boom"));
        assert!(err.to_string().contains("owned boom"));
    }

    #[test]
    fn the_periodic_interval_applies_only_when_the_action_waits() {
        let every = Some(Duration::from_secs(30));
        let after = |action: Action| into_kube(action.requeue_after().or(every));
        assert_eq!(
            after(Action::await_change()),
            KubeAction::requeue(Duration::from_secs(30))
        );
        assert_eq!(
            after(Action::requeue(Duration::from_secs(2))),
            KubeAction::requeue(Duration::from_secs(2))
        );
        assert_eq!(into_kube(None), KubeAction::await_change());
    }
}
