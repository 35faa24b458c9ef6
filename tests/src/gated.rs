//! A Widget controller for the fault tests: `apply` is the [`WidgetController`]'s; `cleanup`
//! writes to a [`Ledger`] when it begins, waits while a gate ConfigMap ([`GATE`]) exists in
//! the widget's namespace, and writes again when it is done. A test holds a deletion between
//! its start and the finalizer's removal with the gate, kills the replica there, and counts
//! completed cleanups in the ledger.

use std::time::Duration;

use bonny::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

use crate::{
    ledger::{Ledger, Step},
    widget::{Widget, WidgetController},
};

/// The name of the gate ConfigMap: while it exists in a widget's namespace, that widget's
/// cleanup waits.
pub const GATE: &str = "cleanup-gate";

/// How often a waiting cleanup looks at the gate again.
const GATE_POLL: Duration = Duration::from_millis(100);

/// The controller: the Widget controller with a gated, ledgered cleanup.
#[bonny::controller(
    resource = Widget,
    finalizer = "e2e.bonny.dev/cleanup",
    owns = [ConfigMap],
    backoff(base = "200ms", max = "2s"),
)]
#[derive(Clone)]
pub struct GatedWidgetController {
    inner: WidgetController,
    ledger: Ledger,
    identity: String,
}

impl GatedWidgetController {
    /// A controller of replica `identity` writing its cleanups to `ledger`.
    pub fn new(identity: impl Into<String>, ledger: Ledger) -> Self {
        Self {
            inner: WidgetController::default(),
            ledger,
            identity: identity.into(),
        }
    }

    fn record(&self, step: Step, widget: &Widget) -> Result<(), ReconcileError> {
        let object = format!(
            "{}/{}",
            widget.namespace().unwrap_or_default(),
            widget.name_any()
        );
        let uid = widget.uid().unwrap_or_default();
        self.ledger
            .append(step, &self.identity, &object, &uid)
            .map_err(|error| ReconcileError::with_reason("LedgerUnwritable", error))
    }
}

impl Reconcile<Widget> for GatedWidgetController {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        self.inner.apply(axn).await
    }

    async fn cleanup(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        let widget = axn.object().clone();
        self.record(Step::Begin, &widget)?;
        let namespace = widget.namespace().unwrap_or_default();
        let configmaps: Api<ConfigMap> = Api::namespaced(axn.client().clone(), &namespace);
        while configmaps
            .get_opt(GATE)
            .await
            .map_err(|error| ReconcileError::with_reason("GateUnreadable", error))?
            .is_some()
        {
            tokio::time::sleep(GATE_POLL).await;
        }
        self.record(Step::Done, &widget)?;
        Ok(Action::await_change())
    }
}
