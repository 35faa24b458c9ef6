//! One operator replica for the leader-election proof: the Widget controller behind
//! `.leader_election(true)`, witnessing its controller-running intervals.
//!
//! Environment:
//! - `WITNESS_FILE` (required): where `<identity> start|stop <CLOCK_MONOTONIC ns>` lines are
//!   appended, see [`bonny_e2e::witness`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease and in the witness;
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

use bonny::{Operator, operator::ControllersEvent};
use bonny_e2e::{
    widget::WidgetController,
    witness::{Appender, Event, Witness},
};

/// In-flight reconciles get this long after a stop; Widget reconciles take milliseconds.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    bonny::observe::init_logging();
    // Die with the test that started us, even if it is killed before it can kill us.
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("le-operator: warning: cannot set the parent-death signal: {error}");
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("le-operator: error: {message}");
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
                    format!("set {var}: see the header of tests/src/bin/le-operator.rs"),
                )
            })
    };
    let witness = Witness::new(required("WITNESS_FILE")?);
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
    let observer = Observer {
        identity: identity.clone(),
        appender: Arc::new(Mutex::new(appender)),
    };
    tracing::info!(%identity, witness = %witness.path().display(), "le-operator starting");
    Operator::builder()
        .name("le-e2e")
        .controller(WidgetController::default())
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| observer.record(event))
        .run()
        .await
        .map_err(|error| (1, error.to_string()))
}

struct Observer {
    identity: String,
    appender: Arc<Mutex<Appender>>,
}

impl Observer {
    fn record(&self, event: ControllersEvent) {
        let event = match event {
            ControllersEvent::Starting => Event::Start,
            ControllersEvent::Stopped => Event::Stop,
        };
        let written = match self.appender.lock() {
            Ok(mut appender) => appender.append(&self.identity, event),
            Err(poisoned) => poisoned.into_inner().append(&self.identity, event),
        };
        if let Err(error) = written {
            eprintln!("le-operator: error: cannot write {event:?} to the witness: {error}");
            std::process::exit(2);
        }
    }
}
