//! The write guard: a client that sends state-changing requests only while this replica's
//! tenure holds on its own monotonic clock (FENCING.md, layer 1).
//!
//! The elector publishes its tenure (the start of the last successful renewal plus the renew
//! deadline) in a [`WriteGuard`]; every client made by [`WriteGuard::client`] checks it at the
//! moment a POST, PUT, PATCH or DELETE is about to leave and refuses it with [`Fenced`] once it
//! lapsed. Reads always pass. A write the API server refuses because its admission policy
//! still sees another holder (right after a takeover) is retried briefly while the tenure
//! holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tokio::time::Instant;
use tower::BoxError;
use tracing::debug;

/// How the generated admission policy's refusal begins (the Lease name follows): a 403 with
/// this message is the server-side fence, retried briefly by the [`WriteGuard`]'s clients.
pub const FENCE_REFUSAL: &str = "this replica does not hold the lease";

/// Pauses between retries of a write the admission policy refused; 775 ms in total, so a
/// write is given up well within a second.
const FENCE_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// A write refused by the [`WriteGuard`] because this replica's tenure had lapsed when it was
/// about to be sent. Nothing reached the API server.
///
/// The runtime treats it as "stopping", not as a reconcile failure. Through a
/// [`kube::Client`] it surfaces as `kube::Error::Service`; [`Fenced::is_fenced`] finds it in
/// any error chain.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "{method} {path} was not sent: this replica's leadership lapsed (no Lease renewal within the \
     renew deadline), so it may no longer change anything"
)]
pub struct Fenced {
    method: Method,
    path: String,
}

impl Fenced {
    /// The refused request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The refused request's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `error`, or any error in its chain of sources, is a [`Fenced`].
    pub fn is_fenced(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(error) = current {
            if error.is::<Fenced>() {
                return true;
            }
            if let Some(kube::Error::Service(inner)) = error.downcast_ref::<kube::Error>()
                && inner.is::<Fenced>()
            {
                return true;
            }
            current = error.source();
        }
        false
    }
}

/// This replica's tenure as the elector last published it, shared by every client made by
/// [`client`](Self::client). Cheap to clone.
///
/// Get it from [`Elector::write_guard`](super::Elector::write_guard). Without a published
/// tenure (standing by, or after a loss) it refuses every write. With leader election on,
/// the operator hands controllers only such a client: `axn.client()` in a reconcile is one,
/// so an author's own writes are fenced like the SDK's.
///
/// Below, a stand-in API server serves the Lease until it goes down; the renew deadline
/// passes, and the author's next write is refused before it is sent:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// use bonny::leader::{Closing, Defaults, Elector, Fenced, Gate, LeaderElection};
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::{Api, api::PostParams, client::Body};
/// use serde_json::{Value, json};
/// use tokio_util::sync::CancellationToken;
///
/// /// The Lease (and its next resourceVersion), whether the API is down, writes of others.
/// #[derive(Clone, Default)]
/// struct Server(Arc<Mutex<(Option<Value>, u64, bool, usize)>>);
///
/// impl Server {
///     async fn answer(self, request: http::Request<Body>) -> http::Response<Body> {
///         let (parts, body) = request.into_parts();
///         let body = body.collect_bytes().await.unwrap_or_default();
///         let mut state = self.0.lock().unwrap();
///         let (lease, version, down, writes) = &mut *state;
///         let (code, answer) = match (parts.uri.path().contains("/leases"), parts.method.as_str()) {
///             (true, _) if *down => (503, json!({ "kind": "Status", "code": 503 })),
///             (true, "GET") => match lease.clone() {
///                 Some(lease) => (200, lease),
///                 None => (404, json!({ "kind": "Status", "code": 404, "reason": "NotFound" })),
///             },
///             (true, _) => {
///                 let mut written: Value = serde_json::from_slice(&body).unwrap();
///                 *version += 1;
///                 written["metadata"]["resourceVersion"] = json!(version.to_string());
///                 *lease = Some(written.clone());
///                 (200, written)
///             }
///             (false, _) => {
///                 *writes += 1;
///                 (200, json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" } }))
///             }
///         };
///         http::Response::builder()
///             .status(code)
///             .body(Body::from(serde_json::to_vec(&answer).unwrap()))
///             .unwrap()
///     }
/// }
///
/// struct NoControllers;
/// impl Gate for NoControllers {
///     async fn open(&mut self) {}
///     async fn close(&mut self, _how: Closing) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::default();
/// let answering = server.clone();
/// let service = tower::service_fn(move |request| {
///     let server = answering.clone();
///     async move { Ok::<_, std::convert::Infallible>(server.answer(request).await) }
/// });
/// let client = kube::Client::new(service, "default");
///
/// let election = LeaderElection::new().identity("me").validate(&Defaults::new("demo"))?;
/// let elector = Elector::new(election, client.clone());
/// // What a reconcile reaches as `axn.client()`: the guarded client.
/// let config_maps: Api<ConfigMap> = Api::default_namespaced(elector.write_guard().client(client));
/// let config_map: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "c" } }))?;
/// tokio::spawn(async move { elector.run(&mut NoControllers, CancellationToken::new()).await });
///
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// config_maps.create(&PostParams::default(), &config_map).await?; // leading: sent
///
/// server.0.lock().unwrap().2 = true; // the API goes down: no renewal succeeds
/// tokio::time::sleep(Duration::from_secs(11)).await; // past the 10 s renew deadline
/// let refused = config_maps.create(&PostParams::default(), &config_map).await.unwrap_err();
/// assert!(Fenced::is_fenced(&refused), "{refused}");
/// assert_eq!(server.0.lock().unwrap().3, 1, "the refused write never left");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WriteGuard {
    inner: Arc<TenureCell>,
}

#[derive(Debug)]
struct TenureCell {
    /// The zero of `deadline`.
    base: Instant,
    /// Nanoseconds from `base` to the end of the tenure, plus one; 0 when there is none.
    deadline: AtomicU64,
}

impl WriteGuard {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(TenureCell {
                base: Instant::now(),
                deadline: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes a tenure that ends at `deadline`.
    pub(crate) fn grant(&self, deadline: Instant) {
        let nanos = deadline
            .saturating_duration_since(self.inner.base)
            .as_nanos()
            .min(u128::from(u64::MAX - 1));
        // In range by the `min` above.
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.inner.deadline.store(nanos, Ordering::Release);
    }

    /// Ends the tenure at once.
    pub(crate) fn revoke(&self) {
        self.inner.deadline.store(0, Ordering::Release);
    }

    /// The end of the published tenure; `None` when there is none.
    pub fn deadline(&self) -> Option<Instant> {
        match self.inner.deadline.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.inner.base + Duration::from_nanos(nanos - 1)),
        }
    }

    /// Whether a write may be sent now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    fn holds_at(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now < deadline)
    }

    /// `client`, guarded: its POST, PUT, PATCH and DELETE requests go out only while the
    /// tenure holds, and fail with [`Fenced`] otherwise. Reads pass unchecked.
    pub fn client(&self, client: kube::Client) -> kube::Client {
        let namespace = client.default_namespace().to_owned();
        let guard = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let guard = guard.clone();
            let client = client.clone();
            async move { guard.send(&client, request).await }
        });
        kube::Client::new(service, namespace)
    }

    /// Checks a request about to be sent: `Ok` for reads and for writes within the tenure.
    fn check(&self, request: &Request<Body>) -> Result<(), Fenced> {
        if !changes_state(request.method()) || self.holds() {
            return Ok(());
        }
        Err(Fenced {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        })
    }

    async fn send(
        &self,
        client: &kube::Client,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, BoxError> {
        if !changes_state(request.method()) {
            return Ok(client.send(request).await?);
        }
        let mut delays = FENCE_RETRY_DELAYS.iter();
        loop {
            self.check(&request)?;
            let again = try_clone(&request);
            let response = client.send(request).await?;
            if response.status() != StatusCode::FORBIDDEN {
                return Ok(response);
            }
            // A refusal is a small Status object: read it to tell the fence from RBAC.
            let (parts, body) = response.into_parts();
            let bytes = body.collect_bytes().await?;
            let refused_by_fence = is_fence_refusal(&bytes);
            let response = Response::from_parts(parts, Body::from(bytes));
            let (Some(again), Some(delay), true) = (again, delays.next(), refused_by_fence) else {
                return Ok(response);
            };
            debug!(
                method = %again.method(), path = again.uri().path(), retry_in = ?delay,
                "the API server does not see this replica as the Lease holder yet; retrying"
            );
            tokio::time::sleep(*delay).await;
            request = again;
        }
    }
}

/// Whether a request with `method` can change state.
fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether a 403 body is the generated admission policy's refusal.
fn is_fence_refusal(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|status| status.get("message")?.as_str().map(str::to_owned))
        .is_some_and(|message| message.contains(FENCE_REFUSAL))
}

/// A copy of `request` to send again; `None` when its body cannot be replayed.
fn try_clone(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::api::{Api, PostParams};
    use serde_json::{Value, json};

    use super::*;

    /// What the fake API server answers to writes.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Ok,
        /// The admission policy's refusal this many times, then Ok.
        FencedTimes(usize),
        /// An RBAC refusal.
        Forbidden,
    }

    /// A fake API server counting the requests that reached it.
    #[derive(Clone)]
    struct Server {
        answer: Answer,
        seen: Arc<Mutex<Vec<(Method, Instant)>>>,
    }

    impl Server {
        fn new(answer: Answer) -> Self {
            Self {
                answer,
                seen: Arc::default(),
            }
        }

        fn client(&self) -> kube::Client {
            let server = self.clone();
            let service = tower::service_fn(move |request: Request<Body>| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.answer(&request)) }
            });
            kube::Client::new(service, "default")
        }

        fn answer(&self, request: &Request<Body>) -> Response<Body> {
            let writes_before = {
                let mut seen = self.seen.lock().expect("lock");
                seen.push((request.method().clone(), Instant::now()));
                seen.iter()
                    .filter(|(m, _)| changes_state(m))
                    .count()
                    .saturating_sub(1)
            };
            let config_map = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "c", "namespace": "default" },
            });
            let refusal = |message: &str| {
                json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "message": message, "reason": "Forbidden", "code": 403,
                })
            };
            let (status, body): (u16, Value) = match (self.answer, changes_state(request.method()))
            {
                (_, false) | (Answer::Ok, true) => (200, config_map),
                (Answer::FencedTimes(n), true) if writes_before >= n => (200, config_map),
                (Answer::FencedTimes(_), true) => (
                    403,
                    refusal(
                        "ValidatingAdmissionPolicy 'op-leader-fence' with binding \
                         'op-leader-fence' denied request: this replica does not hold the \
                         lease default-op-0123",
                    ),
                ),
                (Answer::Forbidden, true) => (
                    403,
                    refusal("configmaps is forbidden: User \"x\" cannot create resource"),
                ),
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response")
        }

        fn writes(&self) -> Vec<Instant> {
            let seen = self.seen.lock().expect("lock");
            seen.iter()
                .filter(|(m, _)| changes_state(m))
                .map(|(_, at)| *at)
                .collect()
        }

        fn reads(&self) -> usize {
            let seen = self.seen.lock().expect("lock");
            seen.iter().filter(|(m, _)| !changes_state(m)).count()
        }
    }

    fn config_maps(client: kube::Client) -> Api<k8s_openapi::api::core::v1::ConfigMap> {
        Api::namespaced(client, "default")
    }

    fn config_map() -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(json!({ "metadata": { "name": "c" } })).expect("config map")
    }

    async fn write(api: &Api<k8s_openapi::api::core::v1::ConfigMap>) -> Result<(), kube::Error> {
        api.create(&PostParams::default(), &config_map())
            .await
            .map(drop)
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pass_only_within_the_tenure_and_reads_always() {
        let server = Server::new(Answer::Ok);
        let guard = WriteGuard::new();
        let api = config_maps(guard.client(server.client()));

        // Standing by: no tenure, no write; reads go through.
        let refused = write(&api).await.expect_err("no tenure yet");
        assert!(Fenced::is_fenced(&refused), "{refused}");
        assert!(refused.to_string().contains("POST"), "{refused}");
        api.get("c").await.expect("reads pass");
        assert_eq!((server.writes().len(), server.reads()), (0, 1));

        // Leading: writes pass until the deadline, exclusive.
        let t0 = Instant::now();
        guard.grant(t0 + Duration::from_secs(10));
        write(&api).await.expect("within the tenure");
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(guard.holds());
        write(&api)
            .await
            .expect("a millisecond before the deadline");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!guard.holds());
        let refused = write(&api).await.expect_err("at the deadline");
        assert!(Fenced::is_fenced(&refused), "{refused}");
        api.get("c").await.expect("reads still pass");
        assert_eq!(
            server.writes().len(),
            2,
            "nothing refused reached the server"
        );

        // Renewed, then revoked.
        guard.grant(Instant::now() + Duration::from_secs(10));
        write(&api).await.expect("renewed");
        guard.revoke();
        assert!(Fenced::is_fenced(&write(&api).await.expect_err("revoked")));
        assert_eq!(server.writes().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn every_mutating_verb_is_checked() {
        let server = Server::new(Answer::Ok);
        let guard = WriteGuard::new();
        let client = guard.client(server.client());
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let request = Request::builder()
                .method(method.clone())
                .uri("/api/v1/namespaces/default/configmaps/c/status")
                .body(Vec::new())
                .expect("request");
            let refused = client.request_text(request).await.expect_err("no tenure");
            assert!(Fenced::is_fenced(&refused), "{method}: {refused}");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let request = Request::builder()
                .method(method.clone())
                .uri("/api/v1/namespaces/default/configmaps/c")
                .body(Vec::new())
                .expect("request");
            client.request_text(request).await.expect("reads pass");
        }
        assert_eq!((server.writes().len(), server.reads()), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_refusal_is_retried_briefly_within_the_tenure() {
        let server = Server::new(Answer::FencedTimes(3));
        let guard = WriteGuard::new();
        guard.grant(Instant::now() + Duration::from_secs(10));
        let api = config_maps(guard.client(server.client()));
        let t0 = Instant::now();
        write(&api).await.expect("the API server catches up");
        let writes = server.writes();
        assert_eq!(writes.len(), 4);
        assert_eq!(writes[3] - t0, Duration::from_millis(25 + 50 + 100));

        // Refused for good: given up within a second, the refusal passed on as it came.
        let server = Server::new(Answer::FencedTimes(usize::MAX));
        let api = config_maps(guard.client(server.client()));
        let t0 = Instant::now();
        let refused = write(&api).await.expect_err("never accepted");
        assert!(!Fenced::is_fenced(&refused));
        assert!(
            matches!(&refused, kube::Error::Api(s) if s.code == 403),
            "{refused}"
        );
        assert_eq!(server.writes().len(), 6);
        assert!(Instant::now() - t0 < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_tenure_ends() {
        let server = Server::new(Answer::FencedTimes(usize::MAX));
        let guard = WriteGuard::new();
        guard.grant(Instant::now() + Duration::from_millis(60));
        let api = config_maps(guard.client(server.client()));
        let refused = write(&api).await.expect_err("tenure ends while retrying");
        assert!(Fenced::is_fenced(&refused), "{refused}");
        // Sent at 0 and 25 ms; the retry due at 75 ms finds the tenure over.
        assert_eq!(server.writes().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn other_refusals_are_not_retried() {
        let server = Server::new(Answer::Forbidden);
        let guard = WriteGuard::new();
        guard.grant(Instant::now() + Duration::from_secs(10));
        let api = config_maps(guard.client(server.client()));
        let refused = write(&api).await.expect_err("RBAC refuses");
        assert!(
            matches!(&refused, kube::Error::Api(s) if s.code == 403),
            "{refused}"
        );
        assert_eq!(server.writes().len(), 1);
    }
}
