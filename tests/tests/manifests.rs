//! Generated manifests on a real kube-apiserver: every object applies, the generated RBAC is
//! enough for the operator to do everything it does, and without one of its rules the
//! operator says which permission is missing.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use bonny::{
    Operator,
    leader::default_lease_name,
    manifest::{Manifests, Options},
    observe::Metrics,
    testing::TestEnv,
};
use bonny_e2e::{
    events_for, eventually, init_tracing,
    widget::{Widget, WidgetController, widget},
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Subject},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const OPERATOR: &str = "widget-operator";
const WIDGETS: &str = "widgets.e2e.bonny.dev";

/// The Widget operator as deployed: all namespaces, leader election on.
fn widget_operator(client: Client, controller: WidgetController, metrics: Metrics) -> Operator {
    Operator::builder()
        .name(OPERATOR)
        .client(client)
        .leader_election(true)
        .without_http()
        .shutdown_timeout(Duration::from_secs(5))
        .metrics(metrics)
        .controller(controller)
        .build()
        .unwrap()
}

fn options() -> Options {
    Options::new("img:1").namespace("ops")
}

/// `kubectl apply -f - ARGS` of `yaml` on the environment; returns what kubectl printed, one
/// `resource/name action` per object.
fn kubectl_apply(env: &TestEnv, yaml: &str, args: &[&str]) -> Vec<String> {
    use std::io::Write;
    let mut kubectl = env.kubectl().unwrap();
    let mut child = kubectl
        .args(["apply", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl apply {args:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// What `kubectl apply` prints for the generated manifests, followed by `action`.
fn applied(action: &str) -> Vec<String> {
    [
        format!("customresourcedefinition.apiextensions.k8s.io/{WIDGETS}"),
        format!("serviceaccount/{OPERATOR}"),
        format!("clusterrole.rbac.authorization.k8s.io/{OPERATOR}"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/{OPERATOR}"),
        // With leader election: the Lease the fence takes as its parameter, and the fence.
        format!(
            "lease.coordination.k8s.io/{}",
            bonny::leader::default_lease_name("ops", OPERATOR)
        ),
        format!("validatingadmissionpolicy.admissionregistration.k8s.io/{OPERATOR}-leader-fence"),
        format!(
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/{OPERATOR}-leader-fence"
        ),
        format!("deployment.apps/{OPERATOR}"),
    ]
    .into_iter()
    .map(|object| format!("{object} {action}"))
    .collect()
}

async fn wait_established(client: &Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the CRD to be established", WAIT, || async {
        let crd = crds.get(name).await.unwrap();
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// Creates `role` (renamed to `name`) and binds it to the TestEnv user `user`, in place of
/// the generated binding to the ServiceAccount; returns once the authorizer applies it.
async fn grant(env: &TestEnv, manifests: &Manifests, mut role: ClusterRole, user: &str) {
    let client = env.client();
    let name = format!("{OPERATOR}-{user}");
    role.metadata.name = Some(name.clone());
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let mut binding = manifests
        .cluster_role_binding
        .clone()
        .expect("a ClusterRoleBinding for an operator of all namespaces");
    binding.metadata.name = Some(name.clone());
    binding.role_ref.name = name;
    binding.subjects = Some(vec![Subject {
        kind: "User".to_owned(),
        name: user.to_owned(),
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        ..Subject::default()
    }]);
    Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // Every variant below keeps `get` on widgets: 404 instead of 403 means the binding is live.
    let widgets: Api<Widget> = Api::namespaced(env.user_client(user).await.unwrap(), "default");
    eventually("the binding to take effect", WAIT, || async {
        widgets.get_opt("no-such-widget").await.ok().map(|_| ())
    })
    .await;
}

/// The role without `verb` on `resource`, or without `resource` at all when `verb` is `None`.
fn without(role: &ClusterRole, resource: &str, verb: Option<&str>) -> ClusterRole {
    let mut role = role.clone();
    let rules = role.rules.take().unwrap_or_default();
    let mut kept = Vec::new();
    for mut rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        if resources.iter().any(|r| r == resource) {
            if let Some(verb) = verb {
                let mut split = rule.clone();
                split.resources = Some(vec![resource.to_owned()]);
                split.verbs.retain(|v| v != verb);
                if !split.verbs.is_empty() {
                    kept.push(split);
                }
            }
            rule.resources = Some(resources.into_iter().filter(|r| r != resource).collect());
            if rule.resources.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
        }
        kept.push(rule);
    }
    role.rules = Some(kept);
    role
}

fn holder(lease: Option<Lease>) -> Option<String> {
    lease?
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

#[tokio::test]
async fn generated_manifests_apply_and_their_rbac_is_all_the_operator_needs() {
    init_tracing();
    let env = TestEnv::builder().user("operator").start().await.unwrap();
    let admin = env.client();
    env.create_namespace("ops").await.unwrap();
    env.create_namespace("work").await.unwrap();
    let controller = WidgetController::default();
    let metrics = Metrics::new();
    let operator = widget_operator(
        env.user_client("operator").await.unwrap(),
        controller.clone(),
        metrics.clone(),
    );
    let manifests = operator.manifests(&options()).unwrap();

    // As a user deploys them: first a server-side dry run (every object validated and
    // admitted, nothing stored), then `kubectl apply -f -`.
    let yaml = manifests.to_yaml().unwrap();
    let dry_run = kubectl_apply(&env, &yaml, &["--server-side", "--dry-run=server"]);
    assert_eq!(dry_run, applied("serverside-applied (server dry run)"));
    let deployments = Api::<Deployment>::namespaced(admin.clone(), "ops");
    assert!(deployments.get_opt(OPERATOR).await.unwrap().is_none());
    assert_eq!(kubectl_apply(&env, &yaml, &[]), applied("created"));
    wait_established(&admin, WIDGETS).await;
    let deployment = deployments.get(OPERATOR).await.unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
    assert_eq!(pod.containers[0].image.as_deref(), Some("img:1"));
    Api::<ServiceAccount>::namespaced(admin.clone(), "ops")
        .get(OPERATOR)
        .await
        .unwrap();

    // Run as a user that holds nothing but the generated ClusterRole.
    grant(&env, &manifests, manifests.cluster_role.clone(), "operator").await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "default");
    let lease_name = default_lease_name("default", OPERATOR);
    eventually("the operator to take the Lease", WAIT, || async {
        holder(leases.get_opt(&lease_name).await.unwrap())
    })
    .await;

    let widgets: Api<Widget> = Api::namespaced(admin.clone(), "work");
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), "work");
    widgets
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    let child = eventually("the ConfigMap child", WAIT, || async {
        configmaps.get_opt("w1-data").await.unwrap()
    })
    .await;
    assert_eq!(child.data.unwrap()["size"], "3");
    let live = eventually("the status", WAIT, || async {
        let w = widgets.get("w1").await.unwrap();
        w.status.as_ref().and_then(|s| s.size).map(|_| w)
    })
    .await;
    assert_eq!(live.status.unwrap().conditions[0].status, "True");
    assert!(
        live.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"e2e.bonny.dev/cleanup".to_owned())
    );
    eventually("a Normal Resized event", WAIT, || async {
        events_for(&admin, "work", "w1")
            .await
            .iter()
            .any(|e| e.type_.as_deref() == Some("Normal") && e.reason.as_deref() == Some("Resized"))
            .then_some(())
    })
    .await;

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("cleanup to run and the finalizer to go", WAIT, || async {
        widgets.get_opt("w1").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(controller.counters.cleanups(), 1);
    let text = metrics.encode();
    assert!(
        !text.contains(r#"result="error""#),
        "no reconcile may fail for want of a permission:\n{text}"
    );

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        holder(leases.get_opt(&lease_name).await.unwrap()),
        None,
        "the Lease is released on shutdown"
    );
}

/// The README's deploy line, `cargo run -- manifests --image registry/widget-operator:1.0 |
/// kubectl apply -f -`, with the e2e Widget operator's binary in place of `cargo run --`.
#[tokio::test]
async fn the_readme_deploy_line_applies_with_kubectl() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    let readme = include_str!("../../README.md");
    let line = "cargo run -- manifests --image registry/widget-operator:1.0 | kubectl apply -f -";
    assert!(readme.contains(line), "the README's deploy line changed");
    let operator = env!("CARGO_BIN_EXE_ops-operator");
    let kubectl = env.kubectl().unwrap();
    let pipeline = line
        .replace("cargo run --", "\"$OPERATOR\"")
        .replace("kubectl", "\"$KUBECTL\"");
    let output = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail; {pipeline}")])
        .env("OPERATOR", operator)
        .env("KUBECTL", kubectl.get_program())
        .env("KUBECONFIG", env.kubeconfig_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{pipeline} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("deployment.apps/ops-operator created"),
        "{stdout}"
    );
    let deployment = Api::<Deployment>::namespaced(env.client(), "default")
        .get("ops-operator")
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry/widget-operator:1.0")
    );
}

/// Binds `role` to `user`, runs the Widget operator as that user, and returns the message of
/// the `Forbidden` error it must stop with.
async fn refused_at_startup(
    env: &TestEnv,
    manifests: &Manifests,
    role: ClusterRole,
    user: &str,
) -> String {
    grant(env, manifests, role, user).await;
    let operator = widget_operator(
        env.user_client(user).await.unwrap(),
        WidgetController::default(),
        Metrics::new(),
    );
    let err = tokio::time::timeout(WAIT, operator.run_until(CancellationToken::new()))
        .await
        .unwrap()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            bonny::Error::Startup(bonny::runtime::StartupError::Forbidden { .. })
        ),
        "{message}"
    );
    message
}

#[tokio::test]
async fn a_missing_rule_is_named_with_the_forbidden_request() {
    init_tracing();
    let env = TestEnv::builder()
        .user("no-list")
        .user("no-configmaps")
        .user("no-patch")
        .start()
        .await
        .unwrap();
    let admin = env.client();
    env.install_crd(Widget::crd()).await.unwrap();
    env.create_namespace("work").await.unwrap();
    let manifests = widget_operator(admin.clone(), WidgetController::default(), Metrics::new())
        .manifests(&options())
        .unwrap();

    // Without `list` on widgets the operator does not start, and says what to grant where.
    let message = refused_at_startup(
        &env,
        &manifests,
        without(&manifests.cluster_role, "widgets", Some("list")),
        "no-list",
    )
    .await;
    assert!(
        message.contains("list") && message.contains(WIDGETS) && message.contains("ClusterRole"),
        "{message}"
    );

    // Without the ConfigMap rule the operator does not start either: the owned kind is
    // watched, so its missing `list` is named at startup.
    let message = refused_at_startup(
        &env,
        &manifests,
        without(&manifests.cluster_role, "configmaps", None),
        "no-configmaps",
    )
    .await;
    assert!(message.contains("list configmaps"), "{message}");

    // Without `patch` on ConfigMaps the operator runs, and each failing reconcile says which
    // request was forbidden and where to grant it.
    grant(
        &env,
        &manifests,
        without(&manifests.cluster_role, "configmaps", Some("patch")),
        "no-patch",
    )
    .await;
    let metrics = Metrics::new();
    let operator = widget_operator(
        env.user_client("no-patch").await.unwrap(),
        WidgetController::default(),
        metrics.clone(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));
    Api::<Widget>::namespaced(admin.clone(), "work")
        .create(&PostParams::default(), &widget("w2", 2))
        .await
        .unwrap();
    let warning = eventually(
        "a Warning event naming the forbidden request",
        WAIT,
        || async {
            events_for(&admin, "work", "w2")
                .await
                .into_iter()
                .find(|e| e.type_.as_deref() == Some("Warning"))
        },
    )
    .await;
    let note = warning.note.unwrap_or_default();
    tracing::info!(reason = ?warning.reason, %note, "warning for a missing ConfigMap rule");
    assert!(
        note.contains("configmaps")
            && note.contains("forbidden")
            && note.contains("no-patch")
            && note.contains("ClusterRole"),
        "{note}"
    );
    assert!(
        metrics
            .encode()
            .contains(r#"controller_runtime_reconcile_errors_total{controller="widget"}"#)
    );
    assert!(!task.is_finished());
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Log lines written while it is alive, on this thread (the test's current-thread runtime
/// runs the operator's tasks here too).
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn a_lease_the_replica_may_not_use_is_named_and_keeps_it_unready() {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let env = TestEnv::builder().user("no-leases").start().await.unwrap();
    let admin = env.client();
    env.install_crd(Widget::crd()).await.unwrap();
    let manifests = widget_operator(admin.clone(), WidgetController::default(), Metrics::new())
        .manifests(&options())
        .unwrap();
    grant(
        &env,
        &manifests,
        without(&manifests.cluster_role, "leases", None),
        "no-leases",
    )
    .await;
    let operator = widget_operator(
        env.user_client("no-leases").await.unwrap(),
        WidgetController::default(),
        Metrics::new(),
    );
    let health = operator.health().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(operator.run_until(stop.clone()));

    // Not ready, saying which request was refused and where the rule comes from.
    let binary = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap();
    let reason = eventually("/readyz to name the refused Lease", WAIT, || async {
        health
            .ready()
            .err()
            .filter(|reason| reason.contains("leases"))
    })
    .await;
    assert!(
        reason.starts_with(
            "this replica may not get leases.coordination.k8s.io in namespace default \
             (403 Forbidden: "
        ),
        "{reason}"
    );
    assert!(
        reason.ends_with(&format!(
            "grant it with the ClusterRole that `{binary} manifests` generates"
        )),
        "{reason}"
    );
    assert!(reason.contains("User \"no-leases\""), "{reason}");

    // Retried for several polls, said once, as that sentence, never as a Status dump. The API
    // server's audit log witnesses the retries: a fourth refused request was sent after the
    // replica had handled the answer to the third (and said whatever it had to say of it).
    eventually("four refused Lease requests", WAIT, || async {
        let refused = env
            .audit_log()
            .unwrap()
            .iter()
            .filter(|r| {
                r.user.username == "no-leases" && r.resource == "leases" && r.code == Some(403)
            })
            .count();
        (refused >= 4).then_some(())
    })
    .await;
    let text = log.text();
    assert_eq!(
        text.matches("may not get leases.coordination.k8s.io")
            .count(),
        1,
        "{text}"
    );
    assert!(!text.contains("Status {"), "{text}");
    assert!(!text.contains("<your-operator>"), "{text}");

    // Granted: ready again, and the replica takes the Lease.
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            &format!("{OPERATOR}-no-leases"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "rules": manifests.cluster_role.rules })),
        )
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "default");
    let lease_name = default_lease_name("default", OPERATOR);
    eventually(
        "the replica to take the Lease once allowed",
        WAIT,
        || async { holder(leases.get_opt(&lease_name).await.unwrap()) },
    )
    .await;
    eventually("/readyz to pass", WAIT, || async { health.ready().ok() }).await;
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
