//! Counting the Widget children (`<widget>-data` ConfigMaps) the operator created, two ways
//! independent of the operator: a watch of the test's own that survives API server restarts
//! (distinct UIDs per name), and the API server's audit log (`201 Created` answers).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bonny::testing::AuditRecord;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

/// The suffix of a Widget child's name.
pub const CHILD_SUFFIX: &str = "-data";

/// The child ConfigMap's name of widget `name`.
pub fn child_name(widget: &str) -> String {
    format!("{widget}{CHILD_SUFFIX}")
}

/// A watch on every ConfigMap of the cluster, remembering each child's UIDs.
#[derive(Debug)]
pub struct Census {
    uids: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    errors: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Census {
    /// Starts the watch. It re-lists and re-watches after every error (with the watcher's
    /// default backoff), so it outlives API server restarts; a re-list repeats objects already
    /// seen, which the UID sets absorb.
    pub fn start(client: Client) -> Self {
        let uids = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let api: Api<ConfigMap> = Api::all(client);
        let (seen, failed) = (uids.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                        if !is_child(&cm) {
                            continue;
                        }
                        let key =
                            format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any());
                        let uid = cm.uid().unwrap_or_default();
                        seen.lock().unwrap().entry(key).or_default().insert(uid);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        tracing::debug!(%error, "census watch error; it re-watches");
                    }
                }
            }
        });
        Self { uids, errors, task }
    }

    /// Each child seen, `<namespace>/<name>`, with its distinct UIDs.
    pub fn uids(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.uids.lock().unwrap().clone()
    }

    /// How many children were seen with each number of UIDs (`n > 1`: re-created).
    pub fn creations(&self) -> BTreeMap<String, usize> {
        self.uids()
            .into_iter()
            .map(|(key, uids)| (key, uids.len()))
            .collect()
    }

    /// Errors the watch recovered from (each forced a re-watch or re-list).
    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_child(cm: &ConfigMap) -> bool {
    cm.name_any().ends_with(CHILD_SUFFIX)
        && cm
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "Widget")
}

/// Per child `<namespace>/<name>`, how many requests the audit log shows creating it: a
/// `create`, or a server-side apply `patch` that created, answered `201 Created`.
pub fn audited_creations(records: &[AuditRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        if record.resource == "configmaps"
            && record.subresource.is_empty()
            && record.name.ends_with(CHILD_SUFFIX)
            && matches!(record.verb.as_str(), "create" | "patch")
            && record.code == Some(201)
        {
            *counts
                .entry(format!("{}/{}", record.namespace, record.name))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// The tally of children against the widgets that should have one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Widgets expected to have a child.
    pub expected: usize,
    /// Expected children never seen (or never audited as created).
    pub lost: Vec<String>,
    /// Children created more than once, with how many times.
    pub duplicated: Vec<(String, usize)>,
}

impl Tally {
    /// Compares `created` (child key -> creations) with the `expected` child keys.
    pub fn of<'a>(
        expected: impl IntoIterator<Item = &'a String>,
        created: &BTreeMap<String, usize>,
    ) -> Self {
        let mut tally = Self::default();
        for key in expected {
            tally.expected += 1;
            if created.get(key).copied().unwrap_or(0) == 0 {
                tally.lost.push(key.clone());
            }
        }
        tally.duplicated = created
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(key, n)| (key.clone(), *n))
            .collect();
        tally
    }

    /// Extra creations beyond the first, over all children.
    pub fn extra(&self) -> usize {
        self.duplicated.iter().map(|(_, n)| n - 1).sum()
    }
}
