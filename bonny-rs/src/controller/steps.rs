//! The built-in steps of the reconcile pipeline.
//!
//! The runtime runs them around the author's code in this order:
//! [`Finalizer`] → [`SkipObservedGeneration`] (when enabled) → the author's steps → `apply` or
//! `cleanup` → [`ApplyDescendants`] → [`ApplyStatus`] → finalizer removal → events.
//! Every write is skipped when the cluster already holds what it would write.

use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{Action, Axn, Flow, Object, Phase, ReconcileError, Scope, Step, StepFuture};

/// Adds the controller's finalizer to objects that lack it, and switches the pipeline to
/// [`Phase::Cleanup`] for objects being deleted that still carry it. Objects being deleted
/// without it are left alone.
#[derive(Clone, Debug)]
pub struct Finalizer {
    name: String,
}

impl Finalizer {
    /// The step for finalizer `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Removes the finalizer once cleanup succeeded. The JSON patch tests the finalizer's
    /// position first, so a concurrent change fails the patch instead of removing another
    /// controller's finalizer; an object that is already gone counts as done.
    pub(crate) async fn remove<K: Object>(&self, axn: &Axn<K>) -> Result<(), ReconcileError> {
        let object = axn.object();
        let Some(index) = object.finalizers().iter().position(|f| *f == self.name) else {
            return Ok(());
        };
        let pointer = format!("/metadata/finalizers/{index}");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            { "op": "test", "path": pointer, "value": self.name },
            { "op": "remove", "path": pointer },
        ]))?;
        let api = object_api::<K>(axn);
        match api
            .patch(
                &axn.name(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl<K: Object> Step<K> for Finalizer {
    fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async move {
            let object = axn.object();
            let has_it = object.finalizers().contains(&self.name);
            if object.meta().deletion_timestamp.is_some() {
                if has_it {
                    axn.set_phase(Phase::Cleanup);
                    return Ok(Flow::Continue);
                }
                return Ok(Flow::Halt(Action::await_change()));
            }
            if !has_it {
                let mut patch = vec![json!({ "op": "test", "path": "/metadata/resourceVersion",
                    "value": object.resource_version() })];
                if object.finalizers().is_empty() {
                    patch.push(json!({ "op": "add", "path": "/metadata/finalizers", "value": [self.name] }));
                } else {
                    patch.push(json!({ "op": "add", "path": "/metadata/finalizers/-", "value": self.name }));
                }
                let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch))?;
                let patched = object_api::<K>(axn)
                    .patch(
                        &axn.name(),
                        &PatchParams::default(),
                        &Patch::<()>::Json(patch),
                    )
                    .await?;
                axn.set_object(patched);
            }
            Ok(Flow::Continue)
        })
    }

    fn name(&self) -> &'static str {
        "finalizer"
    }
}

/// Skips `apply` when `status.observedGeneration` already equals `metadata.generation`.
/// [`ApplyStatus`] records the generation after each successful apply.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkipObservedGeneration;

impl<K: Object> Step<K> for SkipObservedGeneration {
    fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async move {
            if axn.phase() == Phase::Cleanup {
                return Ok(Flow::Continue);
            }
            let generation = axn.object().meta().generation;
            let observed = serde_json::to_value(axn.object())?
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            if generation.is_some() && observed == generation {
                tracing::debug!(?generation, "generation already observed; skipping apply");
                return Ok(Flow::Halt(Action::await_change()));
            }
            Ok(Flow::Continue)
        })
    }

    fn name(&self) -> &'static str {
        "skip_observed_generation"
    }
}

/// Server-side applies the registered descendants whose live copy lacks a declared field.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyDescendants;

impl<K: Object> Step<K> for ApplyDescendants {
    fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async move {
            let params = PatchParams::apply(axn.controller_name()).force();
            for descendant in std::mem::take(&mut axn.descendants) {
                let cached = axn.cache.get(
                    &descendant.resource,
                    &descendant.namespace,
                    &descendant.name,
                );
                if cached.is_some_and(|live| contains(&live, &descendant.body)) {
                    continue;
                }
                // Not cached, or the cache (which may lag) differs: ask the API server.
                let api: Api<DynamicObject> = Api::namespaced_with(
                    axn.client().clone(),
                    &descendant.namespace,
                    &descendant.resource,
                );
                if let Some(live) = api.get_opt(&descendant.name).await?
                    && contains(&serde_json::to_value(&live)?, &descendant.body)
                {
                    continue;
                }
                tracing::debug!(kind = %descendant.resource.kind, name = %descendant.name, "applying descendant");
                api.patch(&descendant.name, &params, &Patch::Apply(&descendant.body))
                    .await?;
            }
            Ok(Flow::Continue)
        })
    }

    fn name(&self) -> &'static str {
        "apply_descendants"
    }
}

/// Merges the status set on the context into the status subresource, unless the live status
/// already holds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyStatus {
    pub(crate) observed_generation: bool,
}

impl ApplyStatus {
    pub(crate) async fn write<K: Object>(
        &self,
        axn: &mut Axn<K>,
        applied: bool,
    ) -> Result<(), ReconcileError> {
        let mut status = axn.status.take();
        if self.observed_generation
            && applied
            && let Some(generation) = axn.object().meta().generation
        {
            let status = status.get_or_insert_with(|| json!({}));
            status["observedGeneration"] = json!(generation);
        }
        let Some(status) = status else { return Ok(()) };
        let live = serde_json::to_value(axn.object())?;
        if contains(live.get("status").unwrap_or(&Value::Null), &status) {
            return Ok(());
        }
        let patched = object_api::<K>(axn)
            .patch_status(
                &axn.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        axn.set_object(patched);
        Ok(())
    }
}

impl<K: Object> Step<K> for ApplyStatus {
    fn call<'a>(&'a self, axn: &'a mut Axn<K>) -> StepFuture<'a> {
        Box::pin(async move {
            self.write(axn, true).await?;
            Ok(Flow::Continue)
        })
    }

    fn name(&self) -> &'static str {
        "apply_status"
    }
}

fn object_api<K: Object>(axn: &Axn<K>) -> Api<K> {
    <K as Resource>::Scope::api::<K>(axn.client().clone(), axn.namespace().as_deref())
}

/// Whether `live` holds every field of `desired` with the same value. Objects may carry more
/// keys (defaults, other managers' fields); lists must have the same length, element by element.
pub(crate) fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, want)| match live.get(key) {
                // `null` asks for the field to be gone.
                None => want.is_null(),
                Some(have) => contains(have, want),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len()
                && live
                    .iter()
                    .zip(desired)
                    .all(|(have, want)| contains(have, want))
        }
        (Value::Number(live), Value::Number(desired)) => live.as_f64() == desired.as_f64(),
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn contains_ignores_extra_live_fields() {
        let live = json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "extra": true});
        assert!(contains(&live, &json!({"b": {"c": "x"}})));
        assert!(contains(&live, &json!({"b": {"d": [1, 2]}})));
    }

    #[test]
    fn contains_detects_changed_and_missing_fields() {
        let live = json!({"a": 1, "b": {"c": "x"}, "l": [{"n": 1}]});
        assert!(!contains(&live, &json!({"a": 2})));
        assert!(!contains(&live, &json!({"b": {"c": "y"}})));
        assert!(!contains(&live, &json!({"missing": 1})));
        assert!(!contains(&live, &json!({"l": [{"n": 1}, {"n": 2}]})));
        assert!(!contains(&live, &json!({"l": []})));
    }

    #[test]
    fn contains_matches_list_elements_as_subsets() {
        let live = json!({"containers": [{"name": "app", "image": "nginx", "terminationMessagePath": "/dev"}]});
        assert!(contains(
            &live,
            &json!({"containers": [{"name": "app", "image": "nginx"}]})
        ));
        assert!(!contains(
            &live,
            &json!({"containers": [{"name": "app", "image": "httpd"}]})
        ));
    }

    #[test]
    fn contains_treats_null_as_absent() {
        assert!(contains(&json!({"a": 1}), &json!({"b": null})));
        assert!(contains(&json!({"a": 1, "b": null}), &json!({"b": null})));
        assert!(!contains(&json!({"a": 1, "b": 2}), &json!({"b": null})));
    }
}
