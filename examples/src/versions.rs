//! Versions: one resource, `Gizmo`, served as `v1alpha1` and `v1`, with both versions generated
//! from Rust types and merged into one CustomResourceDefinition.
//!
//! What it shows:
//! - **One module per version.** [`v1alpha1::Gizmo`] and [`v1::Gizmo`] are two
//!   `#[derive(CustomResource)]` types of the same group and kind. The controller declares them
//!   with `versions = [v1alpha1::Gizmo, v1::Gizmo], storage = "v1"`, so
//!   [`Controller::crd`] (and `versions-operator manifests --crds`) yields one CRD. Both versions
//!   are served, and only `v1` is stored.
//! - **The controller reconciles the storage version.** The API server converts every object to
//!   the version a client asks for. A `Gizmo` created as `v1alpha1` therefore reaches the `v1`
//!   controller as a `v1::Gizmo`.
//! - **Schemas that need no conversion webhook.** Without a webhook the API server uses the
//!   `None` conversion strategy: it rewrites `apiVersion` and leaves every other field as it is.
//!   That is correct only when every version reads every stored object the same way. Here
//!   `v1alpha1` has `spec.size`, and `v1` keeps `spec.size` with the same type and adds an
//!   optional `spec.color`. A type change (say `size: String` to `size: u32`) or a renamed
//!   field needs a conversion webhook. Under `None`, a `v1alpha1` client would read the stored
//!   `v1` number as if it were a string.
//!
//!   The API server also prunes the fields a version does not know. A `v1` gizmo read as
//!   `v1alpha1` has no `spec.color`, and any write through `v1alpha1` stores the object without
//!   one. That includes a merge patch of `spec.size`, a server-side apply and a replace. Old
//!   clients therefore erase new optional fields, which is one more reason to retire old
//!   versions. A conversion webhook could keep such fields in an annotation.
//! - **A deprecated version.** `v1alpha1` is marked `deprecated`, so the API server adds a
//!   warning to every response for it, and `kubectl` prints that warning.
//!
//! ```yaml
//! apiVersion: versions.bonny.dev/v1
//! kind: Gizmo
//! metadata: { name: sprocket, namespace: default }
//! spec: { size: 3, color: teal }
//! ---
//! # still accepted, with a deprecation warning; stored as v1 without a color
//! apiVersion: versions.bonny.dev/v1alpha1
//! kind: Gizmo
//! metadata: { name: cog, namespace: default }
//! spec: { size: 1 }
//! ```
//!
//! Run it with `cargo run -p bonny-examples --bin versions-operator -- run` after installing the
//! CRD (`... --bin versions-operator -- manifests --crds | kubectl apply -f -`).

use bonny::{controller::set_condition, prelude::*};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The colour a `Gizmo` without `spec.color` gets.
pub const DEFAULT_COLOR: &str = "grey";

/// The status, the same in both versions (a field added here would have to be optional, as in
/// the spec).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GizmoStatus {
    /// What the controller built, e.g. `a size-3 teal gizmo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The first, deprecated version: served, not stored.
pub mod v1alpha1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::GizmoStatus;

    /// A gizmo as `v1alpha1` knows it: only a size.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "versions.bonny.dev",
        version = "v1alpha1",
        kind = "Gizmo",
        namespaced,
        status = "GizmoStatus",
        deprecated = "versions.bonny.dev/v1alpha1 Gizmo is deprecated; use versions.bonny.dev/v1"
    )]
    pub struct GizmoSpec {
        /// How big, in whole units.
        pub size: u32,
    }
}

/// The current version: served and stored.
pub mod v1 {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::GizmoStatus;

    /// A gizmo as `v1` knows it: `v1alpha1`'s size and an optional colour.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "versions.bonny.dev",
        version = "v1",
        kind = "Gizmo",
        namespaced,
        status = "GizmoStatus",
        printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#,
        printcolumn = r#"{"name":"Color","type":"string","jsonPath":".spec.color"}"#
    )]
    pub struct GizmoSpec {
        /// How big, in whole units (the same field, with the same type, as in `v1alpha1`).
        pub size: u32,
        /// The colour; new in `v1`, so optional. Objects written as `v1alpha1` have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub color: Option<String>,
    }
}

/// Reconciles gizmos of every served version, as `v1`.
#[bonny::controller(
    resource = v1::Gizmo,
    versions = [v1alpha1::Gizmo, v1::Gizmo],
    storage = "v1",
)]
#[derive(Clone, Debug, Default)]
pub struct GizmoController;

impl Reconcile<v1::Gizmo> for GizmoController {
    async fn apply(&self, axn: &mut Axn<v1::Gizmo>) -> Result<Action, ReconcileError> {
        let gizmo = axn.object().clone();
        if gizmo.spec.size == 0 {
            return Err(ReconcileError::invalid_spec(
                "spec.size is 0: a gizmo needs a size of at least 1",
            ));
        }
        let description = describe(&gizmo.spec);
        let mut status = gizmo.status.clone().unwrap_or_default();
        if status.description.as_deref() != Some(description.as_str()) {
            axn.normal_event("Built", description.clone());
            status.description = Some(description);
        }
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Built",
            "the gizmo is built",
            gizmo.metadata.generation,
        );
        axn.set_status(&status)?;
        Ok(Action::await_change())
    }
}

/// What a gizmo of this spec is, e.g. `a size-3 teal gizmo`.
pub fn describe(spec: &v1::GizmoSpec) -> String {
    let color = spec.color.as_deref().unwrap_or(DEFAULT_COLOR);
    format!("a size-{} {color} gizmo", spec.size)
}

/// The gizmo operator: one controller, leader election on.
///
/// # Errors
/// When the environment holds an invalid setting.
pub fn operator() -> Result<bonny::Operator, bonny::Error> {
    builder().build()
}

/// The gizmo operator's builder, for callers that add settings (a client, a namespace) before
/// building; [`operator`] builds it as is.
pub fn builder() -> bonny::OperatorBuilder {
    bonny::Operator::builder()
        .name("versions-operator")
        .controller(GizmoController)
        .leader_election(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_crd_serves_both_versions_and_stores_v1() {
        let crd = GizmoController.crd().ok().flatten();
        let versions: Vec<(String, bool, bool)> = crd
            .map(|crd| crd.spec.versions)
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name, v.served, v.storage))
            .collect();
        assert_eq!(versions.len(), 2);
        assert!(versions.contains(&("v1".into(), true, true)));
        assert!(versions.contains(&("v1alpha1".into(), true, false)));
    }

    #[test]
    fn a_gizmo_without_a_color_is_grey() {
        let spec = v1::GizmoSpec {
            size: 2,
            color: None,
        };
        assert_eq!(describe(&spec), "a size-2 grey gizmo");
    }
}
