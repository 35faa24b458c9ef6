use std::path::PathBuf;
use std::time::Duration;

/// Boxed lower-level error, so third-party error types stay out of the public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the local control plane could not be started or used.
///
/// `Debug` prints the same text as `Display`, so that `.unwrap()` in a test shows a process's
/// log lines as lines.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The etcd / kube-apiserver / kube-controller-manager binaries were not found.
    #[error("control plane binaries not found: {reason}")]
    Binaries {
        /// What was looked for, and the command that provides it.
        reason: String,
    },

    /// A file or directory of the environment could not be written or read.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done, with the path.
        action: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The test CA, serving certificate or service-account key could not be generated.
    #[error("could not generate the test certificates: {0}")]
    Certificates(#[source] BoxError),

    /// A control plane process exited or never became ready.
    #[error(
        "{component} failed to start: {reason}\n--- last lines of {} ---\n{tail}\n--- end of log ---",
        log.display()
    )]
    Startup {
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        component: &'static str,
        /// What was observed.
        reason: String,
        /// The full log of the process.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },

    /// A condition was not reached before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },

    /// A kubeconfig written by the harness could not be loaded into a client.
    #[error("could not build a client from the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// A request to the API server failed.
    #[error("could not {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// [`TestEnv::user_client`](super::TestEnv::user_client) was asked for a user that the
    /// builder did not declare.
    #[error(
        "no user {user:?} in this TestEnv; declare it with `TestEnv::builder().user({user:?})`"
    )]
    UnknownUser {
        /// The user asked for.
        user: String,
    },

    /// A user name given to the builder cannot be used.
    #[error("invalid user name {user:?}: {rule}")]
    InvalidUser {
        /// The name given.
        user: String,
        /// The rule it breaks.
        rule: &'static str,
    },

    /// A YAML document given to [`TestEnv::install_crds_yaml`](super::TestEnv::install_crds_yaml)
    /// is not a CustomResourceDefinition.
    #[error("YAML document {index} is not a CustomResourceDefinition: {reason}")]
    NotACrd {
        /// Position of the document in the stream (0-based).
        index: usize,
        /// What was wrong with it.
        reason: String,
    },

    /// A line of the API server's audit log is not an audit event.
    #[error("line {line} of the audit log {} does not parse: {reason}", path.display())]
    AuditLog {
        /// The audit log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },

    /// etcd refused or failed a request of the harness (compaction, revision read).
    #[error("etcd could not {action}: {reason}")]
    Etcd {
        /// What was asked.
        action: String,
        /// etcd's answer, or the transport error.
        reason: String,
    },

    /// A pod identity could not be set up: a name that is not a DNS label, or a token the
    /// API server did not issue.
    #[error("pod identity {namespace}/{pod}: {reason}")]
    PodIdentity {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// What went wrong, and the fix.
        reason: String,
    },

    /// The API server refused a CustomResourceDefinition's names.
    #[error("CustomResourceDefinition {name} was not accepted: {reason}")]
    CrdRejected {
        /// The CRD's name.
        name: String,
        /// The `NamesAccepted` condition's message.
        reason: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}
