//! Admission and conversion webhooks, declared from code and served by the operator over
//! HTTPS on every replica, with their certificates handled.
//!
//! One [`Webhooks`] value declares everything: a validator and a defaulter per resource, and the
//! conversion between the versions of a multi-version CRD. The operator serves them (its
//! builder's `webhooks` method), and its manifests gain the Service, the webhook
//! configurations and the CRD's `conversion` stanza from the same declaration.
//!
//! ```no_run
//! use bonny::webhook::{Verdict, Webhooks};
//! use kube::CustomResource;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
//! #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
//! pub struct WidgetSpec { pub size: u32, pub color: Option<String> }
//!
//! let webhooks = Webhooks::new()
//!     .validate::<Widget>(|request| match &request.object {
//!         Some(widget) if widget.spec.size == 0 => Verdict::deny("spec.size must be at least 1"),
//!         Some(widget) if widget.spec.size > 100 => Verdict::allow().warn("a big widget"),
//!         _ => Verdict::allow(),
//!     })
//!     .defaults::<Widget>(|widget| {
//!         widget.spec.color.get_or_insert_with(|| "grey".to_owned());
//!     });
//! ```
//!
//! **Certificates.** By default ([`Certificates::SelfManaged`]) the first replica generates a CA
//! and a serving certificate and stores them in the Secret `<operator>-webhook-tls` of its
//! namespace; the others read it. The CA bundle is written into the operator's webhook
//! configurations and into the CRDs it converts. Whichever replica first sees the serving
//! certificate within [`SelfManaged::rotate_before`] of its expiry issues a new one; each
//! replica swaps it in for new TLS handshakes, so no open connection is dropped and no request
//! fails. With [`Certificates::Files`] the certificate comes from mounted files (as cert-manager
//! writes them, whose CA injector then fills the bundle), reloaded when they change.
//!
//! **Failures.** A panic in the author's function is answered as an internal error (code 500,
//! with the panic message) and counted in `controller_runtime_webhook_panics_total`; a function
//! that does not return within the deadline (just under the API server's `timeoutSeconds`) is
//! answered with code 504. Both reach the client as a refusal; [`FailurePolicy`] decides only
//! what happens when the webhook cannot be reached at all.

mod admission;
mod certs;
mod conversion;
mod hook;
mod material;
mod server;
mod sources;
mod verdict;

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use kube::{Api, Client, core::admission::AdmissionRequest};
use tokio_util::sync::CancellationToken;

pub use admission::Admitted;
pub use certs::CertError;
pub use conversion::Conversion;
pub(crate) use hook::{HookKind, Route};
pub use verdict::Verdict;

use crate::observe::{Health, Metrics, WebhookMetrics};
use hook::Hook;

/// The port the webhook server listens on by default.
pub const DEFAULT_PORT: u16 = 9443;

/// What the API server does when it cannot reach a webhook (the operator is down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse the request (the default): nothing is written unchecked.
    #[default]
    Fail,
    /// Let the request through unchecked.
    Ignore,
}

impl FailurePolicy {
    /// The value in a webhook configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// Self-managed certificates: lifetimes and how early to rotate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct SelfManaged {
    pub(crate) validity: Duration,
    pub(crate) rotate_before: Duration,
    pub(crate) ca_validity: Duration,
}

impl Default for SelfManaged {
    /// A serving certificate valid for 90 days, rotated 30 days before expiry; a CA for 10
    /// years, replaced in its last third.
    fn default() -> Self {
        Self {
            validity: Duration::from_secs(90 * 24 * 3600),
            rotate_before: Duration::from_secs(30 * 24 * 3600),
            ca_validity: Duration::from_secs(10 * 365 * 24 * 3600),
        }
    }
}

impl SelfManaged {
    /// How long a serving certificate is valid.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// How long before its expiry a serving certificate is replaced (keep it well above a
    /// few seconds: every replica must pick the new one up before the old one expires).
    pub fn rotate_before(mut self, before: Duration) -> Self {
        self.rotate_before = before;
        self
    }

    /// How long the CA is valid; it is replaced in its last third, and trusted beside its
    /// successor until no serving certificate it signed is served any more.
    pub fn ca_validity(mut self, validity: Duration) -> Self {
        self.ca_validity = validity;
        self
    }

    /// How often replicas re-read the Secret: a tenth of the validity, between 1 s and 5 min.
    pub(crate) fn check_every(&self) -> Duration {
        (self.validity / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }

    /// How long a new CA stays in the bundle alone with the old serving certificate, so that
    /// every replica and the API server have seen it.
    pub(crate) fn propagation(&self) -> Duration {
        self.check_every() * 2
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Certificates {
    /// Generated, shared through a Secret and rotated by the operator (the default).
    SelfManaged(SelfManaged),
    /// Read from `dir/tls.crt` and `dir/tls.key` (a mounted cert-manager Secret), reloaded
    /// when they change (checked every `poll`). The CA bundle is then the provider's job.
    Files {
        /// The mounted directory.
        dir: PathBuf,
        /// How often to check the files' modification times.
        poll: Duration,
    },
}

impl Default for Certificates {
    fn default() -> Self {
        Self::SelfManaged(SelfManaged::default())
    }
}

/// Why the webhook server could not start or keep its certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The port is taken or not permitted.
    #[error(
        "cannot bind the webhook server to {addr}: {source}; choose another port with Webhooks::port(..)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("cannot configure TLS for the webhook server: {0}")]
    Tls(#[source] rustls::Error),
    /// A certificate could not be made or loaded.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The certificate Secret could not be read or written.
    #[error(
        "cannot read or write the webhook certificate Secret {name}: {source}; the operator needs \
         get, create and update on secrets in its namespace"
    )]
    Secret {
        /// The Secret's name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

type AnyValidate<K> = dyn Fn(&AdmissionRequest<K>) -> Verdict + Send + Sync;

/// Every webhook an operator serves, and how. A builder: start with [`Webhooks::new`].
#[derive(Clone)]
#[must_use]
pub struct Webhooks {
    hooks: Vec<Arc<dyn Hook>>,
    port: u16,
    failure_policy: FailurePolicy,
    timeout: Duration,
    certificates: Certificates,
    hosts: Vec<String>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field(
                "paths",
                &self
                    .hooks
                    .iter()
                    .map(|h| h.route().path.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("port", &self.port)
            .field("failure_policy", &self.failure_policy)
            .field("timeout", &self.timeout)
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl Default for Webhooks {
    fn default() -> Self {
        Self::new()
    }
}

impl Webhooks {
    /// No webhooks yet; port 9443, failure policy `Fail`, a 10 s API server timeout,
    /// self-managed certificates.
    pub fn new() -> Self {
        Self {
            hooks: Vec::new(),
            port: DEFAULT_PORT,
            failure_policy: FailurePolicy::default(),
            timeout: Duration::from_secs(10),
            certificates: Certificates::default(),
            hosts: Vec::new(),
        }
    }

    /// Validate `K` on create, update and delete: `validate` sees the request (`object`,
    /// `old_object` on update and delete, `operation`, `user_info`) and answers a [`Verdict`].
    pub fn validate<K: Admitted>(
        mut self,
        validate: impl Fn(&AdmissionRequest<K>) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        let validate: Arc<AnyValidate<K>> = Arc::new(validate);
        self.hooks
            .push(Arc::new(admission::Validator::<K>::new(validate)));
        self
    }

    /// Default `K` on create and update: `default` changes the object, and the API server gets
    /// the JSON patch of what it changed.
    pub fn defaults<K: Admitted>(
        mut self,
        default: impl Fn(&mut K) + Send + Sync + 'static,
    ) -> Self {
        self.hooks
            .push(Arc::new(admission::Defaulter::<K>::new(Arc::new(default))));
        self
    }

    /// Convert between the versions of `H`'s CRD through `H`, its storage version.
    pub fn convert<H: Admitted>(mut self, conversion: Conversion<H>) -> Self {
        self.hooks
            .push(Arc::new(conversion::Converter::new(conversion)));
        self
    }

    /// The port to serve on (default 9443).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// What the API server does when the webhook cannot be reached (default `Fail`).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// The API server's `timeoutSeconds` (1 to 30 s, default 10 s); the SDK answers a slow
    /// function with an error just before it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_secs(1), Duration::from_secs(30));
        self
    }

    /// Where the certificate comes from (default self-managed).
    pub fn certificates(mut self, certificates: Certificates) -> Self {
        self.certificates = certificates;
        self
    }

    /// Another name or IP address the serving certificate is for, beside the Service's DNS
    /// names (e.g. `127.0.0.1` when the API server calls the webhook by URL).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.hooks.iter().map(|hook| hook.route())
    }

    /// The port served on.
    pub fn port_number(&self) -> u16 {
        self.port
    }

    pub(crate) fn policy(&self) -> FailurePolicy {
        self.failure_policy
    }

    pub(crate) fn timeout_seconds(&self) -> i32 {
        i32::try_from(self.timeout.as_secs()).unwrap_or(30)
    }

    /// The deadline the SDK answers by: a second under the API server's timeout, at least half
    /// of it.
    fn deadline(&self) -> Duration {
        self.timeout
            .saturating_sub(Duration::from_secs(1))
            .max(self.timeout / 2)
    }

    /// The names the serving certificate is for.
    fn all_hosts(&self, operator: &str, namespace: &str) -> Vec<String> {
        let service = service_name(operator);
        let mut hosts = vec![
            service.clone(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        hosts.extend(self.hosts.iter().cloned());
        hosts
    }
}

/// The Service in front of the webhook server.
pub fn service_name(operator: &str) -> String {
    format!("{operator}-webhook")
}

/// The Secret holding the self-managed certificates.
pub fn secret_name(operator: &str) -> String {
    format!("{operator}-webhook-tls")
}

/// What the operator hands the webhook server.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) operator: String,
    pub(crate) namespace: String,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
}

/// A started webhook server: where it listens, the tasks to run until `stop`, and a signal
/// that turns `true` once a certificate is served and (self-managed) its CA bundle written.
pub(crate) struct Started {
    pub(crate) addr: SocketAddr,
    pub(crate) tasks: Vec<BoxFuture<'static, ()>>,
    pub(crate) settled: tokio::sync::watch::Receiver<bool>,
}

/// Whether any declared hook is a conversion (listing its resource needs the server).
pub(crate) fn converts(webhooks: &Webhooks) -> bool {
    webhooks.routes().any(|r| r.kind == HookKind::Conversion)
}

/// Bind the webhook server and return the tasks that serve it and keep its certificate, all
/// to run until `stop`; `/readyz` fails until a certificate is loaded.
pub(crate) async fn start(
    webhooks: &Webhooks,
    context: Context,
    stop: CancellationToken,
) -> Result<Started, WebhookError> {
    let (settled_tx, settled) = tokio::sync::watch::channel(false);
    let slot = Arc::new(certs::CertSlot::default());
    let metrics = WebhookMetrics::register(&context.metrics);
    let server = server::WebhookServer::bind(
        context.addr,
        &webhooks.hooks,
        slot.clone(),
        metrics,
        webhooks.deadline(),
    )
    .await?;
    let bound = server.local_addr().unwrap_or(context.addr);
    let ready = slot.clone();
    context.health.add_readiness_check(move || {
        if ready.is_loaded() {
            Ok(())
        } else {
            Err("the webhook server has no certificate yet".to_owned())
        }
    });
    let certificates: BoxFuture<'static, ()> = match &webhooks.certificates {
        Certificates::SelfManaged(config) => {
            let names = |kind| {
                webhooks
                    .routes()
                    .filter(|r| r.kind == kind)
                    .map(|r| r.name.clone())
                    .collect::<BTreeSet<_>>()
            };
            let store = sources::SecretStore {
                api: Api::namespaced(context.client.clone(), &context.namespace),
                name: secret_name(&context.operator),
                operator: context.operator.clone(),
                hosts: webhooks.all_hosts(&context.operator, &context.namespace),
                config: config.clone(),
            };
            let injector = sources::Injector {
                client: context.client.clone(),
                configuration: context.operator.clone(),
                validating: names(HookKind::Validating),
                mutating: names(HookKind::Mutating),
                crds: webhooks
                    .routes()
                    .filter(|r| r.kind == HookKind::Conversion)
                    .map(Route::crd_name)
                    .collect(),
            };
            Box::pin(sources::run_self_managed(
                store,
                injector,
                slot,
                settled_tx,
                stop.clone(),
            ))
        }
        Certificates::Files { dir, poll } => Box::pin(sources::run_files(
            dir.clone(),
            *poll,
            slot,
            settled_tx,
            stop.clone(),
        )),
    };
    Ok(Started {
        addr: bound,
        tasks: vec![Box::pin(server.serve(stop)), certificates],
        settled,
    })
}
