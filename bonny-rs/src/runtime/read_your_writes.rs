//! Read-your-writes: while the watch still shows a version our own writes replaced (the one a
//! reconcile started from, or one our earlier write of the same reconcile produced, such as the
//! finalizer patch before the status write), reconcile the object as our last write returned it.
//! Otherwise a reconcile triggered before the watch caught up would write the same status (and
//! publish the same event) again. Pure memory, no I/O.
//!
//! Both memories are bounded and cost O(1) amortised per reconcile: entries expire through a
//! time-ordered queue (each expiry check looks only at the oldest entries), an object that is
//! gone is dropped at once, and past `MAX_ENTRIES` the oldest are dropped early (which costs
//! at worst one repeated write, never a wrong one).
//!
//! An entry lives only while the watch lags behind the write: the watch's own events drop it
//! ([`Written::observed`]), and a write the watch already showed when the reconcile ended is
//! not remembered at all. Under a burst of thousands of objects the next reconcile of each
//! may be far behind in the queue; the memory does not wait for it.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::expiring::Expiring;

/// How long a written object is remembered; the watch normally catches up within
/// milliseconds, and an object deleted without a final reconcile must not be kept forever.
const TTL: Duration = Duration::from_secs(60);

/// The most entries either memory keeps (and expiry records it queues).
const MAX_ENTRIES: usize = 1 << 16;

/// The objects as our last writes returned them, per object.
pub(crate) struct Written<K: Resource<DynamicType = ()> + 'static> {
    entries: Mutex<Expiring<ObjectRef<K>, Entry<K>>>,
    /// UIDs of objects whose cleanup finished and whose finalizer we removed. No finalizer
    /// can be added to an object being deleted, so their cleanup is over for good; a
    /// reconcile from a cache that still shows the finalizer must not run it again.
    finalized: Mutex<Expiring<String, ()>>,
    /// The watch cache of the objects, when there is one: a write it already shows needs no
    /// memory.
    cache: Option<Store<K>>,
}

/// Where a reconcile starts, from [`Written::freshest`].
pub(crate) struct Fresh<K> {
    /// The newest version the watch has shown: what the reconcile's writes replace.
    pub(crate) base: Arc<K>,
    /// What the reconcile works on: `base`, or our last write while `base` is a version our
    /// writes replaced.
    pub(crate) object: Arc<K>,
}

/// The object as our last write returned it, and the versions our writes replaced.
struct Entry<K> {
    superseded: Vec<String>,
    object: Arc<K>,
}

impl<K: Resource<DynamicType = ()> + 'static> Default for Written<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Expiring::new(TTL, MAX_ENTRIES)),
            finalized: Mutex::new(Expiring::new(TTL, MAX_ENTRIES)),
            cache: None,
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Written<K> {
    /// The memory of writes to the objects `cache` holds, which [`observed`](Self::observed)
    /// is told about as the watch fills it.
    pub(crate) fn watching(cache: Store<K>) -> Self {
        Self {
            cache: Some(cache),
            ..Self::default()
        }
    }

    /// The watch shows `object` (already in the cache): a memory of ours it makes obsolete,
    /// because it shows a version our writes did not replace, goes.
    pub(crate) fn observed(&self, object: &K) {
        let reference = ObjectRef::from_obj(object);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.get(&reference).is_some_and(|entry| {
            object
                .resource_version()
                .is_some_and(|version| !entry.superseded.contains(&version))
        }) {
            entries.remove(&reference);
        }
    }

    /// What a reconcile handed `seen` starts from: the version the cache shows now (the watch
    /// may have replaced `seen` since the reconcile was queued; the cache only moves forward)
    /// and, while that is still a version our own writes replaced, what our last write
    /// returned. Otherwise the memory is dropped.
    pub(crate) fn freshest(&self, reference: &ObjectRef<K>, seen: Arc<K>) -> Fresh<K> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: the watch updates the cache before it tells `observed`, so a
        // version that ends the memory is either in the cache here or not yet observed.
        let base = self.current(reference, seen);
        let object = match entries.get(reference) {
            // A deletion is never undone: a seen object being deleted (or kept by the intake
            // after it vanished) is newer than a remembered write that was not.
            Some(entry)
                if base
                    .resource_version()
                    .is_some_and(|version| entry.superseded.contains(&version))
                    && (base.meta().deletion_timestamp.is_none()
                        || entry.object.meta().deletion_timestamp.is_some()) =>
            {
                entry.object.clone()
            }
            Some(_) => {
                entries.remove(reference);
                base.clone()
            }
            None => base.clone(),
        };
        Fresh { base, object }
    }

    /// The cache's copy of `seen` when it holds the same object (by UID), else `seen`. A
    /// different UID is another object of the same name: a vanished one being cleaned up keeps
    /// its own last state.
    fn current(&self, reference: &ObjectRef<K>, seen: Arc<K>) -> Arc<K> {
        match self.cache.as_ref().and_then(|cache| cache.get(reference)) {
            Some(shown) if shown.uid() == seen.uid() => shown,
            _ => seen,
        }
    }

    /// Remember what a reconcile that started from `seen` left behind (`after`), if it wrote
    /// anything; `produced` are the versions its writes produced on the way (the last one is
    /// `after`'s). Versions our earlier remembered write replaced stay replaced. Entries older
    /// than the TTL are dropped.
    pub(crate) fn remember(
        &self,
        reference: ObjectRef<K>,
        seen: &K,
        after: Arc<K>,
        produced: &[String],
        now: Instant,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.expire(now);
        let last = after.resource_version();
        if last == seen.resource_version() {
            return;
        }
        let earlier = entries.remove(&reference);
        let mut superseded: Vec<String> = seen.resource_version().into_iter().collect();
        superseded.extend(produced.iter().cloned());
        if let Some(earlier) = earlier {
            superseded.extend(earlier.superseded);
            superseded.extend(earlier.object.resource_version());
        }
        superseded.retain(|version| Some(version) != last.as_ref());
        superseded.sort_unstable();
        superseded.dedup();
        // The watch already shows a version our writes did not replace (ours, or a later
        // one): `freshest` would trust it, so there is nothing to remember. Read under the
        // lock, so a watch event between this check and the insert still drops the entry.
        if let Some(cache) = &self.cache
            && let Some(shown) = cache.get(&reference)
            && shown
                .resource_version()
                .is_some_and(|version| !superseded.contains(&version))
        {
            return;
        }
        entries.insert(
            reference,
            Entry {
                superseded,
                object: after,
            },
            now,
        );
    }

    /// The object is gone: forget our last write of it.
    pub(crate) fn forget(&self, reference: &ObjectRef<K>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(reference);
    }

    /// Remember that the cleanup of the object with `uid` finished and our finalizer is gone;
    /// entries older than the TTL are dropped.
    pub(crate) fn finalized(&self, uid: String, now: Instant) {
        let mut finalized = self
            .finalized
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        finalized.expire(now);
        finalized.insert(uid, (), now);
    }

    /// Whether the cleanup of the object with `uid` already finished (within the TTL).
    pub(crate) fn is_finalized(&self, uid: &str) -> bool {
        self.finalized
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uid)
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
        written.remember(reference.clone(), &seen, config_map("8", "new"), &[], now);
        // The watch still shows version 7: reconcile what our write returned.
        let fresh = written.freshest(&reference, seen.clone()).object;
        assert_eq!(fresh.resource_version().as_deref(), Some("8"));
        assert_eq!(size(&fresh), Some("new"));
        // The watch moved on (to our write or anyone else's): trust it, forget ours.
        let newer = config_map("9", "other");
        assert_eq!(
            written
                .freshest(&reference, newer)
                .object
                .resource_version()
                .as_deref(),
            Some("9")
        );
        assert_eq!(
            written
                .freshest(&reference, seen.clone())
                .object
                .resource_version()
                .as_deref(),
            Some("7")
        );
        // A reconcile that wrote nothing leaves nothing behind.
        written.remember(reference, &seen, seen.clone(), &[], now);
        assert_eq!(written.len(), 0);
    }

    #[test]
    fn the_version_our_finalizer_patch_produced_is_ours_too() {
        let written = Written::<ConfigMap>::default();
        let seen = config_map("7", "old");
        let reference = ObjectRef::from_obj(&*seen);
        let now = Instant::now();
        // One reconcile: the finalizer patch made 8, the status write 9.
        written.remember(
            reference.clone(),
            &seen,
            config_map("9", "new"),
            &["8".to_owned(), "9".to_owned()],
            now,
        );
        // The watch delivers 8 (our in-between version): still reconcile 9.
        let fresh = written.freshest(&reference, config_map("8", "mid")).object;
        assert_eq!(fresh.resource_version().as_deref(), Some("9"));
        // A reconcile from our memory that writes again (10) keeps 7 and 8 replaced.
        written.remember(
            reference.clone(),
            &config_map("8", "mid"),
            config_map("10", "newer"),
            &["10".to_owned()],
            now,
        );
        for replaced in ["7", "8", "9"] {
            let fresh = written
                .freshest(&reference, config_map(replaced, "x"))
                .object;
            assert_eq!(
                fresh.resource_version().as_deref(),
                Some("10"),
                "{replaced}"
            );
        }
        // The watch shows our last write: the memory is done.
        let caught_up = written
            .freshest(&reference, config_map("10", "newer"))
            .object;
        assert_eq!(caught_up.resource_version().as_deref(), Some("10"));
        assert_eq!(written.len(), 0);
    }

    #[test]
    fn the_watch_drops_a_memory_once_it_shows_a_version_we_did_not_replace() {
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        let written = Written::watching(store);
        let seen = config_map("7", "old");
        let reference = ObjectRef::from_obj(&*seen);
        let now = Instant::now();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply((*seen).clone()));
        written.remember(
            reference.clone(),
            &seen,
            config_map("9", "new"),
            &["8".to_owned()],
            now,
        );
        assert_eq!(written.len(), 1);
        // Our in-between version keeps it; our last write (or anyone's later one) ends it.
        written.observed(&config_map("8", "mid"));
        assert_eq!(written.len(), 1);
        written.observed(&config_map("9", "new"));
        assert_eq!(written.len(), 0);
        // A write the cache already shows when the reconcile ends is not remembered at all.
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
            (*config_map("11", "newest")).clone(),
        ));
        written.remember(
            reference.clone(),
            &config_map("9", "new"),
            config_map("11", "newest"),
            &[],
            now,
        );
        assert_eq!(written.len(), 0);
        // One the cache does not show yet is.
        written.remember(
            reference,
            &config_map("11", "newest"),
            config_map("12", "x"),
            &[],
            now,
        );
        assert_eq!(written.len(), 1);
    }

    fn with_uid(object: &ConfigMap, uid: &str) -> Arc<ConfigMap> {
        let mut object = object.clone();
        object.metadata.uid = Some(uid.into());
        Arc::new(object)
    }

    #[test]
    fn a_reconcile_handed_a_version_the_watch_has_since_replaced_starts_from_the_newer_one() {
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        let written = Written::watching(store);
        let seen = with_uid(&config_map("7", "old"), "u1");
        let reference = ObjectRef::from_obj(&*seen);
        // One reconcile: the finalizer patch made 8, the status write 9.
        written.remember(
            reference.clone(),
            &seen,
            with_uid(&config_map("9", "new"), "u1"),
            &["8".to_owned(), "9".to_owned()],
            Instant::now(),
        );
        // A second reconcile is queued with version 8; before it starts, the watch shows 9,
        // which ends the memory.
        let queued = with_uid(&config_map("8", "mid"), "u1");
        let shown = with_uid(&config_map("9", "new"), "u1");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply((*shown).clone()));
        written.observed(&shown);
        assert_eq!(written.len(), 0);
        // It works on 9, not on 8 (which would write the status of 9 again).
        let fresh = written.freshest(&reference, queued);
        assert_eq!(fresh.base.resource_version().as_deref(), Some("9"));
        assert_eq!(size(&fresh.object), Some("new"));

        // Another object of the same name (a new UID) in the cache: a reconcile of the old
        // one, vanished and being cleaned up, keeps its own last state.
        let replacement = with_uid(&config_map("12", "other"), "u2");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
            (*replacement).clone(),
        ));
        let fresh = written.freshest(&reference, seen.clone());
        assert_eq!(fresh.base.uid().as_deref(), Some("u1"));
        assert_eq!(fresh.object.resource_version().as_deref(), Some("7"));
    }

    #[test]
    fn a_seen_deletion_beats_a_remembered_write() {
        let written = Written::<ConfigMap>::default();
        let seen = config_map("7", "old");
        let reference = ObjectRef::from_obj(&*seen);
        written.remember(
            reference.clone(),
            &seen,
            config_map("8", "new"),
            &[],
            Instant::now(),
        );
        // The object vanished at version 7; the intake keeps it, marked as being deleted.
        let mut vanished = (*seen).clone();
        vanished.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let fresh = written.freshest(&reference, Arc::new(vanished)).object;
        assert!(fresh.metadata.deletion_timestamp.is_some());
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
        written.remember(reference.clone(), &seen, config_map("8", "new"), &[], start);
        let other = config_map("3", "x");
        let mut other_ref = ObjectRef::from_obj(&*other);
        other_ref.name = "other".into();
        written.remember(other_ref, &other, config_map("4", "y"), &[], start + TTL);
        assert_eq!(written.len(), 1);
        assert_eq!(
            written
                .freshest(&reference, seen)
                .object
                .resource_version()
                .as_deref(),
            Some("7")
        );
    }

    fn numbered(i: usize) -> (ObjectRef<ConfigMap>, Arc<ConfigMap>, Arc<ConfigMap>) {
        let seen = config_map("1", "old");
        let mut reference = ObjectRef::from_obj(&*seen);
        reference.name = format!("thing-{i}");
        (reference, seen, config_map("2", "new"))
    }

    #[test]
    fn a_gone_object_is_forgotten_at_once() {
        let written = Written::<ConfigMap>::default();
        let (reference, seen, after) = numbered(0);
        written.remember(reference.clone(), &seen, after, &[], Instant::now());
        written.forget(&reference);
        assert_eq!(written.len(), 0);
        assert_eq!(
            written
                .freshest(&reference, seen)
                .object
                .resource_version()
                .as_deref(),
            Some("1")
        );
    }

    #[test]
    fn the_memory_is_capped() {
        let written = Written::<ConfigMap>::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            let (reference, seen, after) = numbered(i);
            written.remember(reference, &seen, after, &[], now);
        }
        assert_eq!(written.len(), MAX_ENTRIES);
    }

    /// Prints the cost of one `remember` with N objects remembered: flat in N (it was a scan
    /// of all N). `cargo test -p bonny-rs --lib -- --ignored --nocapture remember_cost`
    #[test]
    #[ignore = "prints timings"]
    fn remember_cost_does_not_grow_with_the_objects_remembered() {
        for n in [1_000, 10_000, 50_000] {
            let written = Written::<ConfigMap>::default();
            let now = Instant::now();
            let objects: Vec<_> = (0..n).map(numbered).collect();
            for (reference, seen, after) in &objects {
                written.remember(reference.clone(), seen, after.clone(), &[], now);
            }
            let rounds = 10_000;
            let timer = Instant::now();
            for (reference, seen, after) in objects.iter().cycle().take(rounds) {
                written.remember(reference.clone(), seen, after.clone(), &[], now);
            }
            let per_op = timer.elapsed() / rounds as u32;
            println!("N = {n:>6}: {per_op:?} per remember");
        }
    }
}
