//! A controller that writes on every reconcile, for the fencing proof: each reconcile of a
//! Widget patches its ConfigMap `tick-<widget>` (server-side apply, the author's own write
//! through the context's client) with a new count and the writer's identity, then requeues
//! after 200 ms. Every write is one audit record, so the audit log shows who wrote when.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use bonny::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::widget::Widget;

/// The name of the operator that runs the ticker (`tests/src/bin/fence-operator.rs`): its
/// Lease, service account and fence follow from it.
pub const OPERATOR: &str = "fence-e2e";
/// How often each Widget is written.
pub const TICK: Duration = Duration::from_millis(200);
/// The field manager of the ticks.
const MANAGER: &str = "bonny-e2e-ticker";

/// The name of the ConfigMap a Widget's ticks go to.
pub fn tick_name(widget: &str) -> String {
    format!("tick-{widget}")
}

/// Writes a tick per reconcile.
#[bonny::controller(
    resource = Widget,
    rbac(group = "", resources = ["configmaps"], verbs = ["get", "create", "patch", "delete"]),
)]
#[derive(Clone, Default)]
pub struct TickerController {
    /// Who writes: the replica identity, into each tick.
    pub identity: Arc<str>,
    /// Ticks written by this replica.
    pub ticks: Arc<AtomicU64>,
}

impl TickerController {
    /// A ticker writing as `identity`.
    pub fn new(identity: &str) -> Self {
        TickerController {
            identity: identity.into(),
            ticks: Arc::default(),
        }
    }
}

impl Reconcile<Widget> for TickerController {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        let tick = self.ticks.fetch_add(1, Ordering::SeqCst) + 1;
        let namespace = axn.namespace().unwrap_or_else(|| "default".to_owned());
        let name = tick_name(&axn.name());
        let configmaps: Api<ConfigMap> = Api::namespaced(axn.client().clone(), &namespace);
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"tick": tick.to_string(), "by": &*self.identity},
        });
        configmaps
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(body),
            )
            .await?;
        Ok(Action::requeue(TICK))
    }
}
