//! The startup every e2e replica binary shares (`tests/src/bin/*-operator.rs`): logging, dying
//! with the test that spawned it, required environment, the witness of its controller-running
//! intervals, and the exit codes the tests read.
//!
//! Exit codes: 0 after a graceful stop (SIGTERM), 1 when the operator fails or the environment
//! is incomplete, 2 when the witness cannot be written (the proof would be void).

use std::{
    future::Future,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use bonny::operator::ControllersEvent;

use crate::witness::{Appender, Event, Witness};

/// Why a replica stops: the exit code and the message printed to stderr.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The operator failed (exit code 1).
    pub fn operator(error: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: error.to_string(),
        }
    }
}

/// Runs a replica binary named `bin`: logging on, the parent-death signal set, then `run`,
/// whose failure is printed as `<bin>: error: ...` and becomes the exit code.
pub fn main(bin: &str, run: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    bonny::operator::init_logging();
    // Die with the test that started us, even if it is killed before it can kill us.
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("{bin}: warning: cannot set the parent-death signal: {error}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{bin}: error: cannot start the tokio runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("{bin}: error: {message}");
            ExitCode::from(code)
        }
    }
}

/// The value of `var`, which `bin` cannot run without.
pub fn required(bin: &str, var: &str) -> Result<String, Failure> {
    std::env::var(var)
        .ok()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Failure {
            code: 1,
            message: format!("set {var}: see the header of tests/src/bin/{bin}.rs"),
        })
}

/// Records this replica's controller-running intervals in the witness named by `WITNESS_FILE`.
#[derive(Clone)]
pub struct Recorder {
    bin: String,
    identity: String,
    appender: Arc<Mutex<Appender>>,
}

impl Recorder {
    /// Opens the witness named by `WITNESS_FILE` for `identity`.
    pub fn open(bin: &str, identity: &str) -> Result<Self, Failure> {
        let witness = Witness::new(required(bin, "WITNESS_FILE")?);
        let appender = witness.open().map_err(|error| Failure {
            code: 2,
            message: format!(
                "cannot open the witness {}: {error}",
                witness.path().display()
            ),
        })?;
        Ok(Self {
            bin: bin.to_owned(),
            identity: identity.to_owned(),
            appender: Arc::new(Mutex::new(appender)),
        })
    }

    /// Appends the start or stop; exits with code 2 when the line cannot be written.
    pub fn record(&self, event: ControllersEvent) {
        let event = match event {
            ControllersEvent::Starting => Event::Start,
            ControllersEvent::Stopped => Event::Stop,
        };
        let written = match self.appender.lock() {
            Ok(mut appender) => appender.append(&self.identity, event),
            Err(poisoned) => poisoned.into_inner().append(&self.identity, event),
        };
        if let Err(error) = written {
            eprintln!(
                "{}: error: cannot write {event:?} to the witness: {error}",
                self.bin
            );
            std::process::exit(2);
        }
    }
}
