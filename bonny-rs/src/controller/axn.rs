//! The action context: everything one reconcile of one object reads and produces.

use std::{fmt, sync::Arc};

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Client, Resource, ResourceExt,
    api::ApiResource,
    runtime::events::{Event, EventType},
};
use serde::Serialize;
use serde_json::Value;

use super::{
    Action, Object, ReconcileError,
    cache::{Cache, Caches},
};

/// Whether the object is being brought up to date or cleaned up before deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The object exists and is not being deleted: `apply` runs.
    Apply,
    /// The object is being deleted and still carries the controller's finalizer: `cleanup` runs.
    Cleanup,
}

/// The label every descendant the SDK applies carries, with the applying controller's name as
/// its value: `bonny.dev/controller=<controller name>`.
///
/// It marks what the SDK created, so that pruning ([`Config::prune`](super::Config::prune))
/// only ever deletes an object this controller applied, and so that the owned-kind watches can
/// select the controller's own descendants. The author's other labels are kept as given.
pub const DESCENDANT_LABEL: &str = "bonny.dev/controller";

/// The annotation on each descendant of a metadata-only owned kind
/// ([`Config::owns_metadata`](super::Config::owns_metadata)): the lowercase hex SHA-256 of the
/// body the SDK applied (its canonical JSON, keys sorted, without this annotation). With no
/// body in the cache, it is how a reconcile tells that a descendant is already as desired.
pub const APPLIED_HASH: &str = "bonny.dev/applied-hash";

/// A descendant registered for server-side apply.
#[derive(Clone, Debug)]
pub(crate) struct Descendant {
    pub(crate) resource: ApiResource,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) body: Value,
}

/// Puts [`DESCENDANT_LABEL`]`=controller` into a descendant's `metadata.labels`, keeping the
/// labels it has; the reason when it cannot.
fn mark(meta: &mut serde_json::Map<String, Value>, controller: &str) -> Result<(), String> {
    if !bonny_rules::dns::is_qualified_name_part(controller) {
        return Err(format!(
            "cannot be labelled {DESCENDANT_LABEL}={controller}: a label value has at most 63 \
             letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit; \
             give the controller such a name (`Config::name`, or `name = \"..\"` in the macro)"
        ));
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if labels.is_null() {
        *labels = Value::Object(serde_json::Map::new());
    }
    let Some(labels) = labels.as_object_mut() else {
        return Err("has metadata.labels that is not a map".to_owned());
    };
    match labels.get(DESCENDANT_LABEL) {
        Some(Value::String(set)) if set == controller => Ok(()),
        Some(set) => Err(format!(
            "sets the label {DESCENDANT_LABEL}={set}, but the SDK labels it with the name of \
             the controller that applies it ({controller}); leave that label out"
        )),
        None => {
            labels.insert(
                DESCENDANT_LABEL.into(),
                Value::String(controller.to_owned()),
            );
            Ok(())
        }
    }
}

/// A callback to run once processing of the object ends, with its outcome.
pub(crate) type AfterProcessed = Box<dyn FnOnce(Result<&Action, &ReconcileError>) + Send + Sync>;

/// The action context of one reconcile (Bonny's `Axn`).
///
/// It carries the object and the phase, and gathers what the reconcile wants done: descendants
/// to apply, the status to write, events to publish and callbacks to run when processing ends.
/// The runtime takes those out, by value, after `apply`/`cleanup` returns and acts on them,
/// writing nothing when the cluster already matches.
pub struct Axn<K> {
    object: Arc<K>,
    phase: Phase,
    client: Client,
    controller: Arc<str>,
    descendants: Vec<Descendant>,
    status: Option<Value>,
    events: Vec<Event>,
    after: Vec<AfterProcessed>,
    /// The resource versions this reconcile's own writes of the object produced, in order.
    produced: Vec<String>,
    /// The watch caches of the owned and watched kinds.
    caches: Arc<Caches>,
}

/// What a reconcile asked for, taken out of its [`Axn`] by value once the author's code ran.
pub(crate) struct Effects<K> {
    /// The object as the last write of this reconcile returned it (else as the watch showed it).
    pub(crate) object: Arc<K>,
    pub(crate) phase: Phase,
    pub(crate) descendants: Vec<Descendant>,
    pub(crate) status: Option<Value>,
    pub(crate) events: Vec<Event>,
    pub(crate) after: Vec<AfterProcessed>,
    /// The resource versions the pipeline's writes of the object produced before `object`'s.
    pub(crate) produced: Vec<String>,
}

impl<K> Effects<K> {
    /// Queue a Warning event about the object, as [`Axn::warning_event`] would have.
    pub(crate) fn warning_event(&mut self, reason: &str, note: impl Into<String>) {
        self.events
            .push(event(self.phase, EventType::Warning, reason, note.into()));
    }
}

fn event(phase: Phase, type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: match phase {
            Phase::Apply => "Reconcile".to_owned(),
            Phase::Cleanup => "Cleanup".to_owned(),
        },
        secondary: None,
    }
}

impl<K: Object> Axn<K> {
    pub(crate) fn new(object: Arc<K>, client: Client, controller: Arc<str>) -> Self {
        Self {
            object,
            phase: Phase::Apply,
            client,
            controller,
            descendants: Vec::new(),
            status: None,
            events: Vec::new(),
            after: Vec::new(),
            produced: Vec::new(),
            caches: Arc::default(),
        }
    }

    /// Serve [`cache`](Self::cache) reads from `caches`.
    pub(crate) fn with_caches(mut self, caches: Arc<Caches>) -> Self {
        self.caches = caches;
        self
    }

    /// Everything this reconcile asked for, for the runtime to act on.
    pub(crate) fn into_effects(self) -> Effects<K> {
        Effects {
            object: self.object,
            phase: self.phase,
            descendants: self.descendants,
            status: self.status,
            events: self.events,
            after: self.after,
            produced: self.produced,
        }
    }

    /// The object being reconciled, as last seen by the watch.
    pub fn object(&self) -> &K {
        &self.object
    }

    /// The object as a write of this reconcile returned it.
    pub(crate) fn set_object(&mut self, object: K) {
        self.produced.extend(object.resource_version());
        self.object = Arc::new(object);
    }

    /// The object's name.
    pub fn name(&self) -> String {
        self.object.name_any()
    }

    /// The object's namespace (`None` for cluster-scoped objects).
    pub fn namespace(&self) -> Option<String> {
        self.object.namespace()
    }

    /// Apply or cleanup.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// A client for anything the reconcile needs beyond what the context offers.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The name of the controller running this reconcile.
    pub fn controller_name(&self) -> &str {
        &self.controller
    }

    /// Register a descendant: after `apply` returns it is server-side applied with an owner
    /// reference to the object and the controller's field manager, unless the live object
    /// already holds every field given here.
    ///
    /// The descendant goes to the object's namespace unless it names one itself. It is
    /// labelled [`DESCENDANT_LABEL`]`=<controller name>`, beside the labels it already has.
    ///
    /// # Errors
    /// When the descendant cannot be serialized, has no name, or the object has no UID yet;
    /// when it sets [`DESCENDANT_LABEL`] to another controller's name, or the controller's name
    /// cannot be a label value.
    pub fn register_descendant<C>(&mut self, descendant: C) -> Result<&mut Self, ReconcileError>
    where
        C: Object + Resource<Scope = NamespaceResourceScope>,
    {
        let owner = self.object.controller_owner_ref(&()).ok_or_else(|| {
            ReconcileError::msg(format!(
                "cannot own a descendant: {} {} has no uid yet",
                K::kind(&()),
                self.object.name_any()
            ))
        })?;
        let name = descendant.meta().name.clone().ok_or_else(|| {
            ReconcileError::msg(format!("a {} descendant needs metadata.name", C::kind(&())))
        })?;
        let namespace = descendant
            .meta()
            .namespace
            .clone()
            .or_else(|| self.object.namespace())
            .ok_or_else(|| {
                ReconcileError::msg(format!(
                    "the {} descendant {name} needs metadata.namespace: its owner is cluster-scoped",
                    C::kind(&())
                ))
            })?;
        let mut body = serde_json::to_value(&descendant)?;
        body["apiVersion"] = Value::String(C::api_version(&()).into_owned());
        body["kind"] = Value::String(C::kind(&()).into_owned());
        let meta = body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                ReconcileError::msg(format!(
                    "the {} descendant {name} has no metadata",
                    C::kind(&())
                ))
            })?;
        for server_owned in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(server_owned);
        }
        meta.insert("namespace".into(), Value::String(namespace.clone()));
        meta.insert("ownerReferences".into(), serde_json::to_value(vec![owner])?);
        mark(meta, &self.controller).map_err(|problem| {
            ReconcileError::msg(format!("the {} descendant {name} {problem}", C::kind(&())))
        })?;
        self.descendants.push(Descendant {
            resource: ApiResource::erase::<C>(&()),
            namespace,
            name,
            body,
        });
        Ok(self)
    }

    /// Set the status to write to the status subresource after the reconcile; nothing is
    /// written when the live status already holds it.
    ///
    /// The status is merged into the live one (a JSON merge patch): a field left out keeps
    /// its old value, a field serialized as `null` is removed, and a list is replaced whole.
    /// Start from the live status (`axn.object().status`) to keep what you don't change.
    ///
    /// # Errors
    /// When the status cannot be serialized to a JSON object.
    pub fn set_status<S: Serialize>(&mut self, status: S) -> Result<&mut Self, ReconcileError> {
        let value = serde_json::to_value(status)?;
        if !value.is_object() {
            return Err(ReconcileError::msg(
                "a status must serialize to a JSON object",
            ));
        }
        self.status = Some(value);
        Ok(self)
    }

    /// The status set so far in this reconcile.
    pub fn status(&self) -> Option<&Value> {
        self.status.as_ref()
    }

    /// Queue a Normal event about the object.
    pub fn normal_event(&mut self, reason: &str, note: impl Into<String>) -> &mut Self {
        self.event(EventType::Normal, reason, note)
    }

    /// Queue a Warning event about the object.
    pub fn warning_event(&mut self, reason: &str, note: impl Into<String>) -> &mut Self {
        self.event(EventType::Warning, reason, note)
    }

    fn event(&mut self, type_: EventType, reason: &str, note: impl Into<String>) -> &mut Self {
        self.events
            .push(event(self.phase, type_, reason, note.into()));
        self
    }

    /// Reads of kind `R` from the controller's watch cache, without a request: get by name,
    /// list by label selector, list those this object owns. Eventually consistent; see
    /// [`Cache`] for what that means and the read-your-writes the SDK gives.
    ///
    /// A kind cached as metadata only ([`Config::owns_metadata`](super::Config::owns_metadata),
    /// [`Mapper::metadata_only`](super::Mapper::metadata_only)) is read with its metadata and
    /// an empty body (when every controller of the operator declaring it asks for that): `data`,
    /// `spec` and `status` are `None`, and a type with a required body field does not decode
    /// (its objects are skipped, with a warning).
    ///
    /// ```
    /// # use bonny::prelude::*;
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// # #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema)]
    /// # #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
    /// # pub struct WidgetSpec { keep: usize }
    /// # struct WidgetController;
    /// # impl Reconcile<Widget> for WidgetController {
    /// async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
    ///     // `ConfigMap` must be owned (`owns = [ConfigMap]`) or watched (`watches = [..]`).
    ///     let children = axn.cache::<ConfigMap>()?.owned_by_me();
    ///     axn.normal_event("Counted", format!("{} children", children.len()));
    ///     Ok(Action::await_change())
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// When the controller neither owns nor watches `R`; the message names the declaration
    /// that fixes it.
    pub fn cache<R: Object>(&self) -> Result<Cache<R>, ReconcileError> {
        self.caches.cache::<R>(self.object.uid(), &self.controller)
    }

    /// Run `callback` once processing of this object ends, with its outcome.
    pub fn after_processed(
        &mut self,
        callback: impl FnOnce(Result<&Action, &ReconcileError>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.after.push(Box::new(callback));
        self
    }
}

impl<K: Object> fmt::Debug for Axn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Axn")
            .field("object", &self.object.name_any())
            .field("phase", &self.phase)
            .field("descendants", &self.descendants.len())
            .field("status", &self.status)
            .field("events", &self.events.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::{DESCENDANT_LABEL, mark};

    fn meta(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_label_joins_the_authors_labels() {
        let mut with = meta(json!({"name": "a", "labels": {"app": "web"}}));
        mark(&mut with, "widget").unwrap();
        assert_eq!(
            with["labels"],
            json!({"app": "web", DESCENDANT_LABEL: "widget"})
        );
        for mut without in [meta(json!({"name": "a"})), meta(json!({"labels": null}))] {
            mark(&mut without, "widget").unwrap();
            assert_eq!(without["labels"], json!({DESCENDANT_LABEL: "widget"}));
        }
    }

    #[test]
    fn the_label_is_never_taken_from_another_controller() {
        let mut same = meta(json!({"labels": {DESCENDANT_LABEL: "widget"}}));
        mark(&mut same, "widget").unwrap();
        let mut other = meta(json!({"labels": {DESCENDANT_LABEL: "gadget"}}));
        let err = mark(&mut other, "widget").unwrap_err();
        assert!(err.contains("leave that label out"), "{err}");
        assert_eq!(other["labels"][DESCENDANT_LABEL], "gadget");
    }

    #[test]
    fn a_controller_name_that_is_no_label_value_is_named() {
        let err = mark(&mut meta(json!({})), "team/widgets").unwrap_err();
        assert!(
            err.contains("team/widgets") && err.contains("Config::name"),
            "{err}"
        );
    }
}
