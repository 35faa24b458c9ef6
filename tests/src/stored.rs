//! A witness of what landed: every stored version of a namespace's ConfigMaps whose name has a
//! prefix, in etcd's order (resourceVersion), with the writer named in its `data.by`. It is
//! watched from before the replicas start, so it shows what was stored whatever each writer
//! was told.

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{WatchEvent, WatchParams},
};
use tokio::task::JoinHandle;

/// One stored version: its resourceVersion, the object's name and its writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWrite {
    /// The resourceVersion, which orders writes as etcd stored them.
    pub version: u64,
    /// The ConfigMap's name.
    pub name: String,
    /// The writer, from `data.by`.
    pub by: String,
}

/// The stored versions seen so far; a clone shares them.
#[derive(Clone, Default)]
pub struct StoredWrites(Arc<Mutex<Vec<StoredWrite>>>);

impl StoredWrites {
    /// Watches the ConfigMaps of `namespace` named `prefix*` from now on. The watch panics on a
    /// gap (an error event), which would void the witness; abort the task when done.
    pub fn watch(client: Client, namespace: &str, prefix: &str) -> (Self, JoinHandle<()>) {
        let writes = Self::default();
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let log = writes.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut version = api
                .list_metadata(&Default::default())
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap();
            loop {
                let params = WatchParams::default().timeout(290);
                let mut stream = api.watch(&params, &version).await.unwrap().boxed();
                while let Some(event) = stream.try_next().await.unwrap() {
                    let object = match event {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
                        WatchEvent::Bookmark(b) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        WatchEvent::Deleted(o) => {
                            version = o.metadata.resource_version.unwrap();
                            continue;
                        }
                        WatchEvent::Error(e) => panic!("the {prefix}* watch failed: {e:?}"),
                    };
                    version = object.metadata.resource_version.clone().unwrap();
                    let name = object.metadata.name.clone().unwrap_or_default();
                    let by = object.data.as_ref().and_then(|d| d.get("by")).cloned();
                    if let (true, Some(by)) = (name.starts_with(&prefix), by) {
                        log.0.lock().unwrap().push(StoredWrite {
                            version: version.parse().unwrap(),
                            name,
                            by,
                        });
                    }
                }
            }
        });
        (writes, task)
    }

    /// The stored versions seen so far, oldest first.
    pub fn snapshot(&self) -> Vec<StoredWrite> {
        self.0.lock().unwrap().clone()
    }
}
