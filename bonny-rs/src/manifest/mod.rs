//! Deployment manifests generated from the operator's registrations: CRDs, RBAC, Deployment,
//! and with leader election the leader [`fence`].
//!
//! Nothing is listed twice: the CRDs come from the controllers' resources, the ClusterRole from
//! their declared rules plus what the SDK itself needs, and the Deployment from the operator's
//! name and settings.
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

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};

pub use deployment::Options;
pub use fence::Fence;
pub use rbac::{KNOWN_VERBS, Rule, merge_rules};
pub use render::RenderError;

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
}

impl crate::Operator {
    /// The manifests that deploy this operator: CRDs, RBAC and the Deployment.
    ///
    /// # Errors
    /// [`Error::Crd`](crate::Error::Crd) when a controller's CRD versions do not merge.
    pub fn manifests(&self, options: &Options) -> Result<Manifests, crate::Error> {
        use crate::operator::Namespaces;

        let name = self.name();
        let mut crds = Vec::new();
        let mut rules = Vec::new();
        let mut cluster_scoped = false;
        for registration in self.registrations() {
            if let Some(crd) = registration.crd().map_err(|source| crate::Error::Crd {
                controller: registration.name().to_owned(),
                source,
            })? {
                crds.push(crd);
            }
            rules.extend(registration.rules());
            cluster_scoped |= !registration.namespaced();
        }
        crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        crds.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        rules.push(Rule::new("events.k8s.io", ["events"], ["create", "patch"]));
        let leader_election = self.leader_election().is_some();
        if leader_election {
            rules.push(Rule::new(
                "coordination.k8s.io",
                ["leases"],
                ["get", "list", "watch", "create", "update", "patch"],
            ));
        }
        let watched = match self.namespaces() {
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
        let fence =
            self.leader_election()
                .filter(|_| options.fence)
                .map(|config| {
                    let lease_namespace = config
                        .lease_namespace
                        .clone()
                        .unwrap_or_else(|| options.namespace.clone());
                    let lease_name = config.lease_name.clone().unwrap_or_else(|| {
                        crate::leader::default_lease_name(&lease_namespace, name)
                    });
                    let target = fence::Target {
                        name,
                        namespace: &options.namespace,
                        lease_name: &lease_name,
                        lease_namespace: &lease_namespace,
                    };
                    fence::fence(&target, &merge_rules(rules.iter().cloned()))
                });
        Ok(Manifests {
            crds,
            service_account: deployment::service_account(name, options),
            cluster_role: deployment::cluster_role(name, rules),
            cluster_role_binding,
            role_bindings,
            fence,
            deployment: deployment::deployment(name, options, leader_election, watched),
        })
    }
}
