//! etcd, kube-apiserver and kube-controller-manager: their flags, and how each is known to be
//! ready.

use std::collections::HashSet;
use std::ffi::OsString;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Error;
use super::process::Process;

/// How often readiness is probed.
const POLL: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Start attempts when a port picked as free was taken by someone else before the child bound it.
const ATTEMPTS: u32 = 3;

/// A loopback port that was free a moment ago. Ports handed out by this process are never
/// handed out again, so parallel environments in one test binary do not collide; a race with
/// another process is handled by retrying the start.
pub(crate) fn free_port() -> Result<u16, Error> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..64 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("find a free loopback port", e))?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(Error::io(
        "find a free loopback port",
        std::io::Error::other("the kernel kept returning ports this process already uses"),
    ))
}

/// Polls `probe` every [`POLL`] until it answers `true`, the process exits, or `timeout`.
async fn wait_ready<F, Fut>(
    process: &mut Process,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            return Err(process.startup_error(format!("exited ({status}) before {what}")));
        }
        if tokio::time::timeout(PROBE_TIMEOUT, probe())
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(process.startup_error(format!("not {what} after {timeout:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the log says a port picked as free was taken before the process bound it.
pub(crate) fn lost_port_race(log: &Path) -> bool {
    super::process::tail(log, 50).contains("address already in use")
}

pub(crate) struct Etcd {
    process: Process,
    binary: PathBuf,
    args: Vec<OsString>,
    addr: SocketAddr,
    pub(crate) url: String,
}

impl Etcd {
    pub(crate) async fn start(binary: &Path, dir: &Path, timeout: Duration) -> Result<Etcd, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client_port = free_port()?;
            let peer_port = free_port()?;
            let url = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            // A fresh data dir per attempt: a half-initialised one names the old peer URL.
            let data = dir.join(format!("etcd-data-{attempt}"));
            let args: Vec<OsString> = vec![
                arg("--name=default"),
                arg_path("--data-dir=", &data),
                arg(format!("--listen-client-urls={url}")),
                arg(format!("--advertise-client-urls={url}")),
                arg(format!("--listen-peer-urls={peer}")),
                arg(format!("--initial-advertise-peer-urls={peer}")),
                arg(format!("--initial-cluster=default={peer}")),
                arg("--unsafe-no-fsync=true"),
                arg("--log-level=error"),
            ];
            let mut process = Process::spawn("etcd", binary, &args, dir.join("etcd.log"))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
            match wait_ready(&mut process, "healthy", timeout, || etcd_healthy(addr)).await {
                Ok(()) => {
                    return Ok(Etcd {
                        process,
                        binary: binary.to_owned(),
                        args,
                        addr,
                        url,
                    });
                }
                Err(_) if attempt < ATTEMPTS && lost_port_race(process.log()) => {
                    tracing::debug!(attempt, "etcd lost a port race; retrying on new ports");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills etcd and starts it again with the same flags: same ports, same data directory.
    pub(crate) async fn restart(&mut self, timeout: Duration) -> Result<(), Error> {
        let log = self.process.log().to_owned();
        self.process.stop();
        self.process = Process::spawn("etcd", &self.binary, &self.args, log)?;
        let addr = self.addr;
        wait_ready(&mut self.process, "healthy again", timeout, || {
            etcd_healthy(addr)
        })
        .await
    }

    /// The store's current revision, through etcd's JSON gateway (`/v3/kv/range`).
    pub(crate) async fn revision(&self) -> Result<i64, Error> {
        // Any key will do: the response header carries the store's revision.
        let answer = etcd_post(self.addr, "/v3/kv/range", r#"{"key":"AA=="}"#)
            .await
            .map_err(|reason| etcd_error("read the current revision", reason))?;
        answer
            .pointer("/header/revision")
            .and_then(json_int)
            .ok_or_else(|| etcd_error("read the current revision", answer.to_string()))
    }

    /// Compacts the store at `revision` (physically, so the old revisions are gone when this
    /// returns), through etcd's JSON gateway (`/v3/kv/compaction`).
    pub(crate) async fn compact(&self, revision: i64) -> Result<(), Error> {
        let action = || format!("compact at revision {revision}");
        let body = serde_json::json!({"revision": revision.to_string(), "physical": true});
        let answer = etcd_post(self.addr, "/v3/kv/compaction", &body.to_string())
            .await
            .map_err(|reason| etcd_error(action(), reason))?;
        if answer.get("header").is_some() {
            Ok(())
        } else {
            Err(etcd_error(action(), answer.to_string()))
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub(crate) fn stop(&mut self) {
        self.process.stop();
    }
}

fn etcd_error(action: impl Into<String>, reason: String) -> Error {
    Error::Etcd {
        action: action.into(),
        reason,
    }
}

/// The gateway writes 64-bit integers as JSON strings.
fn json_int(value: &serde_json::Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// `POST path` with a JSON body over plain HTTP/1.0; the answer's JSON body.
async fn etcd_post(addr: SocketAddr, path: &str, body: &str) -> Result<serde_json::Value, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(PROBE_TIMEOUT * 5, exchange)
        .await
        .map_err(|_| format!("no answer from {addr}{path} in {:?}", PROBE_TIMEOUT * 5))?
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path} answered without a body: {text}"))?;
    serde_json::from_str(body).map_err(|e| {
        let status = head.lines().next().unwrap_or_default();
        format!("{addr}{path} answered {status}: {body} ({e})")
    })
}

/// `GET /health` over plain HTTP/1.0: etcd answers `{"health":"true",...}` once it serves.
async fn etcd_healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).await.is_err() {
        return false;
    }
    String::from_utf8_lossy(&response).contains("\"health\":\"true\"")
}

/// Files the API server reads, all inside the environment's directory.
pub(crate) struct ApiServerFiles {
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) ca_cert: PathBuf,
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_pub: PathBuf,
    pub(crate) tokens: PathBuf,
    pub(crate) audit_policy: PathBuf,
    pub(crate) audit_log: PathBuf,
}

pub(crate) struct ApiServer {
    process: Process,
    binary: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    pub(crate) port: u16,
}

impl ApiServer {
    pub(crate) fn args(
        dir: &Path,
        port: u16,
        etcd_url: &str,
        files: &ApiServerFiles,
        watch_cache: bool,
    ) -> Vec<OsString> {
        let mut args = vec![
            arg(format!("--etcd-servers={etcd_url}")),
            arg("--bind-address=127.0.0.1"),
            // Without it the server looks for a default route, which sandboxes lack.
            arg("--advertise-address=127.0.0.1"),
            arg(format!("--secure-port={port}")),
            arg_path("--cert-dir=", &dir.join("apiserver-certs")),
            arg_path("--tls-cert-file=", &files.serving_cert),
            arg_path("--tls-private-key-file=", &files.serving_key),
            arg_path("--client-ca-file=", &files.ca_cert),
            arg_path("--service-account-key-file=", &files.service_account_pub),
            arg_path(
                "--service-account-signing-key-file=",
                &files.service_account_key,
            ),
            arg(format!("--service-account-issuer=https://127.0.0.1:{port}")),
            arg_path("--token-auth-file=", &files.tokens),
            arg("--authorization-mode=RBAC"),
            arg("--service-cluster-ip-range=10.0.0.0/24"),
            // No token controller runs, so the admission plugin could never find tokens.
            arg("--disable-admission-plugins=ServiceAccount"),
            arg("--allow-privileged=true"),
            // The `kubernetes` Service's endpoints may not point at loopback; no Pods could
            // reach them anyway.
            arg("--endpoint-reconciler-type=none"),
            arg("--profiling=false"),
            arg_path("--audit-policy-file=", &files.audit_policy),
            arg_path("--audit-log-path=", &files.audit_log),
            arg("--audit-log-format=json"),
            // Written before the response is sent, so a test that saw the answer finds the
            // record (give or take the file write).
            arg("--audit-log-mode=blocking"),
            // One file for the whole run: tests read only this one.
            arg("--audit-log-maxsize=100000"),
        ];
        if !watch_cache {
            args.push(arg("--watch-cache=false"));
        }
        args
    }

    /// Starts the server and waits for `/readyz` through `client`. `args` must carry `port`.
    pub(crate) async fn start(
        binary: &Path,
        args: Vec<OsString>,
        port: u16,
        log: PathBuf,
        client: &kube::Client,
        timeout: Duration,
    ) -> Result<ApiServer, Error> {
        let process = Process::spawn("kube-apiserver", binary, &args, log.clone())?;
        let mut server = ApiServer {
            process,
            binary: binary.to_owned(),
            args,
            log,
            port,
        };
        server.wait_ready(client, timeout).await?;
        Ok(server)
    }

    /// Stops the server and starts it again with the same flags (port, etcd, certificates).
    pub(crate) async fn restart(
        &mut self,
        client: &kube::Client,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.process.stop();
        self.process =
            Process::spawn("kube-apiserver", &self.binary, &self.args, self.log.clone())?;
        self.wait_ready(client, timeout).await
    }

    async fn wait_ready(&mut self, client: &kube::Client, timeout: Duration) -> Result<(), Error> {
        wait_ready(&mut self.process, "ready (/readyz)", timeout, || {
            probe_text(client, "/readyz", "ok")
        })
        .await
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub(crate) fn stop(&mut self) {
        self.process.stop();
    }
}

pub(crate) struct ControllerManager {
    process: Process,
}

impl ControllerManager {
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        kubeconfig: &Path,
        timeout: Duration,
    ) -> Result<ControllerManager, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A port of its own, only so that /healthz tells when it runs.
            let port = free_port()?;
            let args = vec![
                arg_path("--kubeconfig=", kubeconfig),
                arg("--controllers=garbage-collector-controller,namespace-controller"),
                arg("--leader-elect=false"),
                arg("--use-service-account-credentials=false"),
                arg("--bind-address=127.0.0.1"),
                arg(format!("--secure-port={port}")),
                arg_path("--cert-dir=", &dir.join("controller-manager-certs")),
                arg("--profiling=false"),
            ];
            let mut process = Process::spawn(
                "kube-controller-manager",
                binary,
                &args,
                dir.join("kube-controller-manager.log"),
            )?;
            let probe_client = insecure_client(port)?;
            match wait_ready(&mut process, "healthy (/healthz)", timeout, || {
                probe_text(&probe_client, "/healthz", "ok")
            })
            .await
            {
                Ok(()) => return Ok(ControllerManager { process }),
                Err(_) if attempt < ATTEMPTS && lost_port_race(process.log()) => {
                    tracing::debug!(attempt, "controller-manager lost a port race; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub(crate) fn stop(&mut self) {
        self.process.stop();
    }
}

/// An anonymous client for a self-signed loopback health endpoint.
fn insecure_client(port: u16) -> Result<kube::Client, Error> {
    let url = format!("https://127.0.0.1:{port}");
    let kubeconfig_error = |source: super::error::BoxError| Error::Kubeconfig {
        path: PathBuf::from(&url),
        source,
    };
    let mut config = kube::Config::new(url.parse().map_err(|e| kubeconfig_error(Box::new(e)))?);
    config.accept_invalid_certs = true;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| kubeconfig_error(Box::new(e)))
}

async fn probe_text(client: &kube::Client, path: &str, expected: &str) -> bool {
    let Ok(request) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(request).await, Ok(text) if text.trim() == expected)
}

fn arg(s: impl Into<OsString>) -> OsString {
    s.into()
}

fn arg_path(flag: &str, path: &Path) -> OsString {
    let mut s = OsString::from(flag);
    s.push(path.as_os_str());
    s
}
