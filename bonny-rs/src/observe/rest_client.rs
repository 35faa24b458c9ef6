//! `rest_client_requests_total`: a tower layer on the Kubernetes client that counts every
//! request by status code, method and host, as client-go does.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::Metrics;

/// The `code` of a request that got no response (client-go's value).
const NO_RESPONSE: &str = "<error>";

/// Counts the requests of the service it wraps in `rest_client_requests_total`.
///
/// ```
/// # async fn build(config: kube::Config) -> Result<kube::Client, kube::Error> {
/// let metrics = bonny::observe::Metrics::new();
/// let host = config.cluster_url.authority().map(ToString::to_string).unwrap_or_default();
/// let client = kube::client::ClientBuilder::try_from(config)?
///     .with_layer(&bonny::observe::CountRequests::new(metrics, host))
///     .build();
/// # Ok(client) }
/// ```
#[derive(Clone, Debug)]
pub struct CountRequests {
    metrics: Metrics,
    host: String,
}

impl CountRequests {
    /// Count into `metrics`, with `host` (the API server's `host:port`) as the `host` label.
    pub fn new(metrics: Metrics, host: impl Into<String>) -> Self {
        Self {
            metrics,
            host: host.into(),
        }
    }
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counter: self.clone(),
        }
    }
}

/// A service whose requests are counted; made by [`CountRequests`].
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    counter: CountRequests,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        let counter = self.counter.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => response.status().as_str().to_owned(),
                Err(_) => NO_RESPONSE.to_owned(),
            };
            counter
                .metrics
                .request_sent(code, method.as_str(), &counter.host);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_code_method_and_host() {
        let metrics = Metrics::new();
        let service = tower::service_fn(|request: Request<()>| async move {
            let status = if request.method() == http::Method::DELETE {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
        });
        let mut counted = CountRequests::new(metrics.clone(), "10.0.0.1:443").layer(service);
        for method in [http::Method::GET, http::Method::GET, http::Method::DELETE] {
            let request = Request::builder().method(method).body(()).unwrap();
            counted.ready().await.unwrap().call(request).await.unwrap();
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"rest_client_requests_total{code="200",method="GET",host="10.0.0.1:443"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rest_client_requests_total{code="404",method="DELETE",host="10.0.0.1:443"} 1"#
            ),
            "{text}"
        );
    }
}
