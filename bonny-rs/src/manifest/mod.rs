//! Deployment manifests generated from the operator's registrations: CRDs, RBAC, Deployment,
//! and with leader election the leader [`fence`].
//!
//! Nothing is listed twice: the CRDs come from the controllers' resources, the ClusterRole from
//! their declared rules plus what the SDK itself needs, and the Deployment from the operator's
//! name and settings.
//!
//! They are reached through the operator, which knows its controllers:
//!
//! ```no_run
//! # fn show(operator: &bonny::Operator) -> Result<(), bonny::Error> {
//! use bonny::manifest::Options;
//! let manifests = operator.manifests(&Options::new("ghcr.io/example/widget-operator:1.0"))?;
//! print!("{}", manifests.to_yaml()?);
//! # Ok(()) }
//! ```

mod deployment;
pub mod fence;
mod rbac;
mod render;
mod webhooks;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};

use crate::leader::Election;
use crate::runtime::{Namespaces, Registration, rbac::sdk_rules};
use crate::webhook::Webhooks;

pub use deployment::Options;
pub use fence::Fence;
pub use rbac::{KNOWN_VERBS, Rule, merge_rules};
pub use render::RenderError;
pub use webhooks::WebhookManifests;

/// The CRD versions declared for a controller do not merge.
#[derive(Debug, thiserror::Error)]
#[error("the CRD versions of controller {controller} do not merge: {source}")]
pub struct CrdMergeError {
    /// The controller.
    pub controller: String,
    /// Why.
    #[source]
    pub source: kube::core::crd::MergeError,
}

/// Every manifest an operator needs, in apply order.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// One CRD per custom resource, with all its versions.
    pub crds: Vec<CustomResourceDefinition>,
    /// The operator's identity.
    pub service_account: ServiceAccount,
    /// The permissions the controllers and the SDK need.
    pub cluster_role: ClusterRole,
    /// Binds the ClusterRole cluster-wide (when all namespaces are watched).
    pub cluster_role_binding: Option<ClusterRoleBinding>,
    /// Binds the ClusterRole in each watched namespace and the operator's own (when only some
    /// namespaces are watched and every resource is namespaced).
    pub role_bindings: Vec<RoleBinding>,
    /// The leader fence (with leader election, unless [`Options::fence`] turned it off).
    pub fence: Option<Fence>,
    /// The operator Deployment.
    pub deployment: Deployment,
    /// The webhooks' Service, configurations and Secret RBAC (when the operator serves
    /// webhooks; the CRDs then carry their conversion stanza).
    pub webhooks: Option<WebhookManifests>,
}

/// The manifests that deploy operator `name` with these controllers: CRDs, RBAC (the SDK's own
/// rules and the authors') and the Deployment.
pub(crate) fn build(
    name: &str,
    registrations: &[Box<dyn Registration>],
    namespaces: &Namespaces,
    leader: Option<&Election>,
    webhooks: Option<&Webhooks>,
    options: &Options,
) -> Result<Manifests, CrdMergeError> {
    let webhooks = webhooks.filter(|w| !w.is_empty());
    let leader_election = leader.is_some();
    let mut crds = Vec::new();
    let mut rules = sdk_rules(
        registrations
            .iter()
            .map(|registration| registration.kinds()),
        leader_election,
    );
    let mut cluster_scoped = false;
    for registration in registrations {
        if let Some(crd) = registration.crd().map_err(|source| CrdMergeError {
            controller: registration.name().to_owned(),
            source,
        })? {
            crds.push(crd);
        }
        rules.extend(registration.author_rules().iter().cloned());
        cluster_scoped |= !registration.kinds().namespaced;
    }

    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    let watched = match namespaces {
        Namespaces::All => None,
        Namespaces::List(list) => Some(list.as_slice()),
    };
    let (cluster_role_binding, role_bindings) = match watched {
        Some(list) if !cluster_scoped => {
            let mut namespaces: Vec<&str> = list.iter().map(String::as_str).collect();
            namespaces.push(&options.namespace);
            namespaces.sort_unstable();
            namespaces.dedup();
            let bindings = namespaces
                .into_iter()
                .map(|namespace| deployment::role_binding(name, namespace, options))
                .collect();
            (None, bindings)
        }
        _ => (
            Some(deployment::cluster_role_binding(name, options)),
            Vec::new(),
        ),
    };
    let fence = leader
        .filter(|_| options.fence)
        .map(|leader| fence::for_operator(name, leader, options, &rules));
    // Writing the CA bundle is every replica's job, not the leader's: outside the fence.
    if let Some(webhooks) = webhooks {
        rules.extend(webhooks::rules(webhooks));
    }
    let mut deployment = deployment::deployment(name, options, leader_election, watched);
    let webhooks = webhooks
        .map(|webhooks| webhooks::build(name, webhooks, options, &mut crds, &mut deployment));
    Ok(Manifests {
        crds,
        service_account: deployment::service_account(name, options),
        cluster_role: deployment::cluster_role(name, rules),
        cluster_role_binding,
        role_bindings,
        fence,
        deployment,
        webhooks,
    })
}
