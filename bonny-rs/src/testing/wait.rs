//! Waiting for the cluster to reach a state: a poll with a deadline, never a blind sleep.

use std::{future::Future, time::Duration};

/// How often [`eventually`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Ask `probe` every 100 ms until it yields `Some`, and return that value.
///
/// # Panics
/// After `timeout`, naming `what` was awaited: this is for tests, where a panic is the
/// failure report.
///
/// ```no_run
/// # async fn demo(api: kube::Api<k8s_openapi::api::core::v1::ConfigMap>) {
/// use std::time::Duration;
/// let child = bonny::testing::eventually("the child ConfigMap", Duration::from_secs(30), || async {
///     api.get_opt("widget-data").await.ok().flatten()
/// })
/// .await;
/// # }
/// ```
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_the_probe_yields() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls == 3;
            async move { done.then_some(calls) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn panics_naming_what_it_waited_for() {
        eventually("nothing", Duration::from_secs(1), || async { None::<()> }).await;
    }
}
