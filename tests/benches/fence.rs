//! What fencing costs a write, side by side in one run:
//!
//! 1. the client guard alone: the same PATCH through a plain and a guarded [`kube::Client`]
//!    over a stand-in service that answers at once (no network), so the difference is the
//!    guard's own work per write;
//! 2. the API server: PATCHes of a ConfigMap by the Lease holder's pod, plain and guarded,
//!    first without the fence's admission policy, then with it, then without it again (to see
//!    drift), timed at the client and by the API server's own
//!    `apiserver_request_duration_seconds` (mean, and the bucket bounds of median and p99).
//!
//! `cargo bench -p bonny-e2e --bench fence` (about a minute); `BONNY_BENCH_WRITES` sets the
//! writes per API server series (default 400). It asserts nothing about the figures.

use std::{
    fmt::Display,
    process::ExitCode,
    time::{Duration, Instant},
};

use bonny::{
    Operator,
    leader::{Closing, Defaults, Elector, Gate, LeaderElection, WriteGuard},
    manifest::Options,
    testing::{PodIdentity, TestEnv},
};
use bonny_e2e::{eventually, ticker::TickerController};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    coordination::v1::Lease,
    core::v1::{ConfigMap, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "bench";
const OPERATOR: &str = bonny_e2e::ticker::OPERATOR;
const HOLDER: &str = "fence-bench-0";
const OTHER: &str = "fence-bench-1";
/// Writes through the stand-in service, per client.
const LOCAL_WRITES: usize = 20_000;
const WAIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fence bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fence bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn text(e: impl Display) -> String {
    e.to_string()
}

/// Controllers are not needed: the bench writes itself while the elector leads.
struct NoControllers;

impl Gate for NoControllers {
    async fn open(&mut self) {}
    async fn close(&mut self, _how: Closing) {}
}

async fn bench() -> Result<(), String> {
    let writes: usize = std::env::var("BONNY_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let env = TestEnv::start().await.map_err(text)?;
    env.create_namespace(NAMESPACE).await.map_err(text)?;
    let manifests = Operator::builder()
        .name(OPERATOR)
        .controller(TickerController::default())
        .leader_election(true)
        .build()
        .map_err(text)?
        .manifests(&Options::new("unused.invalid/fence-bench:0").namespace(NAMESPACE))
        .map_err(text)?;
    let fence = manifests
        .fence
        .clone()
        .ok_or("the manifests have no fence")?;
    let admin = env.client();
    Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &manifests.service_account)
        .await
        .map_err(text)?;
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &manifests.cluster_role)
        .await
        .map_err(text)?;
    let binding = manifests
        .cluster_role_binding
        .as_ref()
        .ok_or("no ClusterRoleBinding")?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), binding)
        .await
        .map_err(text)?;
    Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &fence.lease)
        .await
        .map_err(text)?;
    let holder = env
        .pod_identity(NAMESPACE, OPERATOR, HOLDER)
        .await
        .map_err(text)?;
    let other = env
        .pod_identity(NAMESPACE, OPERATOR, OTHER)
        .await
        .map_err(text)?;
    for name in ["bench-plain", "bench-guarded", "probe"] {
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
            .create(&PostParams::default(), &object)
            .await
            .map_err(text)?;
    }

    // The holder's elector, leading for the whole run.
    let client = holder.client().await.map_err(text)?;
    let election = LeaderElection::new()
        .identity(HOLDER)
        .lease_name(fence.lease.metadata.name.clone().unwrap_or_default())
        .lease_namespace(NAMESPACE)
        .validate(&Defaults::new(OPERATOR))
        .map_err(text)?;
    let elector = Elector::new(election, client.clone());
    let guard = elector.write_guard();
    let status = elector.status();
    let shutdown = CancellationToken::new();
    let campaign = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { elector.run(&mut NoControllers, shutdown).await }
    });
    eventually("the bench's elector to lead", WAIT, || async {
        (status.is_leader() && guard.holds()).then_some(())
    })
    .await;

    println!(
        "fence bench: local guard {LOCAL_WRITES} writes per client; API server {writes} writes per series"
    );
    println!();
    let (plain, guarded) = local_guard(&guard).await?;
    let local_plain = Stats::of(plain);
    let local_guarded = Stats::of(guarded);
    println!("GUARD ALONE (stand-in service, no network), per write:");
    println!("  plain client    {local_plain}");
    println!("  guarded client  {local_guarded}");
    println!(
        "  guard's cost    median {:+.2} µs, p99 {:+.2} µs",
        local_guarded.median - local_plain.median,
        local_guarded.p99 - local_plain.p99
    );
    println!();

    let guarded_client = guard.client(client.clone());
    let mut rows = Vec::new();
    rows.push(series(&env, "no policy", &client, &guarded_client, writes).await?);
    // Install the fence and wait until the API server applies it: the other pod is refused.
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .create(&PostParams::default(), &fence.policy)
        .await
        .map_err(text)?;
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .create(&PostParams::default(), &fence.binding)
        .await
        .map_err(text)?;
    fence_in_force(&other, true).await?;
    rows.push(series(&env, "with policy", &client, &guarded_client, writes).await?);
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .delete(
            fence.binding.metadata.name.as_deref().unwrap_or_default(),
            &Default::default(),
        )
        .await
        .map_err(text)?;
    fence_in_force(&other, false).await?;
    rows.push(series(&env, "no policy again", &client, &guarded_client, writes).await?);

    println!("API SERVER (PATCH configmaps by the Lease holder's pod), per write, µs:");
    println!(
        "  {:<16} {:>24} {:>24} {:>34}",
        "series", "client plain med/p99", "client guarded med/p99", "server mean / med<= / p99<="
    );
    for row in &rows {
        println!(
            "  {:<16} {:>11.0} / {:>10.0} {:>11.0} / {:>10.0} {:>12.0} / {:>8.0} / {:>8.0}",
            row.name,
            row.plain.median,
            row.plain.p99,
            row.guarded.median,
            row.guarded.p99,
            row.server.mean,
            row.server.median,
            row.server.p99,
        );
    }
    println!(
        "  (server: mean from apiserver_request_duration_seconds, quantiles as the upper bound of \
         their bucket; client figures include TLS on loopback)"
    );
    shutdown.cancel();
    campaign.await.map_err(text)?.map_err(text)?;
    Ok(())
}

/// Per-write times, µs, through a plain and a guarded client over a service that answers at
/// once; interleaved in blocks so both see the same machine.
async fn local_guard(guard: &WriteGuard) -> Result<(Vec<f64>, Vec<f64>), String> {
    let answer = serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": NAMESPACE}
    }))
    .map_err(text)?;
    let service = tower::service_fn(move |_request: http::Request<kube::client::Body>| {
        let answer = answer.clone();
        async move {
            http::Response::builder()
                .status(200)
                .body(kube::client::Body::from(answer))
        }
    });
    let plain = kube::Client::new(service, NAMESPACE);
    let guarded = guard.client(plain.clone());
    let plain: Api<ConfigMap> = Api::namespaced(plain, NAMESPACE);
    let guarded: Api<ConfigMap> = Api::namespaced(guarded, NAMESPACE);
    let mut times = (Vec::new(), Vec::new());
    for block in 0..LOCAL_WRITES / 1000 {
        for (api, out) in [(&plain, &mut times.0), (&guarded, &mut times.1)] {
            for i in 0..1000 {
                let patch = Patch::Merge(json!({"data": {"n": (block * 1000 + i).to_string()}}));
                let start = Instant::now();
                api.patch("c", &PatchParams::default(), &patch)
                    .await
                    .map_err(text)?;
                out.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    Ok(times)
}

/// Waits until a write by a pod that does not hold the Lease is refused (`on`) or admitted.
async fn fence_in_force(other: &PodIdentity, on: bool) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(other.client().await.map_err(text)?, NAMESPACE);
    eventually(
        if on {
            "the policy to refuse a non-holder"
        } else {
            "the policy to be gone"
        },
        WAIT,
        || async {
            let patch = Patch::Merge(json!({"data": {"probe": "x"}}));
            let refused = api
                .patch("probe", &PatchParams::default(), &patch)
                .await
                .is_err();
            (refused == on).then_some(())
        },
    )
    .await;
    Ok(())
}

struct Row {
    name: &'static str,
    plain: Stats,
    guarded: Stats,
    server: Server,
}

/// `writes` PATCHes through each client (alternating), timed at the client, and the API
/// server's view of all of them.
async fn series(
    env: &TestEnv,
    name: &'static str,
    plain: &kube::Client,
    guarded: &kube::Client,
    writes: usize,
) -> Result<Row, String> {
    let plain_api: Api<ConfigMap> = Api::namespaced(plain.clone(), NAMESPACE);
    let guarded_api: Api<ConfigMap> = Api::namespaced(guarded.clone(), NAMESPACE);
    // Warm the connections.
    for (api, object) in [(&plain_api, "bench-plain"), (&guarded_api, "bench-guarded")] {
        let patch = Patch::Merge(json!({"data": {"warm": name}}));
        api.patch(object, &PatchParams::default(), &patch)
            .await
            .map_err(text)?;
    }
    let before = Histogram::read(env).await?;
    let mut times = (Vec::new(), Vec::new());
    for i in 0..writes {
        for (api, object, out) in [
            (&plain_api, "bench-plain", &mut times.0),
            (&guarded_api, "bench-guarded", &mut times.1),
        ] {
            let patch = Patch::Merge(json!({"data": {"n": i.to_string()}}));
            let start = Instant::now();
            api.patch(object, &PatchParams::default(), &patch)
                .await
                .map_err(text)?;
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    let after = Histogram::read(env).await?;
    Ok(Row {
        name,
        plain: Stats::of(times.0),
        guarded: Stats::of(times.1),
        server: after.minus(&before),
    })
}

/// Median and p99 of samples in µs.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p99: f64,
    count: usize,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Stats {
            median: at(0.5),
            p99: at(0.99),
            count: samples.len(),
        }
    }
}

impl Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2} µs, p99 {:.2} µs ({} writes)",
            self.median, self.p99, self.count
        )
    }
}

/// `apiserver_request_duration_seconds` for PATCH of configmaps: cumulative buckets, sum and
/// count, summed over the other labels.
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// The API server's view of a series, µs.
struct Server {
    mean: f64,
    median: f64,
    p99: f64,
}

impl Histogram {
    async fn read(env: &TestEnv) -> Result<Histogram, String> {
        let metrics = env.apiserver_metrics().await.map_err(text)?;
        let mut histogram = Histogram {
            buckets: Vec::new(),
            sum: 0.0,
            count: 0.0,
        };
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_") else {
                continue;
            };
            if !(rest.contains("verb=\"PATCH\"")
                && rest.contains("resource=\"configmaps\"")
                && rest.contains("subresource=\"\""))
            {
                continue;
            }
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if labels.starts_with("sum") {
                histogram.sum += value;
            } else if labels.starts_with("count") {
                histogram.count += value;
            } else if let Some(le) = labels
                .split("le=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(text)?
                };
                match histogram.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, total)) => *total += value,
                    None => histogram.buckets.push((bound, value)),
                }
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(histogram)
    }

    fn minus(&self, before: &Histogram) -> Server {
        let count = self.count - before.count;
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(bound, total)| {
                let old = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0.0, |(_, t)| *t);
                (*bound, total - old)
            })
            .collect();
        // The upper bound of the bucket that holds quantile `q`: the histogram says no more.
        let quantile = |q: f64| {
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= q * count)
                .map_or(f64::NAN, |(bound, _)| *bound)
        };
        Server {
            mean: (self.sum - before.sum) / count * 1e6,
            median: quantile(0.5) * 1e6,
            p99: quantile(0.99) * 1e6,
        }
    }
}
