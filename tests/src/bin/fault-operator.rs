//! One operator replica for the fault suite (`tests/tests/fault_suite.rs`): the
//! [`GatedWidgetController`] behind `.leader_election(true)`, witnessing its controller-running
//! intervals and writing its cleanups to a ledger.
//!
//! Environment:
//! - `WITNESS_FILE` (required): controller start/stop lines, see [`bonny_e2e::witness`];
//! - `LEDGER_FILE` (required): cleanup begin/done lines, see [`bonny_e2e::ledger`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease, the witness and the ledger;
//! - `KUBECONFIG`, `BONNY_POD_NAMESPACE`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails, 2 when the witness
//! cannot be written.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{Operator, operator::ControllersEvent};
use bonny_e2e::{
    gated::GatedWidgetController,
    ledger::Ledger,
    witness::{Appender, Event, Witness},
};

/// In-flight reconciles get this long after a stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    bonny::operator::init_logging();
    // Die with the test that started us, even if it is killed before it can kill us.
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("fault-operator: warning: cannot set the parent-death signal: {error}");
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("fault-operator: error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run() -> Result<(), (u8, String)> {
    let required = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                (
                    1,
                    format!("set {var}: see the header of tests/src/bin/fault-operator.rs"),
                )
            })
    };
    let witness = Witness::new(required("WITNESS_FILE")?);
    let ledger = Ledger::new(required("LEDGER_FILE")?);
    let identity = required("BONNY_POD_NAME")?;
    let appender = witness.open().map_err(|error| {
        (
            2,
            format!(
                "cannot open the witness {}: {error}",
                witness.path().display()
            ),
        )
    })?;
    let identity_for_witness = identity.clone();
    let appender = Arc::new(Mutex::new(appender));
    tracing::info!(%identity, ledger = %ledger.path().display(), "fault-operator starting");
    Operator::builder()
        .name("fault-e2e")
        .controller(GatedWidgetController::new(identity, ledger))
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| record(&appender, &identity_for_witness, event))
        .run()
        .await
        .map_err(|error| (1, error.to_string()))
}

fn record(appender: &Mutex<Appender>, identity: &str, event: ControllersEvent) {
    let event = match event {
        ControllersEvent::Starting => Event::Start,
        ControllersEvent::Stopped => Event::Stop,
    };
    let written = match appender.lock() {
        Ok(mut appender) => appender.append(identity, event),
        Err(poisoned) => poisoned.into_inner().append(identity, event),
    };
    if let Err(error) = written {
        eprintln!("fault-operator: error: cannot write {event:?} to the witness: {error}");
        std::process::exit(2);
    }
}
