//! A TCP proxy in front of the API server that a test can stall or cut, to partition one
//! client (an operator replica) from the control plane.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Error, kubeconfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Stalled,
    Cut,
}

/// A TCP proxy between a client and the environment's API server.
///
/// TLS passes through unchanged: the serving certificate names `127.0.0.1`, whatever the
/// port, so [`kubeconfig_path`](Proxy::kubeconfig_path) validates as usual. Dropping the
/// proxy closes its listener and every connection through it.
///
/// The proxy's tasks run on the Tokio runtime that called [`TestEnv::proxy`](super::TestEnv::proxy).
#[derive(Debug)]
pub struct Proxy {
    state: watch::Sender<State>,
    shutdown: CancellationToken,
    kubeconfig: PathBuf,
    addr: SocketAddr,
    // Removes the kubeconfig file on drop.
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub(crate) async fn start(
        upstream: SocketAddr,
        env_dir: &Path,
        ca_pem: &str,
        admin_token: &str,
    ) -> Result<Proxy, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("bind the proxy to 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the proxy's address", e))?;
        let dir = tempfile::Builder::new()
            .prefix("proxy-")
            .tempdir_in(env_dir)
            .map_err(|e| Error::io(format!("create a proxy dir in {}", env_dir.display()), e))?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        kubeconfig::write(
            &kubeconfig,
            &format!("https://{addr}"),
            ca_pem,
            "admin",
            admin_token,
        )?;

        let (state, state_rx) = watch::channel(State::Open);
        let shutdown = CancellationToken::new();
        // The accept loop owns every connection task in its JoinSet; cancelling it drops
        // the set, which aborts them all.
        tokio::spawn(accept_loop(listener, upstream, state_rx, shutdown.clone()));
        tracing::debug!(%addr, %upstream, "proxy started");
        Ok(Proxy {
            state,
            shutdown,
            kubeconfig,
            addr,
            _dir: dir,
        })
    }

    /// An admin kubeconfig whose server is this proxy.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An admin client that talks through this proxy.
    ///
    /// # Errors
    /// [`Error::Kubeconfig`] if the client cannot be built.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        kubeconfig::client(&self.kubeconfig).await
    }

    /// Holds every connection: new ones are accepted but not forwarded, and bytes on live
    /// ones wait, until [`heal`](Proxy::heal) (or [`cut`](Proxy::cut)).
    pub fn stall(&self) {
        tracing::debug!(addr = %self.addr, "proxy stalled");
        self.state.send_replace(State::Stalled);
    }

    /// Drops all current connections and closes new ones as soon as they are accepted,
    /// until [`heal`](Proxy::heal).
    pub fn cut(&self) {
        tracing::debug!(addr = %self.addr, "proxy cut");
        self.state.send_replace(State::Cut);
    }

    /// Forwards again; connections held by [`stall`](Proxy::stall) resume.
    pub fn heal(&self) {
        tracing::debug!(addr = %self.addr, "proxy healed");
        self.state.send_replace(State::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                if *state.borrow_and_update() == State::Cut {
                    connections.abort_all();
                }
            }
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((downstream, _)) => {
                    if *state.borrow() == State::Cut {
                        drop(downstream);
                    } else {
                        connections.spawn(forward(downstream, upstream, state.clone()));
                    }
                }
                Err(e) => tracing::debug!("proxy accept: {e}"),
            },
        }
    }
    connections.shutdown().await;
}

/// Waits until the proxy forwards; `false` if it was cut or dropped meanwhile.
async fn wait_open(state: &mut watch::Receiver<State>) -> bool {
    match state.wait_for(|s| *s != State::Stalled).await {
        Ok(s) => *s == State::Open,
        Err(_) => false,
    }
}

async fn forward(downstream: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    if !wait_open(&mut state).await {
        return;
    }
    let upstream = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("proxy could not reach the API server: {e}");
            return;
        }
    };
    let _ = downstream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (down_read, down_write) = downstream.into_split();
    let (up_read, up_write) = upstream.into_split();
    // Either direction ending ends the connection, as a dropped TCP path would.
    tokio::select! {
        () = pump(down_read, up_write, state.clone()) => {}
        () = pump(up_read, down_write, state) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !wait_open(&mut state).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
