//! The test resource: a Widget yields a ConfigMap and a status; a size of 13 panics, a size
//! over 100 is rejected as an invalid spec.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{CustomResource, api::ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "e2e.bonny.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    /// Size; 13 makes the controller panic, over 100 is invalid.
    pub size: u32,
}

/// A Widget named `name` of size `size`.
pub fn widget(name: &str, size: u32) -> Widget {
    Widget::new(name, WidgetSpec { size })
}

/// The status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// The size last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Counts what the controller did, for assertions.
#[derive(Clone, Default, Debug)]
pub struct Counters {
    /// `apply` calls.
    pub applies: Arc<AtomicUsize>,
    /// `cleanup` calls.
    pub cleanups: Arc<AtomicUsize>,
    /// Labels of each widget whose processing ended (after every write of its reconcile).
    pub processed_labels: Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
}

impl Counters {
    /// Whether a reconcile of a widget carrying label `key=value` has finished.
    pub fn processed_label(&self, key: &str, value: &str) -> bool {
        self.processed_labels
            .lock()
            .unwrap()
            .iter()
            .any(|labels| labels.get(key).map(String::as_str) == Some(value))
    }

    /// `cleanup` calls so far.
    pub fn cleanups(&self) -> usize {
        self.cleanups.load(Ordering::SeqCst)
    }
}

/// The controller under test.
#[bonny::controller(
    resource = Widget,
    finalizer = "e2e.bonny.dev/cleanup",
    owns = [ConfigMap],
    backoff(base = "200ms", max = "2s"),
)]
#[derive(Clone, Default)]
pub struct WidgetController {
    /// Counters shared with the test.
    pub counters: Counters,
}

impl Reconcile<Widget> for WidgetController {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.counters.applies.fetch_add(1, Ordering::SeqCst);
        let widget = axn.object().clone();
        let processed = self.counters.processed_labels.clone();
        let labels = widget.metadata.labels.clone().unwrap_or_default();
        axn.after_processed(move |_| processed.lock().unwrap().push(labels));
        let size = widget.spec.size;
        let mut status = widget.status.clone().unwrap_or_default();
        let generation = widget.metadata.generation;
        if size == 13 {
            panic!("size 13 is unlucky");
        }
        if size > 100 {
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "InvalidSpec",
                "spec.size must be at most 100",
                generation,
            );
            axn.set_status(&status)?;
            return Err(ReconcileError::invalid_spec(format!(
                "spec.size must be at most 100, got {size}"
            )));
        }
        axn.register_descendant(ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-data", axn.name())),
                ..ObjectMeta::default()
            },
            data: Some([("size".to_owned(), size.to_string())].into()),
            ..ConfigMap::default()
        })?;
        if status.size != Some(size) {
            axn.normal_event("Resized", format!("size is now {size}"));
        }
        status.size = Some(size);
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Reconciled",
            "the ConfigMap holds the size",
            generation,
        );
        axn.set_status(&status)?;
        Ok(Action::await_change())
    }

    async fn cleanup(&self, _axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.counters.cleanups.fetch_add(1, Ordering::SeqCst);
        Ok(Action::await_change())
    }
}

/// A second resource type, to run two controllers in one operator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "e2e.bonny.dev",
    version = "v1",
    kind = "Gadget",
    namespaced,
    status = "GadgetStatus"
)]
pub struct GadgetSpec {
    /// Anything.
    pub label: String,
}

/// What the gadget controller saw.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GadgetStatus {
    /// The label, echoed.
    pub seen: Option<String>,
}

/// Echoes the label into the status.
#[bonny::controller(resource = Gadget)]
#[derive(Clone, Default)]
pub struct GadgetController;

impl Reconcile<Gadget> for GadgetController {
    async fn apply(&self, axn: &mut Axn<Gadget>) -> Result<Action, ReconcileError> {
        let seen = Some(axn.object().spec.label.clone());
        axn.set_status(GadgetStatus { seen })?;
        Ok(Action::await_change())
    }
}

/// The Widget controller, watching every ConfigMap (`Config::adopt_existing`) rather than only
/// the descendants it labelled.
#[derive(Clone, Default)]
pub struct AdoptingWidgetController(pub WidgetController);

impl Controller for AdoptingWidgetController {
    type Resource = Widget;

    fn config(&self) -> Config<Widget> {
        self.0.config().adopt_existing::<ConfigMap>()
    }
}

impl Reconcile<Widget> for AdoptingWidgetController {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.0.apply(axn).await
    }

    async fn cleanup(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.0.cleanup(axn).await
    }
}
