//! The test bed of `bonny::testing` that the fencing and fault proofs stand on, checked on a
//! real etcd + kube-apiserver: the audit log as a witness, clients with pod identities, etcd
//! compaction (`410 Gone` on re-watch) and an etcd restart that keeps its data.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bonny::testing::{AuditRecord, TestEnv};
use bonny_e2e::{eventually, init_tracing};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..ConfigMap::default()
    }
}

/// Lets service account `account` of `namespace` write configmaps there.
async fn grant_edit(client: &Client, namespace: &str, account: &str) {
    // Not the built-in `edit`: its rules are aggregated by a controller that does not run here.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-writer".to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]
            .map(String::from)
            .to_vec(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{account}-configmap-writer")),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: "configmap-writer".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: account.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The audit record of the completed `verb` on configmap `name`.
async fn audited(env: &TestEnv, verb: &str, namespace: &str, name: &str) -> AuditRecord {
    eventually(
        &format!("the audit record of {verb} configmap {name}"),
        WAIT,
        || async {
            env.audit_log().unwrap().into_iter().find(|r| {
                r.verb == verb
                    && r.resource == "configmaps"
                    && r.namespace == namespace
                    && r.name == name
            })
        },
    )
    .await
}

#[tokio::test]
async fn pod_clients_write_under_their_pod_name_and_the_audit_log_shows_it() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.create_namespace("pods").await.unwrap();
    let first = env.pod_identity("pods", "op", "op-0").await.unwrap();
    let second = env.pod_identity("pods", "op", "op-1").await.unwrap();
    assert_eq!(first.username(), "system:serviceaccount:pods:op");
    assert!(first.kubeconfig_path().is_file());
    assert_ne!(first.pod_uid(), second.pod_uid());

    // Nothing is allowed before RBAC says so: the token authenticates, RBAC refuses.
    let client = first.client().await.unwrap();
    let refused = Api::<ConfigMap>::default_namespaced(client.clone())
        .create(&PostParams::default(), &config_map("early"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused}"
    );

    grant_edit(&env.client(), "pods", "op").await;
    // The client's default namespace is the pod's.
    let from_first: Api<ConfigMap> = Api::default_namespaced(client);
    eventually("RBAC to admit op-0's create", WAIT, || async {
        match from_first
            .create(&PostParams::default(), &config_map("from-op-0"))
            .await
        {
            Ok(created) => Some(created),
            Err(e) => {
                eprintln!("not yet: {e}");
                None
            }
        }
    })
    .await;
    let from_second: Api<ConfigMap> = Api::namespaced(second.client().await.unwrap(), "pods");
    from_second
        .patch(
            "from-op-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"by": "op-1"}})),
        )
        .await
        .unwrap();

    let create = audited(&env, "create", "pods", "from-op-0").await;
    assert_eq!(create.code, Some(201));
    assert_eq!(create.user.username, "system:serviceaccount:pods:op");
    assert!(
        create
            .user
            .groups
            .iter()
            .any(|g| g == "system:serviceaccounts:pods"),
        "{:?}",
        create.user.groups
    );
    assert_eq!(create.pod_name(), Some("op-0"));
    assert_eq!(
        create.user.extra["authentication.kubernetes.io/pod-uid"],
        [first.pod_uid()]
    );
    assert!(create.request_received <= create.completed);
    let patch = audited(&env, "patch", "pods", "from-op-0").await;
    assert_eq!((patch.pod_name(), patch.code), (Some("op-1"), Some(200)));
    assert!(patch.request_received >= create.completed);

    // The refused early create is there too, with its code. RBAC refused it before its body
    // was read, so the record names no object.
    let early = eventually("the audit record of the refused create", WAIT, || async {
        env.audit_log()
            .unwrap()
            .into_iter()
            .find(|r| r.verb == "create" && r.resource == "configmaps" && r.code == Some(403))
    })
    .await;
    assert_eq!((early.pod_name(), early.name.as_str()), (Some("op-0"), ""));
    assert!(!early.succeeded());
    // The admin has no pod.
    let mine = Api::<ConfigMap>::namespaced(env.client(), "pods");
    mine.create(&PostParams::default(), &config_map("from-admin"))
        .await
        .unwrap();
    let admin = audited(&env, "create", "pods", "from-admin").await;
    assert_eq!(
        (admin.user.username.as_str(), admin.pod_name()),
        ("admin", None)
    );
}

#[tokio::test]
async fn compaction_makes_a_rewatch_from_an_old_version_gone() {
    init_tracing();
    // Without the watch cache every watch reaches etcd, so the compaction shows at once.
    let env = TestEnv::builder().watch_cache(false).start().await.unwrap();
    let configmaps: Api<ConfigMap> = Api::default_namespaced(env.client());
    let created = configmaps
        .create(&PostParams::default(), &config_map("c"))
        .await
        .unwrap();
    let old = created.metadata.resource_version.unwrap();
    configmaps
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    // A write after the one the watch would resume at: compacting at the current revision
    // then removes the watch's start, not just the version before it.
    configmaps
        .create(&PostParams::default(), &config_map("later"))
        .await
        .unwrap();
    let params = WatchParams::default().fields("metadata.name=c").timeout(10);

    // Before: the watch from the old version replays the patch.
    let first = configmaps
        .watch(&params, &old)
        .await
        .unwrap()
        .boxed()
        .try_next()
        .await
        .unwrap();
    assert!(matches!(first, Some(WatchEvent::Modified(_))), "{first:?}");

    let revision = env.compact_etcd().await.unwrap();
    // The patch and the later create came after the old version.
    assert!(revision >= old.parse::<i64>().unwrap() + 2);
    // The API server's own loops may have written since.
    assert!(env.etcd_revision().await.unwrap() >= revision);

    // After: the same watch is told its version is gone.
    let gone = match configmaps.watch(&params, &old).await {
        Ok(stream) => match stream.boxed().try_next().await {
            Ok(Some(WatchEvent::Error(e))) => {
                eprintln!("watch error: {e:?}");
                e.code
            }
            Err(kube::Error::Api(s)) => s.code,
            other => panic!("expected 410 Gone, got {other:?}"),
        },
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("expected 410 Gone, got {e}"),
    };
    assert_eq!(gone, 410);
}

#[tokio::test]
async fn an_etcd_restart_keeps_every_object() {
    init_tracing();
    let mut env = TestEnv::start().await.unwrap();
    let configmaps: Api<ConfigMap> = Api::default_namespaced(env.client());
    configmaps
        .create(&PostParams::default(), &config_map("kept"))
        .await
        .unwrap();
    let revision = env.etcd_revision().await.unwrap();
    let pids = env.pids();

    env.restart_etcd().await.unwrap();
    assert_ne!(env.pids()[0], pids[0], "etcd runs as a new process");
    assert_eq!(env.pids()[1], pids[1], "the API server was not restarted");
    assert!(env.etcd_revision().await.unwrap() >= revision);

    // The API server reconnects by itself; the object is read from etcd, not a cache.
    let kept = eventually(
        "the API server to read through the new etcd",
        WAIT,
        || async { configmaps.get("kept").await.ok() },
    )
    .await;
    assert_eq!(kept.data, config_map("kept").data);
    eventually("a write through the new etcd", WAIT, || async {
        configmaps
            .create(&PostParams::default(), &config_map("after"))
            .await
            .ok()
    })
    .await;
    let listed: Vec<String> = configmaps
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(listed.contains(&"kept".to_owned()) && listed.contains(&"after".to_owned()));
}
