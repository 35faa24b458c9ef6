//! Admission webhooks on the real control plane: the local kube-apiserver calls the operator's
//! webhook server on loopback (URL client configuration, the CA bundle the operator injects).
//! An invalid object is refused with the author's message, a warning reaches `kubectl`, a
//! defaulted field is set on create, a panic is a refusal and not a crash, the operator's own
//! namespace is never blocked, the failure policy decides when the operator is down, a
//! certificate rotation under continuous writes fails no request, and neither does the crash of
//! the leader of two replicas.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bonny::{
    Operator,
    leader::{LeaderElection, default_lease_name},
    manifest::{Options, WebhookManifests},
    observe::Metrics,
    prelude::*,
    testing::TestEnv,
    webhook::{Certificates, FailurePolicy, SelfManaged, Verdict, Webhooks},
};
use bonny_e2e::{eventually, init_tracing};
use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    coordination::v1::Lease,
    core::v1::Secret,
};
use kube::{
    Api, Client, CustomResource, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
    core::admission::Operation,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const OPERATOR: &str = "thing-operator";
/// The operator's own namespace (the default of `BONNY_POD_NAMESPACE`).
const OWN: &str = "default";
/// Where the things under test live.
const APPS: &str = "apps";

/// The resource the webhooks admit.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hooks.e2e.bonny.dev",
    version = "v1",
    kind = "Thing",
    namespaced
)]
pub struct ThingSpec {
    /// 0 is refused, over 50 warned about, 13 panics the validator.
    pub size: u32,
    /// Defaulted to `grey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// The operator needs a controller; this one does nothing.
#[bonny::controller(resource = Thing)]
#[derive(Clone, Default)]
pub struct ThingController;

impl Reconcile<Thing> for ThingController {
    async fn apply(&self, _axn: &mut Axn<Thing>) -> Result<Action, ReconcileError> {
        Ok(Action::await_change())
    }
}

fn thing(name: &str, size: u32) -> Thing {
    Thing::new(name, ThingSpec { size, color: None })
}

fn webhooks(port: u16) -> Webhooks {
    Webhooks::new()
        .port(port)
        .host("127.0.0.1")
        .validate::<Thing>(|request| {
            if request.operation == Operation::Delete {
                return Verdict::allow();
            }
            let Some(thing) = &request.object else {
                return Verdict::allow();
            };
            match thing.spec.size {
                0 => Verdict::deny("spec.size must be at least 1"),
                13 => panic!("size 13 is unlucky"),
                size if size > 50 => Verdict::allow().warn(format!("size {size} is large")),
                _ => Verdict::allow(),
            }
        })
        .defaults::<Thing>(|thing| {
            thing.spec.color.get_or_insert_with(|| "grey".to_owned());
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running operator serving `webhooks`.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), bonny::Error>>,
}

impl Running {
    fn start(client: Client, webhooks: Webhooks, metrics: Metrics) -> Self {
        let operator = operator(client, webhooks, metrics);
        let stop = CancellationToken::new();
        let task = tokio::spawn(operator.run_until(stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn operator(client: Client, webhooks: Webhooks, metrics: Metrics) -> Operator {
    Operator::builder()
        .name(OPERATOR)
        .client(client)
        .without_http()
        .metrics(metrics)
        .controller(ThingController)
        .webhooks(webhooks)
        .build()
        .unwrap()
}

/// The generated webhook manifests, calling the webhooks on loopback.
fn manifests(client: Client, webhooks: Webhooks) -> WebhookManifests {
    let port = webhooks.port_number();
    operator(client, webhooks, Metrics::new())
        .manifests(
            &Options::new("img:1")
                .namespace(OWN)
                .webhook_url(format!("https://127.0.0.1:{port}")),
        )
        .unwrap()
        .webhooks
        .expect("webhook manifests")
}

/// A control plane with the Thing CRD, the `apps` namespace and the webhook configurations.
async fn setup(webhooks: &Webhooks) -> TestEnv {
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Thing::crd()).await.unwrap();
    env.create_namespace(APPS).await.unwrap();
    let client = env.client();
    let manifests = manifests(client.clone(), webhooks.clone());
    assert!(
        manifests.service.is_none(),
        "URL client config needs no Service"
    );
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &manifests.validating.unwrap())
        .await
        .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &manifests.mutating.unwrap())
        .await
        .unwrap();
    env
}

/// Until a create through both webhooks succeeds: the server is up and the API server has
/// the CA bundle.
async fn wait_admitting(client: &Client, name: &str) {
    let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
    eventually("the webhooks to admit a create", WAIT, || async {
        match things.create(&PostParams::default(), &thing(name, 1)).await {
            Ok(created) => Some(created),
            Err(err) => {
                tracing::info!(error = %err, "not admitting yet");
                None
            }
        }
    })
    .await;
}

fn api_message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message,
        other => panic!("expected a refusal by the API server, got {other}"),
    }
}

/// `kubectl <args>` with `stdin`, off the runtime (the webhook server runs on it); returns
/// (success, stdout, stderr).
async fn kubectl(env: &TestEnv, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = env.kubectl().unwrap();
    command.args(args);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || run(command, &stdin))
        .await
        .unwrap()
}

fn run(mut command: std::process::Command, stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_webhooks_refuse_warn_default_and_survive_a_panic() {
    init_tracing();
    let port = free_port();
    let webhooks = webhooks(port);
    let env = setup(&webhooks).await;
    let client = env.client();
    let metrics = Metrics::new();
    let running = Running::start(client.clone(), webhooks, metrics.clone());
    wait_admitting(&client, "first").await;

    // The CA bundle was written by the operator into both configurations.
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(OPERATOR)
        .await
        .unwrap();
    let bundle = validating.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("the operator injected the CA bundle");
    let secret = Api::<Secret>::namespaced(client.clone(), OWN)
        .get(&bonny::webhook::secret_name(OPERATOR))
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["ca-bundle.crt"].0,
        bundle.0,
        "the bundle is the shared Secret's"
    );

    let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
    // Refused with the author's message.
    let refused = things
        .create(&PostParams::default(), &thing("empty", 0))
        .await
        .unwrap_err();
    let message = api_message(refused);
    assert!(
        message.contains("denied the request: spec.size must be at least 1"),
        "{message}"
    );

    // Defaulted on create.
    let created = things
        .create(&PostParams::default(), &thing("plain", 3))
        .await
        .unwrap();
    assert_eq!(created.spec.color.as_deref(), Some("grey"));
    // A color the author set is kept.
    let mut teal = thing("teal", 3);
    teal.spec.color = Some("teal".into());
    let created = things.create(&PostParams::default(), &teal).await.unwrap();
    assert_eq!(created.spec.color.as_deref(), Some("teal"));
    // And on update: removing the color brings the default back.
    let patched = things
        .patch(
            "teal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": null}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.color.as_deref(), Some("grey"));

    // A warning reaches kubectl.
    let big = format!(
        "apiVersion: hooks.e2e.bonny.dev/v1\nkind: Thing\nmetadata: {{name: big, namespace: {APPS}}}\nspec: {{size: 60}}\n"
    );
    let (ok, _, stderr) = kubectl(&env, &["create", "-f", "-"], &big).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Warning: size 60 is large"), "{stderr}");
    // And a refusal's message too.
    let empty = big
        .replace("name: big", "name: empty")
        .replace("size: 60", "size: 0");
    let (ok, _, stderr) = kubectl(&env, &["create", "-f", "-"], &empty).await;
    assert!(!ok);
    assert!(stderr.contains("spec.size must be at least 1"), "{stderr}");

    // A panic is a refusal naming it, and the server goes on serving.
    let refused = things
        .create(&PostParams::default(), &thing("unlucky", 13))
        .await
        .unwrap_err();
    let message = api_message(refused);
    assert!(
        message.contains("panicked: size 13 is unlucky"),
        "{message}"
    );
    things
        .create(&PostParams::default(), &thing("after-panic", 2))
        .await
        .unwrap();

    // The operator's own namespace is never sent to the webhooks.
    let own: Api<Thing> = Api::namespaced(client.clone(), OWN);
    let unchecked = own
        .create(&PostParams::default(), &thing("own", 0))
        .await
        .unwrap();
    assert_eq!(unchecked.spec.color, None, "not defaulted either");

    // The metrics count it all, under controller-runtime's names.
    let text = metrics.encode();
    for name in [
        "controller_runtime_webhook_requests_total{",
        "controller_runtime_webhook_latency_seconds_bucket{",
        "controller_runtime_webhook_requests_in_flight{",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    assert!(
        text.contains("controller_runtime_webhook_panics_total 1"),
        "{text}"
    );
    running.stop().await;
}

#[tokio::test]
async fn with_the_operator_down_fail_refuses_and_ignore_admits() {
    init_tracing();
    let port = free_port();
    let webhooks = webhooks(port);
    let env = setup(&webhooks).await;
    let client = env.client();
    let running = Running::start(client.clone(), webhooks, Metrics::new());
    wait_admitting(&client, "first").await;
    running.stop().await;

    let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
    // failurePolicy Fail (the default): refused, saying the webhook could not be called.
    let refused = things
        .create(&PostParams::default(), &thing("while-down", 1))
        .await
        .unwrap_err();
    let message = api_message(refused);
    assert!(message.contains("failed calling webhook"), "{message}");
    // The operator's own namespace is not blocked even so.
    Api::<Thing>::namespaced(client.clone(), OWN)
        .create(&PostParams::default(), &thing("own-while-down", 1))
        .await
        .unwrap();

    // failurePolicy Ignore: the same write goes through, unchecked and undefaulted.
    let ignore = manifests(
        client.clone(),
        self::webhooks(port).failure_policy(FailurePolicy::Ignore),
    );
    for (kind, body) in [
        (
            "validating",
            serde_json::to_value(ignore.validating.unwrap()).unwrap(),
        ),
        (
            "mutating",
            serde_json::to_value(ignore.mutating.unwrap()).unwrap(),
        ),
    ] {
        let webhooks = body["webhooks"].clone();
        let patch = Patch::Merge(json!({ "webhooks": webhooks }));
        if kind == "validating" {
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .patch(OPERATOR, &PatchParams::default(), &patch)
                .await
                .unwrap();
        } else {
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .patch(OPERATOR, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    }
    let admitted = eventually("the Ignore policy to apply", WAIT, || async {
        things
            .create(&PostParams::default(), &thing("while-down", 0))
            .await
            .ok()
    })
    .await;
    assert_eq!(admitted.spec.color, None, "nothing defaulted it");
}

#[tokio::test]
async fn a_certificate_rotation_under_continuous_writes_fails_no_request() {
    init_tracing();
    let port = free_port();
    let validity = Duration::from_secs(30);
    let webhooks = webhooks(port).certificates(Certificates::SelfManaged(
        SelfManaged::default()
            .validity(validity)
            .rotate_before(validity / 3),
    ));
    let env = setup(&webhooks).await;
    let client = env.client();
    let running = Running::start(client.clone(), webhooks.clone(), Metrics::new());
    wait_admitting(&client, "first").await;

    // A second replica on another port: it reads the first one's Secret and writes nothing.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OWN);
    let secret_name = bonny::webhook::secret_name(OPERATOR);
    let before = secrets.get(&secret_name).await.unwrap();
    let second_port = free_port();
    let second = Running::start(
        client.clone(),
        webhooks.clone().port(second_port),
        Metrics::new(),
    );

    // The second replica serves a certificate the shared CA signed: a client trusting only
    // the Secret's bundle gets its validator's answer.
    let bundle = before.data.clone().unwrap()["ca-bundle.crt"].clone();
    let answer = eventually("the second replica to answer", WAIT, || {
        let bundle = bundle.clone();
        async move { review_on(second_port, bundle).await.ok() }
    })
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(
        answer["response"]["status"]["message"],
        "spec.size must be at least 1"
    );

    let secrets_seen = Arc::new(std::sync::Mutex::new(vec![
        before.data.clone().unwrap()["tls.crt"].0.clone(),
    ]));
    let writes = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
        let (writes, failures, done) = (writes.clone(), failures.clone(), done.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !done.load(Ordering::SeqCst) {
                i += 1;
                match things
                    .create(
                        &PostParams::default(),
                        &thing(&format!("w-{i}"), 1 + i % 10),
                    )
                    .await
                {
                    Ok(_) => writes.fetch_add(1, Ordering::SeqCst),
                    Err(err) => {
                        failures.lock().unwrap().push(err.to_string());
                        0
                    }
                };
            }
        })
    };
    // Two full lifetimes: at least two rotations.
    let started = Instant::now();
    while started.elapsed() < validity * 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let secret = secrets.get(&secret_name).await.unwrap();
        let cert = secret.data.unwrap()["tls.crt"].0.clone();
        let mut seen = secrets_seen.lock().unwrap();
        if seen.last() != Some(&cert) {
            seen.push(cert);
        }
    }
    done.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let rotations = secrets_seen.lock().unwrap().len() - 1;
    let writes = writes.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap().clone();
    println!(
        "rotation: {rotations} new serving certificates during {writes} writes, {} failed",
        failures.len()
    );
    assert!(
        rotations >= 2,
        "expected two rotations in two lifetimes, saw {rotations}"
    );
    assert!(writes > 100, "the writer kept writing ({writes})");
    assert!(failures.is_empty(), "failed writes: {failures:?}");
    let after = secrets.get(&secret_name).await.unwrap();
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "one Secret for both replicas"
    );
    second.stop().await;
    running.stop().await;
}

/// POST an admission review of a size-0 Thing to the validator on `port`, trusting only
/// `bundle` (the Secret's CA bundle).
async fn review_on(
    port: u16,
    bundle: k8s_openapi::ByteString,
) -> Result<serde_json::Value, kube::Error> {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority-data: {}}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
        serde_json::to_value(&bundle).unwrap().as_str().unwrap()
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config)?;
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "direct",
            "kind": {"group": "hooks.e2e.bonny.dev", "version": "v1", "kind": "Thing"},
            "resource": {"group": "hooks.e2e.bonny.dev", "version": "v1", "resource": "things"},
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": serde_json::to_value(thing("direct", 0)).unwrap(),
        }
    });
    let request = http::Request::post("/validate/hooks.e2e.bonny.dev/v1/things")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let text = client.request_text(request).await?;
    Ok(serde_json::from_str(&text).unwrap())
}

/// The quantile `q` of a Prometheus histogram summed over every series whose line contains
/// `filter`, interpolated linearly within the bucket (as `histogram_quantile` does).
fn quantile(metrics: &str, name: &str, filter: &str, q: f64) -> Option<f64> {
    let mut buckets: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for line in metrics.lines() {
        if !line.starts_with(&format!("{name}_bucket{{")) || !line.contains(filter) {
            continue;
        }
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        // Keyed by the bound's bits so that buckets sort by bound (all bounds are >= 0).
        let entry = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
        entry.1 += count;
    }
    let total = buckets.values().last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (bound, count) in buckets.values().copied() {
        if count >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            let within = (rank - previous.1) / (count - previous.1).max(f64::MIN_POSITIVE);
            return Some(previous.0 + (bound - previous.0) * within);
        }
        previous = (bound, count);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_latency_as_the_api_server_sees_it_under_a_few_hundred_writes() {
    init_tracing();
    let port = free_port();
    let webhooks = webhooks(port);
    let env = setup(&webhooks).await;
    let client = env.client();
    let running = Running::start(client.clone(), webhooks, Metrics::new());
    wait_admitting(&client, "first").await;

    // 400 creates from 4 writers at once, each through the defaulter and the validator.
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
        writers.spawn(async move {
            for i in 0..100 {
                things
                    .create(
                        &PostParams::default(),
                        &thing(&format!("load-{writer}-{i}"), 1 + i % 10),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let metrics = env.apiserver_metrics().await.unwrap();
    let name = "apiserver_admission_webhook_admission_duration_seconds";
    let mut report = format!("400 creates in {elapsed:?}:");
    for (kind, hook) in [
        ("validating", "validate.things.hooks.e2e.bonny.dev"),
        ("mutating", "default.things.hooks.e2e.bonny.dev"),
    ] {
        let filter = format!("name=\"{hook}\"");
        let p50 = quantile(&metrics, name, &filter, 0.5).unwrap();
        let p99 = quantile(&metrics, name, &filter, 0.99).unwrap();
        report.push_str(&format!(
            " {kind} p50 {:.1} ms, p99 {:.1} ms;",
            p50 * 1000.0,
            p99 * 1000.0
        ));
        assert!(p99 < 1.0, "{kind} webhook p99 {p99} s");
    }
    println!("webhook latency seen by the API server: {report}");
    running.stop().await;
}

#[tokio::test]
async fn the_generated_webhook_manifests_apply_on_the_api_server() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.create_namespace("ops").await.unwrap();
    let manifests = operator(
        env.client(),
        webhooks(DEFAULT_PORT_FOR_MANIFESTS),
        Metrics::new(),
    )
    .manifests(&Options::new("img:1").namespace("ops"))
    .unwrap();
    let hooks = manifests.webhooks.clone().unwrap();
    let service = hooks.service.clone().expect("a Service in cluster mode");
    assert_eq!(
        service.metadata.name.as_deref(),
        Some("thing-operator-webhook")
    );
    let validating = hooks.validating.clone().unwrap().webhooks.unwrap();
    let hook = &validating[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(hook.timeout_seconds, Some(10));
    let selector = hook.namespace_selector.clone().unwrap();
    let expression = &selector.match_expressions.unwrap()[0];
    assert_eq!(
        (expression.key.as_str(), expression.operator.as_str()),
        ("kubernetes.io/metadata.name", "NotIn")
    );
    assert_eq!(expression.values.as_deref(), Some(&["ops".to_owned()][..]));
    let yaml = manifests.to_yaml().unwrap();
    let (ok, stdout, stderr) = kubectl(&env, &["apply", "-f", "-"], &yaml).await;
    assert!(ok, "kubectl apply failed:\n{stdout}{stderr}");
    for object in [
        "service/thing-operator-webhook created",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/thing-operator created",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/thing-operator created",
        "role.rbac.authorization.k8s.io/thing-operator-webhook-tls created",
        "rolebinding.rbac.authorization.k8s.io/thing-operator-webhook-tls created",
    ] {
        assert!(stdout.contains(object), "{object} missing in:\n{stdout}");
    }
    // Applying again changes nothing.
    let (ok, stdout, stderr) = kubectl(&env, &["apply", "-f", "-"], &yaml).await;
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("configured"), "{stdout}");
}

const DEFAULT_PORT_FOR_MANIFESTS: u16 = bonny::webhook::DEFAULT_PORT;

/// A stand-in for the Service in front of the replicas: each accepted connection goes to the
/// first upstream that accepts one, its bytes (TLS included) passed through untouched.
struct Forwarder {
    /// Every connection piped so far: the upstream port, and the task that pipes it.
    pipes: Arc<std::sync::Mutex<Vec<(u16, tokio::task::AbortHandle)>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    fn start(listener: TcpListener, upstreams: Vec<u16>) -> Self {
        let pipes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let pipes = pipes.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let mut chosen = None;
                    for &port in &upstreams {
                        if let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                            chosen = Some((port, upstream));
                            break;
                        }
                    }
                    // No upstream: dropping the connection refuses it.
                    let Some((port, mut upstream)) = chosen else {
                        continue;
                    };
                    let pipe = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    });
                    pipes.lock().unwrap().push((port, pipe.abort_handle()));
                }
            }
        });
        Self { pipes, accept }
    }

    /// Close every open connection to `port`, as the death of the process behind it does;
    /// returns how many were open.
    fn cut(&self, port: u16) -> usize {
        let mut cut = 0;
        self.pipes.lock().unwrap().retain(|(to, pipe)| {
            if *to != port {
                return true;
            }
            if !pipe.is_finished() {
                cut += 1;
            }
            pipe.abort();
            false
        });
        cut
    }

    /// How many connections went to each upstream so far.
    fn routed(&self) -> BTreeMap<u16, usize> {
        let mut routed = BTreeMap::new();
        for (port, _) in self.pipes.lock().unwrap().iter() {
            *routed.entry(*port).or_default() += 1;
        }
        routed
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, pipe) in self.pipes.lock().unwrap().iter() {
            pipe.abort();
        }
    }
}

/// A replica with leader election on short timings (3 s lease, 2 s renew deadline, 500 ms
/// retry period), serving `webhooks`.
fn replica(client: Client, webhooks: Webhooks, metrics: Metrics, identity: &str) -> Running {
    let operator = Operator::builder()
        .name(OPERATOR)
        .client(client)
        .without_http()
        .metrics(metrics)
        .controller(ThingController)
        .webhooks(webhooks)
        .leader_election_with(
            LeaderElection::new()
                .identity(identity)
                .lease_duration(Duration::from_secs(3))
                .renew_deadline(Duration::from_secs(2))
                .retry_period(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    Running { stop, task }
}

/// The sum of `controller_runtime_webhook_requests_total` over every webhook and code.
fn reviews_answered(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("controller_runtime_webhook_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const DENIAL: &str = "denied the request: spec.size must be at least 1";

/// What the failover writer saw in one phase.
#[derive(Default)]
struct Tally {
    admitted: usize,
    refused: usize,
    /// Admissible writes that failed.
    failed: Vec<String>,
    /// Inadmissible writes admitted, or refused without the author's message.
    misjudged: Vec<String>,
}

impl Tally {
    fn writes(&self) -> usize {
        self.admitted + self.refused + self.failed.len() + self.misjudged.len()
    }
}

/// Write number `i`: every tenth is inadmissible (size 0; alternately a create and an update
/// of the last thing created), the others alternate updates of the last thing created (odd)
/// and creates (even).
async fn write(things: &Api<Thing>, i: u32, last: &mut String, tally: &mut Tally) {
    let admissible = !i.is_multiple_of(10);
    let size = if admissible { 1 + i % 9 } else { 0 };
    let (what, result) = if i % 2 == 1 || i % 20 == 10 {
        let patch = Patch::Merge(json!({"spec": {"size": size}}));
        let result = things.patch(last, &PatchParams::default(), &patch).await;
        ("update", result)
    } else {
        let name = format!("f-{i}");
        let result = things
            .create(&PostParams::default(), &thing(&name, size))
            .await;
        if result.is_ok() {
            *last = name;
        }
        ("create", result)
    };
    match (admissible, result) {
        (true, Ok(_)) => tally.admitted += 1,
        (true, Err(err)) => tally.failed.push(format!("#{i} {what}: {err}")),
        (false, Err(kube::Error::Api(status))) if status.message.contains(DENIAL) => {
            tally.refused += 1;
        }
        (false, Ok(_)) => tally
            .misjudged
            .push(format!("#{i} {what} of size 0 admitted")),
        (false, Err(err)) => tally
            .misjudged
            .push(format!("#{i} {what} of size 0 refused otherwise: {err}")),
    }
}

#[tokio::test]
async fn leader_failover_does_not_interrupt_admission() {
    init_tracing();
    // The API server calls the forwarder (the Service); the forwarder calls the replicas.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = listener.local_addr().unwrap().port();
    let env = setup(&webhooks(service_port)).await;
    let client = env.client();
    let ports = [free_port(), free_port()];
    let identities = ["replica-a", "replica-b"];
    let metrics = [Metrics::new(), Metrics::new()];
    // Both replicas start at once, as a Deployment's pods do: one creates the Secret, the
    // other reads it.
    let mut replicas: Vec<Option<Running>> = (0..2)
        .map(|i| {
            Some(replica(
                client.clone(),
                webhooks(ports[i]),
                metrics[i].clone(),
                identities[i],
            ))
        })
        .collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), OWN);
    let lease_name = default_lease_name(OWN, OPERATOR);
    let holder = || async {
        leases
            .get_opt(&lease_name)
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec?.holder_identity)
    };
    let first_holder = eventually("a replica to take the Lease", WAIT, holder).await;
    let leader = identities
        .iter()
        .position(|identity| *identity == first_holder)
        .unwrap_or_else(|| panic!("the Lease is held by {first_holder}, not a replica"));
    let standby = 1 - leader;
    // The Service sends every connection to the leader while it is up (the worst case: its
    // crash cuts the API server's open connections), else to the standby.
    let forwarder = Forwarder::start(listener, vec![ports[leader], ports[standby]]);
    wait_admitting(&client, "first").await;

    // The standby serves too, a certificate the shared Secret's CA signed.
    let secret = Api::<Secret>::namespaced(client.clone(), OWN)
        .get(&bonny::webhook::secret_name(OPERATOR))
        .await
        .unwrap();
    let bundle = secret.data.unwrap()["ca-bundle.crt"].clone();
    let answer = eventually("the standby to answer a review", WAIT, || {
        let bundle = bundle.clone();
        async move { review_on(ports[standby], bundle).await.ok() }
    })
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(
        answer["response"]["status"]["message"],
        "spec.size must be at least 1"
    );

    let things: Api<Thing> = Api::namespaced(client.clone(), APPS);
    let mut last = "first".to_owned();
    let mut i = 0u32;
    // Writes for a while with both replicas up.
    let mut before = Tally::default();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) || before.refused == 0 {
        i += 1;
        write(&things, i, &mut last, &mut before).await;
    }
    let leader_answered = reviews_answered(&metrics[leader]);
    let standby_before = reviews_answered(&metrics[standby]);

    // The leader crashes between two writes: a review in flight at that instant dies with its
    // connection whatever the leadership (the API server does not retry the call; the write
    // fails per the failure policy). Its task is aborted, so it neither drains nor releases
    // the Lease; its listener closes, and the connections it served are cut.
    let crashed = replicas[leader].take().unwrap();
    crashed.task.abort();
    let joined = crashed.task.await;
    assert!(joined.is_err_and(|err| err.is_cancelled()));
    eventually("the crashed replica's port to close", WAIT, || async {
        TcpStream::connect(("127.0.0.1", ports[leader]))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let cut = forwarder.cut(ports[leader]);
    let crashed_at = Instant::now();
    let routed_before = forwarder.routed();

    // Writes on until the standby holds the Lease, and for 3 s after.
    let mut after = Tally::default();
    let mut took_over = None;
    loop {
        let elapsed = crashed_at.elapsed();
        match took_over {
            Some(at) if elapsed > at + Duration::from_secs(3) && after.refused > 0 => break,
            Some(_) => {}
            None => {
                assert!(
                    elapsed < WAIT,
                    "{} did not take the Lease within {WAIT:?} of the crash",
                    identities[standby]
                );
                if holder().await.as_deref() == Some(identities[standby]) {
                    took_over = Some(elapsed);
                }
            }
        }
        i += 1;
        write(&things, i, &mut last, &mut after).await;
    }
    let took_over = took_over.unwrap();
    let standby_after = reviews_answered(&metrics[standby]);
    let routed_after = forwarder.routed();
    let survivor_connections = routed_after.get(&ports[standby]).copied().unwrap_or(0)
        - routed_before.get(&ports[standby]).copied().unwrap_or(0);

    println!(
        "failover: before the crash {} writes ({} admitted, {} refused) through {} ({leader_answered} reviews); \
         the crash cut {cut} open connection(s); {} took the Lease {took_over:?} after it; \
         after the crash {} writes ({} admitted, {} refused) through {} on {survivor_connections} new connection(s) \
         ({} reviews, {standby_before} before the crash); failed admissible: {} before, {} after; \
         inadmissible not refused with the author's message: {} before, {} after",
        before.writes(),
        before.admitted,
        before.refused,
        identities[leader],
        identities[standby],
        after.writes(),
        after.admitted,
        after.refused,
        identities[standby],
        standby_after - standby_before,
        before.failed.len(),
        after.failed.len(),
        before.misjudged.len(),
        after.misjudged.len(),
    );
    assert!(
        before.failed.is_empty() && after.failed.is_empty(),
        "admissible writes failed: {:?} {:?}",
        before.failed,
        after.failed
    );
    assert!(
        before.misjudged.is_empty() && after.misjudged.is_empty(),
        "inadmissible writes misjudged: {:?} {:?}",
        before.misjudged,
        after.misjudged
    );
    assert!(
        leader_answered >= before.writes() as u64,
        "the leader answered the reviews before its crash"
    );
    assert!(standby_before >= 1, "the standby answered before the crash");
    assert!(
        standby_after - standby_before >= after.writes() as u64,
        "the survivor answered every write's reviews after the crash"
    );
    assert!(cut >= 1, "the crash cut the API server's open connections");
    assert!(
        survivor_connections >= 1,
        "the API server reconnected, to the survivor"
    );
    assert_eq!(
        holder().await.as_deref(),
        Some(identities[standby]),
        "the standby leads"
    );
    replicas[standby].take().unwrap().stop().await;
}
