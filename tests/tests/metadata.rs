//! Metadata-only owned kinds end to end on a real kube-apiserver: the owned kind is watched as
//! `PartialObjectMetadata` (the requests' `Accept` header says so, and the cache the reconcile
//! reads holds no body), a no-op reconcile sends no write, a spec change re-applies the child
//! once, an edit of the child's body by someone else is restored by one apply, and after a
//! restart (nothing remembered) the applied-body hash alone keeps a reconcile from writing. A
//! metadata-only related kind is watched the same way and its events still reconcile. The API
//! server's request counters and the operator's own client log say what was sent.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bonny::{
    controller::{APPLIED_HASH, DESCENDANT_LABEL},
    prelude::*,
    testing::{RequestCounts, TestEnv},
};
use bonny_e2e::{eventually, in_process::InProcess, init_tracing};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client, CustomResource, CustomResourceExt, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::reflector::ObjectRef,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "metadata";

/// A note is copied into one ConfigMap, `<note>-text`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "e2e.bonny.dev", version = "v1", kind = "Note", namespaced)]
pub struct NoteSpec {
    /// What the child holds.
    pub text: String,
}

/// What one reconcile saw: the note's `touch` label and the cached child, if the cache had it.
#[derive(Clone, Debug)]
struct Seen {
    touch: Option<String>,
    /// The cached child's resource version and whether it carried a body.
    cached: Option<(String, bool)>,
}

/// Owns ConfigMaps as metadata only; records what each reconcile's cache read returned.
#[bonny::controller(resource = Note, owns = [ConfigMap], metadata = [ConfigMap])]
#[derive(Clone, Default)]
struct NoteController {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Reconcile<Note> for NoteController {
    async fn apply(&self, axn: &mut Axn<Note>) -> Result<Action, ReconcileError> {
        let child = format!("{}-text", axn.name());
        let cached = axn
            .cache::<ConfigMap>()?
            .get(NS, &child)
            .map(|c| (c.resource_version().unwrap_or_default(), c.data.is_some()));
        let seen = Seen {
            touch: axn.object().labels().get("touch").cloned(),
            cached,
        };
        let record = self.seen.clone();
        axn.after_processed(move |_| record.lock().unwrap().push(seen));
        axn.register_descendant(ConfigMap {
            metadata: ObjectMeta {
                name: Some(child),
                ..ObjectMeta::default()
            },
            data: Some([("text".to_owned(), axn.object().spec.text.clone())].into()),
            ..ConfigMap::default()
        })?;
        Ok(Action::await_change())
    }
}

impl NoteController {
    /// The reconciles that ended so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A reconcile of the note touched `touch` ended, its cache showing the child at `version`.
    fn saw(&self, touch: &str, version: &str) -> bool {
        self.seen().iter().any(|seen| {
            seen.touch.as_deref() == Some(touch)
                && seen.cached.as_ref().is_some_and(|(v, _)| v == version)
        })
    }
}

/// A request the operator sent.
#[derive(Clone, Debug)]
struct Sent {
    method: String,
    uri: String,
    accept: String,
}

type Log = Arc<Mutex<Vec<Sent>>>;

/// The operator's writes to ConfigMaps so far, as its client sent them.
fn configmap_writes(log: &Log) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|sent| sent.method != "GET" && sent.uri.contains("/configmaps"))
        .count()
}

/// The operator's client, recording every request it sends.
async fn recording_client(env: &TestEnv) -> (Client, Log) {
    let kubeconfig = Kubeconfig::read_from(env.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let record =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock().unwrap().push(Sent {
                method: request.method().to_string(),
                uri: request.uri().to_string(),
                accept,
            });
            request
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&record)
        .build();
    (client, requests)
}

/// Server-side applies of ConfigMaps.
fn applies(counts: &RequestCounts) -> u64 {
    counts.count("APPLY", "configmaps")
}

/// Writes to ConfigMaps the API server counted (other components write some too).
fn configmap_server_writes(counts: &RequestCounts) -> u64 {
    counts.writes_to(&["configmaps"])
}

/// Touches the note's labels (a reconcile that writes nothing) and waits until a reconcile
/// of that touch saw the child in its cache at the live child's version.
async fn settle(
    env: &TestEnv,
    controller: &NoteController,
    touch: &str,
) -> (ConfigMap, RequestCounts) {
    let client = env.client();
    let notes: Api<Note> = Api::namespaced(client.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client, NS);
    notes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touch": touch}}})),
        )
        .await
        .unwrap();
    let live = eventually(
        "a reconcile of the touch to see the live child cached",
        WAIT,
        || async {
            let live = configmaps.get("n1-text").await.unwrap();
            let version = live.resource_version().unwrap();
            controller.saw(touch, &version).then_some(live)
        },
    )
    .await;
    (live, env.request_counts().await.unwrap())
}

#[tokio::test]
async fn a_metadata_only_kind_is_watched_without_bodies_and_applied_by_its_hash() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Note::crd()).await.unwrap();
    env.create_namespace(NS).await.unwrap();
    let client = env.client();
    let controller = NoteController::default();
    let (operator_client, requests) = recording_client(&env).await;
    let running = InProcess::start(
        InProcess::builder("metadata-e2e", operator_client, NS).controller(controller.clone()),
    );
    let notes: Api<Note> = Api::namespaced(client.clone(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    notes
        .create(
            &PostParams::default(),
            &Note::new(
                "n1",
                NoteSpec {
                    text: "first".into(),
                },
            ),
        )
        .await
        .unwrap();
    let child = eventually("the child", WAIT, || async {
        configmaps.get_opt("n1-text").await.unwrap()
    })
    .await;
    assert_eq!(child.labels()[DESCENDANT_LABEL], "note");
    assert_eq!(child.annotations()[APPLIED_HASH].len(), 64);

    // The cache the reconcile reads holds the child's metadata, not its body.
    let (live, _) = settle(&env, &controller, "1").await;
    assert_eq!(live.data.unwrap()["text"], "first");
    let seen = controller.seen();
    let cached = seen
        .iter()
        .filter_map(|seen| seen.cached.clone())
        .collect::<Vec<_>>();
    assert!(
        !cached.is_empty() && cached.iter().all(|(_, body)| !body),
        "every cached child has no body: {seen:?}"
    );
    // And the ConfigMap cache's list and watch asked for PartialObjectMetadata; the notes'
    // did not.
    let sent = requests.lock().unwrap().clone();
    // The lists and watches of a path, without the startup check's one-item list.
    let accept_of = |path: &str| -> Vec<String> {
        sent.iter()
            .filter(|sent| {
                sent.method == "GET"
                    && sent.uri.split('?').next() == Some(path)
                    && !sent.uri.ends_with("limit=1")
            })
            .map(|sent| sent.accept.clone())
            .collect()
    };
    let configmap_reads = accept_of(&format!("/api/v1/namespaces/{NS}/configmaps"));
    let note_reads = accept_of(&format!("/apis/e2e.bonny.dev/v1/namespaces/{NS}/notes"));
    eprintln!("ConfigMap list/watch Accept headers: {configmap_reads:?}");
    assert!(
        !configmap_reads.is_empty()
            && configmap_reads
                .iter()
                .all(|accept| accept.contains("as=PartialObjectMetadata")),
        "{configmap_reads:?}"
    );
    assert!(
        !note_reads.is_empty()
            && note_reads
                .iter()
                .all(|accept| !accept.contains("PartialObjectMetadata")),
        "{note_reads:?}"
    );

    // A reconcile with nothing to change sends nothing about ConfigMaps.
    let (_, quiet) = settle(&env, &controller, "2").await;
    let written = configmap_writes(&requests);
    let (_, done) = settle(&env, &controller, "3").await;
    assert_eq!(
        (
            configmap_writes(&requests) - written,
            applies(&done) - applies(&quiet)
        ),
        (0, 0),
        "a no-op reconcile sends no write (sent, applies the API server counted): {:?}",
        done.by_verb_resource()
    );
    eprintln!(
        "a no-op reconcile: 0 writes to configmaps ({} server-counted writes by anyone)",
        configmap_server_writes(&done) - configmap_server_writes(&quiet)
    );

    // A new spec: the child is applied again, once.
    notes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"text": "second"}})),
        )
        .await
        .unwrap();
    eventually("the child to follow the spec", WAIT, || async {
        let live = configmaps.get("n1-text").await.unwrap();
        (live.data.unwrap()["text"] == "second").then_some(())
    })
    .await;
    let (_, changed) = settle(&env, &controller, "4").await;
    let spec_applies = applies(&changed) - applies(&done);
    eprintln!("a spec change: {spec_applies} apply of the child");
    assert_eq!(spec_applies, 1, "a spec change re-applies the child once");

    // Someone else edits the child's body: restored by one apply.
    configmaps
        .patch(
            "n1-text",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"text": "tampered"}})),
        )
        .await
        .unwrap();
    eventually("the child's body to be restored", WAIT, || async {
        let live = configmaps.get("n1-text").await.unwrap();
        (live.data.unwrap()["text"] == "second").then_some(())
    })
    .await;
    let (_, restored) = settle(&env, &controller, "5").await;
    let restore_applies = applies(&restored) - applies(&changed);
    eprintln!("an edit by someone else: {restore_applies} apply to restore the child");
    assert_eq!(
        restore_applies, 1,
        "an edit by someone else is restored once"
    );
    running.stop().await;

    // A new operator remembers no apply: the hash alone tells that the child is in place.
    let before = env.request_counts().await.unwrap();
    controller.seen.lock().unwrap().clear();
    let (operator_client, requests) = recording_client(&env).await;
    let running = InProcess::start(
        InProcess::builder("metadata-e2e", operator_client, NS).controller(controller.clone()),
    );
    let (_, after) = settle(&env, &controller, "6").await;
    // Reconciles that ran before the cache had the child apply it (once each, changing
    // nothing); every one that saw it cached sent nothing.
    let blind = controller
        .seen()
        .iter()
        .filter(|seen| seen.cached.is_none())
        .count() as u64;
    let restart_applies = applies(&after) - applies(&before);
    eprintln!(
        "after a restart: {restart_applies} applies, {blind} reconciles before the cache had \
         the child, {} in all",
        controller.seen().len()
    );
    assert_eq!(
        restart_applies, blind,
        "after a restart, a reconcile that sees the child cached trusts its hash"
    );
    let written = configmap_writes(&requests);
    let (_, quiet) = settle(&env, &controller, "7").await;
    assert_eq!(
        (
            configmap_writes(&requests) - written,
            applies(&quiet) - applies(&after)
        ),
        (0, 0),
        "a no-op reconcile after a restart sends no write: {:?}",
        quiet.by_verb_resource()
    );
    running.stop().await;
}

/// A Secret labelled `note=<name>` concerns the note of that name in its namespace.
fn note_of(secret: &Secret) -> Option<ObjectRef<Note>> {
    let name = secret.labels().get("note")?;
    Some(ObjectRef::new(name).within(secret.namespace()?.as_str()))
}

/// Watches Secrets as metadata only; records the cached `s1` of each reconcile: its resource
/// version and whether it had a body.
#[bonny::controller(
    resource = Note,
    name = "note-related",
    watches = [Secret(map = note_of)],
    metadata = [Secret]
)]
#[derive(Clone, Default)]
struct RelatedController {
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Reconcile<Note> for RelatedController {
    async fn apply(&self, axn: &mut Axn<Note>) -> Result<Action, ReconcileError> {
        if let Some(secret) = axn.cache::<Secret>()?.get(RELATED_NS, "s1") {
            let seen = (
                secret.resource_version().unwrap_or_default(),
                secret.data.is_some(),
            );
            self.seen.lock().unwrap().push(seen);
        }
        Ok(Action::await_change())
    }
}

const RELATED_NS: &str = "metadata-related";

#[tokio::test]
async fn a_metadata_only_related_kind_is_watched_without_bodies_and_still_maps_its_events() {
    init_tracing();
    let env = TestEnv::start().await.unwrap();
    env.install_crd(Note::crd()).await.unwrap();
    env.create_namespace(RELATED_NS).await.unwrap();
    let client = env.client();
    let controller = RelatedController::default();
    let (operator_client, requests) = recording_client(&env).await;
    let running = InProcess::start(
        InProcess::builder("metadata-related-e2e", operator_client, RELATED_NS)
            .controller(controller.clone()),
    );
    let notes: Api<Note> = Api::namespaced(client.clone(), RELATED_NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), RELATED_NS);
    notes
        .create(
            &PostParams::default(),
            &Note::new("n1", NoteSpec { text: "x".into() }),
        )
        .await
        .unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s1".into()),
            labels: Some([("note".to_owned(), "n1".to_owned())].into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // Each change of the Secret reconciles the note, whose cache read shows no body.
    for round in ["1", "2"] {
        let changed = secrets
            .patch(
                "s1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"round": round}}})),
            )
            .await
            .unwrap();
        let version = changed.resource_version().unwrap();
        eventually("a reconcile to see the changed Secret", WAIT, || async {
            let seen = controller.seen.lock().unwrap().clone();
            seen.iter().any(|(v, _)| *v == version).then_some(())
        })
        .await;
    }
    let seen = controller.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, body)| !body),
        "no cached body: {seen:?}"
    );
    let watches: Vec<Sent> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|sent| sent.uri.contains("/secrets?") && !sent.uri.ends_with("limit=1"))
        .cloned()
        .collect();
    assert!(
        !watches.is_empty()
            && watches
                .iter()
                .all(|sent| sent.accept.contains("as=PartialObjectMetadata")),
        "{watches:#?}"
    );
    eprintln!(
        "related Secrets: {} list/watch requests, all PartialObjectMetadata; {} reconciles saw \
         the Secret cached, none with a body",
        watches.len(),
        seen.len()
    );
    running.stop().await;
}
