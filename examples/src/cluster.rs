//! A cluster-scoped resource: a `SharedConfig` copies one ConfigMap into every namespace it
//! lists, and its finalizer deletes the copies when the `SharedConfig` is deleted.
//!
//! What it shows:
//! - **A cluster-scoped custom resource.** The resource has no `namespaced` in its
//!   `#[kube(...)]`, so the controller watches it cluster-wide and
//!   [`Axn::namespace`] is `None`.
//! - **Objects managed explicitly, not through owner references.** Kubernetes would allow a
//!   cluster-scoped owner to own namespaced objects, and [`Axn::register_descendant`] would
//!   accept them if they named their namespace. This example does not do that. Each copy is
//!   labelled `bonny.dev/shared-config=<name>` and server-side applied by the controller. The
//!   controller deletes a copy when its namespace leaves `spec.namespaces`. The garbage
//!   collector is not involved: it is slow and invisible to the owner, it needs
//!   kube-controller-manager, and deleting the owner with `--cascade=orphan` keeps the copies.
//! - **A finalizer whose `cleanup` undoes the work.** `finalizer = "..."` makes the SDK add the
//!   finalizer and call [`Reconcile::cleanup`] when the `SharedConfig` is deleted. Cleanup runs
//!   once per deletion, to success, and the finalizer is removed after it. Cleanup deletes every
//!   labelled copy in the cluster, including copies left behind in namespaces that were removed
//!   from the list while the operator was down.
//! - **Copies that are not the operator's are left alone.** Suppose a namespace already holds a
//!   ConfigMap of that name without the label. The `SharedConfig` reports it in
//!   `status.conflicts` and is not `Ready`. The ConfigMap is neither overwritten nor deleted.
//!
//! ```yaml
//! apiVersion: cluster.bonny.dev/v1
//! kind: SharedConfig
//! metadata: { name: feature-flags }
//! spec:
//!   namespaces: [shop, billing]
//!   data:
//!     checkout.v2: "true"
//!     banner: "spring sale"
//! ```
//!
//! Each listed namespace then holds a ConfigMap `feature-flags` with that data. A listed namespace
//! that does not exist yet is reported in `status.missing`, and the controller tries again every
//! 30 seconds. A copy that someone edits is repaired on the next periodic reconcile
//! (`requeue_after = "10m"`), because nothing watches unowned objects.
//!
//! Run it with `cargo run -p bonny-examples --bin cluster-operator -- run` after installing the
//! CRD (`... --bin cluster-operator -- manifests --crds | kubectl apply -f -`).

use std::{collections::BTreeSet, time::Duration};

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Client, CustomResource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label on every copy: its value is the name of the `SharedConfig` it came from.
pub const COPY_LABEL: &str = "bonny.dev/shared-config";

/// How soon to look again for listed namespaces that do not exist yet.
const MISSING_RETRY: Duration = Duration::from_secs(30);

/// One ConfigMap's data, copied into several namespaces.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cluster.bonny.dev",
    version = "v1",
    kind = "SharedConfig",
    status = "SharedConfigStatus",
    shortname = "shc",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
pub struct SharedConfigSpec {
    /// The namespaces that get a copy, each a ConfigMap named after the `SharedConfig`.
    pub namespaces: Vec<String>,
    /// The ConfigMap's data.
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, String>,
}

/// Where the copies are.
///
/// The lists are always written, even when empty. A status write is a JSON merge patch, and an
/// omitted list would keep its old value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedConfigStatus {
    /// Namespaces that hold an up-to-date copy.
    #[serde(default)]
    pub copied_to: Vec<String>,
    /// Listed namespaces that do not exist.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Listed namespaces that already hold a ConfigMap of that name that is not a copy.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// `Ready`: every listed namespace holds an up-to-date copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Keeps a copy of each `SharedConfig` in every namespace it lists, and no others.
#[bonny::controller(
    resource = SharedConfig,
    finalizer = "cluster.bonny.dev/copies",
    rbac(group = "", resources = ["configmaps"], verbs = ["get", "list", "create", "patch", "delete"]),
    requeue_after = "10m",
)]
#[derive(Clone, Debug, Default)]
pub struct SharedConfigController;

impl Reconcile<SharedConfig> for SharedConfigController {
    async fn apply(&self, axn: &mut Axn<SharedConfig>) -> Result<Action, ReconcileError> {
        let shared = axn.object().clone();
        let name = axn.name();
        check_label_value(&name)?;
        let wanted: BTreeSet<&str> = shared.spec.namespaces.iter().map(String::as_str).collect();
        let client = axn.client().clone();
        let manager = axn.controller_name().to_owned();
        let desired = copy(&name, &shared.spec);

        let mut status = shared.status.clone().unwrap_or_default();
        status.copied_to.clear();
        status.missing.clear();
        status.conflicts.clear();
        for namespace in &wanted {
            match sync_copy(&client, namespace, &desired, &manager).await? {
                Synced::Current => status.copied_to.push((*namespace).to_owned()),
                Synced::Written => {
                    axn.normal_event("Copied", format!("wrote ConfigMap {namespace}/{name}"));
                    status.copied_to.push((*namespace).to_owned());
                }
                Synced::NamespaceMissing => status.missing.push((*namespace).to_owned()),
                Synced::Conflict => {
                    axn.warning_event(
                        "Conflict",
                        format!(
                            "ConfigMap {namespace}/{name} exists and is not a copy (no \
                             {COPY_LABEL}={name} label); rename or delete it"
                        ),
                    );
                    status.conflicts.push((*namespace).to_owned());
                }
            }
        }

        // Copies in namespaces that are no longer listed.
        for stale in copies(&client, &name).await? {
            let namespace = stale.namespace().unwrap_or_default();
            if !wanted.contains(namespace.as_str()) {
                delete_copy(&client, &stale).await?;
                axn.normal_event(
                    "Removed",
                    format!(
                        "deleted ConfigMap {namespace}/{name}: the namespace is no longer listed"
                    ),
                );
            }
        }

        let ready = status.missing.is_empty() && status.conflicts.is_empty();
        let (reason, message) = if ready {
            (
                "Copied",
                format!("{} namespaces hold a copy", status.copied_to.len()),
            )
        } else if !status.conflicts.is_empty() {
            (
                "Conflict",
                format!(
                    "ConfigMaps that are not copies block namespaces {}",
                    status.conflicts.join(", ")
                ),
            )
        } else {
            (
                "NamespaceMissing",
                format!("namespaces {} do not exist", status.missing.join(", ")),
            )
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            ready,
            reason,
            message,
            shared.metadata.generation,
        );
        axn.set_status(&status)?;
        if status.missing.is_empty() {
            Ok(Action::await_change())
        } else {
            Ok(Action::requeue(MISSING_RETRY))
        }
    }

    async fn cleanup(&self, axn: &mut Axn<SharedConfig>) -> Result<Action, ReconcileError> {
        let name = axn.name();
        let client = axn.client().clone();
        let mut deleted = Vec::new();
        for stale in copies(&client, &name).await? {
            delete_copy(&client, &stale).await?;
            deleted.push(stale.namespace().unwrap_or_default());
        }
        axn.normal_event(
            "CleanedUp",
            format!(
                "deleted {} copies of ConfigMap {name} (namespaces: {})",
                deleted.len(),
                deleted.join(", ")
            ),
        );
        Ok(Action::await_change())
    }
}

/// What [`sync_copy`] found or did in one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Synced {
    /// The copy was already up to date: nothing written.
    Current,
    /// The copy was created or updated.
    Written,
    /// The namespace does not exist.
    NamespaceMissing,
    /// A ConfigMap of that name exists and is not a copy.
    Conflict,
}

/// The copy of `spec.data` for the `SharedConfig` named `name` (without a namespace).
pub fn copy(name: &str, spec: &SharedConfigSpec) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([(COPY_LABEL.to_owned(), name.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some(spec.data.clone()),
        ..ConfigMap::default()
    }
}

/// Whether `live` is a copy of the `SharedConfig` named `name`.
pub fn is_copy_of(live: &ConfigMap, name: &str) -> bool {
    live.labels().get(COPY_LABEL).map(String::as_str) == Some(name)
}

/// Brings the copy in `namespace` up to date. It writes only when the data differs, and it
/// never touches a ConfigMap that is not a copy.
async fn sync_copy(
    client: &Client,
    namespace: &str,
    desired: &ConfigMap,
    manager: &str,
) -> Result<Synced, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    if let Some(live) = api.get_opt(&name).await? {
        if !is_copy_of(&live, &name) {
            return Ok(Synced::Conflict);
        }
        if live.data.unwrap_or_default() == desired.data.clone().unwrap_or_default() {
            return Ok(Synced::Current);
        }
    }
    // Server-side apply as the controller's field manager: keys removed from `spec.data` are
    // removed from the copy, because this manager owned them.
    match api
        .patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(desired),
        )
        .await
    {
        Ok(_) => Ok(Synced::Written),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Synced::NamespaceMissing),
        Err(err) => Err(err),
    }
}

/// Every copy of the `SharedConfig` named `name`, in any namespace.
async fn copies(client: &Client, name: &str) -> Result<Vec<ConfigMap>, kube::Error> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    let selector = format!("{COPY_LABEL}={name}");
    Ok(all
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Deletes one copy. The UID precondition makes sure that a ConfigMap someone else created
/// under the same name in the meantime survives. A copy already gone counts as deleted.
async fn delete_copy(client: &Client, copy: &ConfigMap) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> =
        Api::namespaced(client.clone(), &copy.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: copy.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&copy.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// The name becomes a label value, which allows at most 63 characters.
fn check_label_value(name: &str) -> Result<(), ReconcileError> {
    if name.len() > 63 {
        return Err(ReconcileError::invalid_spec(format!(
            "metadata.name {name:?} is {} characters long; a SharedConfig name must fit a label \
             value (at most 63)",
            name.len()
        )));
    }
    Ok(())
}

/// The shared-config operator: one controller, leader election on.
///
/// # Errors
/// When the environment holds an invalid setting.
pub fn operator() -> Result<bonny::Operator, bonny::Error> {
    builder().build()
}

/// The shared-config operator's builder, for callers that add settings (a client) before
/// building; [`operator`] builds it as is.
pub fn builder() -> bonny::OperatorBuilder {
    bonny::Operator::builder()
        .name("shared-config-operator")
        .controller(SharedConfigController)
        .leader_election(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_labelled_with_its_source() {
        let spec = SharedConfigSpec {
            namespaces: vec!["a".into()],
            data: [("k".to_owned(), "v".to_owned())].into(),
        };
        let copy = copy("flags", &spec);
        assert!(is_copy_of(&copy, "flags"));
        assert!(!is_copy_of(&copy, "other"));
        assert!(!is_copy_of(&ConfigMap::default(), "flags"));
    }

    #[test]
    fn long_names_are_rejected_with_the_rule() {
        assert!(check_label_value(&"a".repeat(63)).is_ok());
        let err = check_label_value(&"a".repeat(64))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("at most 63")));
    }
}
