//! The `bonny::testing` harness against a real etcd + kube-apiserver.
//!
//! Run with `cargo test -p bonny-rs --features testing --test control_plane`.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bonny::testing::{Error, TestEnv};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A small custom resource to install and round-trip.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "testing.bonny.rs",
    version = "v1",
    kind = "Widget",
    namespaced
)]
struct WidgetSpec {
    size: u32,
    color: String,
}

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` every 200 ms until it returns `Some`, or panics after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..ConfigMap::default()
    }
}

async fn readyz(client: &kube::Client) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_installs_a_crd_and_round_trips_a_custom_resource() {
    let started = Instant::now();
    let env = TestEnv::start().await.unwrap();
    let ready_ms = started.elapsed().as_millis();
    let rss: Vec<u64> = env.pids().iter().map(|&pid| rss_kib(pid)).collect();
    eprintln!(
        "TestEnv start-to-ready: {ready_ms} ms; RSS etcd + kube-apiserver: {:?} KiB = {} MiB",
        rss,
        rss.iter().sum::<u64>() / 1024
    );

    assert!(env.server_url().starts_with("https://127.0.0.1:"));
    assert!(env.kubeconfig_path().is_file());
    assert_eq!(readyz(&env.client()).await.unwrap().trim(), "ok");

    env.install_crd(Widget::crd()).await.unwrap();
    // Installing again replaces it.
    env.install_crd(Widget::crd()).await.unwrap();

    let widgets: Api<Widget> = Api::default_namespaced(env.client());
    let widget = Widget::new(
        "first",
        WidgetSpec {
            size: 3,
            color: "blue".into(),
        },
    );
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    let read = widgets.get("first").await.unwrap();
    assert_eq!(read.spec, widget.spec);

    let counts = env.request_counts().await.unwrap();
    for sample in counts.samples().iter().filter(|s| s.resource == "widgets") {
        eprintln!("{sample:?}");
    }
    // Creates are reported as POST.
    assert_eq!(env.request_count("post", "widgets").await.unwrap(), 1);
    assert_eq!(env.request_count("GET", "widgets").await.unwrap(), 1);
}

#[tokio::test]
async fn install_crds_yaml_installs_every_document() {
    let env = TestEnv::start().await.unwrap();
    let yaml = format!(
        "---\n{}\n---\n{}",
        serde_saphyr::to_string(&Widget::crd()).unwrap(),
        serde_saphyr::to_string(&Widget::crd()).unwrap()
    );
    env.install_crds_yaml(&yaml).await.unwrap();
    let widgets: Api<Widget> = Api::default_namespaced(env.client());
    assert!(
        widgets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let err = env
        .install_crds_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotACrd { .. }), "{err}");
}

#[tokio::test]
async fn rbac_user_is_forbidden_until_granted() {
    let env = TestEnv::builder().user("alice").start().await.unwrap();
    assert!(env.user_kubeconfig_path("alice").unwrap().is_file());
    assert!(env.user_kubeconfig_path("bob").is_none());
    assert!(matches!(
        env.user_client("bob").await,
        Err(Error::UnknownUser { .. })
    ));

    let alice: Api<ConfigMap> = Api::default_namespaced(env.user_client("alice").await.unwrap());
    match alice.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("alice-reads-configmaps".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "alice".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    let pp = PostParams::default();
    Api::<Role>::default_namespaced(env.client())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::default_namespaced(env.client())
        .create(&pp, &binding)
        .await
        .unwrap();

    eventually("RBAC to let alice list configmaps", || async {
        alice.list(&Default::default()).await.ok()
    })
    .await;
    // Only what was granted.
    match alice.create(&pp, &configmap("nope")).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn restart_apiserver_keeps_the_data() {
    let mut env = TestEnv::start().await.unwrap();
    let url = env.server_url().to_owned();
    let configmaps: Api<ConfigMap> = Api::default_namespaced(env.client());
    configmaps
        .create(&PostParams::default(), &configmap("survivor"))
        .await
        .unwrap();
    let old_pid = env.pids()[1];

    env.restart_apiserver().await.unwrap();

    assert_eq!(env.server_url(), url);
    assert_ne!(env.pids()[1], old_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    // The same client reconnects.
    let read = configmaps.get("survivor").await.unwrap();
    assert_eq!(read.data, configmap("survivor").data);
}

#[tokio::test]
async fn proxy_cut_fails_requests_and_heal_restores_them() {
    let env = TestEnv::start().await.unwrap();
    let proxy = env.proxy().await.unwrap();
    assert!(proxy.kubeconfig_path().is_file());
    let client = proxy.client().await.unwrap();
    let through_proxy: Api<ConfigMap> = Api::default_namespaced(client.clone());
    through_proxy
        .create(&PostParams::default(), &configmap("via-proxy"))
        .await
        .unwrap();

    proxy.cut();
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), through_proxy.get("via-proxy")).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "request through a cut proxy should fail fast, got {outcome:?}"
    );
    // The direct path is unaffected.
    Api::<ConfigMap>::default_namespaced(env.client())
        .get("via-proxy")
        .await
        .unwrap();

    proxy.heal();
    eventually("requests through the healed proxy", || async {
        through_proxy.get("via-proxy").await.ok()
    })
    .await;

    proxy.stall();
    let stalled =
        tokio::time::timeout(Duration::from_secs(2), through_proxy.get("via-proxy")).await;
    assert!(stalled.is_err(), "a stalled proxy must hold the request");
    proxy.heal();
    through_proxy.get("via-proxy").await.unwrap();

    // A held request completes once healed.
    proxy.stall();
    let held = tokio::spawn({
        let api = through_proxy.clone();
        async move { api.get("via-proxy").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished());
    proxy.heal();
    tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envs_side_by_side() {
    let (a, b) = tokio::join!(TestEnv::start(), TestEnv::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.server_url(), b.server_url());
    assert_ne!(a.kubeconfig_path(), b.kubeconfig_path());

    let in_a: Api<ConfigMap> = Api::default_namespaced(a.client());
    let in_b: Api<ConfigMap> = Api::default_namespaced(b.client());
    in_a.create(&PostParams::default(), &configmap("only-in-a"))
        .await
        .unwrap();
    in_a.get("only-in-a").await.unwrap();
    match in_b.get("only-in-a").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("expected 404 in the other env, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_leaves_no_processes_or_files() {
    let env = TestEnv::builder()
        .controller_manager(true)
        .start()
        .await
        .unwrap();
    let pids = env.pids();
    assert_eq!(pids.len(), 3);
    for pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    let dir = env.dir().to_owned();
    drop(env);
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still there after drop"
        );
    }
    assert!(!dir.exists(), "{} still there after drop", dir.display());
}

#[tokio::test]
async fn drop_on_panic_leaves_no_processes() {
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let env = TestEnv::start().await.unwrap();
        tx.send(env.pids()).unwrap();
        panic!("test failure while the env is up");
    });
    assert!(task.await.unwrap_err().is_panic());
    let pids = rx.recv().unwrap();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

#[tokio::test]
async fn garbage_collector_deletes_orphans() {
    let env = TestEnv::builder()
        .controller_manager(true)
        .start()
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::default_namespaced(env.client());
    let owner = configmaps
        .create(&PostParams::default(), &configmap("owner"))
        .await
        .unwrap();
    let mut dependent = configmap("dependent");
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..OwnerReference::default()
    }]);
    configmaps
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();

    eventually("the garbage collector to delete the dependent", || async {
        match configmaps.get_opt("dependent").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}
