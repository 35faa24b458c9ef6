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
//! - **A conversion webhook.** Without one the API server uses the `None` strategy: it
//!   rewrites `apiVersion`, leaves every other field as it is, and prunes the fields a version
//!   does not know, so a `v1alpha1` client's write would erase `v1`'s `spec.color`. Here the
//!   operator serves a conversion webhook ([`webhooks`]) built from two `From` impls through the
//!   hub `v1` (the storage version): going to `v1alpha1`, the colour moves into the annotation
//!   [`COLOR_ANNOTATION`]; coming back, it moves out again. Old clients therefore keep new
//!   fields, and a gizmo written as `v1alpha1` reads back as `v1alpha1` unchanged.
//! - **A validator.** `spec.size` 0 is refused with a message, whichever version it is
//!   written in: the validator is declared for `v1`, and the API server converts a `v1alpha1`
//!   request before calling it (`matchPolicy: Equivalent`).
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

use std::collections::BTreeMap;

use bonny::{
    controller::set_condition,
    prelude::*,
    webhook::{Conversion, Verdict, Webhooks},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The colour a `Gizmo` without `spec.color` gets.
pub const DEFAULT_COLOR: &str = "grey";

/// Where a `v1alpha1` gizmo keeps the `v1` colour it has no field for.
pub const COLOR_ANNOTATION: &str = "versions.bonny.dev/color";

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

/// `v1alpha1` to the hub: the colour comes out of its annotation.
impl From<v1alpha1::Gizmo> for v1::Gizmo {
    fn from(old: v1alpha1::Gizmo) -> Self {
        let mut metadata = old.metadata;
        let color = metadata
            .annotations
            .as_mut()
            .and_then(|annotations| annotations.remove(COLOR_ANNOTATION));
        if metadata
            .annotations
            .as_ref()
            .is_some_and(BTreeMap::is_empty)
        {
            metadata.annotations = None;
        }
        v1::Gizmo {
            metadata,
            spec: v1::GizmoSpec {
                size: old.spec.size,
                color,
            },
            status: old.status,
        }
    }
}

/// The hub to `v1alpha1`: the colour goes into an annotation.
impl From<v1::Gizmo> for v1alpha1::Gizmo {
    fn from(new: v1::Gizmo) -> Self {
        let mut metadata = new.metadata;
        if let Some(color) = new.spec.color {
            metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(COLOR_ANNOTATION.to_owned(), color);
        }
        v1alpha1::Gizmo {
            metadata,
            spec: v1alpha1::GizmoSpec {
                size: new.spec.size,
            },
            status: new.status,
        }
    }
}

/// The gizmo webhooks: conversion through `v1`, and a validator of `v1` (which sees
/// `v1alpha1` writes converted).
pub fn webhooks() -> Webhooks {
    Webhooks::new()
        .convert(Conversion::<v1::Gizmo>::hub().spoke::<v1alpha1::Gizmo>())
        .validate::<v1::Gizmo>(|request| match &request.object {
            Some(gizmo) if gizmo.spec.size == 0 => {
                Verdict::deny("spec.size is 0: a gizmo needs a size of at least 1")
            }
            Some(gizmo) if gizmo.spec.size > 1000 => {
                Verdict::allow().warn(format!("a size-{} gizmo is very large", gizmo.spec.size))
            }
            _ => Verdict::allow(),
        })
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

/// The gizmo operator: one controller, its webhooks, leader election on.
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
        .webhooks(webhooks())
        .leader_election(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

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

    fn alpha(size: u32, annotations: Option<BTreeMap<String, String>>) -> v1alpha1::Gizmo {
        let mut gizmo = v1alpha1::Gizmo::new("g", v1alpha1::GizmoSpec { size });
        gizmo.metadata.annotations = annotations;
        gizmo
    }

    fn annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
        // What the API server stores: no annotations, or some (an empty map reads back as none).
        proptest::option::of(proptest::collection::btree_map(
            "[a-z]{1,8}(\\.io/[a-z]{1,8})?",
            ".{0,12}",
            1..4,
        ))
    }

    proptest! {
        /// Written as v1alpha1, read back as v1alpha1 unchanged (through the hub).
        #[test]
        fn v1alpha1_round_trips_through_the_hub(
            size in any::<u32>(),
            annotations in annotations(),
            color in proptest::option::of("[a-z]{1,10}"),
        ) {
            let mut annotations = annotations;
            if let Some(color) = color {
                annotations.get_or_insert_with(BTreeMap::new).insert(COLOR_ANNOTATION.into(), color);
            }
            let old = alpha(size, annotations);
            let conversion = Conversion::<v1::Gizmo>::hub().spoke::<v1alpha1::Gizmo>();
            let as_v1 = conversion
                .convert(serde_json::to_value(&old).unwrap(), "versions.bonny.dev/v1")
                .unwrap();
            prop_assert!(as_v1["metadata"]["annotations"].get(COLOR_ANNOTATION).is_none());
            let back = conversion
                .convert(as_v1, "versions.bonny.dev/v1alpha1")
                .unwrap();
            prop_assert_eq!(back, serde_json::to_value(&old).unwrap());
        }

        /// Written as v1 and read as v1alpha1, a v1 object loses nothing.
        #[test]
        fn v1_round_trips_through_v1alpha1(
            size in any::<u32>(),
            annotations in annotations(),
            color in proptest::option::of("[a-z]{1,10}"),
        ) {
            let mut new = v1::Gizmo::new("g", v1::GizmoSpec { size, color });
            new.metadata.annotations = annotations;
            let back = v1::Gizmo::from(v1alpha1::Gizmo::from(new.clone()));
            let (back, new) = (serde_json::to_value(back).unwrap(), serde_json::to_value(new).unwrap());
            prop_assert_eq!(back, new);
        }
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
