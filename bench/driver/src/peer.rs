//! The peers: building them, running one as a child process, and reading its memory and CPU
//! time from `/proc`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::BoxError;

/// One implementation of the Widget controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// bonny-rs (`bench/bonny-widget`, reusing `bonny_e2e::widget`).
    Bonny,
    /// Plain kube-runtime (`bench/peers/kube-runtime-widget`).
    KubeRuntime,
    /// Go's controller-runtime (`bench/peers/controller-runtime-widget`).
    ControllerRuntime,
}

impl Peer {
    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Bonny => "bonny-rs",
            Peer::KubeRuntime => "kube-runtime",
            Peer::ControllerRuntime => "controller-runtime",
        }
    }

    /// Builds the peer (release mode; instant when up to date) and returns its binary.
    pub fn build(self, bench: &Path, target: &Path) -> Result<PathBuf, BoxError> {
        let (dir, binary) = match self {
            Peer::Bonny => ("bonny-widget", "bonny-widget"),
            Peer::KubeRuntime => ("peers/kube-runtime-widget", "kube-runtime-widget"),
            Peer::ControllerRuntime => {
                let out = target.join("go").join("controller-runtime-widget");
                run(Command::new("go")
                    .args(["build", "-trimpath", "-o"])
                    .arg(&out)
                    .arg(".")
                    .env("CGO_ENABLED", "0")
                    .current_dir(bench.join("peers/controller-runtime-widget")))?;
                return Ok(out);
            }
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        without_cargo_run_env(&mut command);
        run(command
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(bench.join(dir).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target))?;
        Ok(target.join("release").join(binary))
    }
}

/// Removes what `cargo run` put in the driver's environment (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, ...). Build scripts such as ring's rerun when those change, so a peer
/// built with them would rebuild ring and everything above it in the shared target directory,
/// and the next `cargo run` of the driver would rebuild it all again.
fn without_cargo_run_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_TARGET_DIR");
        if !keep && (key.starts_with("CARGO_") || key == "OUT_DIR") {
            command.env_remove(key);
        }
    }
}

fn run(command: &mut Command) -> Result<(), BoxError> {
    let status = command.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}").into())
    }
}

/// A running peer; killed and reaped on drop.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` against the API server of `kubeconfig`, its output going to `log`.
    /// Call it from the main thread: with `setpriv` on the PATH the peer gets a parent-death
    /// signal, which fires when the spawning thread ends.
    pub fn spawn(binary: &Path, kubeconfig: &Path, log: &Path) -> Result<Process, BoxError> {
        Process::spawn_with(binary, kubeconfig, log, &[])
    }

    /// [`Process::spawn`] with more environment variables.
    pub fn spawn_with(
        binary: &Path,
        kubeconfig: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Process, BoxError> {
        let output = File::create(log)?;
        // A preloaded profiler follows only the first program it starts in, so a profiled
        // peer is started directly.
        let profiled = std::env::var_os("BENCH_PEER_ENV").is_some();
        let mut command = if which("setpriv") && !profiled {
            let mut command = Command::new("setpriv");
            command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        let child = command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .envs(profiling_env())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), BoxError> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("the peer exited ({status}); {}", self.log_tail()).into()),
        }
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("last lines of its output:\n{tail}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub hwm_kib: u64,
    /// `utime + stime`.
    pub cpu: Duration,
}

impl Usage {
    /// Reads the usage of `pid`; `None` once it is gone.
    pub fn read(pid: u32, ticks_per_second: u64) -> Option<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold spaces: count fields after it.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), i.e. the 12th and 13th after the name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let ticks = utime + stime;
        Some(Usage {
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
            cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64),
        })
    }
}

/// The whole machine's CPU time from `/proc/stat`: busy and idle, every core summed.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Ticks spent on anything but idle and iowait.
    pub busy: u64,
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
}

impl MachineCpu {
    /// Reads `/proc/stat`; zeros where it cannot be read.
    pub fn read() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|t| t.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is counted in user).
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let idle = at(3) + at(4);
        let busy = (0..8).filter(|i| !matches!(i, 3 | 4)).map(at).sum();
        MachineCpu { busy, idle }
    }

    /// The share of the machine that was idle from `earlier` to `self`, 0 to 1.
    pub fn idle_since(&self, earlier: &MachineCpu) -> f64 {
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        if idle + busy > 0.0 {
            idle / (idle + busy)
        } else {
            0.0
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, else 100).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Samples a process's usage every 100 ms in the background, keeping the latest and the
/// largest RSS seen.
pub struct Sampler {
    latest: Arc<Mutex<Usage>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        let latest = Arc::new(Mutex::new(Usage::default()));
        let shared = latest.clone();
        let ticks = ticks_per_second();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                interval.tick().await;
                let Some(usage) = Usage::read(pid, ticks) else {
                    break;
                };
                if let Ok(mut latest) = shared.lock() {
                    let hwm = latest.hwm_kib.max(usage.hwm_kib).max(usage.rss_kib);
                    *latest = Usage {
                        hwm_kib: hwm,
                        ..usage
                    };
                }
            }
        });
        Sampler { latest, task }
    }

    /// The latest sample (its `hwm_kib` is the largest peak seen).
    pub fn latest(&self) -> Usage {
        self.latest.lock().map(|u| *u).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Extra environment for every peer process, from `BENCH_PEER_ENV` (`K=V;K2=V2`): how a heap
/// profiler is preloaded into the peers only (see `bench/profile/README.md`), not into the
/// driver or the control plane.
fn profiling_env() -> Vec<(String, String)> {
    std::env::var("BENCH_PEER_ENV")
        .unwrap_or_default()
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_share_is_the_idle_ticks_over_all_ticks_between_two_reads() {
        let earlier = MachineCpu {
            busy: 1_000,
            idle: 500,
        };
        let later = MachineCpu {
            busy: 1_300,
            idle: 600,
        };
        assert!((later.idle_since(&earlier) - 0.25).abs() < 1e-9);
        // No time passed: nothing to divide by.
        assert_eq!(earlier.idle_since(&earlier), 0.0);
    }

    #[test]
    fn this_machine_has_counted_some_cpu_time() {
        let now = MachineCpu::read();
        assert!(now.busy > 0 && now.idle > 0, "{now:?}");
    }
}
