//! A real control plane for tests: etcd and kube-apiserver (and, on request,
//! kube-controller-manager) on loopback, like controller-runtime's envtest.
//!
//! [`TestEnv::start`] gives a running API server, an admin [`kube::Client`] and kubeconfig
//! files for child processes; dropping the [`TestEnv`] kills and reaps every process and
//! removes its files, also when the test panics. A [`Proxy`] sits between one client and the
//! API server so a test can stall or cut that client's connection.
//!
//! # Binaries
//! Looked up once per process, in this order:
//! 1. the directory in `BONNY_CONTROL_PLANE_DIR` (with `etcd`, `kube-apiserver` and,
//!    for [`TestEnvBuilder::controller_manager`], `kube-controller-manager`);
//! 2. `tools/control-plane/build.sh` of the bonny-rs checkout, which builds them from pinned
//!    Go modules (minutes the first time, instant afterwards);
//! 3. the newest complete build under `~/.cache/bonny-rs/control-plane/`.
//!
//! # Resources
//! One environment takes a few hundred MiB of memory and a few seconds of CPU to start. Share
//! one per test binary where tests can be isolated by namespace; give tests that restart or
//! partition the API server their own.

mod audit;
mod binaries;
mod certs;
mod components;
mod error;
mod kubeconfig;
mod metrics;
mod pods;
mod process;
mod proxy;
mod wait;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use binaries::Binaries;
use certs::Pki;
use components::{ApiServer, ApiServerFiles, ControllerManager, Etcd};
use kubeconfig::Credentials;

pub use audit::{AuditRecord, AuditUser, POD_NAME_EXTRA};
pub use error::{BoxError, Error};
pub use metrics::{RequestCounts, RequestSample};
pub use pods::PodIdentity;
pub use proxy::Proxy;
pub use wait::eventually;

/// The admin user's name; it is in `system:masters`.
const ADMIN: &str = "admin";
/// How often CRD conditions are polled.
const POLL: Duration = Duration::from_millis(100);

/// A running etcd + kube-apiserver (+ kube-controller-manager) on loopback.
///
/// Drop tears everything down: the processes are killed and reaped, the temporary directory
/// (etcd data, certificates, kubeconfigs, logs) is removed. On Linux the processes are also
/// started with a parent-death signal, so they die with the test process even when it is
/// killed or exits without running destructors.
///
/// # Example
/// ```no_run
/// use bonny::testing::TestEnv;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::api::{Api, PostParams};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let env = TestEnv::builder().user("alice").start().await?;
/// let configmaps: Api<ConfigMap> = Api::default_namespaced(env.client());
/// let mut cm = ConfigMap::default();
/// cm.metadata.name = Some("hello".into());
/// configmaps.create(&PostParams::default(), &cm).await?;
///
/// // alice has no rights until RBAC grants them.
/// let alice = env.user_client("alice").await?;
/// assert!(Api::<ConfigMap>::default_namespaced(alice).get("hello").await.is_err());
/// # Ok(())
/// # }
/// ```
pub struct TestEnv {
    controller_manager: Option<ControllerManager>,
    apiserver: ApiServer,
    etcd: Etcd,
    client: kube::Client,
    admin: Credentials,
    users: BTreeMap<String, Credentials>,
    ca_pem: String,
    server_url: String,
    audit_log: PathBuf,
    timeout: Duration,
    // Declared last: removed only after the processes that use it are gone.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir.path())
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

/// Options for a [`TestEnv`]; from [`TestEnv::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct TestEnvBuilder {
    controller_manager: bool,
    users: Vec<String>,
    timeout: Duration,
    watch_cache: bool,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        TestEnvBuilder {
            controller_manager: false,
            users: Vec::new(),
            timeout: Duration::from_secs(90),
            watch_cache: true,
        }
    }
}

impl TestEnvBuilder {
    /// Also run kube-controller-manager with the garbage collector and namespace controllers,
    /// so objects whose owners are deleted are deleted too, and deleted namespaces empty out.
    /// Off by default.
    pub fn controller_manager(mut self, on: bool) -> Self {
        self.controller_manager = on;
        self
    }

    /// Declares a user with a static token and no groups besides `system:authenticated`:
    /// it may do nothing until RBAC grants it rights. Get its client with
    /// [`TestEnv::user_client`].
    pub fn user(mut self, name: &str) -> Self {
        if !self.users.iter().any(|u| u == name) {
            self.users.push(name.to_owned());
        }
        self
    }

    /// How long each process may take to become ready (default 90 s; parallel starts on a
    /// small machine are slow). Also bounds [`TestEnv::restart_apiserver`] and CRD
    /// establishment.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the API server serves lists and watches from its watch cache (default on, as in
    /// a real cluster). Off, every watch goes to etcd, so [`TestEnv::compact_etcd`] makes a
    /// re-watch from an older resource version fail with `410 Gone` at once; with the cache,
    /// the API server answers from its own window of recent events.
    pub fn watch_cache(mut self, on: bool) -> Self {
        self.watch_cache = on;
        self
    }

    /// Starts the processes and waits until the API server is ready.
    ///
    /// # Errors
    /// [`Error::Binaries`] if the binaries cannot be found or built, [`Error::InvalidUser`] for
    /// a user name that cannot be used, [`Error::Startup`] (quoting the process's log) if a
    /// process exits or does not become ready in time.
    pub async fn start(self) -> Result<TestEnv, Error> {
        for user in &self.users {
            validate_user(user)?;
        }
        let binaries = Binaries::get().await?;
        let etcd_bin = binaries.require(binaries::ETCD)?;
        let apiserver_bin = binaries.require(binaries::APISERVER)?;
        let controller_manager_bin = if self.controller_manager {
            Some(binaries.require(binaries::CONTROLLER_MANAGER)?)
        } else {
            None
        };
        let started = std::time::Instant::now();

        let dir = tempfile::Builder::new()
            .prefix("bonny-testenv-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory for the TestEnv", e))?;
        let path = dir.path();

        let pki = tokio::task::spawn_blocking(Pki::generate)
            .await
            .map_err(|e| Error::Certificates(Box::new(e)))??;
        let files = ApiServerFiles {
            serving_cert: write_file(path, "apiserver.crt", &pki.serving_cert_pem)?,
            serving_key: write_file(path, "apiserver.key", &pki.serving_key_pem)?,
            ca_cert: write_file(path, "ca.crt", &pki.ca_cert_pem)?,
            service_account_key: write_file(path, "sa.key", &pki.service_account_key_pem)?,
            service_account_pub: write_file(path, "sa.pub", &pki.service_account_pub_pem)?,
            tokens: path.join("tokens.csv"),
            audit_policy: write_file(path, "audit-policy.yaml", audit::POLICY)?,
            audit_log: path.join("audit.log"),
        };
        let admin = Credentials::new(ADMIN, path);
        let users: BTreeMap<String, Credentials> = self
            .users
            .iter()
            .map(|u| (u.clone(), Credentials::new(u, path)))
            .collect();
        std::fs::write(&files.tokens, token_file(&admin, users.values()))
            .map_err(|e| Error::io(format!("write {}", files.tokens.display()), e))?;

        let etcd = Etcd::start(&etcd_bin, path, self.timeout).await?;

        let mut attempt = 0;
        let (apiserver, client, server_url) = loop {
            attempt += 1;
            let port = components::free_port()?;
            let server_url = format!("https://127.0.0.1:{port}");
            for credentials in std::iter::once(&admin).chain(users.values()) {
                kubeconfig::write(
                    &credentials.kubeconfig,
                    &server_url,
                    &pki.ca_cert_pem,
                    &credentials.user,
                    &credentials.token,
                )?;
            }
            let client = kubeconfig::client(&admin.kubeconfig).await?;
            let args = ApiServer::args(path, port, &etcd.url, &files, self.watch_cache);
            let log = path.join("kube-apiserver.log");
            match ApiServer::start(
                &apiserver_bin,
                args,
                port,
                log.clone(),
                &client,
                self.timeout,
            )
            .await
            {
                Ok(apiserver) => break (apiserver, client, server_url),
                Err(Error::Startup { .. }) if attempt < 3 && components::lost_port_race(&log) => {
                    tracing::debug!(port, "kube-apiserver lost a port race; retrying");
                }
                Err(e) => return Err(e),
            }
        };

        let controller_manager = match controller_manager_bin {
            Some(bin) => {
                Some(ControllerManager::start(&bin, path, &admin.kubeconfig, self.timeout).await?)
            }
            None => None,
        };

        tracing::info!(
            server = %server_url,
            dir = %path.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "TestEnv ready"
        );
        Ok(TestEnv {
            controller_manager,
            apiserver,
            etcd,
            client,
            admin,
            users,
            ca_pem: pki.ca_cert_pem,
            server_url,
            audit_log: files.audit_log,
            timeout: self.timeout,
            dir,
        })
    }
}

impl TestEnv {
    /// Starts an environment with the default options: etcd and kube-apiserver, no extra
    /// users, no controller manager.
    ///
    /// # Errors
    /// As [`TestEnvBuilder::start`].
    pub async fn start() -> Result<TestEnv, Error> {
        TestEnv::builder().start().await
    }

    /// Options for an environment.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// A client for the admin user (group `system:masters`: allowed everything).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig file, for child processes (operator replicas). It lives as long
    /// as the environment.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The PEM of the CA that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The environment's temporary directory: process logs (`etcd.log`,
    /// `kube-apiserver.log`, ...), certificates and kubeconfigs. Removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for a user declared with [`TestEnvBuilder::user`]: authenticated, but with no
    /// rights until RBAC grants them.
    ///
    /// # Errors
    /// [`Error::UnknownUser`] if the builder did not declare `user`.
    pub async fn user_client(&self, user: &str) -> Result<kube::Client, Error> {
        let path = self
            .user_kubeconfig_path(user)
            .ok_or_else(|| Error::UnknownUser {
                user: user.to_owned(),
            })?;
        kubeconfig::client(path).await
    }

    /// The kubeconfig file of a user declared with [`TestEnvBuilder::user`].
    pub fn user_kubeconfig_path(&self, user: &str) -> Option<&Path> {
        self.users.get(user).map(|c| c.kubeconfig.as_path())
    }

    /// A pod identity in `namespace` (which must exist): ServiceAccount `service_account` and
    /// Pod `pod` are created unless they exist, and a token bound to the Pod is requested
    /// through the TokenRequest API. Requests with it carry the pod's name in the user's
    /// extra ([`POD_NAME_EXTRA`]), as from a real pod; no kubelet runs the Pod. RBAC grants
    /// the service account nothing until a binding does.
    ///
    /// # Errors
    /// [`Error::Kube`] if the API server refuses an object or the token request (bad names
    /// are named there), [`Error::PodIdentity`] if an existing Pod of that name runs as
    /// another service account, [`Error::Io`] if the kubeconfig cannot be written.
    ///
    /// # Example
    /// ```no_run
    /// # async fn example(env: &bonny::testing::TestEnv) -> Result<(), Box<dyn std::error::Error>> {
    /// env.create_namespace("ops").await?;
    /// let replica = env.pod_identity("ops", "widget-operator", "widget-operator-0").await?;
    /// // A child process: `KUBECONFIG=<replica.kubeconfig_path()>`, `BONNY_POD_NAME=widget-operator-0`.
    /// let client = replica.client().await?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn pod_identity(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> Result<PodIdentity, Error> {
        PodIdentity::create(
            &self.client,
            &self.server_url,
            &self.ca_pem,
            self.dir.path(),
            namespace,
            service_account,
            pod,
        )
        .await
    }

    /// The API server's audit log: every request at `Metadata` level (user with groups and
    /// extra, verb, object, response code, timestamps), one record per completed request,
    /// in the order the API server wrote them. The record of a request is written before its
    /// response is sent, but the file write may trail by a moment: poll with [`eventually`]
    /// rather than reading once.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::AuditLog`] for a line that does not
    /// parse.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>, Error> {
        audit::read(&self.audit_log)
    }

    /// The audit log file (JSON lines, `audit.k8s.io/v1` events).
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// etcd's current revision: the `resourceVersion` of the newest write to any object.
    ///
    /// # Errors
    /// [`Error::Etcd`] if etcd does not answer.
    pub async fn etcd_revision(&self) -> Result<i64, Error> {
        self.etcd.revision().await
    }

    /// Compacts etcd at its current revision and returns that revision. Every older
    /// revision is gone: a watch from an older `resourceVersion` that reaches etcd fails
    /// with `410 Gone` (the client must re-list), as after a long partition in a real
    /// cluster. Watches served from the API server's watch cache are affected only once
    /// their resource version falls out of the cache (see [`TestEnvBuilder::watch_cache`]).
    ///
    /// # Errors
    /// [`Error::Etcd`] if etcd refuses or does not answer.
    pub async fn compact_etcd(&self) -> Result<i64, Error> {
        let revision = self.etcd.revision().await?;
        self.etcd.compact(revision).await?;
        tracing::info!(revision, "etcd compacted");
        Ok(revision)
    }

    /// Kills etcd and starts it again on the same ports with the same data, then waits for
    /// its `/health`. The API server stays up and reconnects on its own (requests fail
    /// meanwhile); every object and revision survives.
    ///
    /// # Errors
    /// [`Error::Startup`] if etcd does not come back in time.
    pub async fn restart_etcd(&mut self) -> Result<(), Error> {
        tracing::info!(url = %self.etcd.url, "restarting etcd");
        self.etcd.restart(self.timeout).await
    }

    /// Creates namespace `name`, so that a test can keep its objects apart from others'.
    ///
    /// # Errors
    /// [`Error::Kube`] if the API server refuses it (for example, it exists already).
    pub async fn create_namespace(&self, name: &str) -> Result<(), Error> {
        use k8s_openapi::{
            api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta,
        };
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| Error::kube(format!("create namespace {name}"), e))?;
        Ok(())
    }

    /// Creates the CRD, or replaces it if one of that name exists, and waits until it is
    /// `Established`.
    ///
    /// # Errors
    /// [`Error::Kube`] if the API server refuses it, [`Error::CrdRejected`] if its names
    /// clash, [`Error::Timeout`] if it is not established in time.
    pub async fn install_crd(&self, crd: CustomResourceDefinition) -> Result<(), Error> {
        let name = create_or_replace_crd(&self.client, crd).await?;
        self.wait_established(&name).await
    }

    /// Installs every CustomResourceDefinition in a multi-document YAML stream (as written
    /// by `kubectl` or generated manifests), then waits until all are `Established`. Empty
    /// documents are skipped.
    ///
    /// # Errors
    /// [`Error::NotACrd`] for a document of another kind (nothing is installed then), and as
    /// [`TestEnv::install_crd`].
    pub async fn install_crds_yaml(&self, yaml: &str) -> Result<(), Error> {
        let crds = parse_crds(yaml)?;
        let mut names = Vec::with_capacity(crds.len());
        for crd in crds {
            names.push(create_or_replace_crd(&self.client, crd).await?);
        }
        for name in names {
            self.wait_established(&name).await?;
        }
        Ok(())
    }

    async fn wait_established(&self, name: &str) -> Result<(), Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let crd = api
                .get(name)
                .await
                .map_err(|e| Error::kube(format!("read CustomResourceDefinition {name}"), e))?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
            if let Some(c) = condition("NamesAccepted").filter(|c| c.status == "False") {
                return Err(Error::CrdRejected {
                    name: name.to_owned(),
                    reason: c.message.clone().unwrap_or_default(),
                });
            }
            if condition("Established").is_some_and(|c| c.status == "True") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("CustomResourceDefinition {name} to be Established"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops kube-apiserver and starts it again on the same port with the same etcd data,
    /// then waits for `/readyz`. Clients and kubeconfigs stay valid; their open connections
    /// break, as with a real API server restart.
    ///
    /// # Errors
    /// [`Error::Startup`] if it does not come back in time.
    pub async fn restart_apiserver(&mut self) -> Result<(), Error> {
        tracing::info!(server = %self.server_url, "restarting kube-apiserver");
        self.apiserver.restart(&self.client, self.timeout).await
    }

    /// A new TCP proxy in front of the API server, for partitioning one client from it.
    /// Its tasks run on the calling Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot listen on loopback or write its kubeconfig.
    pub async fn proxy(&self) -> Result<Proxy, Error> {
        let upstream = SocketAddr::from(([127, 0, 0, 1], self.apiserver.port));
        Proxy::start(upstream, self.dir.path(), &self.ca_pem, &self.admin.token).await
    }

    /// The raw Prometheus text of the API server's `/metrics`.
    ///
    /// # Errors
    /// [`Error::Kube`] if the request fails.
    pub async fn apiserver_metrics(&self) -> Result<String, Error> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| Error::kube("build the /metrics request", kube::Error::HttpError(e)))?;
        self.client
            .request_text(request)
            .await
            .map_err(|e| Error::kube("read the API server's /metrics", e))
    }

    /// The API server's `apiserver_request_total` for `verb` and `resource` (plural, e.g.
    /// `"configmaps"`), summed over all other labels (codes, groups, subresources, ...).
    ///
    /// `verb` is matched in any case against what the API server reports: `GET`, `LIST`,
    /// `WATCH`, `POST` (create), `PUT` (replace), `PATCH`, `APPLY` (server-side apply),
    /// `DELETE`, `DELETECOLLECTION`. Counts restart from zero after
    /// [`restart_apiserver`](TestEnv::restart_apiserver).
    ///
    /// # Errors
    /// As [`TestEnv::apiserver_metrics`].
    pub async fn request_count(&self, verb: &str, resource: &str) -> Result<u64, Error> {
        Ok(self.request_counts().await?.count(verb, resource))
    }

    /// Every sample of the API server's `apiserver_request_total`, read now.
    ///
    /// # Errors
    /// As [`TestEnv::apiserver_metrics`].
    pub async fn request_counts(&self) -> Result<RequestCounts, Error> {
        Ok(RequestCounts::parse(&self.apiserver_metrics().await?))
    }

    /// Process ids of the running etcd, kube-apiserver and kube-controller-manager.
    pub fn pids(&self) -> Vec<u32> {
        [
            self.etcd.pid(),
            self.apiserver.pid(),
            self.controller_manager
                .as_ref()
                .and_then(ControllerManager::pid),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Clients first, then the server, then its storage.
        if let Some(controller_manager) = &mut self.controller_manager {
            controller_manager.stop();
        }
        self.apiserver.stop();
        self.etcd.stop();
        tracing::debug!(dir = %self.dir.path().display(), "TestEnv stopped");
    }
}

fn validate_user(user: &str) -> Result<(), Error> {
    let rule = if user.is_empty() {
        "must not be empty"
    } else if user == ADMIN {
        "\"admin\" is the built-in admin user; pick another name"
    } else if user.starts_with("system:") {
        "the system: prefix is reserved by Kubernetes"
    } else if !user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@' | ':'))
    {
        "use ASCII letters, digits and - . _ @ : only"
    } else {
        return Ok(());
    };
    Err(Error::InvalidUser {
        user: user.to_owned(),
        rule,
    })
}

/// `--token-auth-file` lines: `token,user,uid[,"group,..."]`.
fn token_file<'a>(admin: &Credentials, users: impl Iterator<Item = &'a Credentials>) -> String {
    let mut text = format!(
        "{},{},{},\"system:masters\"\n",
        admin.token, admin.user, admin.user
    );
    for user in users {
        text.push_str(&format!("{},{},{}\n", user.token, user.user, user.user));
    }
    text
}

fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

async fn create_or_replace_crd(
    client: &kube::Client,
    mut crd: CustomResourceDefinition,
) -> Result<String, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crd.metadata.resource_version = None;
    let action = || format!("install CustomResourceDefinition {name}");
    for _ in 0..5 {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => return Ok(name),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(Error::kube(action(), e)),
        }
        let existing = match api.get_opt(&name).await {
            Ok(Some(existing)) => existing,
            // Deleted meanwhile: create again.
            Ok(None) => continue,
            Err(e) => return Err(Error::kube(action(), e)),
        };
        let mut replacement = crd.clone();
        replacement.metadata.resource_version = existing.metadata.resource_version;
        match api
            .replace(&name, &PostParams::default(), &replacement)
            .await
        {
            Ok(_) => return Ok(name),
            // Changed meanwhile: read it again.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(Error::kube(action(), e)),
        }
    }
    Err(Error::Timeout {
        what: format!("a conflict-free write of CustomResourceDefinition {name} (5 attempts)"),
        after: Duration::ZERO,
    })
}

fn parse_crds(yaml: &str) -> Result<Vec<CustomResourceDefinition>, Error> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::NotACrd {
            index: 0,
            reason: format!("the YAML does not parse: {e}"),
        })?;
    let mut crds = Vec::new();
    for (index, value) in documents.into_iter().enumerate() {
        let not_a_crd = |reason: String| Error::NotACrd { index, reason };
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(serde_json::Value::as_str);
        if kind != Some("CustomResourceDefinition") {
            return Err(not_a_crd(format!("its kind is {kind:?}")));
        }
        let crd: CustomResourceDefinition =
            serde_json::from_value(value).map_err(|e| not_a_crd(e.to_string()))?;
        if crd.metadata.name.is_none() {
            return Err(not_a_crd("it has no metadata.name".to_owned()));
        }
        crds.push(crd);
    }
    Ok(crds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_crd_yaml() {
        let yaml = "---\n\
apiVersion: apiextensions.k8s.io/v1\n\
kind: CustomResourceDefinition\n\
metadata:\n  name: widgets.example.com\n\
spec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: []\n\
---\n\
---\n\
apiVersion: apiextensions.k8s.io/v1\n\
kind: CustomResourceDefinition\n\
metadata:\n  name: gadgets.example.com\n\
spec:\n  group: example.com\n  names: {kind: Gadget, plural: gadgets}\n  scope: Cluster\n  versions: []\n";
        let crds = parse_crds(yaml).expect("two CRDs");
        let names: Vec<_> = crds
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        assert_eq!(names, ["widgets.example.com", "gadgets.example.com"]);
    }

    #[test]
    fn rejects_other_kinds() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        assert!(matches!(
            parse_crds(yaml),
            Err(Error::NotACrd { index: 0, .. })
        ));
    }

    #[test]
    fn user_names_are_checked() {
        assert!(validate_user("alice").is_ok());
        assert!(validate_user("dev@example.com").is_ok());
        for bad in ["", "admin", "system:kube", "a,b", "a\"b", "a b"] {
            assert!(validate_user(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn token_file_puts_only_admin_in_a_group() {
        let dir = Path::new("/tmp");
        let admin = Credentials::new(ADMIN, dir);
        let alice = Credentials::new("alice", dir);
        let text = token_file(&admin, std::iter::once(&alice));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("{},admin,admin,\"system:masters\"", admin.token)
        );
        assert_eq!(lines[1], format!("{},alice,alice", alice.token));
    }
}
