//! The operator's top-level error: what stopped `run()`, and what to do about it.

use std::net::SocketAddr;

/// Why the operator could not start or had to stop.
///
/// `Debug` prints the same sentence as `Display`, so `fn main() -> Result<(), bonny::Error>`
/// ends with a message a person can act on.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operator was built without a controller.
    #[error(
        "invalid configuration: the operator has no controllers; add one with \
         Operator::builder().controller(..)"
    )]
    NoControllers,

    /// The leader election settings cannot work.
    #[error("invalid configuration: {0}")]
    LeaderConfig(#[from] crate::leader::ConfigError),

    /// The leader election settings, some taken from the environment, cannot work.
    #[error("invalid configuration: {source} (set from {vars})")]
    LeaderConfigFromEnv {
        /// The rule the settings break.
        #[source]
        source: crate::leader::ConfigError,
        /// The variables the settings came from, with their values.
        vars: String,
    },

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

    /// A controller could not start: a resource not installed or not permitted, or the API
    /// server unreachable.
    #[error(transparent)]
    Startup(#[from] crate::runtime::StartupError),

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
    #[error(transparent)]
    Crd(#[from] crate::manifest::CrdMergeError),

    /// The webhook server could not start.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
