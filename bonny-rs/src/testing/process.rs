//! One control plane child process: spawned with its output in a log file, killed and reaped
//! on drop.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use super::Error;

/// How many log lines an error quotes.
const TAIL_LINES: usize = 30;

pub(crate) struct Process {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `program args..` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[OsString],
        log: PathBuf,
    ) -> Result<Process, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io(format!("create the log file {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("reopen the log file {}", log.display()), e))?;

        let mut command = match setpriv() {
            // Children die with the test process even when it is killed or exits without
            // running destructors (statics): `setpriv` sets PR_SET_PDEATHSIG and execs.
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);

        let child = spawn_from_long_lived_thread(command)
            .map_err(|e| Error::io(format!("start {name} ({})", program.display()), e))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Process {
            name,
            child: Some(child),
            log,
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has already exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An error for a failed start, quoting the end of the log.
    pub(crate) fn startup_error(&self, reason: impl Into<String>) -> Error {
        Error::Startup {
            component: self.name,
            reason: reason.into(),
            log: self.log.clone(),
            tail: tail(&self.log, TAIL_LINES),
        }
    }

    /// Kills the process (SIGKILL) and reaps it. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if let Err(e) = child.kill() {
                tracing::debug!(name = self.name, pid, "kill: {e}");
            }
            match child.wait() {
                Ok(status) => tracing::debug!(name = self.name, pid, %status, "stopped"),
                Err(e) => tracing::warn!(name = self.name, pid, "could not reap: {e}"),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (at most its last 64 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(MAX))).is_err() {
        return String::from("(unreadable log)");
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::from("(unreadable log)");
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            if !cfg!(target_os = "linux") {
                return None;
            }
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|candidate| candidate.is_file())
        })
        .as_deref()
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawns from one thread that lives as long as the process: PR_SET_PDEATHSIG fires when the
/// spawning *thread* exits, and test threads exit after each test even when a shared
/// environment lives on.
fn spawn_from_long_lived_thread(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("bonny-testing-spawner".to_owned())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        return command.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: SpawnJob = Box::new(move || {
        // The caller blocks on the receiver below, so it is still there.
        let _ = reply_tx.send(command.spawn());
    });
    if let Err(mpsc::SendError(job)) = spawner.send(job) {
        job();
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}
