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
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{certs::CertSlot, hook::Hook};
use crate::observe::WebhookMetrics;

/// Reviews carry the object and the old object, each up to the API server's 3 MiB limit.
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound webhook listener.
pub(crate) struct WebhookServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
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
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until `stop`; open connections finish their request, then close.
    pub(crate) async fn serve(self, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
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
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(self.router.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
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
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
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
            });
        }
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
