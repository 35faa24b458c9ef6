//! The form in which the shared watch caches hold an object ([`Cached`]): its metadata typed,
//! since the SDK reads it on every event, and the rest as the JSON text it arrived in, read
//! only when an author's code or the descendant stage asks for the whole object.
//!
//! A `DynamicObject` keeps its body as a `serde_json::Value` tree (a map node and a string per
//! field) and its store key copies the kind's `ApiResource` (five strings) for every object;
//! for a small ConfigMap those two are more than half of what it costs to cache. The cached
//! form holds the body as one string and its kind ([`CachedKind`]) as a shared reference.

use std::{
    borrow::Cow,
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use kube::{
    Resource,
    api::{ApiResource, DynamicObject, ObjectMeta},
    core::DynamicResourceScope,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// The kind of a cache's objects: an `ApiResource` shared by every key of the cache instead
/// of copied into each. Equal when the resources are; hashed by group and kind, which name a
/// kind.
#[derive(Clone)]
pub(crate) struct CachedKind(Arc<ApiResource>);

impl CachedKind {
    /// The kind `resource` names.
    pub(crate) fn new(resource: ApiResource) -> Self {
        Self(Arc::new(resource))
    }

    /// The resource, for requests and for typing decoded objects.
    pub(crate) fn resource(&self) -> &ApiResource {
        &self.0
    }
}

impl PartialEq for CachedKind {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for CachedKind {}

impl Hash for CachedKind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.group.hash(state);
        self.0.kind.hash(state);
    }
}

impl fmt::Debug for CachedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// An object as a shared cache holds it: the metadata, and every other top-level field
/// (`spec`, `data`, `status`, ...) as JSON text.
///
/// Made from the `DynamicObject` a watch decoded ([`From`]), which it then replaces; its kind
/// comes from the cache ([`CachedKind`]), as listed items carry no type of their own.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    /// The object's metadata.
    pub(crate) metadata: ObjectMeta,
    /// The members of the object's JSON text other than `apiVersion`, `kind` and `metadata`,
    /// without the braces around them (`"data":{"k":"v"}`); empty when there are none, as for
    /// an object of a metadata-only cache.
    members: Box<str>,
}

impl Cached {
    /// An object of which only `metadata` is known (no other field).
    pub(crate) fn bodiless(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            members: Box::default(),
        }
    }

    /// Where this object is (its namespace and name) and nothing else: what a key, an index
    /// entry or a field-mapped event needs, without a copy of the object.
    pub(crate) fn place(&self) -> Self {
        Self::bodiless(ObjectMeta {
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            ..ObjectMeta::default()
        })
    }

    /// The whole object as JSON text, typed `api_version` and `kind`.
    fn json(&self, api_version: &str, kind: &str) -> serde_json::Result<String> {
        let api_version = serde_json::to_string(api_version)?;
        let kind = serde_json::to_string(kind)?;
        let metadata = serde_json::to_string(&self.metadata)?;
        let mut text = String::with_capacity(
            api_version.len() + kind.len() + metadata.len() + self.members.len() + 40,
        );
        text.push_str("{\"apiVersion\":");
        text.push_str(&api_version);
        text.push_str(",\"kind\":");
        text.push_str(&kind);
        text.push_str(",\"metadata\":");
        text.push_str(&metadata);
        if !self.members.is_empty() {
            text.push(',');
            text.push_str(&self.members);
        }
        text.push('}');
        Ok(text)
    }

    /// The object decoded as an `R`, typed `R`'s way.
    pub(crate) fn decode<R>(&self) -> serde_json::Result<R>
    where
        R: Resource<DynamicType = ()> + DeserializeOwned,
    {
        serde_json::from_str(&self.json(&R::api_version(&()), &R::kind(&()))?)
    }

    /// The object as a JSON value typed as `resource`.
    pub(crate) fn to_value(&self, resource: &ApiResource) -> serde_json::Result<Value> {
        serde_json::from_str(&self.json(&resource.api_version, &resource.kind)?)
    }
}

impl From<DynamicObject> for Cached {
    fn from(object: DynamicObject) -> Self {
        let DynamicObject { metadata, data, .. } = object;
        let members = match data {
            Value::Object(mut fields) => {
                // The type and the metadata have fields of their own (`Cached::json`).
                for own in ["apiVersion", "kind", "metadata"] {
                    fields.remove(own);
                }
                // `Display` writes compact JSON, and cannot fail on a map with string keys.
                let mut text = Value::Object(fields).to_string();
                // `{..}` to the members between the braces.
                text.pop();
                text.remove(0);
                text.into_boxed_str()
            }
            // No body (a metadata-only object), or not an object: nothing to keep.
            _ => Box::default(),
        };
        Self { metadata, members }
    }
}

impl<'de> Deserialize<'de> for Cached {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DynamicObject::deserialize(deserializer).map(Self::from)
    }
}

impl Resource for Cached {
    type DynamicType = CachedKind;
    type Scope = DynamicResourceScope;

    fn kind(kind: &CachedKind) -> Cow<'_, str> {
        Cow::Borrowed(&kind.0.kind)
    }

    fn group(kind: &CachedKind) -> Cow<'_, str> {
        Cow::Borrowed(&kind.0.group)
    }

    fn version(kind: &CachedKind) -> Cow<'_, str> {
        Cow::Borrowed(&kind.0.version)
    }

    fn api_version(kind: &CachedKind) -> Cow<'_, str> {
        Cow::Borrowed(&kind.0.api_version)
    }

    fn plural(kind: &CachedKind) -> Cow<'_, str> {
        Cow::Borrowed(&kind.0.plural)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::hash_map::DefaultHasher;

    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_cached_form_gives_back_the_object_it_was_made_from() {
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "n", "labels": {"app": "x"}},
            "data": {"k": "v", "quote": "\"{,}\""},
            "binaryData": {"b": "AA=="},
        });
        let cached = Cached::from(serde_json::from_value::<DynamicObject>(object.clone()).unwrap());
        let resource = ApiResource::erase::<ConfigMap>(&());
        assert_eq!(cached.to_value(&resource).unwrap(), object);
        let typed: ConfigMap = cached.decode().unwrap();
        assert_eq!(typed.data.unwrap()["quote"], "\"{,}\"");
        assert_eq!(typed.metadata.labels.unwrap()["app"], "x");
    }

    #[test]
    fn a_listed_item_without_a_type_is_typed_by_its_cache() {
        let listed = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let cached = Cached::from(serde_json::from_value::<DynamicObject>(listed).unwrap());
        let resource = ApiResource::erase::<ConfigMap>(&());
        let value = cached.to_value(&resource).unwrap();
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "ConfigMap");
        assert_eq!(value["data"], json!({"k": "v"}));
    }

    #[test]
    fn an_object_without_a_body_decodes_with_its_metadata_alone() {
        let mut bodiless: DynamicObject =
            serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
        bodiless.data = Value::Null;
        for cached in [
            Cached::from(bodiless),
            Cached::bodiless(ObjectMeta {
                name: Some("a".into()),
                ..ObjectMeta::default()
            }),
        ] {
            let typed: ConfigMap = cached.decode().unwrap();
            assert_eq!(typed.metadata.name.as_deref(), Some("a"));
            assert!(typed.data.is_none());
        }
    }

    #[test]
    fn its_place_keeps_the_namespace_and_name_only() {
        let cached: Cached = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "labels": {"x": "y"}},
            "data": {"k": "v"},
        }))
        .unwrap();
        let place = cached.place();
        assert_eq!(
            serde_json::to_value(&place.metadata).unwrap(),
            json!({"name": "a", "namespace": "n"})
        );
        assert!(place.members.is_empty());
    }

    #[test]
    fn it_deserializes_like_a_dynamic_object() {
        let cached: Cached = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}, "data": {"k": "v"},
        }))
        .unwrap();
        assert_eq!(cached.metadata.name.as_deref(), Some("a"));
        assert_eq!(&*cached.members, r#""data":{"k":"v"}"#);
    }

    #[test]
    fn kinds_are_equal_and_hash_alike_by_content() {
        let hash = |kind: &CachedKind| {
            let mut hasher = DefaultHasher::new();
            kind.hash(&mut hasher);
            hasher.finish()
        };
        let one = CachedKind::new(ApiResource::erase::<ConfigMap>(&()));
        let two = CachedKind::new(ApiResource::erase::<ConfigMap>(&()));
        assert_eq!(one, two);
        assert_eq!(hash(&one), hash(&two));
        assert_eq!(Cached::plural(&one), "configmaps");
        assert_eq!(Cached::api_version(&one), "v1");
    }
}
