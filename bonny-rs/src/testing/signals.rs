//! Removing the directories of live environments when the process is stopped by SIGINT or
//! SIGTERM (Ctrl-C on `cargo test`, a CI timeout), where no destructor runs.
//!
//! The first environment that asks installs one listener thread. On a signal it removes every
//! registered directory, then lets the signal do what it would have done without the listener:
//! the process ends, and the control plane processes die with it (their parent-death signal).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

static LIVE: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory to remove on SIGINT/SIGTERM while this lives.
#[derive(Debug)]
pub(crate) struct Registration(u64);

/// Registers `dir`; installs the listener the first time.
pub(crate) fn remove_on_signal(dir: &Path) -> Registration {
    listen();
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    live().insert(id, dir.to_path_buf());
    Registration(id)
}

impl Drop for Registration {
    fn drop(&mut self) {
        live().remove(&self.0);
    }
}

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn listen() {
    static LISTENING: OnceLock<()> = OnceLock::new();
    LISTENING.get_or_init(|| {
        let mut signals = match Signals::new([SIGINT, SIGTERM]) {
            Ok(signals) => signals,
            Err(e) => {
                tracing::warn!("cannot listen for SIGINT/SIGTERM: {e}; a TestEnv stopped by one leaves its directory behind");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("bonny-testing-signals".to_owned())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    remove_all();
                    if let Err(e) = signal_hook::low_level::emulate_default_handler(signal) {
                        tracing::warn!("cannot re-raise signal {signal}: {e}");
                        std::process::exit(128 + signal);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the signal listener: {e}");
        }
    });
}

fn remove_all() {
    let dirs: Vec<PathBuf> = std::mem::take(&mut *live()).into_values().collect();
    for dir in dirs {
        // A process still writing may add a file between the listing and the removal.
        for _ in 0..5 {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => continue,
                _ => break,
            }
        }
    }
}
