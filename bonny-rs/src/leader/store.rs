//! The Lease store: the election's only I/O. Gets, creates, replaces and watches the one
//! Lease, read and written as raw JSON so that a malformed field never fails decoding.

use std::future::Future;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{GetParams, PostParams, WatchParams};
use kube::core::{Request, WatchEvent};
use serde_json::Value;

/// A change of the Lease reported by a watch.
#[derive(Debug)]
pub(crate) enum LeaseEvent {
    /// The Lease was created or modified into this object.
    Applied(Value),
    /// The Lease was deleted.
    Deleted,
}

/// Changes of the Lease, as a stream.
pub(crate) type LeaseEvents = BoxStream<'static, Result<LeaseEvent, kube::Error>>;

/// The four Lease requests the elector makes; the API server in production, a fake in tests.
pub(crate) trait LeaseStore: Send + Sync {
    /// Reads the Lease; `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Value>, kube::Error>> + Send;
    /// Creates the Lease; fails with 409 AlreadyExists when it exists.
    fn create(&self, body: Value) -> impl Future<Output = Result<Value, kube::Error>> + Send;
    /// Replaces the Lease; fails with 409 Conflict unless its resourceVersion still matches.
    fn replace(&self, body: Value) -> impl Future<Output = Result<Value, kube::Error>> + Send;
    /// Watches the Lease from `resource_version` on.
    fn watch(
        &self,
        resource_version: String,
    ) -> impl Future<Output = Result<LeaseEvents, kube::Error>> + Send;
}
/// The Lease on the API server, read and written as raw JSON so that a malformed field never
/// fails decoding.
pub(crate) struct KubeLeases {
    client: kube::Client,
    request: Request,
    name: String,
}

impl KubeLeases {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        Self {
            client,
            request: Request::new(path),
            name: name.to_owned(),
        }
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&self) -> Result<Option<Value>, kube::Error> {
        let request = self
            .request
            .get(&self.name, &GetParams::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request::<Value>(request).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 404 => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn create(&self, body: Value) -> Result<Value, kube::Error> {
        let body = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    async fn replace(&self, body: Value) -> Result<Value, kube::Error> {
        let body = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .replace(&self.name, &PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    async fn watch(&self, resource_version: String) -> Result<LeaseEvents, kube::Error> {
        // The server ends the watch after this long; the next poll starts a fresh one.
        const WATCH_SECONDS: u32 = 290;
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_SECONDS);
        let request = self
            .request
            .watch(&params, &resource_version)
            .map_err(kube::Error::BuildRequest)?;
        let events = self.client.request_events::<Value>(request).await?;
        Ok(StreamExt::filter_map(
            events,
            |event: Result<WatchEvent<Value>, kube::Error>| async move {
                match event {
                    Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                        Some(Ok(LeaseEvent::Applied(object)))
                    }
                    Ok(WatchEvent::Deleted(_)) => Some(Ok(LeaseEvent::Deleted)),
                    Ok(WatchEvent::Bookmark(_)) => None,
                    Ok(WatchEvent::Error(status)) => Some(Err(kube::Error::Api(status))),
                    Err(error) => Some(Err(error)),
                }
            },
        )
        .boxed())
    }
}

/// An in-memory Lease for the election loop's tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use kube::core::Status;
    use tokio::sync::mpsc;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(crate) enum Mode {
        Up,
        /// Every request fails with 500.
        Down,
        /// Every request hangs.
        Stalled,
    }

    struct FakeState {
        object: Option<Value>,
        version: u64,
        mode: Mode,
        writes: usize,
        reads: usize,
        watchers: Vec<mpsc::UnboundedSender<LeaseEvent>>,
    }

    /// An in-memory Lease with resourceVersion compare-and-swap and watches.
    #[derive(Clone)]
    pub(crate) struct FakeStore(Arc<Mutex<FakeState>>);

    impl FakeStore {
        pub(crate) fn new(object: Option<Value>) -> Self {
            let store = Self(Arc::new(Mutex::new(FakeState {
                object: None,
                version: 0,
                mode: Mode::Up,
                writes: 0,
                reads: 0,
                watchers: Vec::new(),
            })));
            if let Some(object) = object {
                store.put(object);
            }
            store
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().expect("fake store lock")
        }

        pub(crate) fn set_mode(&self, mode: Mode) {
            self.state().mode = mode;
        }

        pub(crate) fn object(&self) -> Option<Value> {
            self.state().object.clone()
        }

        pub(crate) fn writes(&self) -> usize {
            self.state().writes
        }

        pub(crate) fn reads(&self) -> usize {
            self.state().reads
        }

        /// Stores `object` as the next version, like any writer would, and notifies watches.
        pub(crate) fn put(&self, mut object: Value) -> Value {
            let mut state = self.state();
            state.version += 1;
            object["metadata"]["resourceVersion"] = state.version.to_string().into();
            state.object = Some(object.clone());
            state
                .watchers
                .retain(|watch| watch.send(LeaseEvent::Applied(object.clone())).is_ok());
            object
        }

        async fn gate(&self) -> Result<(), kube::Error> {
            let mode = self.state().mode;
            match mode {
                Mode::Up => Ok(()),
                Mode::Down => Err(api_error(500, "InternalError")),
                Mode::Stalled => std::future::pending().await,
            }
        }
    }

    pub(crate) fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure(reason, reason).with_code(code).boxed())
    }

    impl LeaseStore for FakeStore {
        async fn get(&self) -> Result<Option<Value>, kube::Error> {
            self.gate().await?;
            self.state().reads += 1;
            Ok(self.object())
        }

        async fn create(&self, body: Value) -> Result<Value, kube::Error> {
            self.gate().await?;
            self.state().writes += 1;
            if self.object().is_some() {
                return Err(api_error(409, "AlreadyExists"));
            }
            Ok(self.put(body))
        }

        async fn replace(&self, body: Value) -> Result<Value, kube::Error> {
            self.gate().await?;
            self.state().writes += 1;
            let current = self.object().ok_or_else(|| api_error(404, "NotFound"))?;
            if body.pointer("/metadata/resourceVersion")
                != current.pointer("/metadata/resourceVersion")
            {
                return Err(api_error(409, "Conflict"));
            }
            Ok(self.put(body))
        }

        async fn watch(&self, _resource_version: String) -> Result<LeaseEvents, kube::Error> {
            self.gate().await?;
            let (sender, receiver) = mpsc::unbounded_channel();
            self.state().watchers.push(sender);
            Ok(
                futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|event| (Ok(event), receiver))
                })
                .boxed(),
            )
        }
    }
}
