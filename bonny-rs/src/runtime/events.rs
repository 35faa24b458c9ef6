//! Publishing Kubernetes events (`events.k8s.io/v1`) for the objects the SDK reconciles.
//!
//! An event repeated within [`SERIES_WINDOW`] of the last one like it (same object, type,
//! action, reason, note and related object) is not a new Event object: the first one's
//! `series` count goes up instead, as client-go's recorder does. The memory of published
//! events is bounded and cleaned incrementally (the oldest records only), so a publish costs
//! the same with ten objects or ten thousand; kube-runtime's `Recorder` walks its whole cache
//! on every publish.

use std::{
    hash::{BuildHasher, Hash, Hasher, RandomState},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as KubeEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Reporter},
};
use serde_json::json;

use super::expiring::Expiring;

/// How long after the last of its kind an event still joins its series (client-go's and
/// kube-runtime's window).
pub(crate) const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The most series remembered; past it the oldest are forgotten (their next repeat starts a
/// new Event object).
const MAX_SERIES: usize = 4096;

/// What makes two events the same, for a series: the object, type, action, reason, note and
/// related object, as a 128-bit fingerprint (two independently keyed hashes). The memory of
/// thousands of series then holds 16 bytes per key and per expiry record instead of a dozen
/// strings each; two different events share a fingerprint with a chance of about 2^-128 per
/// pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey(u128);

/// The keyed hashers of one publisher's fingerprints (in memory only: never persisted).
#[derive(Clone, Default)]
struct Fingerprints {
    high: RandomState,
    low: RandomState,
}

impl Fingerprints {
    fn key(&self, event: &Event, regarding: &ObjectReference) -> SeriesKey {
        let mut high = self.high.build_hasher();
        hash_event(event, regarding, &mut high);
        let mut low = self.low.build_hasher();
        hash_event(event, regarding, &mut low);
        SeriesKey((u128::from(high.finish()) << 64) | u128::from(low.finish()))
    }
}

/// Feeds what makes two events the same.
fn hash_event(event: &Event, regarding: &ObjectReference, hasher: &mut impl Hasher) {
    (event.type_ == EventType::Warning).hash(hasher);
    event.action.hash(hasher);
    event.reason.hash(hasher);
    event.note.hash(hasher);
    hash_object(regarding, hasher);
    event.secondary.is_some().hash(hasher);
    if let Some(related) = &event.secondary {
        hash_object(related, hasher);
    }
}

/// Feeds the identity of an object an event is about.
fn hash_object(reference: &ObjectReference, hasher: &mut impl Hasher) {
    reference.api_version.hash(hasher);
    reference.kind.hash(hasher);
    reference.namespace.hash(hasher);
    reference.name.hash(hasher);
    reference.uid.hash(hasher);
}

/// An Event object published, and how many times it happened.
#[derive(Clone, Debug)]
struct Published {
    namespace: String,
    name: String,
    count: i32,
}

/// Publishes events, aggregating repeats into series. Cheap to clone; clones share the
/// memory of published events.
#[derive(Clone)]
pub(crate) struct Publisher {
    client: Client,
    reporter: Reporter,
    series: Arc<Mutex<Expiring<SeriesKey, Published>>>,
    fingerprints: Fingerprints,
}

impl Publisher {
    pub(crate) fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Arc::new(Mutex::new(Expiring::new(SERIES_WINDOW, MAX_SERIES))),
            fingerprints: Fingerprints::default(),
        }
    }

    /// Publishes `event` about the object `regarding`: a new Event object, or one more in the
    /// series of the same event published within the window.
    ///
    /// # Errors
    /// When the API server refuses the create or the patch.
    pub(crate) async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = self.fingerprints.key(event, regarding);
        let now = Instant::now();
        let earlier = {
            let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            series.expire(now);
            series.get(&key).cloned()
        };
        let wall = Timestamp::now();
        let published = match earlier {
            Some(earlier) => match self.repeat(&earlier, wall).await {
                Ok(published) => published,
                // Gone on the server (its own TTL) or never readable: start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.create(event, regarding, wall).await?
                }
                Err(err) => return Err(err),
            },
            None => self.create(event, regarding, wall).await?,
        };
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, published, now);
        Ok(())
    }

    async fn create(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<Published, kube::Error> {
        let object = self.event_object(event, regarding, now);
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        Api::<KubeEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &object)
            .await?;
        Ok(Published {
            namespace,
            name,
            count: 1,
        })
    }

    async fn repeat(&self, earlier: &Published, now: Timestamp) -> Result<Published, kube::Error> {
        // A series counts the occurrences, the first included (at least 2).
        let count = earlier.count.saturating_add(1).max(2);
        let patch = json!({
            "series": EventSeries { count, last_observed_time: MicroTime(now) },
        });
        Api::<KubeEvent>::namespaced(self.client.clone(), &earlier.namespace)
            .patch(
                &earlier.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(Published {
            count,
            ..earlier.clone()
        })
    }

    /// The Event object of the first occurrence of `event`. A cluster-scoped object's events
    /// go to `default`, as kubectl looks for them there.
    fn event_object(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> KubeEvent {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let prefix = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        KubeEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            ..KubeEvent::default()
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{Method, Request, Response};
    use kube::client::Body;

    use super::*;

    /// What the fake API server was asked: method, path and body.
    type Seen = Arc<Mutex<Vec<(Method, String, serde_json::Value)>>>;

    /// A publisher on a fake API server that answers every request with its body (or 404 to
    /// patches when `patches_gone`).
    fn publisher(patches_gone: bool) -> (Publisher, Seen) {
        let seen = Seen::default();
        let log = seen.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let log = log.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                log.lock().unwrap().push((
                    parts.method.clone(),
                    parts.uri.path().to_owned(),
                    value.clone(),
                ));
                let (status, answer) = if parts.method == Method::PATCH && patches_gone {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404, "message": "gone"}),
                    )
                } else {
                    let mut answer = value;
                    if parts.method == Method::PATCH {
                        answer = json!({"metadata": {"name": "x"}, "eventTime": null});
                    }
                    (200, answer)
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                )
            }
        });
        let client = Client::new(service, "default");
        let reporter = Reporter {
            controller: "widget-operator".into(),
            instance: Some("pod-1".into()),
        };
        (Publisher::new(client, reporter), seen)
    }

    fn about(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("e2e.bonny.dev/v1".into()),
            kind: Some("Widget".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn resized(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Resized".into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[tokio::test]
    async fn a_repeated_event_counts_in_the_series_of_the_first() {
        let (publisher, seen) = publisher(false);
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:#?}");
        let (method, path, created) = &seen[0];
        assert_eq!(method, Method::POST);
        assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/ns/events");
        assert_eq!(created["reason"], "Resized");
        assert_eq!(created["note"], "size 3");
        assert_eq!(created["reportingController"], "widget-operator");
        assert_eq!(created["reportingInstance"], "pod-1");
        assert_eq!(created["regarding"]["name"], "w");
        let name = created["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("w."), "{name}");
        for (at, count) in [(1, 2), (2, 3)] {
            let (method, path, patch) = &seen[at];
            assert_eq!(method, Method::PATCH);
            assert_eq!(
                path,
                &format!("/apis/events.k8s.io/v1/namespaces/ns/events/{name}")
            );
            assert_eq!(patch["series"]["count"], count, "{patch}");
            assert!(patch["series"]["lastObservedTime"].is_string(), "{patch}");
        }
    }

    #[tokio::test]
    async fn a_different_note_or_object_is_a_new_event() {
        let (publisher, seen) = publisher(false);
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        publisher
            .publish(&resized("size 4"), &about("w"))
            .await
            .unwrap();
        publisher
            .publish(&resized("size 3"), &about("v"))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().all(|(method, ..)| method == Method::POST),
            "{seen:#?}"
        );
        assert_eq!(publisher.remembered(), 3);
    }

    #[tokio::test]
    async fn a_series_whose_event_is_gone_starts_again() {
        let (publisher, seen) = publisher(true);
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        publisher
            .publish(&resized("size 3"), &about("w"))
            .await
            .unwrap();
        let methods: Vec<Method> = seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
        assert_eq!(methods, [Method::POST, Method::PATCH, Method::POST]);
    }

    #[tokio::test]
    async fn the_memory_of_published_events_is_bounded() {
        let (publisher, _) = publisher(false);
        for i in 0..MAX_SERIES + 5 {
            publisher
                .publish(&resized("size 3"), &about(&format!("w{i}")))
                .await
                .unwrap();
        }
        assert_eq!(publisher.remembered(), MAX_SERIES);
    }

    /// Prints the cost of one publish (on a fake server answering at once) with N series
    /// remembered: flat in N. kube-runtime's `Recorder` walked all N on each publish.
    /// `cargo test -p bonny-rs --lib -- --ignored --nocapture publish_cost`
    #[tokio::test]
    #[ignore = "prints timings"]
    async fn publish_cost_does_not_grow_with_the_events_remembered() {
        for n in [100, 1_000, 4_000] {
            let (publisher, seen) = publisher(false);
            for i in 0..n {
                publisher
                    .publish(&resized("size 3"), &about(&format!("w{i}")))
                    .await
                    .unwrap();
            }
            let rounds = 2_000;
            let timer = Instant::now();
            for i in 0..rounds {
                publisher
                    .publish(&resized("size 3"), &about(&format!("w{}", i % n)))
                    .await
                    .unwrap();
            }
            let per_op = timer.elapsed() / rounds;
            seen.lock().unwrap().clear();
            println!("N = {n:>5}: {per_op:?} per publish");
        }
    }
}
