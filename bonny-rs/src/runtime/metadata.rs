//! Metadata-only kinds ([`Config::owns_metadata`](crate::controller::Config::owns_metadata),
//! [`Mapper::metadata_only`](crate::controller::Mapper::metadata_only)): the shape a shared
//! cache holds ([`Shape`]), the watch that fills it ([`watch`]), and the apply decision for
//! descendants whose body is not cached: the [`APPLIED_HASH`] annotation ([`stamp`]), the
//! SDK's memory of its own applies ([`Applied`]) and the check that reads both ([`in_place`]).

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, PartialObjectMeta},
    runtime::watcher::{self, Event},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{diff::contains, expiring::Expiring};
use crate::controller::{APPLIED_HASH, Cached};

/// What a shared cache holds of each object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The whole object, as the API server serves it.
    #[default]
    Full,
    /// Its metadata only (`PartialObjectMetadata`), with an empty body.
    Metadata,
}

impl Shape {
    /// The shape one declaration asks for.
    pub(crate) fn of(metadata_only: bool) -> Self {
        if metadata_only {
            Self::Metadata
        } else {
            Self::Full
        }
    }

    /// The shape a cache shared by two declarations holds: metadata only when both ask for it.
    pub(crate) fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::Metadata, Self::Metadata) => Self::Metadata,
            _ => Self::Full,
        }
    }
}

/// A watch's events, as the caches consume them.
pub(crate) type Events = BoxStream<'static, watcher::Result<Event<Cached>>>;

/// The watch of `resource` objects through `api` with `config`, in `shape`, each object in the
/// form the caches hold ([`Cached`]).
///
/// For [`Shape::Metadata`] the API server serves `PartialObjectMetadata` (`Accept:
/// application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`); each one becomes a cached
/// object with that metadata and no body, so the caches and their readers handle both shapes
/// alike.
pub(crate) fn watch(
    api: Api<DynamicObject>,
    config: watcher::Config,
    resource: &ApiResource,
    shape: Shape,
) -> Events {
    match shape {
        Shape::Full => watcher::watcher(api, config)
            .map_ok(|event| map_event(event, Cached::from))
            .boxed(),
        Shape::Metadata => {
            // An `Api` of `PartialObjectMeta` asks for metadata only, in the same scope.
            let namespace = api.namespace().map(str::to_owned);
            let client = api.into_client();
            let api: Api<PartialObjectMeta<DynamicObject>> = match &namespace {
                Some(namespace) => Api::namespaced_with(client, namespace, resource),
                None => Api::all_with(client, resource),
            };
            watcher::watcher(api, config)
                .map_ok(|event| map_event(event, |partial| Cached::bodiless(partial.metadata)))
                .boxed()
        }
    }
}

fn map_event<A, B>(event: Event<A>, mut f: impl FnMut(A) -> B) -> Event<B> {
    match event {
        Event::Apply(object) => Event::Apply(f(object)),
        Event::Delete(object) => Event::Delete(f(object)),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(f(object)),
        Event::InitDone => Event::InitDone,
    }
}

/// The lowercase hex SHA-256 of `body`'s canonical JSON (object keys sorted, no whitespace),
/// without an [`APPLIED_HASH`] annotation it may carry: the same body hashes the same in every
/// build and on every replica.
pub(crate) fn applied_hash(body: &Value) -> String {
    let mut body = body.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_HASH);
        // Left empty by the stamp alone: the body as it was before.
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    let mut canonical = Vec::new();
    write_canonical(&body, &mut canonical);
    Sha256::digest(&canonical)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(b':');
                if let Some(value) = map.get(key) {
                    write_canonical(value, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars have one serialisation; writing into a Vec cannot fail.
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// `body` with its [`APPLIED_HASH`] annotation set to the hash of the rest of it.
pub(crate) fn stamp(body: &Value) -> Value {
    let hash = applied_hash(body);
    let mut stamped = body.clone();
    if let Some(meta) = stamped.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(serde_json::Map::new());
        }
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(APPLIED_HASH.to_owned(), Value::String(hash));
        }
    }
    stamped
}

/// Whether the cached metadata-only copy `cached` shows the stamped body `stamped` applied
/// and not changed by anyone else since: its metadata holds the desired labels, annotations
/// (the hash among them) and owner reference, and, when the SDK remembers its last apply of
/// it, it shows a version that apply left (or replaced: the cache lags). With nothing
/// remembered (after a restart) the hash is trusted.
pub(crate) fn in_place(cached: &Value, stamped: &Value, remembered: Option<&Versions>) -> bool {
    let (Some(meta), Some(desired)) = (cached.get("metadata"), stamped.get("metadata")) else {
        return false;
    };
    if !contains(meta, desired) {
        return false;
    }
    match remembered {
        None => true,
        Some(versions) => meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|version| versions.left_or_replaced(version)),
    }
}

/// The resource versions around the SDK's last apply of a descendant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Versions {
    /// The version the cache showed when the SDK applied (none when it lacked the object).
    replaced: Option<String>,
    /// The version the apply returned.
    left: String,
}

impl Versions {
    fn left_or_replaced(&self, version: &str) -> bool {
        self.left == version || self.replaced.as_deref() == Some(version)
    }
}

/// A descendant: group, kind, namespace, name.
type Key = (String, String, String, String);

/// How long an apply is remembered. Long: once forgotten, a body edited by someone else is no
/// longer noticed (the hash is trusted), so only the capacity should normally drop entries.
const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most applies remembered (about 200 bytes each); past it the oldest are forgotten.
const MAX_ENTRIES: usize = 1 << 17;

/// The SDK's memory of its own applies of metadata-only descendants, per controller scope:
/// bounded, O(1) amortised per apply.
pub(crate) struct Applied {
    entries: Mutex<Expiring<Key, Versions>>,
}

impl Default for Applied {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Expiring::new(TTL, MAX_ENTRIES)),
        }
    }
}

impl Applied {
    fn key(resource: &ApiResource, namespace: &str, name: &str) -> Key {
        (
            resource.group.clone(),
            resource.kind.clone(),
            namespace.to_owned(),
            name.to_owned(),
        )
    }

    /// What the last apply of a descendant left, if remembered.
    pub(crate) fn get(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Versions> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&Self::key(resource, namespace, name)).cloned()
    }

    /// The SDK applied a descendant that the cache showed at `replaced`; the apply returned
    /// `left` (nothing is remembered without it).
    pub(crate) fn remember(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        replaced: Option<String>,
        left: Option<String>,
    ) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.expire(now);
        let key = Self::key(resource, namespace, name);
        match left {
            Some(left) => entries.insert(key, Versions { replaced, left }, now),
            None => {
                entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    fn desired(size: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n",
                "labels": {"bonny.dev/controller": "thing"},
                "ownerReferences": [{"apiVersion": "e2e/v1", "kind": "W", "name": "w",
                    "uid": "u", "controller": true, "blockOwnerDeletion": true}]},
            "data": {"size": size},
        })
    }

    /// The metadata the cache holds of `stamped` once applied, at `version`.
    fn cached(stamped: &Value, version: &str) -> Value {
        let mut meta = stamped["metadata"].clone();
        meta["resourceVersion"] = json!(version);
        meta["uid"] = json!("c-1");
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
    }

    #[test]
    fn shared_caches_are_metadata_only_when_every_declarer_asks() {
        use Shape::{Full, Metadata};
        assert_eq!(Metadata.union(Metadata), Metadata);
        assert_eq!(Metadata.union(Full), Full);
        assert_eq!(Full.union(Metadata), Full);
        assert_eq!(Full.union(Full), Full);
        assert_eq!(Shape::of(true), Metadata);
        assert_eq!(Shape::default(), Full);
    }

    #[test]
    fn the_hash_is_stable_and_independent_of_key_order_and_of_itself() {
        let body = desired("3");
        // A fixed value: a change of algorithm or serialisation would re-apply every
        // metadata-only descendant of every operator once.
        assert_eq!(
            applied_hash(&json!({"b": [1, "x", null], "a": {"d": true, "c": 1.5}})),
            applied_hash(&json!({"a": {"c": 1.5, "d": true}, "b": [1, "x", null]}))
        );
        assert_eq!(
            applied_hash(&json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        assert_ne!(applied_hash(&body), applied_hash(&desired("4")));
        let stamped = stamp(&body);
        assert_eq!(
            stamped["metadata"]["annotations"][APPLIED_HASH],
            json!(applied_hash(&body))
        );
        assert_eq!(applied_hash(&stamped), applied_hash(&body));
        assert_eq!(stamp(&stamped), stamped);
    }

    #[test]
    fn a_descendant_applied_and_untouched_is_in_place() {
        let stamped = stamp(&desired("3"));
        let remembered = Versions {
            replaced: None,
            left: "9".into(),
        };
        // After a restart nothing is remembered: the hash is trusted.
        assert!(in_place(&cached(&stamped, "9"), &stamped, None));
        assert!(in_place(
            &cached(&stamped, "9"),
            &stamped,
            Some(&remembered)
        ));
    }

    #[test]
    fn a_new_desired_body_or_lost_metadata_is_applied() {
        let old = stamp(&desired("3"));
        let new = stamp(&desired("4"));
        assert!(!in_place(&cached(&old, "9"), &new, None));
        let mut unlabelled = cached(&old, "9");
        unlabelled["metadata"]["labels"] = json!({});
        assert!(!in_place(&unlabelled, &old, None));
        let mut no_hash = cached(&old, "9");
        no_hash["metadata"]["annotations"] = json!({"other": "x"});
        assert!(!in_place(&no_hash, &old, None));
    }

    #[test]
    fn a_version_someone_else_wrote_is_applied_and_a_lagging_cache_is_not() {
        let stamped = stamp(&desired("3"));
        let remembered = Versions {
            replaced: Some("8".into()),
            left: "9".into(),
        };
        // Someone edited the body: same metadata, a newer version than our apply left.
        assert!(!in_place(
            &cached(&stamped, "12"),
            &stamped,
            Some(&remembered)
        ));
        // The cache still shows the version our apply replaced: it lags, our apply stands.
        assert!(in_place(
            &cached(&stamped, "8"),
            &stamped,
            Some(&remembered)
        ));
    }

    #[test]
    fn applies_are_remembered_per_descendant() {
        let applied = Applied::default();
        let configmaps = ApiResource::erase::<ConfigMap>(&());
        applied.remember(&configmaps, "n", "c", None, Some("9".into()));
        assert_eq!(
            applied.get(&configmaps, "n", "c"),
            Some(Versions {
                replaced: None,
                left: "9".into()
            })
        );
        assert_eq!(applied.get(&configmaps, "n", "other"), None);
        applied.remember(&configmaps, "n", "c", Some("9".into()), None);
        assert_eq!(applied.get(&configmaps, "n", "c"), None);
    }

    #[test]
    fn a_metadata_only_object_caches_and_serialises_with_an_empty_body() {
        let partial: PartialObjectMeta<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "c", "namespace": "n", "resourceVersion": "9"},
        }))
        .unwrap();
        let object = Cached::bodiless(partial.metadata);
        let value = object
            .to_value(&ApiResource::erase::<ConfigMap>(&()))
            .unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "n", "resourceVersion": "9"}})
        );
        // A type whose body is optional decodes from it.
        let config_map: ConfigMap = serde_json::from_value(value).unwrap();
        assert!(config_map.data.is_none());
    }
}
