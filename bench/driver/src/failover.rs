//! The failover scenario: two replicas of a peer with leader election reconcile N widgets; the
//! leader is killed with SIGKILL, and right after the kill the driver creates a probe widget
//! and changes the size of an existing one. Measured from outside, from the kill: when the
//! Lease names another holder, and when the successor has completed the probe's reconcile and
//! the resize (status and ConfigMap as the scale scenario checks them).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use bonny::testing::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use crate::{
    BoxError,
    peer::{Peer, Process, Usage, ticks_per_second},
    scenario::{Cluster, is_reconciled},
};

const NAMESPACE: &str = "bench";
const POLL: Duration = Duration::from_millis(50);
const PROBE: &str = "probe";
/// The widget resized after the kill (created with size 1 by the scale scenario's naming).
const RESIZED: &str = "w-00000";

/// A peer and how its standby waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub peer: Peer,
    /// bonny-rs only: `BONNY_WARM_STANDBY=1` (else `0`).
    pub warm: bool,
}

impl Variant {
    pub fn label(self) -> String {
        match (self.peer, self.warm) {
            (Peer::Bonny, false) => "bonny-rs (cold standby)".to_owned(),
            (Peer::Bonny, true) => "bonny-rs (warm standby)".to_owned(),
            (peer, _) => peer.label().to_owned(),
        }
    }
}

/// What one failover cost.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Kill until the Lease names the other replica.
    pub lease_taken: Duration,
    /// Kill until the probe widget (created right after the kill) is reconciled.
    pub probe: Duration,
    /// Kill until the resize of an existing widget is reconciled.
    pub resize: Duration,
    /// RSS of the standby just before the kill.
    pub standby_rss_kib: u64,
    /// RSS of the leader just before the kill.
    pub leader_rss_kib: u64,
    /// Peak RSS of the successor (`VmHWM`) once it has caught up.
    pub successor_peak_kib: u64,
}

/// Runs two replicas of `variant` on a new control plane, reconciles `n` widgets, kills the
/// leader and measures the takeover.
pub async fn run(
    variant: Variant,
    binary: &Path,
    n: usize,
    deadline: Duration,
    concurrency: usize,
    logs: &Path,
) -> Result<Outcome, BoxError> {
    let env = TestEnv::start().await?;
    let cluster = Cluster::prepare(&env).await?;
    let leases: Api<Lease> = Api::namespaced(env.client(), NAMESPACE);
    let ticks = ticks_per_second();
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let mut env_vars: Vec<(&str, &str)> = match variant.peer {
            Peer::Bonny => vec![
                ("BENCH_LEADER_ELECTION", "1"),
                ("BONNY_POD_NAME", name),
                ("BONNY_POD_NAMESPACE", NAMESPACE),
            ],
            Peer::ControllerRuntime => vec![
                ("LEADER_ELECTION", "1"),
                ("LEADER_ELECTION_NAMESPACE", NAMESPACE),
            ],
            Peer::KubeRuntime => return Err("the kube-runtime peer has no leader election".into()),
        };
        // Explicit both ways: warm is bonny-rs's default.
        env_vars.push(("BONNY_WARM_STANDBY", if variant.warm { "1" } else { "0" }));
        let log = logs.join(format!(
            "failover-{}-{}-{name}.log",
            variant.peer.label(),
            if variant.warm { "warm" } else { "cold" }
        ));
        replicas.push(Process::spawn_with(
            binary,
            env.kubeconfig_path(),
            &log,
            &env_vars,
        )?);
    }

    let names: Vec<String> = (0..n).map(|i| format!("w-{i:05}")).collect();
    cluster.create(&names, concurrency).await?;
    cluster
        .wait_until(&mut replicas, deadline, "all widgets reconciled", |s| {
            s.reconciled == n
        })
        .await?;
    cluster.settle(&env, &mut replicas).await?;

    let lease_name = match variant.peer {
        Peer::Bonny => bonny::leader::default_lease_name(NAMESPACE, "bonny-widget"),
        _ => "controller-runtime-widget".to_owned(),
    };
    let holder_before = holder(&leases, &lease_name)
        .await?
        .ok_or("no replica holds the Lease")?;
    let leader = leader_index(variant.peer, &replicas, &holder_before)?;
    let standby = 1 - leader;
    let usage = |p: &Process| Usage::read(p.pid(), ticks).unwrap_or_default();
    let standby_rss_kib = usage(&replicas[standby]).rss_kib;
    let leader_rss_kib = usage(&replicas[leader]).rss_kib;

    let killed = Instant::now();
    replicas[leader].kill()?;
    cluster.create(&[PROBE.to_owned()], 1).await?;
    cluster.ledger.record("PATCH", "widgets", 1);
    cluster
        .widgets
        .patch(
            RESIZED,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "size": 11 } })),
        )
        .await?;

    let until = killed + deadline;
    let (mut lease_taken, mut probe, mut resize) = (None, None, None);
    while lease_taken.is_none() || probe.is_none() || resize.is_none() {
        replicas[standby].check_alive()?;
        if Instant::now() >= until {
            return Err(format!(
                "no takeover within {deadline:?}: lease {lease_taken:?}, probe {probe:?}, resize {resize:?}; {}",
                replicas[standby].log_tail()
            )
            .into());
        }
        if lease_taken.is_none()
            && holder(&leases, &lease_name)
                .await?
                .is_some_and(|h| h != holder_before)
        {
            lease_taken = Some(killed.elapsed());
        }
        if probe.is_none() && reconciled(&cluster, PROBE).await? {
            probe = Some(killed.elapsed());
        }
        if resize.is_none() && reconciled(&cluster, RESIZED).await? {
            resize = Some(killed.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    let successor_peak_kib = usage(&replicas[standby]).hwm_kib;
    Ok(Outcome {
        lease_taken: lease_taken.unwrap_or_default(),
        probe: probe.unwrap_or_default(),
        resize: resize.unwrap_or_default(),
        standby_rss_kib,
        leader_rss_kib,
        successor_peak_kib,
    })
}

async fn holder(leases: &Api<Lease>, name: &str) -> Result<Option<String>, BoxError> {
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|lease| lease.spec?.holder_identity)
        .filter(|holder| !holder.is_empty()))
}

/// Which replica leads: bonny-rs names it in the Lease (`BONNY_POD_NAME`); controller-runtime's
/// identity is its host name and a random UUID, so its log says which one acquired the Lease.
fn leader_index(peer: Peer, replicas: &[Process], holder: &str) -> Result<usize, BoxError> {
    match peer {
        Peer::Bonny => match holder {
            "a" => Ok(0),
            "b" => Ok(1),
            other => Err(format!("the Lease names {other:?}, not a replica").into()),
        },
        _ => {
            let acquired: Vec<usize> = replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.log()
                        .to_ascii_lowercase()
                        .contains("successfully acquired lease")
                })
                .map(|(i, _)| i)
                .collect();
            match acquired.as_slice() {
                [one] => Ok(*one),
                other => Err(format!(
                    "cannot tell the leader: {} replicas logged an acquired lease",
                    other.len()
                )
                .into()),
            }
        }
    }
}

/// The widget `name` is reconciled (one GET of it and one of its ConfigMap).
async fn reconciled(cluster: &Cluster, name: &str) -> Result<bool, BoxError> {
    cluster.ledger.record("GET", "widgets", 1);
    let Some(widget) = cluster.widgets.get_opt(name).await? else {
        return Ok(false);
    };
    cluster.ledger.record("GET", "configmaps", 1);
    let configmaps: BTreeMap<String, _> = cluster
        .configmaps
        .get_opt(&format!("{name}-data"))
        .await?
        .into_iter()
        .map(|cm| (cm.name_any(), cm))
        .collect();
    Ok(is_reconciled(&widget, &configmaps))
}

impl Outcome {
    /// Table cells, in the order of [`HEADER`].
    fn cells(&self) -> Vec<String> {
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        vec![
            format!("{:.2}", self.lease_taken.as_secs_f64()),
            format!("{:.2}", self.probe.as_secs_f64()),
            format!("{:.2}", self.resize.as_secs_f64()),
            mib(self.leader_rss_kib),
            mib(self.standby_rss_kib),
            mib(self.successor_peak_kib),
        ]
    }
}

const HEADER: &[&str] = &[
    "kill → Lease taken s",
    "kill → new widget reconciled s",
    "kill → resize reconciled s",
    "leader RSS MiB",
    "standby RSS MiB",
    "successor peak RSS MiB",
];

/// A Markdown table, one row per variant and kill.
pub fn table(rows: &[(Variant, Result<Outcome, String>)]) -> String {
    let mut text = format!("| peer | {} |\n", HEADER.join(" | "));
    text.push_str(&format!("|---|{}\n", "---:|".repeat(HEADER.len())));
    for (variant, outcome) in rows {
        let cells = match outcome {
            Ok(outcome) => outcome.cells(),
            Err(_) => vec!["failed".to_owned(); HEADER.len()],
        };
        text.push_str(&format!(
            "| {} | {} |\n",
            variant.label(),
            cells.join(" | ")
        ));
    }
    text
}
