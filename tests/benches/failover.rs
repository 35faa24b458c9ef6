//! Failover times of leader election on a real control plane: three `le-operator` replicas
//! (lease 3 s, renew deadline 2 s, retry period 500 ms); the leader is killed with SIGKILL 20
//! times, then stopped with SIGTERM 20 times, and restarted after each takeover. A failover
//! time runs from the signal to the new leader's witnessed controller start, both on
//! `CLOCK_MONOTONIC`. Each leader runs for 1 to 1.5 s before it is stopped, so the signal
//! lands at a random point of its 500 ms renewal cycle.
//!
//! `cargo bench -p bonny-e2e --bench failover` prints the figures (about three minutes); it
//! asserts nothing about them. The correctness proof is `tests/leader_election.rs`.

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::Duration,
};

use bonny::testing::TestEnv;
use bonny_e2e::{
    widget::Widget,
    witness::{self, Event, Witness, monotonic_now},
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, CustomResourceExt};
use tokio::process::{Child, Command};

const ROUNDS: usize = 20;
const TIMINGS: [(&str, &str); 3] = [
    ("BONNY_LEASE_DURATION", "3s"),
    ("BONNY_RENEW_DEADLINE", "2s"),
    ("BONNY_RETRY_PERIOD", "500ms"),
];
const REPLICAS: [&str; 3] = ["le-a", "le-b", "le-c"];
const NAMESPACE: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Term,
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("failover bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("failover bench: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), String> {
    let env = TestEnv::start().await.map_err(|e| e.to_string())?;
    env.install_crd(Widget::crd())
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("bonny-failover-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let result = measure(&env, dir.path()).await;
    if result.is_err() {
        eprintln!(
            "failover bench: replica logs kept in {}",
            dir.keep().display()
        );
    }
    result
}

async fn measure(env: &TestEnv, dir: &Path) -> Result<(), String> {
    let mut cluster = Cluster {
        kubeconfig: env.kubeconfig_path().to_path_buf(),
        dir: dir.to_path_buf(),
        witness: Witness::new(dir.join("witness")),
        leases: Api::namespaced(env.client(), NAMESPACE),
        lease_name: bonny::leader::default_lease_name(NAMESPACE, "le-e2e"),
        replicas: Vec::new(),
        spawned: 0,
    };
    for name in REPLICAS {
        cluster.spawn(name)?;
    }
    let timings: Vec<String> = TIMINGS.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "failover bench: 3 replicas, {}, {ROUNDS} rounds each",
        timings.join(" ")
    );
    let kills = cluster.rounds(Stop::Kill).await?;
    let terms = cluster.rounds(Stop::Term).await?;
    let intervals = cluster.witness.intervals()?;
    let overlaps = witness::overlaps(&intervals, monotonic_now());
    println!();
    summary("SIGKILL of the leader -> new leader starts", &kills);
    summary("SIGTERM of the leader -> new leader starts", &terms);
    println!(
        "witness: {} intervals, {} overlaps",
        intervals.len(),
        overlaps.len()
    );
    for overlap in overlaps {
        println!("  {overlap}");
    }
    Ok(())
}

fn summary(what: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let secs = |d: Option<&Duration>| d.map_or(f64::NAN, Duration::as_secs_f64);
    println!(
        "{what}: min {:.3}s, median {:.3}s, max {:.3}s ({} rounds)",
        secs(sorted.first()),
        secs(sorted.get(sorted.len() / 2)),
        secs(sorted.last()),
        sorted.len()
    );
}

struct Replica {
    name: String,
    child: Child,
    log: PathBuf,
}

struct Cluster {
    kubeconfig: PathBuf,
    dir: PathBuf,
    witness: Witness,
    leases: Api<Lease>,
    lease_name: String,
    replicas: Vec<Replica>,
    spawned: usize,
}

impl Cluster {
    fn spawn(&mut self, name: &str) -> Result<(), String> {
        self.spawned += 1;
        let log = self.dir.join(format!("{}-{name}.log", self.spawned));
        let stdout = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let stderr = stdout.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_le-operator"))
            .envs(TIMINGS)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("WITNESS_FILE", self.witness.path())
            .env("BONNY_POD_NAME", name)
            .env("BONNY_POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "info,bonny=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start le-operator: {e}"))?;
        self.replicas.push(Replica {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    async fn rounds(&mut self, stop: Stop) -> Result<Vec<Duration>, String> {
        let mut times = Vec::with_capacity(ROUNDS);
        for round in 1..=ROUNDS {
            let leader = self.leader().await?;
            for replica in self.replicas.iter().filter(|r| r.name != leader) {
                standing_by(&replica.log, &leader).await?;
            }
            // Let the leader renew a few times, and kill it at a random point of its
            // renewal cycle: right after its takeover it would always be the worst case.
            tokio::time::sleep(Duration::from_secs(1) + renewal_phase()).await;
            let index = self
                .replicas
                .iter()
                .position(|r| r.name == leader)
                .ok_or_else(|| format!("the Lease names {leader}, not a replica"))?;
            let mut replica = self.replicas.remove(index);
            let at = monotonic_now();
            match stop {
                Stop::Kill => {
                    replica.child.start_kill().map_err(|e| e.to_string())?;
                    replica.child.wait().await.map_err(|e| e.to_string())?;
                    self.witness
                        .append(&leader, Event::Kill)
                        .map_err(|e| e.to_string())?;
                }
                Stop::Term => {
                    let pid = replica
                        .child
                        .id()
                        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
                        .ok_or("the leader has no pid")?;
                    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                        .map_err(|e| e.to_string())?;
                    tokio::time::timeout(WAIT, replica.child.wait())
                        .await
                        .map_err(|_| format!("{leader} ignored SIGTERM"))?
                        .map_err(|e| e.to_string())?;
                }
            }
            let next = poll("a new leader to start", || {
                let records = self.witness.records().ok()?;
                witness::first_start_after(&records, at, Some(&leader)).cloned()
            })
            .await?;
            let took = next.at.saturating_sub(at);
            println!(
                "{} round {round:>2}: {leader} -> {} in {:.3}s",
                match stop {
                    Stop::Kill => "SIGKILL",
                    Stop::Term => "SIGTERM",
                },
                next.identity,
                took.as_secs_f64()
            );
            times.push(took);
            self.spawn(&leader)?;
        }
        Ok(times)
    }

    /// The Lease holder, once the witness shows it running alone.
    async fn leader(&self) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let holder = self
                .leases
                .get_opt(&self.lease_name)
                .await
                .ok()
                .flatten()
                .and_then(|lease| lease.spec?.holder_identity)
                .filter(|holder| !holder.is_empty());
            let intervals = self.witness.intervals()?;
            if let Some(holder) = holder
                && witness::running(&intervals) == [holder.as_str()]
            {
                return Ok(holder);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no leader within {WAIT:?}; logs in {}",
                    self.dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A random offset within one retry period (500 ms), from std's randomly keyed hasher.
fn renewal_phase() -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(monotonic_now());
    Duration::from_nanos(random % 500_000_000)
}

/// Waits until the replica logging to `log` has read the Lease and stands by behind `holder`.
async fn standing_by(log: &Path, holder: &str) -> Result<(), String> {
    let wanted = format!("holder={holder}");
    poll(&format!("{} to stand by", log.display()), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .rev()
            .find(|line| line.contains("new leader observed"))
            .filter(|line| line.split_whitespace().any(|word| word == wanted))
            .map(|_| ())
    })
    .await
}

async fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {WAIT:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
