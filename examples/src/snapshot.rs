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
//! Today the source and the children are read from the API server (two reads per reconcile) and
//! the source is polled (`requeue_after`); the lines marked `TODO(related)` switch both to the
//! watch caches and a watch on the source once related-kind watches are in.

use std::{collections::BTreeMap, time::Duration};

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, CustomResource, ResourceExt,
    api::{ListParams, ObjectMeta},
};
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

/// Copies a source ConfigMap into versioned children and prunes the old ones.
// TODO(related): add `watches = [ConfigMap(field = spec.source)]` and drop `requeue_after`,
// so a change to the source reconciles at once instead of on the next poll.
#[bonny::controller(
    resource = Snapshot,
    owns = [ConfigMap],
    prune = true,
    requeue_after = "2s",
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
        let configmaps: Api<ConfigMap> = Api::namespaced(axn.client().clone(), &namespace);

        // TODO(related): `axn.cache::<ConfigMap>()?.get(&namespace, &snapshot.spec.source)`.
        let source = configmaps.get_opt(&snapshot.spec.source).await?;
        // TODO(related): `axn.cache::<ConfigMap>()?.owned_by_me()` instead of this LIST.
        let children = configmaps
            .list(&ListParams::default().labels(&format!("{SNAPSHOT_LABEL}={name}")))
            .await?
            .items;

        let uid = snapshot.uid();
        let copies = children
            .into_iter()
            .filter(|child| {
                child
                    .owner_references()
                    .iter()
                    .any(|owner| Some(&owner.uid) == uid.as_ref())
            })
            .filter_map(|child| {
                let version = child.labels().get(VERSION_LABEL)?.parse().ok()?;
                Some(Revision {
                    version,
                    data: child.data.unwrap_or_default(),
                })
            })
            .collect();
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
