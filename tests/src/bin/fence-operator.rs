//! One operator replica for the fencing proof: [`TickerController`] (a write on every
//! reconcile) behind `.leader_election(true)`, witnessing its controller-running intervals.
//!
//! Environment:
//! - `WITNESS_FILE` (required): where `<identity> start|stop <CLOCK_MONOTONIC ns>` lines are
//!   appended, see [`bonny_e2e::witness`];
//! - `BONNY_POD_NAME` (required): the identity, in the Lease, in the ticks and in the
//!   witness; with the fence it must be the name of the pod the token is bound to;
//! - `KUBECONFIG`, `BONNY_POD_NAMESPACE`, `BONNY_LEASE_DURATION`, `BONNY_RENEW_DEADLINE`,
//!   `BONNY_RETRY_PERIOD`, `RUST_LOG`: as for any bonny-rs operator.
//!
//! Exits 0 after a graceful stop (SIGTERM), 1 when the operator fails, 2 when the witness
//! cannot be written.
//!
//! [`TickerController`]: bonny_e2e::ticker::TickerController

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{Operator, operator::ControllersEvent};
use bonny_e2e::{
    ticker::{OPERATOR, TickerController},
    witness::{Event, Witness},
};

/// In-flight reconciles get this long after a stop, as in the report.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    bonny::operator::init_logging();
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("fence-operator: warning: cannot set the parent-death signal: {error}");
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("fence-operator: error: {message}");
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
                    format!("set {var}: see the header of tests/src/bin/fence-operator.rs"),
                )
            })
    };
    let witness = Witness::new(required("WITNESS_FILE")?);
    let identity = required("BONNY_POD_NAME")?;
    let appender = Arc::new(Mutex::new(witness.open().map_err(|error| {
        (
            2,
            format!(
                "cannot open the witness {}: {error}",
                witness.path().display()
            ),
        )
    })?));
    let who = identity.clone();
    Operator::builder()
        .name(OPERATOR)
        .controller(TickerController::new(&identity))
        .leader_election(true)
        .without_http()
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .on_controllers(move |event| {
            let event = match event {
                ControllersEvent::Starting => Event::Start,
                ControllersEvent::Stopped => Event::Stop,
            };
            let written = match appender.lock() {
                Ok(mut appender) => appender.append(&who, event),
                Err(poisoned) => poisoned.into_inner().append(&who, event),
            };
            if let Err(error) = written {
                eprintln!("fence-operator: error: cannot write {event:?} to the witness: {error}");
                std::process::exit(2);
            }
        })
        .run()
        .await
        .map_err(|error| (1, error.to_string()))
}
