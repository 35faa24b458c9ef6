//! Kinds a controller watches without owning them ([`Mapper`]), and the filters that decide
//! which watch events are worth a reconcile ([`Filter`]).

use std::{fmt, marker::PhantomData, sync::Arc};

use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, ResourceExt, api::ApiResource, runtime::reflector::ObjectRef};

use super::{Cached, Object};

/// A predicate on a watch event: whether the change from the previous version of an object to
/// the new one is worth a reconcile.
///
/// Several filters on one kind pass an event when any of them passes. Whatever the filters,
/// the first sight of an object and its deletion (a `deletionTimestamp` set, or the object
/// gone) always pass, so a finalizer's cleanup is never filtered away.
pub struct Filter<K> {
    test: Test<K>,
}

/// A function of the old and the new version of an object.
type ChangedFn<K> = Arc<dyn Fn(&K, &K) -> bool + Send + Sync>;
/// A function from a related object to the primaries it concerns.
type MapFn<K> = Arc<dyn Fn(&Cached) -> Vec<ObjectRef<K>> + Send + Sync>;
/// A function reading the name a primary's field holds.
pub(crate) type ReadFn<K> = Arc<dyn Fn(&K) -> Option<String> + Send + Sync>;

enum Test<K> {
    Generation,
    Labels,
    Annotations,
    Changed(ChangedFn<K>),
}

impl<K> Clone for Test<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Generation => Self::Generation,
            Self::Labels => Self::Labels,
            Self::Annotations => Self::Annotations,
            Self::Changed(test) => Self::Changed(test.clone()),
        }
    }
}

impl<K> Clone for Filter<K> {
    fn clone(&self) -> Self {
        Self {
            test: self.test.clone(),
        }
    }
}

impl<K: Resource> Filter<K> {
    /// Passes when `metadata.generation` changed: a spec change of a custom resource with a
    /// status subresource, not a status, label or annotation write.
    pub fn generation_changed() -> Self {
        Self {
            test: Test::Generation,
        }
    }

    /// Passes when the labels changed.
    pub fn labels_changed() -> Self {
        Self { test: Test::Labels }
    }

    /// Passes when the annotations changed.
    pub fn annotations_changed() -> Self {
        Self {
            test: Test::Annotations,
        }
    }

    /// Passes when `changed(old, new)` returns true.
    pub fn changed(changed: impl Fn(&K, &K) -> bool + Send + Sync + 'static) -> Self {
        Self {
            test: Test::Changed(Arc::new(changed)),
        }
    }

    /// Whether the change from `old` to `new` passes this filter.
    pub fn passes(&self, old: &K, new: &K) -> bool {
        let (old_meta, new_meta) = (old.meta(), new.meta());
        match &self.test {
            Test::Generation => old_meta.generation != new_meta.generation,
            Test::Labels => old_meta.labels != new_meta.labels,
            Test::Annotations => old_meta.annotations != new_meta.annotations,
            Test::Changed(changed) => changed(old, new),
        }
    }
}

impl<R: Object> Filter<R> {
    /// The same filter on the untyped objects the runtime watches. An object that does not
    /// decode into `R` passes a function filter (a reconcile too many, never one too few).
    pub(crate) fn erase(self) -> Filter<Cached> {
        let test = match self.test {
            Test::Generation => Test::Generation,
            Test::Labels => Test::Labels,
            Test::Annotations => Test::Annotations,
            Test::Changed(changed) => Test::Changed(Arc::new(move |old: &Cached, new: &Cached| {
                match (decode::<R>(old), decode::<R>(new)) {
                    (Some(old), Some(new)) => changed(&old, &new),
                    _ => true,
                }
            })),
        };
        Filter { test }
    }
}

impl<K> fmt::Debug for Filter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.test {
            Test::Generation => "generation_changed",
            Test::Labels => "labels_changed",
            Test::Annotations => "annotations_changed",
            Test::Changed(_) => "changed(fn)",
        })
    }
}

/// How an event on a related object of kind `R` names the primary objects (of kind `K`) to
/// reconcile: given to [`Config::watches`](super::Config::watches).
///
/// Either form costs no request per event: the related kind is watched, and the field form is
/// answered from an index of the primaries kept in memory from their own watch.
pub struct Mapper<K: Object, R> {
    map: Map<K>,
    filters: Vec<Filter<Cached>>,
    metadata_only: bool,
    related: PhantomData<fn(&R)>,
}

/// The erased mapping, as the runtime applies it.
pub(crate) enum Map<K: Object> {
    /// The primaries a function of the related object names.
    Function(MapFn<K>),
    /// The primaries in the related object's namespace whose field names it.
    Field { path: &'static str, read: ReadFn<K> },
}

impl<K: Object> Clone for Map<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Function(map) => Self::Function(map.clone()),
            Self::Field { path, read } => Self::Field {
                path,
                read: read.clone(),
            },
        }
    }
}

impl<K: Object, R: Object + Resource<Scope = NamespaceResourceScope>> Mapper<K, R> {
    /// Reconcile the primaries `map` names for the related object (created, changed or deleted).
    ///
    /// ```
    /// # use bonny::prelude::*;
    /// # use bonny::controller::Mapper;
    /// # use bonny::kube::runtime::reflector::ObjectRef;
    /// # use k8s_openapi::api::core::v1::Secret;
    /// # #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema)]
    /// # #[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
    /// # pub struct CopierSpec { source: String }
    /// // A Secret labelled `copier=<name>` concerns the Copier of that name in its namespace.
    /// fn copier_of(secret: &Secret) -> Option<ObjectRef<Copier>> {
    ///     let name = secret.metadata.labels.as_ref()?.get("copier")?;
    ///     Some(ObjectRef::new(name).within(secret.metadata.namespace.as_deref()?))
    /// }
    /// let config = Config::<Copier>::new().watches(Mapper::function(copier_of));
    /// ```
    pub fn function<I>(map: impl Fn(&R) -> I + Send + Sync + 'static) -> Self
    where
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let map = move |object: &Cached| match decode::<R>(object) {
            Some(related) => map(&related).into_iter().collect(),
            None => Vec::new(),
        };
        Self {
            map: Map::Function(Arc::new(map)),
            filters: Vec::new(),
            metadata_only: false,
            related: PhantomData,
        }
    }

    /// Reconcile the primaries in the related object's namespace whose field, read by `read`,
    /// holds the related object's name. `path` names the field in logs (`"spec.source"`).
    ///
    /// Served from an index of the primaries (namespace and referenced name to primaries),
    /// kept up to date from their watch: a primary that changes or drops its reference, or is
    /// deleted, leaves the index at once.
    ///
    /// ```
    /// # use bonny::prelude::*;
    /// # use bonny::controller::Mapper;
    /// # use k8s_openapi::api::core::v1::Secret;
    /// # #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema)]
    /// # #[kube(group = "example.com", version = "v1", kind = "Copier", namespaced)]
    /// # pub struct CopierSpec { source: Option<String> }
    /// let config = Config::<Copier>::new()
    ///     .watches(Mapper::<_, Secret>::field("spec.source", |c: &Copier| c.spec.source.clone()));
    /// ```
    pub fn field(
        path: &'static str,
        read: impl Fn(&K) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            map: Map::Field {
                path,
                read: Arc::new(read),
            },
            filters: Vec::new(),
            metadata_only: false,
            related: PhantomData,
        }
    }

    /// Only the related kind's events that pass `filter` reconcile (several: any of them).
    pub fn filter(mut self, filter: Filter<R>) -> Self {
        self.filters.push(filter.erase());
        self
    }

    pub(crate) fn into_watched(self) -> WatchedKind<K> {
        WatchedKind {
            resource: ApiResource::erase::<R>(&()),
            map: self.map,
            filters: self.filters,
            metadata_only: self.metadata_only,
        }
    }

    /// Watch and cache the related kind's **metadata only** (`PartialObjectMetadata`): for a
    /// controller that only needs to know that a related object changed. The mapping function
    /// and the filters see objects with an empty body, and so do
    /// [`Axn::cache`](super::Axn::cache) reads (a type with a required body field does not
    /// decode; see [`Config::owns_metadata`](super::Config::owns_metadata)). The operator's
    /// cache of the kind stays full when another declaration wants it full.
    pub fn metadata_only(mut self) -> Self {
        self.metadata_only = true;
        self
    }
}

/// A field of a primary that can name a related object: what
/// `watches = [Kind(field = spec.source)]` reads. An empty name names nothing.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name a related object",
    label = "this field is not a name",
    note = "a `field = ..` reference must be a `String` or an `Option<String>` holding the related object's name"
)]
pub trait ReferenceField {
    /// The name this field holds, if any.
    fn referenced_name(&self) -> Option<String>;
}

impl ReferenceField for String {
    fn referenced_name(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.clone())
    }
}

impl ReferenceField for Option<String> {
    fn referenced_name(&self) -> Option<String> {
        self.as_ref().and_then(ReferenceField::referenced_name)
    }
}

/// A kind a controller watches without owning it, with how its events map to primaries.
pub struct WatchedKind<K: Object> {
    resource: ApiResource,
    map: Map<K>,
    filters: Vec<Filter<Cached>>,
    metadata_only: bool,
}

impl<K: Object> WatchedKind<K> {
    /// Group, version, kind and plural of the watched kind.
    pub fn api_resource(&self) -> &ApiResource {
        &self.resource
    }

    /// The primary's field that names the related object, for the field form.
    pub fn field_path(&self) -> Option<&'static str> {
        match &self.map {
            Map::Field { path, .. } => Some(path),
            Map::Function(_) => None,
        }
    }

    pub(crate) fn map(&self) -> &Map<K> {
        &self.map
    }

    pub(crate) fn filters(&self) -> &[Filter<Cached>] {
        &self.filters
    }

    /// Whether it is watched as metadata only ([`Mapper::metadata_only`]).
    pub fn is_metadata_only(&self) -> bool {
        self.metadata_only
    }
}

impl<K: Object> Clone for WatchedKind<K> {
    fn clone(&self) -> Self {
        Self {
            resource: self.resource.clone(),
            map: self.map.clone(),
            filters: self.filters.clone(),
            metadata_only: self.metadata_only,
        }
    }
}

impl<K: Object> fmt::Debug for WatchedKind<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedKind")
            .field("api_version", &self.resource.api_version)
            .field("kind", &self.resource.kind)
            .field("field", &self.field_path())
            .field("filters", &self.filters)
            .field("metadata_only", &self.metadata_only)
            .finish()
    }
}

/// `object` as an `R`, typed the way its kind says (listed items carry no type of their own).
pub(crate) fn decode<R: Object>(object: &Cached) -> Option<R> {
    match object.decode() {
        Ok(object) => Some(object),
        Err(err) => {
            tracing::warn!(kind = %R::kind(&()), name = %object.name_any(), error = %err, "a related object does not decode into its type");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn map(labels: &[(&str, &str)], generation: Option<i64>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                generation,
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn filters_compare_the_old_and_the_new_version() {
        let old = map(&[("a", "1")], Some(1));
        assert!(!Filter::labels_changed().passes(&old, &old.clone()));
        assert!(Filter::labels_changed().passes(&old, &map(&[("a", "2")], Some(1))));
        assert!(!Filter::generation_changed().passes(&old, &map(&[("a", "2")], Some(1))));
        assert!(Filter::generation_changed().passes(&old, &map(&[("a", "1")], Some(2))));
        let data = Filter::changed(|old: &ConfigMap, new: &ConfigMap| old.data != new.data);
        let mut new = old.clone();
        assert!(!data.passes(&old, &new));
        new.data = Some([("k".to_owned(), "v".to_owned())].into());
        assert!(data.passes(&old, &new));
    }

    #[test]
    fn an_erased_function_filter_reads_the_typed_object() {
        let data = Filter::changed(|old: &ConfigMap, new: &ConfigMap| old.data != new.data).erase();
        let old = map(&[], None);
        let mut new = old.clone();
        new.data = Some([("k".to_owned(), "v".to_owned())].into());
        let cached = |c: &ConfigMap| -> Cached {
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap()
        };
        assert!(!data.passes(&cached(&old), &cached(&old)));
        assert!(data.passes(&cached(&old), &cached(&new)));
    }

    #[test]
    fn an_empty_reference_names_nothing() {
        assert_eq!(String::new().referenced_name(), None);
        assert_eq!(Some("s".to_owned()).referenced_name().as_deref(), Some("s"));
        assert_eq!(None::<String>.referenced_name(), None);
    }
}
