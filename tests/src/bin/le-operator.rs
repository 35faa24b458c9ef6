//! One operator replica for the leader-election proof: the Widget controller behind
//! `.leader_election(true)`, witnessing its controller-running intervals.
//!
//! Environment:
//! - `WITNESS_FILE` (required): where `<identity> start|stop <CLOCK_MONOTONIC ns>` lines are
//!   appended, see [`bonny_e2e::witness`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease and in the witness;
//! - `SCRIBE=1`: instead of the Widget controller, one that writes its identity into every
//!   Widget's annotation `e2e.bonny.dev/writer` on every reconcile (at most every 200 ms),
//!   through `axn.client()`: the author's own write a stale leader must never land;
//! - `KUBECONFIG`, `BONNY_POD_NAMESPACE`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails, 2 when the witness
//! cannot be written (the proof would be void, so the replica stops at once).

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{Operator, prelude::*};
use bonny_e2e::{
    replica::{self, Failure, Recorder},
    widget::{Widget, WidgetController},
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

const BIN: &str = "le-operator";

/// In-flight reconciles get this long after a stop; Widget reconciles take milliseconds.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    replica::main(BIN, run())
}

async fn run() -> Result<(), Failure> {
    let identity = replica::required(BIN, "BONNY_POD_NAME")?;
    let recorder = Recorder::open(BIN, &identity)?;
    tracing::info!(%identity, "le-operator starting");
    let builder = Operator::builder().name("le-e2e");
    let builder = if std::env::var("SCRIBE").is_ok_and(|value| value == "1") {
        builder.controller(Scribe {
            identity: identity.clone(),
            last: Arc::default(),
            seq: Arc::default(),
        })
    } else {
        builder.controller(WidgetController::default())
    };
    builder
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| recorder.record(event))
        .run()
        .await
        .map_err(Failure::operator)
}

/// Writes this replica's identity into each Widget on every reconcile, at most every 200 ms.
#[bonny::controller(resource = Widget)]
#[derive(Clone)]
struct Scribe {
    identity: String,
    last: Arc<Mutex<Option<std::time::Instant>>>,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

const SCRIBE_EVERY: Duration = Duration::from_millis(200);

impl Reconcile<Widget> for Scribe {
    async fn apply(&self, axn: &mut Axn<Widget>) -> Result<Action, ReconcileError> {
        let due = {
            let last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            last.map_or(Duration::ZERO, |at| {
                SCRIBE_EVERY.saturating_sub(at.elapsed())
            })
        };
        if !due.is_zero() {
            return Ok(Action::requeue(due));
        }
        let namespace = axn.namespace().unwrap_or_default();
        let widgets: Api<Widget> = Api::namespaced(axn.client().clone(), &namespace);
        // A sequence number makes every write a change the API server stores and watches show.
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let patch = serde_json::json!({
            "metadata": { "annotations": {
                "e2e.bonny.dev/writer": self.identity,
                "e2e.bonny.dev/seq": seq.to_string(),
            } },
        });
        widgets
            .patch(&axn.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
        Ok(Action::requeue(SCRIBE_EVERY))
    }
}
