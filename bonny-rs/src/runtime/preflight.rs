//! Startup checks: every kind a controller's watches will list is served and listable, so a
//! missing CRD or permission stops the operator with a message, not a watch retrying forever.

use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
};

use super::{
    namespaces::Namespaces,
    rbac::{self, Kinds},
};

/// Why the controllers could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// A reconciled resource is not served by the API server.
    #[error(
        "the custom resource {resource} is not installed in the cluster (the API server answered 404 \
         for it); install its CRD first, e.g. `{binary} manifests --crds | kubectl apply -f -`"
    )]
    CrdNotInstalled {
        /// `plural.group` of the resource.
        resource: String,
        /// The operator's binary, for the hint.
        binary: String,
    },

    /// The operator's identity lacks a permission it needs.
    #[error(
        "forbidden: the operator may not {verb} {resource}{scope}: {message}; grant it in the \
         operator's ClusterRole (generate it with `{binary} manifests`)"
    )]
    Forbidden {
        /// The verb that was refused.
        verb: &'static str,
        /// `plural.group` of the resource.
        resource: String,
        /// ` in namespace X`, or empty.
        scope: String,
        /// The API server's message.
        message: String,
        /// The operator's binary, for the hint.
        binary: String,
    },

    /// The API server could not be reached or answered with an unexpected error.
    #[error(
        "the Kubernetes API server could not be reached or failed: {0}; check KUBECONFIG and the network"
    )]
    Api(#[source] kube::Error),
}

impl StartupError {
    /// An error of the startup LIST of `resource` (`plural.group`).
    fn of_list(err: kube::Error, resource: String, namespace: Option<&str>, binary: &str) -> Self {
        let binary = binary.to_owned();
        match err {
            kube::Error::Api(status) if status.code == 404 => {
                Self::CrdNotInstalled { resource, binary }
            }
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                verb: "list",
                resource,
                scope: namespace
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default(),
                message: status.message,
                binary,
            },
            other => Self::Api(other),
        }
    }
}

/// Lists one object of every kind the SDK will list for `kinds` (the reconciled resource, then
/// the owned kinds), in every namespace scope.
/// `binary` is the operator's, named in the hints.
pub(crate) async fn check(
    client: &Client,
    namespaces: &Namespaces,
    kinds: &Kinds,
    binary: &str,
) -> Result<(), StartupError> {
    let listed: Vec<_> = rbac::needs(kinds)
        .into_iter()
        .filter(rbac::Need::is_listed)
        .collect();
    for namespace in namespaces.scopes(kinds.namespaced) {
        for need in &listed {
            let resource = &need.resource;
            let api: Api<DynamicObject> = match namespace.as_deref() {
                Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
                None => Api::all_with(client.clone(), resource),
            };
            if let Err(err) = api.list_metadata(&ListParams::default().limit(1)).await {
                return Err(StartupError::of_list(
                    err,
                    rbac::resource_name(resource),
                    namespace.as_deref(),
                    binary,
                ));
            }
        }
    }
    Ok(())
}
