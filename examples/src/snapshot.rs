//! Snapshots: a `Snapshot` copies a source ConfigMap it does not own into numbered, immutable
//! child ConfigMaps whenever the source's data changes, and keeps the newest `spec.keep`.
//!
//! What it shows:
//! - **A related object it does not own.** The source ConfigMap is named by `spec.source`; the
//!   `Snapshot` reads it but never writes it, and it is not its descendant.
//! - **Reading its own children.** Each reconcile looks at the children it already made (those
//!   owned by this `Snapshot`) to know the newest version and whether the source changed since.
//! - **Pruning.** `prune = true`: every reconcile registers the children to keep (the newest
//!   `keep`, with a new one when the source changed), and the SDK deletes the older ones. It
//!   deletes only what it applied for this `Snapshot` (labelled `bonny.dev/controller=snapshot`
//!   and owned by it): a ConfigMap made by hand that looks like a snapshot is left alone.
//! - **A missing source** is a `Ready=False` condition with reason `SourceMissing`; the
//!   children already made are kept.
//!
//! ```yaml
//! apiVersion: snapshot.bonny.dev/v1
//! kind: Snapshot
//! metadata: { name: nightly, namespace: default }
//! spec: { source: settings, keep: 3 }
//! ```
//!
//! ```text
//! $ kubectl get snapshots
//! NAME      SOURCE     KEEP   LATEST
//! nightly   settings   3      nightly-v7
//! $ kubectl get configmaps -l snapshot.bonny.dev/snapshot=nightly
//! NAME         DATA   AGE
//! nightly-v5   2      3h
//! nightly-v6   2      1h
//! nightly-v7   2      2m
//! ```
//!
//! The source is watched (`watches = [ConfigMap(field = spec.source)]`): a change to it
//! reconciles exactly the snapshots that name it, at once, with no polling. The source and the
//! children are read from the controller's watch caches (`axn.cache()`), so a reconcile with
//! nothing new sends no request at all.

use std::{collections::BTreeMap, time::Duration};

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{CustomResource, ResourceExt, api::ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label naming the `Snapshot` a child belongs to.
pub const SNAPSHOT_LABEL: &str = "snapshot.bonny.dev/snapshot";
/// The label holding a child's version number.
pub const VERSION_LABEL: &str = "snapshot.bonny.dev/version";
/// How often the source is looked at while it cannot be watched.
pub const POLL: Duration = Duration::from_secs(2);

/// What to copy, and how many copies to keep.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "snapshot.bonny.dev",
    version = "v1",
    kind = "Snapshot",
    namespaced,
    status = "SnapshotStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#,
    printcolumn = r#"{"name":"Keep","type":"integer","jsonPath":".spec.keep"}"#,
    printcolumn = r#"{"name":"Latest","type":"string","jsonPath":".status.latest"}"#
)]
pub struct SnapshotSpec {
    /// The ConfigMap to copy, in the `Snapshot`'s namespace.
    pub source: String,
    /// How many copies to keep, newest first (at least 1).
    pub keep: u32,
}

/// What the operator did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// The highest version made so far (versions are never reused).
    #[serde(default)]
    pub version: u64,
    /// The newest copy's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// The copies kept, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// `Ready`: the newest copy holds the source's data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A revision (one copy), as read back from the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// Its version number.
    pub version: u64,
    /// The source's data when it was made.
    pub data: BTreeMap<String, String>,
}

/// What one reconcile decided: the copies to keep, newest first, the first one possibly new.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Newest first, at most `keep`.
    pub kept: Vec<Revision>,
    /// Whether the newest is a new copy of the source.
    pub created: bool,
}

/// Which copies to keep, given those there are (any order), the source's data if it exists,
/// how many to keep and the highest version ever made. Pure.
pub fn plan(
    mut copies: Vec<Revision>,
    source: Option<&BTreeMap<String, String>>,
    keep: usize,
    made: u64,
) -> Plan {
    copies.sort_by_key(|copy| std::cmp::Reverse(copy.version));
    let newest = copies.first().map(|copy| copy.version).unwrap_or(0);
    let created = match source {
        Some(data) => copies.first().is_none_or(|copy| &copy.data != data),
        None => false,
    };
    if let (true, Some(data)) = (created, source) {
        copies.insert(
            0,
            Revision {
                version: newest.max(made) + 1,
                data: data.clone(),
            },
        );
    }
    copies.truncate(keep.max(1));
    Plan {
        kept: copies,
        created,
    }
}

/// The child ConfigMap of `snapshot` holding `copy`; immutable, since a copy never changes.
fn child(snapshot: &str, copy: &Revision) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{snapshot}-v{}", copy.version)),
            labels: Some(
                [
                    (SNAPSHOT_LABEL.to_owned(), snapshot.to_owned()),
                    (VERSION_LABEL.to_owned(), copy.version.to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(copy.data.clone()),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// How soon a reconcile that found the cache behind its own last copy looks again.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(500);

/// Copies a source ConfigMap into versioned children and prunes the old ones.
#[bonny::controller(
    resource = Snapshot,
    owns = [ConfigMap],
    watches = [ConfigMap(field = spec.source)],
    prune = true,
)]
#[derive(Clone, Debug, Default)]
pub struct SnapshotController;

impl Reconcile<Snapshot> for SnapshotController {
    async fn apply(&self, axn: &mut Axn<Snapshot>) -> Result<Action, ReconcileError> {
        let snapshot = axn.object().clone();
        if snapshot.spec.source.trim().is_empty() {
            return Err(ReconcileError::invalid_spec(
                "spec.source is empty: name the ConfigMap to copy",
            ));
        }
        if snapshot.spec.keep == 0 {
            return Err(ReconcileError::invalid_spec(
                "spec.keep is 0: keep at least one copy",
            ));
        }
        let name = axn.name();
        let namespace = axn.namespace().unwrap_or_default();
        let cache = axn.cache::<ConfigMap>()?;
        let source = cache.get(&namespace, &snapshot.spec.source);
        let copies: Vec<Revision> = cache
            .owned_by_me()
            .into_iter()
            .filter(|child| child.labels().get(SNAPSHOT_LABEL) == Some(&name))
            .filter_map(|child| {
                let version = child.labels().get(VERSION_LABEL)?.parse().ok()?;
                Some(Revision {
                    version,
                    data: child.data.unwrap_or_default(),
                })
            })
            .collect();
        // The cache lags our own last copy: keep every copy it shows (nothing is pruned) and
        // look again shortly, rather than copy the source a second time.
        let made = snapshot.status.as_ref().map_or(0, |status| status.version);
        if copies.iter().map(|copy| copy.version).max().unwrap_or(0) < made {
            for copy in &copies {
                axn.register_descendant(child(&name, copy))?;
            }
            return Ok(Action::requeue(CACHE_LAG_RETRY));
        }
        let mut status = snapshot.status.clone().unwrap_or_default();
        let source_data = source
            .as_ref()
            .map(|source| source.data.clone().unwrap_or_default());
        let plan = plan(
            copies,
            source_data.as_ref(),
            snapshot.spec.keep as usize,
            status.version,
        );
        // Registering every copy to keep is what keeps it: the ones left out are pruned.
        for copy in &plan.kept {
            axn.register_descendant(child(&name, copy))?;
        }
        if plan.created
            && let Some(newest) = plan.kept.first()
        {
            axn.normal_event(
                "Copied",
                format!(
                    "{} copied into {name}-v{}",
                    snapshot.spec.source, newest.version
                ),
            );
        }
        status.version = plan
            .kept
            .first()
            .map_or(status.version, |copy| copy.version.max(status.version));
        status.latest = plan
            .kept
            .first()
            .map(|copy| format!("{name}-v{}", copy.version));
        status.kept = plan
            .kept
            .iter()
            .map(|copy| format!("{name}-v{}", copy.version))
            .collect();
        let generation = snapshot.metadata.generation;
        match &source {
            Some(_) => set_condition(
                &mut status.conditions,
                "Ready",
                true,
                "Copied",
                "the newest copy holds the source's data",
                generation,
            ),
            None => set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "SourceMissing",
                format!(
                    "the ConfigMap {} does not exist in {namespace}; the copies made are kept",
                    snapshot.spec.source
                ),
                generation,
            ),
        }
        axn.set_status(&status)?;
        Ok(Action::await_change())
    }
}

/// The snapshot operator, as the binary runs it.
///
/// # Errors
/// When the operator's settings are invalid (see [`bonny::OperatorBuilder::build`]).
pub fn operator() -> Result<bonny::Operator, bonny::Error> {
    builder().build()
}

/// The snapshot operator's builder, for callers that add settings before building.
pub fn builder() -> bonny::OperatorBuilder {
    bonny::Operator::builder()
        .name("snapshot-operator")
        .controller(SnapshotController)
        .leader_election(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: &str) -> BTreeMap<String, String> {
        [("key".to_owned(), value.to_owned())].into()
    }

    fn copy(version: u64, value: &str) -> Revision {
        Revision {
            version,
            data: data(value),
        }
    }

    #[test]
    fn a_first_copy_is_made() {
        let plan = plan(vec![], Some(&data("a")), 3, 0);
        assert_eq!(plan.kept, [copy(1, "a")]);
        assert!(plan.created);
    }

    #[test]
    fn an_unchanged_source_makes_nothing_new() {
        let plan = plan(vec![copy(1, "a"), copy(2, "b")], Some(&data("b")), 3, 2);
        assert_eq!(plan.kept, [copy(2, "b"), copy(1, "a")]);
        assert!(!plan.created);
    }

    #[test]
    fn a_changed_source_adds_a_copy_and_drops_the_oldest_beyond_keep() {
        let plan = plan(vec![copy(2, "b"), copy(1, "a")], Some(&data("c")), 2, 2);
        assert_eq!(plan.kept, [copy(3, "c"), copy(2, "b")]);
        assert!(plan.created);
    }

    #[test]
    fn versions_are_never_reused_and_a_missing_source_keeps_the_copies() {
        // Every copy deleted by hand: the next one still counts on.
        assert_eq!(plan(vec![], Some(&data("a")), 2, 7).kept, [copy(8, "a")]);
        let plan = plan(vec![copy(1, "a"), copy(2, "b")], None, 5, 2);
        assert_eq!(plan.kept, [copy(2, "b"), copy(1, "a")]);
        assert!(!plan.created);
    }
}
