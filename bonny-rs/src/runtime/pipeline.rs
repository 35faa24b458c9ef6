//! The reconcile pipeline: the ORDER of the built-in stages around the author's code, in one
//! list ([`STAGES`]). To add a built-in step, add a [`Stage`], put it in the list, and say in
//! [`Pipeline::on_axn`] or [`Pipeline::on_effects`] what it does.
//!
//! Stages up to the author's `apply`/`cleanup` act on the [`Axn`]; the rest act on the
//! [`Effects`] taken out of it. Every write is skipped when the cluster already holds it.

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;
use kube::{Client, Resource, api::ApiResource};
use tracing::Instrument;

use super::{
    descendants, finalizer, intake::Vanished, metadata, prune, reconcile::panicked, status,
    watches::OwnedCaches,
};
use crate::controller::{
    Action, Axn, Config, Controller, Effects, Flow, OwnedKind, Phase, ReconcileError,
};

/// One stage of the reconcile pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Add the finalizer, switch to cleanup, or leave an object being deleted alone
    /// ([`finalizer`]).
    Finalizer,
    /// Skip `apply` when `status.observedGeneration` equals `metadata.generation` (opt-in).
    SkipObservedGeneration,
    /// The author's steps, in the order added.
    AuthorSteps,
    /// The author's `apply` or `cleanup`.
    Reconcile,
    /// Server-side apply the registered descendants, after a successful `apply`.
    Descendants,
    /// Delete the descendants of pruned kinds an earlier `apply` registered and this one did
    /// not ([`prune`]; opt-in). Not after `cleanup`: garbage collection takes them then.
    Prune,
    /// Write the status the reconcile set (also after a halt, and after a failed reconcile).
    Status,
    /// Remove the finalizer once `cleanup` succeeded.
    RemoveFinalizer,
}

/// The pipeline, in order. Events are published and `after_processed` callbacks run after it.
pub(crate) const STAGES: [Stage; 8] = [
    Stage::Finalizer,
    Stage::SkipObservedGeneration,
    Stage::AuthorSteps,
    Stage::Reconcile,
    Stage::Descendants,
    Stage::Prune,
    Stage::Status,
    Stage::RemoveFinalizer,
];

impl Stage {
    /// Whether the stage acts on what the reconcile asked for, after the author's code.
    const fn on_effects(self) -> bool {
        matches!(
            self,
            Self::Descendants | Self::Prune | Self::Status | Self::RemoveFinalizer
        )
    }
}

/// Where the pipeline stands between stages.
enum Progress {
    /// No stage has stopped it.
    Going,
    /// A stage before the author's `apply`/`cleanup` halted it: only the status is written.
    Halted(Action),
    /// `apply`/`cleanup` succeeded: every later stage runs.
    Reconciled(Action),
    /// `apply`/`cleanup` failed: its status still explains why, nothing else is written.
    ReconcileFailed(ReconcileError),
    /// A stage failed or panicked: nothing more is done.
    Failed(ReconcileError),
}

/// What a run of the pipeline ended with, and what the reconcile asked for that is left to do
/// (events, callbacks), with the object as the last write returned it.
pub(crate) struct Processed<K> {
    pub(crate) result: Result<Action, ReconcileError>,
    pub(crate) effects: Effects<K>,
}

/// What the pipeline of one controller scope needs.
pub(crate) struct Pipeline<C: Controller> {
    pub(crate) controller: Arc<C>,
    pub(crate) config: Arc<Config<C::Resource>>,
    pub(crate) client: Client,
    pub(crate) name: Arc<str>,
    pub(crate) cache: OwnedCaches,
    pub(crate) vanished: Arc<Vanished<C::Resource>>,
    /// The descendants pruned whose deletion the cache has not shown yet.
    pub(crate) pruned: prune::Pruned,
    /// The SDK's last applies of descendants of metadata-only kinds.
    pub(crate) applied: metadata::Applied,
}

impl<C: Controller> Pipeline<C> {
    /// Runs [`STAGES`] on `axn`. A panic in any stage becomes a failed reconcile.
    pub(crate) async fn run(&self, mut axn: Axn<C::Resource>) -> Processed<C::Resource> {
        let split = STAGES
            .iter()
            .position(|stage| stage.on_effects())
            .unwrap_or(STAGES.len());
        let (before, after) = STAGES.split_at(split);
        let mut progress = Progress::Going;
        for &stage in before {
            if !matches!(progress, Progress::Going) {
                break;
            }
            progress = AssertUnwindSafe(self.on_axn(stage, &mut axn))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Progress::Failed(panicked(panic.as_ref())));
        }
        let mut effects = axn.into_effects();
        for &stage in after {
            if matches!(progress, Progress::Failed(_)) {
                break;
            }
            progress = AssertUnwindSafe(self.on_effects(stage, progress, &mut effects))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Progress::Failed(panicked(panic.as_ref())));
        }
        let result = match progress {
            Progress::Halted(action) | Progress::Reconciled(action) => Ok(action),
            Progress::ReconcileFailed(err) | Progress::Failed(err) => Err(err),
            // The reconcile stage always moves the pipeline on.
            Progress::Going => Ok(Action::await_change()),
        };
        Processed { result, effects }
    }

    /// A stage up to the author's code; runs only while the pipeline is [`Progress::Going`].
    async fn on_axn(&self, stage: Stage, axn: &mut Axn<C::Resource>) -> Progress {
        let flow = match stage {
            Stage::Finalizer => finalizer::on_sight(self.config.finalizer_name(), axn).await,
            Stage::SkipObservedGeneration => self.skip_observed_generation(axn),
            Stage::AuthorSteps => self.author_steps(axn).await,
            Stage::Reconcile => {
                let result = match axn.phase() {
                    Phase::Apply => self.controller.apply(axn).await,
                    Phase::Cleanup => self.controller.cleanup(axn).await,
                };
                return match result {
                    Ok(action) => Progress::Reconciled(action),
                    Err(err) => Progress::ReconcileFailed(err),
                };
            }
            Stage::Descendants | Stage::Prune | Stage::Status | Stage::RemoveFinalizer => {
                Ok(Flow::Continue)
            }
        };
        match flow {
            Ok(Flow::Continue) => Progress::Going,
            Ok(Flow::Halt(action)) => Progress::Halted(action),
            Err(err) => Progress::Failed(err),
        }
    }

    fn skip_observed_generation(&self, axn: &Axn<C::Resource>) -> Result<Flow, ReconcileError> {
        if !self.config.skips_observed_generation() || axn.phase() == Phase::Cleanup {
            return Ok(Flow::Continue);
        }
        if status::generation_observed(axn.object())? {
            tracing::debug!(generation = ?axn.object().meta().generation, "generation already observed; skipping apply");
            return Ok(Flow::Halt(Action::await_change()));
        }
        Ok(Flow::Continue)
    }

    async fn author_steps(&self, axn: &mut Axn<C::Resource>) -> Result<Flow, ReconcileError> {
        for step in self.config.steps() {
            let flow = step
                .call(axn)
                .instrument(tracing::debug_span!("step", name = step.name()))
                .await?;
            if let Flow::Halt(action) = flow {
                return Ok(Flow::Halt(action));
            }
        }
        Ok(Flow::Continue)
    }

    /// A stage after the author's code, given how the pipeline stands.
    async fn on_effects(
        &self,
        stage: Stage,
        progress: Progress,
        effects: &mut Effects<C::Resource>,
    ) -> Progress {
        let done = match (stage, &progress) {
            (Stage::Descendants, Progress::Reconciled(_)) if effects.phase == Phase::Apply => {
                let metadata_only: Vec<&ApiResource> = self
                    .config
                    .owned_kinds()
                    .iter()
                    .filter(|owned| owned.is_metadata_only())
                    .map(OwnedKind::api_resource)
                    .collect();
                descendants::apply(
                    &self.client,
                    &self.name,
                    &self.cache,
                    &effects.descendants,
                    &metadata_only,
                    &self.applied,
                )
                .await
            }
            (Stage::Prune, Progress::Reconciled(_)) if effects.phase == Phase::Apply => {
                let kinds: Vec<&ApiResource> = self
                    .config
                    .pruned_kinds()
                    .map(OwnedKind::api_resource)
                    .collect();
                match effects.object.meta().uid.as_deref() {
                    Some(owner) if !kinds.is_empty() => {
                        prune::prune(
                            &self.client,
                            &self.name,
                            &self.cache,
                            &self.pruned,
                            &kinds,
                            owner,
                            &effects.descendants,
                        )
                        .await
                    }
                    // No pruned kind, or an object without a UID (which owns nothing).
                    _ => Ok(()),
                }
            }
            (Stage::Status, Progress::Halted(_)) => {
                status::write(
                    &self.client,
                    &mut effects.object,
                    effects.status.take(),
                    false,
                )
                .await
            }
            (Stage::Status, Progress::Reconciled(_)) => {
                let record =
                    self.config.skips_observed_generation() && effects.phase == Phase::Apply;
                status::write(
                    &self.client,
                    &mut effects.object,
                    effects.status.take(),
                    record,
                )
                .await
            }
            (Stage::Status, Progress::ReconcileFailed(_)) => {
                // The status explains the failure (for example an invalid spec), so it is
                // written even though the reconcile failed.
                let written = status::write(
                    &self.client,
                    &mut effects.object,
                    effects.status.take(),
                    false,
                )
                .await;
                if let Err(status_err) = written {
                    tracing::warn!(error = %status_err, "could not write the status of a failed reconcile");
                }
                Ok(())
            }
            (Stage::RemoveFinalizer, Progress::Reconciled(_))
                if effects.phase == Phase::Cleanup =>
            {
                match self.config.finalizer_name() {
                    Some(name) => {
                        let removed =
                            finalizer::remove(&self.client, name, &*effects.object, &self.vanished)
                                .await;
                        if removed.is_ok() {
                            tracing::info!("cleanup done; finalizer removed");
                        }
                        removed
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        };
        match done {
            Ok(()) => progress,
            Err(err) => Progress::Failed(err),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline against a mock HTTP client: which requests each situation sends.
    #![allow(clippy::unwrap_used)]

    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{
        CustomResource,
        api::{ApiResource, ObjectMeta},
        client::Body,
        runtime::{reflector::store::Writer, watcher},
    };
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;
    use crate::controller::{Cached, CachedKind, KindCache, Reconcile, Step, StepFuture};

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
        status_on_cleanup: bool,
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

        async fn cleanup(&self, axn: &mut Axn<Thing>) -> Result<Action, ReconcileError> {
            self.cleanups.fetch_add(1, Ordering::SeqCst);
            if self.status_on_cleanup {
                axn.set_status(ThingStatus {
                    size: Some(0),
                    observed_generation: None,
                })?;
            }
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
                let not_found = || {
                    (
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "not found"}),
                    )
                };
                let known = objects.get(path.trim_end_matches("/status"));
                let (status, answer) = match (parts.method.as_str(), known) {
                    // `null` stands for an object that is gone.
                    (_, Some(Value::Null)) => not_found(),
                    ("GET", _) => match objects.get(&path) {
                        Some(object) => (StatusCode::OK, object.clone()),
                        None => not_found(),
                    },
                    (_, known) => (StatusCode::OK, known.cloned().unwrap_or(body)),
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
                "labels": {"bonny.dev/controller": "thing"},
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
        run_cached(controller, config, object, objects, OwnedCaches::default()).await
    }

    async fn run_cached(
        controller: ThingController,
        config: Config<Thing>,
        object: Thing,
        mut objects: Vec<(&str, Value)>,
        cache: OwnedCaches,
    ) -> Outcome {
        objects.push((THING, serde_json::to_value(&object).unwrap()));
        run_against(controller, config, object, objects, cache).await
    }

    /// The pipeline on `object`, against an API server holding `objects` (by path).
    async fn run_against(
        controller: ThingController,
        config: Config<Thing>,
        object: Thing,
        objects: Vec<(&str, Value)>,
        cache: OwnedCaches,
    ) -> Outcome {
        let (client, seen) = mock_client(objects);
        let controller = Arc::new(controller);
        let pipeline = Pipeline {
            controller: controller.clone(),
            config: Arc::new(config),
            client: client.clone(),
            name: Arc::from("thing"),
            cache,
            vanished: Arc::new(Vanished::new(futures::channel::mpsc::unbounded().0)),
            pruned: prune::Pruned::default(),
            applied: metadata::Applied::default(),
        };
        let axn = Axn::new(Arc::new(object), client, pipeline.name.clone());
        let Processed { result, .. } = pipeline.run(axn).await;
        let seen = seen.lock().unwrap().clone();
        (result, seen, controller)
    }

    fn writes(seen: &[Seen]) -> Vec<&Seen> {
        seen.iter().filter(|s| s.is_write()).collect()
    }

    #[tokio::test]
    async fn a_write_refused_by_the_leader_guard_stops_the_reconcile_without_failing() {
        use super::super::reconcile::{Context, error_policy, reconcile};
        use crate::{
            observe::{Health, Metrics},
            runtime::{Namespaces, RunContext},
        };

        let object = thing(&[], false, None);
        let (client, seen) = mock_client(vec![(THING, serde_json::to_value(&object).unwrap())]);
        // A guard without a tenure: this replica does not lead, every write is refused.
        let guarded = crate::leader::WriteGuard::new().client(client);
        let metrics = Metrics::new();
        let runtime = RunContext {
            client: guarded,
            namespaces: Namespaces::All,
            reporter: kube::runtime::events::Reporter {
                controller: "test".into(),
                instance: None,
            },
            metrics: metrics.clone(),
            health: Health::default(),
            caches: Default::default(),
            binary: Arc::from("thing-operator"),
        };
        let controller = Arc::new(ThingController::default());
        let ctx = Arc::new(Context::new(
            controller.clone(),
            Arc::new(controller.config()),
            &runtime,
            Arc::from("thing"),
            OwnedCaches::default(),
            Arc::new(Vanished::new(futures::channel::mpsc::unbounded().0)),
            Arc::default(),
        ));
        let object = Arc::new(object);
        let err = reconcile(object.clone(), ctx.clone())
            .await
            .expect_err("the finalizer's write is refused");
        assert!(err.to_string().contains("was not sent"), "{err}");
        let seen = seen.lock().unwrap().clone();
        assert!(writes(&seen).is_empty(), "nothing written: {seen:?}");
        for _ in 0..2 {
            assert_eq!(
                error_policy(object.clone(), &err, ctx.clone()),
                kube::runtime::controller::Action::await_change(),
                "no backoff"
            );
        }
        let text = metrics.encode();
        assert!(!text.contains(r#"result="error""#), "{text}");
        assert!(
            !text.contains(r#"controller_runtime_reconcile_errors_total{controller="thing"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"workqueue_retries_total{name="thing",controller="thing"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_active_workers{controller="thing"} 0"#),
            "{text}"
        );
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
        assert_eq!(
            writes[1].body["metadata"]["labels"],
            json!({crate::controller::DESCENDANT_LABEL: "thing"})
        );
        assert_eq!(writes[2].path, format!("{THING}/status"));
        assert_eq!(writes[2].body, json!({"status": {"size": 3}}));
    }

    #[tokio::test]
    async fn a_child_the_cache_lacks_is_applied_without_asking_first() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        // The API server has it already; the cache has not seen it: one apply, no GET.
        let (result, seen, _) =
            run(controller, config, object, vec![(CHILD, live_child("3"))]).await;
        assert!(result.is_ok());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("PATCH", CHILD)
        );
    }

    fn cached(child: Value) -> OwnedCaches {
        cached_all(vec![child])
    }

    fn cached_all(children: Vec<Value>) -> OwnedCaches {
        let kind = CachedKind::new(ApiResource::erase::<ConfigMap>(&()));
        let mut writer = Writer::<Cached>::new(kind.clone());
        for child in children {
            writer.apply_watcher_event(&watcher::Event::Apply(
                serde_json::from_value(child).unwrap(),
            ));
        }
        let mut cache = OwnedCaches::default();
        cache.add(KindCache::new(kind, writer.as_reader()));
        cache
    }

    /// A ConfigMap owned by the thing (as controller), named `name`, with `labels`.
    fn look_alike(name: &str, labels: Value) -> Value {
        let mut child = live_child("1");
        child["metadata"]["name"] = json!(name);
        child["metadata"]["uid"] = json!(format!("uid-{name}"));
        child["metadata"]["labels"] = labels;
        child
    }

    const OLD: &str = "/api/v1/namespaces/default/configmaps/thing-old";

    /// The registered child in place, plus an old descendant of ours and look-alikes that
    /// are not ours to delete.
    fn children_with_stale_ones() -> Vec<Value> {
        vec![
            live_child("3"),
            look_alike(
                "thing-old",
                json!({crate::controller::DESCENDANT_LABEL: "thing"}),
            ),
            look_alike("by-hand", json!({"app": "thing"})),
            look_alike(
                "other",
                json!({crate::controller::DESCENDANT_LABEL: "gadget"}),
            ),
        ]
    }

    #[tokio::test]
    async fn pruning_deletes_only_our_unregistered_descendant_with_preconditions() {
        let controller = ThingController::default();
        let config = controller.config().prune(true);
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let stale = look_alike(
            "thing-old",
            json!({crate::controller::DESCENDANT_LABEL: "thing"}),
        );
        let (result, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![(OLD, stale)],
            cached_all(children_with_stale_ones()),
        )
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("DELETE", OLD)
        );
        assert_eq!(
            seen[0].body["preconditions"],
            json!({"uid": "uid-thing-old", "resourceVersion": "9"})
        );
        assert_eq!(seen[0].body["propagationPolicy"], "Background");
    }

    #[tokio::test]
    async fn without_pruning_or_with_nothing_stale_nothing_is_deleted() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, _) = run_cached(
            controller,
            config,
            object.clone(),
            vec![],
            cached_all(children_with_stale_ones()),
        )
        .await;
        assert!(result.is_ok());
        assert!(seen.is_empty(), "not pruned: {seen:#?}");

        let controller = ThingController::default();
        let config = controller.config().prune(true);
        let (result, seen, _) =
            run_cached(controller, config, object, vec![], cached(live_child("3"))).await;
        assert!(result.is_ok());
        assert!(
            seen.is_empty(),
            "a no-op reconcile sends nothing: {seen:#?}"
        );
    }

    #[tokio::test]
    async fn a_descendant_gone_meanwhile_is_skipped() {
        let controller = ThingController::default();
        let config = controller.config().prune(true);
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        // The API server no longer has it (404): the reconcile still succeeds.
        let (result, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![(OLD, Value::Null)],
            cached_all(children_with_stale_ones()),
        )
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(seen.len(), 1, "{seen:#?}");
    }

    #[tokio::test]
    async fn cleanup_prunes_nothing() {
        let controller = ThingController::default();
        let config = controller.config().prune(true);
        let object = thing(&["test.bonny.dev/cleanup"], true, Some(3));
        let (result, seen, controller) = run_cached(
            controller,
            config,
            object,
            vec![],
            cached_all(children_with_stale_ones()),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(controller.cleanups.load(Ordering::SeqCst), 1);
        assert!(
            seen.iter().all(|s| s.method != "DELETE"),
            "garbage collection takes the descendants: {seen:#?}"
        );
    }

    #[tokio::test]
    async fn a_kind_declared_with_owns_pruned_is_pruned_alone() {
        let controller = ThingController::default();
        let config = Config::<Thing>::new()
            .finalizer("test.bonny.dev/cleanup")
            .owns_pruned::<ConfigMap>()
            .owns::<k8s_openapi::api::core::v1::Secret>();
        let pruned: Vec<_> = config
            .pruned_kinds()
            .map(|kind| kind.api_resource().kind.clone())
            .collect();
        assert_eq!(pruned, ["ConfigMap"]);
        assert!(!config.prunes());
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let stale = look_alike(
            "thing-old",
            json!({crate::controller::DESCENDANT_LABEL: "thing"}),
        );
        let (result, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![(OLD, stale)],
            cached_all(children_with_stale_ones()),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(seen[0].method, "DELETE");
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

    /// `live` as a metadata-only cache holds it: no body.
    fn metadata_only(mut live: Value) -> Value {
        live.as_object_mut().unwrap().remove("data");
        live
    }

    fn metadata_config() -> Config<Thing> {
        Config::new()
            .finalizer("test.bonny.dev/cleanup")
            .owns_metadata::<ConfigMap>()
    }

    #[tokio::test]
    async fn a_metadata_only_child_is_applied_with_its_hash_then_skipped_from_its_metadata() {
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, _) = run(
            ThingController::default(),
            metadata_config(),
            object.clone(),
            vec![],
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        let applied = &seen[0].body;
        let hash = &applied["metadata"]["annotations"][crate::controller::APPLIED_HASH];
        assert_eq!(*hash, json!(metadata::applied_hash(applied)));
        assert_eq!(applied["data"], json!({"size": "3"}));
        // The cache shows the child's metadata only, hash included (as after a restart: nothing
        // remembered): no request at all.
        let mut live = metadata_only(live_child("3"));
        live["metadata"]["annotations"] = applied["metadata"]["annotations"].clone();
        let (result, seen, _) = run_cached(
            ThingController::default(),
            metadata_config(),
            object,
            vec![],
            cached(live),
        )
        .await;
        assert!(result.is_ok());
        assert!(seen.is_empty(), "{seen:#?}");
    }

    #[tokio::test]
    async fn a_metadata_only_child_without_the_current_hash_is_applied() {
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let mut live = metadata_only(live_child("3"));
        live["metadata"]["annotations"] = json!({crate::controller::APPLIED_HASH: "an-older-body"});
        let (result, seen, _) = run_cached(
            ThingController::default(),
            metadata_config(),
            object,
            vec![],
            cached(live),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("PATCH", CHILD)
        );
    }

    #[tokio::test]
    async fn a_full_kind_is_applied_without_the_hash() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (_, seen, _) = run(controller, config, object, vec![]).await;
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert!(seen[0].body["metadata"].get("annotations").is_none());
    }

    #[tokio::test]
    async fn a_stale_cache_costs_one_apply_and_no_get() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        // The cache still shows the old size; the API server already has the new one.
        let (result, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![(CHILD, live_child("3"))],
            cached(live_child("2")),
        )
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("PATCH", CHILD)
        );
        assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    }

    #[tokio::test]
    async fn a_drifted_child_is_applied_again() {
        let controller = ThingController::default();
        let config = controller.config();
        let object = thing(&["test.bonny.dev/cleanup"], false, Some(3));
        let (result, seen, _) = run_cached(
            controller,
            config,
            object,
            vec![],
            cached(live_child("999")),
        )
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
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

    #[tokio::test]
    async fn an_object_that_vanished_is_cleaned_up_though_nothing_is_left_to_write() {
        let controller = ThingController {
            status_on_cleanup: true,
            ..ThingController::default()
        };
        let config = controller.config();
        // Kept as being deleted after a DELETED event that still showed our finalizer.
        let object = thing(&["test.bonny.dev/cleanup"], true, Some(3));
        let (result, seen, controller) = run_against(
            controller,
            config,
            object,
            vec![(THING, Value::Null)],
            OwnedCaches::default(),
        )
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(controller.cleanups.load(Ordering::SeqCst), 1);
        // The status write and the finalizer's removal both found it gone: that is done.
        let writes = writes(&seen);
        assert_eq!(writes.len(), 2, "{writes:#?}");
        assert_eq!(writes[0].path, format!("{THING}/status"));
        assert_eq!(writes[1].path, THING);
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
        let (result, seen, controller) =
            run_cached(controller, config, object, vec![], cached(live_child("3"))).await;
        assert_eq!(result.unwrap(), Action::await_change());
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
}
