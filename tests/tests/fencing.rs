//! The leader fence (issue 11) on a real etcd + kube-apiserver: the generated admission policy
//! applies and admits only the Lease holder's pod, and the proof that a frozen leader lands no
//! write after its successor's first, with the API server's audit log as the witness.
//!
//! Every replica is a `fence-operator` process (tests/src/bin/fence-operator.rs: a controller
//! that writes a ConfigMap on every reconcile, every 200 ms per Widget) with its own pod
//! identity (a pod-bound service account token). Timings as in the report: lease 4 s,
//! renew deadline 3 s, retry period 500 ms.
//!
//! `BONNY_FREEZES` sets the number of freezes per proof (default 3; the proof is 20 or
//! more: `BONNY_FREEZES=24 cargo test -p bonny-e2e --test fencing -- --nocapture`). The tests
//! run one at a time.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, SystemTime},
};

use bonny::{
    Operator,
    leader::FENCE_REFUSAL,
    manifest::{Manifests, Options},
    testing::{AuditRecord, PodIdentity, TestEnv},
};
use bonny_e2e::{
    eventually,
    stored::StoredWrites,
    ticker::{OPERATOR, TickerController},
    widget::{Widget, widget},
    witness::{Event, Witness, monotonic_now},
};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{ConfigMap, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    jiff::Timestamp,
};
use kube::{
    Api, CustomResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::process::{Child, Command};

const NAMESPACE: &str = "fence";
const REPLICAS: [&str; 3] = ["fence-e2e-0", "fence-e2e-1", "fence-e2e-2"];
const WIDGETS: usize = 3;
const LEASE_DURATION: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// From spawning replicas to the first leader's writes.
const STARTUP: Duration = Duration::from_secs(60);
/// How long a probe waits before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// The tests of this file run one at a time: each starts a control plane, and the proof's
/// timings should measure the elector, not a machine busy with another test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn manifests(fence: bool) -> Manifests {
    Operator::builder()
        .name(OPERATOR)
        .controller(TickerController::default())
        .leader_election(true)
        .build()
        .unwrap()
        .manifests(
            &Options::new("unused.invalid/fence-e2e:0")
                .namespace(NAMESPACE)
                .fence(fence),
        )
        .unwrap()
}

/// A control plane with the operator's service account, RBAC and (if `fence`) its fence
/// applied, a pod identity per replica, and the Widgets.
struct Bed {
    // Declared first, dropped first: replicas die before the control plane.
    replicas: BTreeMap<&'static str, Child>,
    env: TestEnv,
    identities: BTreeMap<&'static str, PodIdentity>,
    lease_name: String,
    dir: tempfile::TempDir,
    witness: Witness,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Bed {
    async fn start(fence: bool) -> Bed {
        let serial = SERIAL.lock().await;
        bonny_e2e::init_tracing();
        let env = TestEnv::start().await.unwrap();
        env.install_crd(Widget::crd()).await.unwrap();
        env.create_namespace(NAMESPACE).await.unwrap();
        let manifests = manifests(fence);
        assert_eq!(manifests.fence.is_some(), fence);
        let client = env.client();
        Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &manifests.service_account)
            .await
            .unwrap();
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &manifests.cluster_role)
            .await
            .unwrap();
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(
                &PostParams::default(),
                manifests.cluster_role_binding.as_ref().unwrap(),
            )
            .await
            .unwrap();
        if let Some(fence) = &manifests.fence {
            apply_fence(&env, fence).await;
        }
        let mut identities = BTreeMap::new();
        for replica in REPLICAS {
            let identity = env
                .pod_identity(NAMESPACE, OPERATOR, replica)
                .await
                .unwrap();
            identities.insert(replica, identity);
        }
        let dir = tempfile::Builder::new()
            .prefix("bonny-fencing-")
            .tempdir()
            .unwrap();
        let witness = Witness::new(dir.path().join("witness"));
        Bed {
            replicas: BTreeMap::new(),
            env,
            identities,
            lease_name: bonny::leader::default_lease_name(NAMESPACE, OPERATOR),
            dir,
            witness,
            _serial: serial,
        }
    }

    async fn create_widgets(&self) {
        let widgets: Api<Widget> = Api::namespaced(self.env.client(), NAMESPACE);
        for i in 0..WIDGETS {
            widgets
                .create(&PostParams::default(), &widget(&format!("w{i}"), 1))
                .await
                .unwrap();
        }
    }

    fn spawn_all(&mut self) {
        for name in REPLICAS {
            let log = self.dir.path().join(format!("{name}.log"));
            let stdout = std::fs::File::create(&log).unwrap();
            let stderr = stdout.try_clone().unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_fence-operator"))
                .env("KUBECONFIG", self.identities[name].kubeconfig_path())
                .env("WITNESS_FILE", self.witness.path())
                .env("BONNY_POD_NAME", name)
                .env("BONNY_POD_NAMESPACE", NAMESPACE)
                .env("BONNY_LEASE_DURATION", "4s")
                .env("BONNY_RENEW_DEADLINE", "3s")
                .env("BONNY_RETRY_PERIOD", "500ms")
                .env("RUST_LOG", "info,bonny=debug")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            self.replicas.insert(name, child);
        }
    }

    async fn holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.env.client(), NAMESPACE)
            .get_opt(&self.lease_name)
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec?.holder_identity)
    }

    fn signal(&self, name: &str, signal: rustix::process::Signal) {
        let pid = self.replicas[name].id().unwrap();
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Successful tick writes (the fenced kind) in the audit log.
    fn tick_writes(&self) -> Vec<AuditRecord> {
        self.env
            .audit_log()
            .unwrap()
            .into_iter()
            .filter(is_tick_write)
            .collect()
    }

    /// Each replica's log, for a failing test.
    fn logs(&self) -> String {
        REPLICAS
            .iter()
            .map(|name| {
                let path = self.dir.path().join(format!("{name}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {name} ---\n{}\n", tail.join("\n"))
            })
            .collect()
    }
}

fn is_tick_write(record: &AuditRecord) -> bool {
    record.is_write()
        && record.resource == "configmaps"
        && record.namespace == NAMESPACE
        && record.name.starts_with("tick-")
        && record.pod_name().is_some()
}

async fn apply_fence(env: &TestEnv, fence: &bonny::manifest::Fence) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    Api::<Lease>::namespaced(env.client(), NAMESPACE)
        .create(&PostParams::default(), &fence.lease)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(env.client())
        .create(&PostParams::default(), &fence.policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(env.client())
        .create(&PostParams::default(), &fence.binding)
        .await
        .unwrap();
}

fn now() -> Timestamp {
    Timestamp::try_from(SystemTime::now()).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn is_not_holder(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403 && s.message.contains(FENCE_REFUSAL))
}

async fn set_holder(env: &TestEnv, lease_name: &str, holder: &str) {
    let leases: Api<Lease> = Api::namespaced(env.client(), NAMESPACE);
    let spec = json!({"spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600}});
    leases
        .patch(lease_name, &PatchParams::default(), &Patch::Merge(spec))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_fence_applies_and_admits_only_the_lease_holder() {
    let bed = Bed::start(true).await;
    let env = &bed.env;
    let lease_name = &bed.lease_name;
    let client = |name: &str| {
        let identity = bed.identities[name].clone();
        async move { identity.client().await.unwrap() }
    };
    let first: Api<ConfigMap> = Api::default_namespaced(client(REPLICAS[0]).await);
    let second: Api<ConfigMap> = Api::default_namespaced(client(REPLICAS[1]).await);
    let admin: Api<ConfigMap> = Api::namespaced(env.client(), NAMESPACE);
    // The Lease of the manifests has no holder yet: the operator's writes are refused once
    // the API server has loaded the policy, anyone else's are not.
    eventually(
        "the policy to refuse writes while nobody holds the Lease",
        PATIENCE,
        || async {
            match first
                .create(&PostParams::default(), &config_map("early"))
                .await
            {
                Ok(_) => {
                    // The API server had not loaded the policy yet.
                    admin.delete("early", &Default::default()).await.unwrap();
                    None
                }
                Err(e) if is_not_holder(&e) => Some(()),
                Err(e) => panic!("unexpected error: {e}"),
            }
        },
    )
    .await;
    admin
        .create(&PostParams::default(), &config_map("by-admin"))
        .await
        .unwrap();

    set_holder(env, lease_name, REPLICAS[0]).await;
    // The holder's write lands once the API server sees the Lease; the other's never does.
    eventually("the holder's write to be admitted", PATIENCE, || async {
        first
            .create(&PostParams::default(), &config_map("by-0"))
            .await
            .ok()
    })
    .await;
    let refused = second
        .create(&PostParams::default(), &config_map("by-1"))
        .await
        .unwrap_err();
    assert!(is_not_holder(&refused), "{refused}");
    println!("refusal as the client sees it: {refused}");
    // Subresources are fenced too: the status of a Widget.
    bed.create_widgets().await;
    let widgets: Api<Widget> = Api::default_namespaced(client(REPLICAS[1]).await);
    let refused = widgets
        .patch_status(
            "w0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"size": 1}})),
        )
        .await
        .unwrap_err();
    assert!(is_not_holder(&refused), "{refused}");

    // Hand the Lease over: now the first is refused and the second admitted.
    set_holder(env, lease_name, REPLICAS[1]).await;
    eventually(
        "the new holder's write to be admitted",
        PATIENCE,
        || async {
            second
                .create(&PostParams::default(), &config_map("by-1"))
                .await
                .ok()
        },
    )
    .await;
    let refused = first
        .patch(
            "by-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"late": "yes"}})),
        )
        .await
        .unwrap_err();
    assert!(is_not_holder(&refused), "{refused}");
    let refused = first.delete("by-1", &Default::default()).await.unwrap_err();
    assert!(is_not_holder(&refused), "{refused}");

    // Never fenced: the Lease itself (a standby must be able to take over), and anyone but
    // the operator's service account.
    Api::<Lease>::namespaced(client(REPLICAS[0]).await, NAMESPACE)
        .patch(
            lease_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched-by": "fence-e2e-0"}}})),
        )
        .await
        .unwrap();
    admin
        .patch(
            "by-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"by": "admin"}})),
        )
        .await
        .unwrap();

    // Without the Lease the binding's parameter is missing, and `parameterNotFoundAction:
    // Deny` refuses writes to the fenced kinds by everyone (422): why the manifests carry it.
    Api::<Lease>::namespaced(env.client(), NAMESPACE)
        .delete(lease_name, &Default::default())
        .await
        .unwrap();
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    eventually(
        "writes to be refused for everyone without the Lease",
        PATIENCE,
        || async {
            // A new name each time: the API server may still have seen the Lease.
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("no-lease-{attempt}");
            match admin
                .create(&PostParams::default(), &config_map(&name))
                .await
            {
                Ok(_) => None,
                Err(kube::Error::Api(s))
                    if s.code == 422 && s.message.contains("no params found") =>
                {
                    Some(())
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        },
    )
    .await;

    // The audit log shows both verdicts with the callers' pods.
    let records = eventually("the refused patch in the audit log", PATIENCE, || async {
        let records = env.audit_log().unwrap();
        records
            .iter()
            .any(|r| r.verb == "patch" && r.name == "by-0" && r.code == Some(403))
            .then_some(records)
    })
    .await;
    let refused = records
        .iter()
        .find(|r| r.verb == "patch" && r.name == "by-0" && r.code == Some(403))
        .unwrap();
    assert_eq!(refused.pod_name(), Some(REPLICAS[0]));
    assert!(
        refused
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("{FENCE_REFUSAL} {lease_name}"))),
        "{refused:?}"
    );
    let admitted = records
        .iter()
        .find(|r| r.verb == "create" && r.name == "by-1" && r.code == Some(201))
        .unwrap();
    assert_eq!(admitted.pod_name(), Some(REPLICAS[1]));
    drop(bed);
}

/// What one freeze showed.
struct Freeze {
    leader: String,
    successor: String,
    /// From SIGSTOP to the successor's first landed write.
    takeover: Duration,
    /// Versions stored by anyone but the successor between its first stored version and the
    /// next successor's first (etcd's order): the stale writes that landed.
    stale_stored: usize,
    /// Writes by the frozen leader that reached the API server after the successor's first.
    stale_attempts: usize,
    /// Of those, the ones the API server accepted.
    stale_landed: usize,
    /// The answers to them.
    stale_codes: Vec<u16>,
    /// Answers, completed after the successor's first write, to writes the leader sent before
    /// it was frozen.
    delayed_codes: Vec<u16>,
    /// Writes by the successor the API server refused after the takeover.
    successor_refused: usize,
}

/// A small random source for freeze points; the seed is printed so a run can be repeated.
struct Jitter(u64);

impl Jitter {
    fn below(&mut self, bound: Duration) -> Duration {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        bound.mul_f64((value >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn freezes() -> usize {
    std::env::var("BONNY_FREEZES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

async fn frozen_leader(fence: bool) {
    let mut bed = Bed::start(fence).await;
    let (ticks, tick_watch) = StoredWrites::watch(bed.env.client(), NAMESPACE, "tick-");
    bed.create_widgets().await;
    bed.spawn_all();
    let seed = std::env::var("BONNY_FREEZE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut jitter = Jitter(seed);
    let count = freezes();
    println!(
        "frozen leader: fence {}, {count} freezes, seed {seed}, logs in {}",
        if fence { "on" } else { "off" },
        bed.dir.path().display()
    );
    let mut since = now();
    let mut windows = Vec::new();
    for round in 0..count {
        // The leader, writing.
        let leader = eventually("a leader that writes", STARTUP, || async {
            let holder = bed.holder().await?;
            bed.tick_writes()
                .iter()
                .any(|r| {
                    r.succeeded() && r.pod_name() == Some(&holder) && r.request_received > since
                })
                .then_some(holder)
        })
        .await;
        let leader: &'static str = REPLICAS.iter().find(|r| **r == leader).unwrap();
        // A random point of its renewal cycle (fault injection, not synchronisation).
        tokio::time::sleep(jitter.below(RETRY_PERIOD)).await;
        let stopped = now();
        let seen_at_stop = ticks.snapshot().len();
        bed.signal(leader, rustix::process::Signal::STOP);
        // Frozen until a successor writes: at least a lease duration.
        let (successor, first) = eventually("a successor's first write", PATIENCE, || async {
            bed.tick_writes()
                .into_iter()
                .filter(|r| {
                    r.succeeded() && r.pod_name() != Some(leader) && r.request_received > stopped
                })
                .min_by_key(|r| r.completed)
                .map(|r| (r.pod_name().unwrap().to_owned(), r.completed))
        })
        .await;
        let resumed_at = monotonic_now();
        bed.signal(leader, rustix::process::Signal::CONT);
        // The resumed leader notices and stops its controllers.
        eventually(
            "the resumed leader to stop its controllers",
            PATIENCE,
            || async {
                bed.witness
                    .records()
                    .unwrap()
                    .iter()
                    .any(|r| r.identity == leader && r.event == Event::Stop && r.at > resumed_at)
                    .then_some(())
            },
        )
        .await;
        println!(
            "freeze {}: {leader} stopped at {stopped}, {successor} wrote at {first}",
            round + 1
        );
        windows.push((leader, successor, stopped, first, seen_at_stop));
        since = now();
    }
    // The last window closes once the successor wrote again after the last stop.
    let end = now();
    eventually("a write after the last freeze", PATIENCE, || async {
        bed.tick_writes()
            .iter()
            .any(|r| r.succeeded() && r.request_received > end)
            .then_some(())
    })
    .await;

    let records: Vec<AuditRecord> = bed
        .env
        .audit_log()
        .unwrap()
        .into_iter()
        .filter(is_tick_write)
        .collect();
    let mut results = Vec::new();
    let history = ticks.snapshot();
    tick_watch.abort();
    // Where each successor's tenure begins in the stored history: its first version after the
    // leader was stopped.
    let starts: Vec<usize> = windows
        .iter()
        .map(|(_, successor, _, _, seen)| {
            history
                .iter()
                .skip(*seen)
                .position(|write| write.by == *successor)
                .map(|p| p + seen)
                .unwrap_or_else(|| panic!("no stored tick by {successor} after its takeover"))
        })
        .collect();
    for (i, (leader, successor, stopped, first, _)) in windows.iter().enumerate() {
        let tenure = &history[starts[i]..starts.get(i + 1).copied().unwrap_or(history.len())];
        let stale_stored = tenure.iter().filter(|write| write.by != *successor).count();
        let window_end = windows.get(i + 1).map(|w| w.2);
        let in_window = |r: &&AuditRecord| {
            r.completed > *first && window_end.is_none_or(|end| r.request_received < end)
        };
        let late: Vec<&AuditRecord> = records
            .iter()
            .filter(in_window)
            .filter(|r| r.pod_name() == Some(leader))
            .collect();
        // Sent after the resume (a frozen process sends nothing, so: received after the
        // SIGSTOP). A write received before the freeze whose answer completed late (the
        // frozen client did not read it) was stored while this replica still led.
        let (stale, delayed): (Vec<&AuditRecord>, Vec<&AuditRecord>) = late
            .into_iter()
            .partition(|r| r.request_received > *stopped);
        let successor_refused = records
            .iter()
            .filter(|r| {
                r.completed > *stopped && window_end.is_none_or(|end| r.request_received < end)
            })
            .filter(|r| r.pod_name() == Some(successor.as_str()) && !r.succeeded())
            .count();
        let takeover = first.duration_since(*stopped);
        results.push(Freeze {
            leader: (*leader).to_owned(),
            successor: successor.clone(),
            takeover: Duration::try_from(takeover).unwrap_or_default(),
            stale_stored,
            stale_attempts: stale.len(),
            stale_landed: stale.iter().filter(|r| r.succeeded()).count(),
            stale_codes: stale.iter().map(|r| r.code.unwrap_or_default()).collect(),
            delayed_codes: delayed.iter().map(|r| r.code.unwrap_or_default()).collect(),
            successor_refused,
        });
    }
    for (i, f) in results.iter().enumerate() {
        println!(
            "freeze {}: {} -> {} in {:?}; stale versions stored {}; stale writes reaching the API server {} (codes \
             {:?}), landed {}; answers to writes sent before the freeze completed late: \
             {:?}; successor writes refused {}",
            i + 1,
            f.leader,
            f.successor,
            f.takeover,
            f.stale_stored,
            f.stale_attempts,
            f.stale_codes,
            f.stale_landed,
            f.delayed_codes,
            f.successor_refused
        );
        // Frozen at least until the lease ran out: the successor could not write earlier.
        assert!(
            f.takeover >= LEASE_DURATION - RETRY_PERIOD,
            "freeze {}: takeover after {:?}, under a lease duration",
            i + 1,
            f.takeover
        );
    }
    let mut takeovers: Vec<Duration> = results.iter().map(|f| f.takeover).collect();
    takeovers.sort();
    let landed: usize = results.iter().map(|f| f.stale_landed).sum();
    let stored: usize = results.iter().map(|f| f.stale_stored).sum();
    let with_stored = results.iter().filter(|f| f.stale_stored > 0).count();
    let attempts: usize = results.iter().map(|f| f.stale_attempts).sum();
    let with_landed = results.iter().filter(|f| f.stale_landed > 0).count();
    let refused: usize = results.iter().map(|f| f.successor_refused).sum();
    println!(
        "FROZEN LEADER fence={} freezes={count}: stale versions stored {stored} (in {with_stored} \
         freezes; etcd order), stale writes answered 2xx {landed} (in {with_landed} freezes), reached the API server {attempts}; successor writes refused {refused}; \
         takeover min {:?} median {:?} max {:?}",
        if fence { "on" } else { "off" },
        takeovers.first().unwrap(),
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap(),
    );
    assert_eq!(
        (stored, landed),
        (0, 0),
        "a frozen leader landed writes after its successor's first: (stored, answered 2xx) \
         in {with_stored}/{with_landed} of {count} freezes\n{}",
        bed.logs()
    );
}

#[tokio::test]
async fn a_frozen_leader_lands_no_write_after_its_successor_with_the_guard_alone() {
    frozen_leader(false).await;
}

#[tokio::test]
async fn a_frozen_leader_lands_no_write_after_its_successor_with_guard_and_fence() {
    frozen_leader(true).await;
}

#[test]
fn without_leader_election_or_with_fence_off_there_is_no_fence() {
    assert!(manifests(false).fence.is_none());
    let single = Operator::builder()
        .name(OPERATOR)
        .controller(TickerController::default())
        .build()
        .unwrap()
        .manifests(&Options::new("unused.invalid/x:0"))
        .unwrap();
    assert!(single.fence.is_none());
    let fence = manifests(true).fence.unwrap();
    assert_eq!(
        fence.binding.spec.param_ref.unwrap().name.as_deref(),
        Some(bonny::leader::default_lease_name(NAMESPACE, OPERATOR).as_str())
    );
}

/// The startup check, against the real API server's account of each client: a pod's token
/// under its own pod name passes; under another name, and as a service account without a
/// pod, it names the problem and the fix; the admin is not fenced at all.
#[tokio::test]
async fn the_identity_check_names_a_replica_the_fence_would_refuse() {
    use bonny::leader::{IdentityCheck, check_identity};
    let env = TestEnv::start().await.unwrap();
    env.create_namespace(NAMESPACE).await.unwrap();
    let pod = env
        .pod_identity(NAMESPACE, OPERATOR, REPLICAS[0])
        .await
        .unwrap();
    let client = pod.client().await.unwrap();
    assert_eq!(
        check_identity(&client, REPLICAS[0]).await.unwrap(),
        IdentityCheck::Bound
    );
    let other = check_identity(&client, "not-the-pod").await.unwrap();
    assert_eq!(
        other,
        IdentityCheck::OtherPod {
            pod: REPLICAS[0].to_owned()
        }
    );
    let problem = other.problem("not-the-pod").unwrap();
    assert!(
        problem.contains(REPLICAS[0]) && problem.contains("fence(false)"),
        "{problem}"
    );
    assert_eq!(
        check_identity(&env.client(), REPLICAS[0]).await.unwrap(),
        IdentityCheck::NotFenced
    );
}
