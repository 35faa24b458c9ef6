//! Read-your-writes: while the watch still shows the version our last write replaced, reconcile
//! the object as that write returned it. Otherwise a reconcile triggered before the watch caught
//! up would write the same status (and publish the same event) again. Pure memory, no I/O.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};

/// How long a written object is remembered; the watch normally catches up within
/// milliseconds, and an object deleted without a final reconcile must not be kept forever.
const TTL: Duration = Duration::from_secs(60);

/// The objects as our last writes returned them, per object.
pub(crate) struct Written<K: Resource<DynamicType = ()>> {
    entries: Mutex<HashMap<ObjectRef<K>, Entry<K>>>,
    /// UIDs of objects whose cleanup finished and whose finalizer we removed, and when. No
    /// finalizer can be added to an object being deleted, so their cleanup is over for good;
    /// a reconcile from a cache that still shows the finalizer must not run it again.
    finalized: Mutex<HashMap<String, Instant>>,
}

/// The object as our last write returned it, and the version the watch showed before it.
struct Entry<K> {
    over: Option<String>,
    object: Arc<K>,
    at: Instant,
}

impl<K: Resource<DynamicType = ()>> Default for Written<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            finalized: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Written<K> {
    /// The object to reconcile: what our last write returned while the watch still shows the
    /// version it replaced, else what the watch shows (and the memory is dropped).
    pub(crate) fn freshest(&self, reference: &ObjectRef<K>, seen: Arc<K>) -> Arc<K> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(reference) {
            Some(entry) if entry.over == seen.resource_version() => entry.object.clone(),
            Some(_) => {
                entries.remove(reference);
                seen
            }
            None => seen,
        }
    }

    /// Remember what a reconcile that started from `seen` left behind (`after`), if it wrote
    /// anything; entries older than the TTL are dropped.
    pub(crate) fn remember(&self, reference: ObjectRef<K>, seen: &K, after: Arc<K>, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, entry| now.duration_since(entry.at) < TTL);
        if after.resource_version() == seen.resource_version() {
            return;
        }
        entries.insert(
            reference,
            Entry {
                over: seen.resource_version(),
                object: after,
                at: now,
            },
        );
    }

    /// Remember that the cleanup of the object with `uid` finished and our finalizer is gone;
    /// entries older than the TTL are dropped.
    pub(crate) fn finalized(&self, uid: String, now: Instant) {
        let mut finalized = self
            .finalized
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        finalized.retain(|_, at| now.duration_since(*at) < TTL);
        finalized.insert(uid, now);
    }

    /// Whether the cleanup of the object with `uid` already finished (within the TTL).
    pub(crate) fn is_finalized(&self, uid: &str) -> bool {
        self.finalized
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(uid)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(version: &str, data: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some("thing".into()),
                namespace: Some("default".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            data: Some([("size".to_owned(), data.to_owned())].into()),
            ..ConfigMap::default()
        })
    }

    fn size(object: &ConfigMap) -> Option<&str> {
        object.data.as_ref()?.get("size").map(String::as_str)
    }

    #[test]
    fn a_reconcile_sees_its_own_last_write_until_the_watch_catches_up() {
        let written = Written::<ConfigMap>::default();
        let seen = config_map("7", "old");
        let reference = ObjectRef::from_obj(&*seen);
        let now = Instant::now();
        written.remember(reference.clone(), &seen, config_map("8", "new"), now);
        // The watch still shows version 7: reconcile what our write returned.
        let fresh = written.freshest(&reference, seen.clone());
        assert_eq!(fresh.resource_version().as_deref(), Some("8"));
        assert_eq!(size(&fresh), Some("new"));
        // The watch moved on (to our write or anyone else's): trust it, forget ours.
        let newer = config_map("9", "other");
        assert_eq!(
            written
                .freshest(&reference, newer)
                .resource_version()
                .as_deref(),
            Some("9")
        );
        assert_eq!(
            written
                .freshest(&reference, seen.clone())
                .resource_version()
                .as_deref(),
            Some("7")
        );
        // A reconcile that wrote nothing leaves nothing behind.
        written.remember(reference, &seen, seen.clone(), now);
        assert_eq!(written.len(), 0);
    }

    #[test]
    fn a_finished_cleanup_is_remembered_by_uid_until_the_ttl() {
        let written = Written::<ConfigMap>::default();
        let start = Instant::now();
        assert!(!written.is_finalized("u1"));
        written.finalized("u1".into(), start);
        assert!(written.is_finalized("u1") && !written.is_finalized("u2"));
        written.finalized("u2".into(), start + TTL);
        assert!(!written.is_finalized("u1") && written.is_finalized("u2"));
    }

    #[test]
    fn a_write_is_forgotten_after_the_ttl() {
        let written = Written::<ConfigMap>::default();
        let seen = config_map("7", "old");
        let reference = ObjectRef::from_obj(&*seen);
        let start = Instant::now();
        written.remember(reference.clone(), &seen, config_map("8", "new"), start);
        let other = config_map("3", "x");
        let mut other_ref = ObjectRef::from_obj(&*other);
        other_ref.name = "other".into();
        written.remember(other_ref, &other, config_map("4", "y"), start + TTL);
        assert_eq!(written.len(), 1);
        assert_eq!(
            written
                .freshest(&reference, seen)
                .resource_version()
                .as_deref(),
            Some("7")
        );
    }
}
