//! The HTTPS server: every declared hook on its own path, TLS with the certificate in the
//! [`CertSlot`], each request answered within a deadline and a panic answered as an error.

use std::{
    any::Any,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{certs::CertSlot, hook::Hook};
use crate::observe::WebhookMetrics;

/// Reviews carry the object and the old object, each up to the API server's 3 MiB limit.
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, beyond the hook deadline, a connection may take to send its last answer once
/// the server stops.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// A bound webhook listener.
pub(crate) struct WebhookServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    /// How long open connections get to finish once the server stops.
    grace: Duration,
}

impl WebhookServer {
    pub(crate) async fn bind(
        addr: SocketAddr,
        hooks: &[Arc<dyn Hook>],
        slot: Arc<CertSlot>,
        metrics: WebhookMetrics,
        deadline: Duration,
    ) -> Result<Self, super::WebhookError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| super::WebhookError::Bind { addr, source })?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(super::WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(slot);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut router = Router::new();
        for hook in hooks {
            let hook = hook.clone();
            let metrics = metrics.clone();
            let path = hook.route().path.clone();
            router = router.route(
                &path,
                post(move |body: Bytes| answer(hook.clone(), metrics.clone(), deadline, body)),
            );
        }
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            router: router.layer(DefaultBodyLimit::max(BODY_LIMIT)),
            grace: deadline + DRAIN_MARGIN,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until `stop`, then drain them: an idle connection closes at once,
    /// one with a request in flight closes once it is answered, and whatever is still open
    /// after the grace (the hook deadline and a margin) is dropped. Every connection is a task
    /// of this future: dropping it drops them all.
    pub(crate) async fn serve(self, stop: CancellationToken) {
        let Self {
            listener,
            acceptor,
            router,
            grace,
        } = self;
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                // Reap the connections that ended, so that the set holds the open ones only.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "webhook server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = TowerToHyperService::new(router.clone());
            connections.spawn(connection(
                tcp,
                peer,
                acceptor.clone(),
                service,
                stop.clone(),
            ));
        }
        drop(listener);
        let open = connections.len();
        if open == 0 {
            return;
        }
        tracing::debug!(
            open,
            ?grace,
            "webhook server stopped accepting; draining connections"
        );
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                ?grace,
                "webhook connections still open after the grace period; closing them"
            );
            connections.shutdown().await;
        }
    }
}

/// One connection: the TLS handshake, then HTTP/1.1 until the client closes it or `stop`
/// (which lets a request in flight finish, then closes).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: TowerToHyperService<Router>,
    stop: CancellationToken,
) {
    let handshake = tokio::select! {
        () = stop.cancelled() => return,
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "webhook TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook TLS handshake timed out");
            return;
        }
    };
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "webhook connection ended with an error");
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// One request: the hook runs on the blocking pool, so that a panic is caught and a slow hook
/// is answered at the deadline (the thread finishes on its own).
async fn answer(
    hook: Arc<dyn Hook>,
    metrics: WebhookMetrics,
    deadline: Duration,
    body: Bytes,
) -> Response {
    let route = hook.route();
    let what = format!(
        "the {} of {}.{}",
        route.kind.role(),
        route.plural,
        route.group
    );
    metrics.request_started(&route.path);
    let started = Instant::now();
    let task = {
        let hook = hook.clone();
        let body = body.clone();
        tokio::task::spawn_blocking(move || hook.handle(&body))
    };
    let (code, out) = match tokio::time::timeout(deadline, task).await {
        Ok(Ok(out)) => (200, out),
        Ok(Err(err)) if err.is_panic() => {
            metrics.panicked();
            let message = format!("{what} panicked: {}", panic_message(&*err.into_panic()));
            tracing::error!(webhook = %route.path, "{message}");
            (500, hook.failure(&body, 500, &message))
        }
        Ok(Err(_)) => {
            let message = format!("{what} was cancelled");
            (500, hook.failure(&body, 500, &message))
        }
        Err(_) => {
            let message = format!("{what} did not answer within {deadline:?}");
            tracing::warn!(webhook = %route.path, "{message}");
            (504, hook.failure(&body, 504, &message))
        }
    };
    metrics.request_finished(&route.path, code, started.elapsed());
    // The failure is in the review (code and message reach the client); the HTTP exchange
    // itself succeeded, so the API server does not fall back to its failure policy.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::Notify,
        task::JoinHandle,
    };
    use tokio_rustls::{TlsConnector, client::TlsStream};

    use super::*;
    use crate::{
        observe::Metrics,
        webhook::{
            certs,
            hook::{HookKind, Route},
        },
    };

    const DEADLINE: Duration = Duration::from_millis(500);
    /// What a test waits at most for the server to end: its grace, and as much again.
    const ENDS_WITHIN: Duration = Duration::from_millis(2 * (500 + 1000));

    /// A hook that takes `delay` to answer `ok`, telling when it started and finished.
    struct Slow {
        route: Route,
        delay: Duration,
        started: Arc<Notify>,
        answered: Arc<AtomicBool>,
    }

    impl Hook for Slow {
        fn route(&self) -> &Route {
            &self.route
        }
        fn handle(&self, _body: &[u8]) -> Vec<u8> {
            self.started.notify_one();
            // The author's slow work.
            std::thread::sleep(self.delay);
            self.answered.store(true, Ordering::SeqCst);
            b"ok".to_vec()
        }
        fn failure(&self, _body: &[u8], _code: u16, message: &str) -> Vec<u8> {
            message.as_bytes().to_vec()
        }
    }

    struct Running {
        addr: SocketAddr,
        path: String,
        stop: CancellationToken,
        serving: JoinHandle<()>,
        connector: TlsConnector,
        started: Arc<Notify>,
        answered: Arc<AtomicBool>,
    }

    /// A server on 127.0.0.1 with one hook taking `delay`, and a client trusting its CA.
    async fn serve(delay: Duration) -> Running {
        let ca = certs::new_ca("test", Duration::from_secs(3600)).unwrap();
        let pair = certs::issue(
            "test",
            &ca.key_pem,
            &["127.0.0.1".to_owned()],
            Duration::from_secs(3600),
        )
        .unwrap();
        let slot = Arc::new(CertSlot::default());
        slot.install(&pair).unwrap();
        let route = Route::new(HookKind::Validating, "example.com", "v1", "things", vec![]);
        let path = route.path.clone();
        let (started, answered) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        let hook: Arc<dyn Hook> = Arc::new(Slow {
            route,
            delay,
            started: started.clone(),
            answered: answered.clone(),
        });
        let server = WebhookServer::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &[hook],
            slot,
            WebhookMetrics::register(&Metrics::new()),
            DEADLINE,
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server.serve(stop.clone()));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Running {
            addr,
            path,
            stop,
            serving,
            connector: TlsConnector::from(Arc::new(config)),
            started,
            answered,
        }
    }

    impl Running {
        async fn connect(&self) -> TlsStream<TcpStream> {
            let tcp = TcpStream::connect(self.addr).await.unwrap();
            self.connector
                .connect(ServerName::from(self.addr.ip()), tcp)
                .await
                .unwrap()
        }

        /// Sends a request (HTTP/1.1: the connection stays open after it).
        async fn send(&self, stream: &mut TlsStream<TcpStream>) {
            let request = format!(
                "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}",
                self.path
            );
            stream.write_all(request.as_bytes()).await.unwrap();
        }
    }

    /// Reads one response; returns its head and body.
    async fn response(stream: &mut TlsStream<TcpStream>) -> (String, String) {
        let mut buffer = Vec::new();
        let mut chunk = [0; 4096];
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed before a response");
            buffer.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        while buffer.len() < head_end + length {
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed in the middle of a response");
            buffer.extend_from_slice(&chunk[..read]);
        }
        let body = String::from_utf8_lossy(&buffer[head_end..]).into_owned();
        (head, body)
    }

    /// Whether the server closed `stream` (within a second).
    async fn closed(stream: &mut TlsStream<TcpStream>) -> bool {
        let mut byte = [0; 1];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_held_keep_alive_connection_is_closed_when_the_server_stops() {
        let server = serve(Duration::ZERO).await;
        let mut held = server.connect().await;
        server.send(&mut held).await;
        let (head, body) = response(&mut held).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "ok");
        server.stop.cancel();
        tokio::time::timeout(ENDS_WITHIN, server.serving)
            .await
            .expect("the server ends within its grace")
            .unwrap();
        assert!(closed(&mut held).await, "the held connection is closed");
    }

    #[tokio::test]
    async fn dropping_the_server_closes_its_connections() {
        let server = serve(Duration::ZERO).await;
        let mut held = server.connect().await;
        server.send(&mut held).await;
        response(&mut held).await;
        // As when the operator's run is aborted: nobody cancels the stop.
        server.serving.abort();
        assert!(server.serving.await.unwrap_err().is_cancelled());
        assert!(closed(&mut held).await, "the held connection is closed");
    }

    #[tokio::test]
    async fn a_request_in_flight_is_answered_before_the_server_ends() {
        let server = serve(Duration::from_millis(300)).await;
        let mut held = server.connect().await;
        server.send(&mut held).await;
        server.started.notified().await;
        server.stop.cancel();
        tokio::time::timeout(ENDS_WITHIN, server.serving)
            .await
            .expect("the server ends within its grace")
            .unwrap();
        assert!(
            server.answered.load(Ordering::SeqCst),
            "the server ended before the request in flight was answered"
        );
        let (head, body) = response(&mut held).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "ok");
        assert!(closed(&mut held).await, "closed after its last answer");
    }

    #[tokio::test]
    async fn a_connection_stalled_in_a_request_is_dropped_after_the_grace() {
        let server = serve(Duration::ZERO).await;
        let mut stalled = server.connect().await;
        // A request whose body never comes: the server's "100 Continue" says it is reading it.
        let request = format!(
            "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\nexpect: 100-continue\r\ncontent-length: 100\r\n\r\n",
            server.path
        );
        stalled.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        while !buffer.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            assert_eq!(stalled.read(&mut byte).await.unwrap(), 1);
            buffer.push(byte[0]);
        }
        assert!(buffer.starts_with(b"HTTP/1.1 100"), "{buffer:?}");
        let stopped = Instant::now();
        server.stop.cancel();
        tokio::time::timeout(ENDS_WITHIN, server.serving)
            .await
            .expect("the server ends within its grace")
            .unwrap();
        assert!(
            stopped.elapsed() >= DEADLINE,
            "the request in flight was given its grace: {:?}",
            stopped.elapsed()
        );
        assert!(
            closed(&mut stalled).await,
            "the stalled connection is closed"
        );
    }
}
