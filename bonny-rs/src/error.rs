//! The operator's top-level error: what stopped `run()`, and what to do about it.

use std::net::SocketAddr;

use crate::controller::Object;

/// Why the operator could not start or had to stop.
///
/// `Debug` prints the same sentence as `Display`, so `fn main() -> Result<(), bonny::Error>`
/// ends with a message a person can act on.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder or the environment holds a setting that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The command line did not parse.
    #[error("{0}")]
    Usage(String),

    /// Manifests could not be rendered or written.
    #[error(transparent)]
    Render(#[from] crate::manifest::RenderError),

    /// An environment variable could not be parsed.
    #[error("environment variable {var}={value:?} is invalid: expected {expected}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// What it held.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },

    /// No kubeconfig and no in-cluster configuration could be loaded.
    #[error(
        "no Kubernetes client configuration: {0}; set KUBECONFIG to a kubeconfig file, run inside a \
         cluster, or pass a client with Operator::builder().client(..)"
    )]
    ClientConfig(#[source] kube::Error),

    /// A reconciled resource is not served by the API server.
    #[error(
        "the custom resource {resource} is not installed in the cluster (the API server answered 404 \
         for it); install its CRD first, e.g. `<your-operator> manifests --crds | kubectl apply -f -`"
    )]
    CrdNotInstalled {
        /// `plural.group` of the resource.
        resource: String,
    },

    /// The operator's identity lacks a permission it needs.
    #[error(
        "forbidden: the operator may not {verb} {resource}{scope}: {message}; grant it in the \
         operator's ClusterRole (generate it with `<your-operator> manifests`)"
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
    },

    /// The API server could not be reached or answered with an unexpected error.
    #[error(
        "the Kubernetes API server could not be reached or failed: {0}; check KUBECONFIG and the network"
    )]
    Api(#[source] kube::Error),

    /// The HTTP server for metrics and probes could not bind.
    #[error(
        "cannot serve metrics and probes on {addr}: {source}; choose another address with BONNY_HTTP_ADDR or .http_addr(..)"
    )]
    Http {
        /// The address tried.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },

    /// Leader election failed in a way that stops the operator (only with `exit_on_loss`).
    #[error("leader election: {0}")]
    Leader(#[from] crate::leader::Error),

    /// The CRD versions declared for a controller do not merge.
    #[error("the CRD versions of controller {controller} do not merge: {source}")]
    Crd {
        /// The controller.
        controller: String,
        /// Why.
        #[source]
        source: kube::core::crd::MergeError,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn from_preflight<K: Object>(err: kube::Error, namespace: Option<&str>) -> Self {
        Self::from_preflight_of(
            err,
            crate::controller::runner::resource_name::<K>(),
            namespace,
        )
    }

    /// An error of the startup LIST of `resource` (`plural.group`).
    pub(crate) fn from_preflight_of(
        err: kube::Error,
        resource: String,
        namespace: Option<&str>,
    ) -> Self {
        match err {
            kube::Error::Api(status) if status.code == 404 => Self::CrdNotInstalled { resource },
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                verb: "list",
                resource,
                scope: namespace
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default(),
                message: status.message,
            },
            other => Self::Api(other),
        }
    }
}
