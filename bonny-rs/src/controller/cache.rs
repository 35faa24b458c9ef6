//! The watch caches of owned kinds, read by the descendant step before it asks the API server.

use std::collections::HashMap;

use kube::{
    api::ApiResource,
    runtime::reflector::{ObjectRef, Store},
};
use serde_json::Value;

use super::Object;

type Lookup = Box<dyn Fn(&str, &str) -> Option<Value> + Send + Sync>;

/// The cached descendants of one controller watch, by kind.
///
/// A cache can be stale or not yet filled. The descendant step therefore trusts it only to
/// say "the live object already holds what we would write" (then nothing is sent at all), and
/// asks the API server in every other case.
#[derive(Default)]
pub(crate) struct Descendants {
    lookups: HashMap<(String, String), Lookup>,
}

impl Descendants {
    /// Serve lookups of `Child` objects from `store`.
    pub(crate) fn add<Child: Object>(&mut self, store: Store<Child>) {
        let resource = ApiResource::erase::<Child>(&());
        self.lookups.insert(
            key(&resource),
            Box::new(move |namespace, name| {
                let object = store.get(&ObjectRef::<Child>::new(name).within(namespace))?;
                serde_json::to_value(&*object).ok()
            }),
        );
    }

    /// The cached copy of a descendant, if its kind is watched and the cache holds it.
    pub(crate) fn get(&self, resource: &ApiResource, namespace: &str, name: &str) -> Option<Value> {
        self.lookups.get(&key(resource))?(namespace, name)
    }
}

fn key(resource: &ApiResource) -> (String, String) {
    (resource.group.clone(), resource.kind.clone())
}

impl std::fmt::Debug for Descendants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.lookups.keys()).finish()
    }
}
