//! A controller's declaration, built once and read by the runtime and the manifest generator.

use std::{fmt, marker::PhantomData, sync::Arc, time::Duration};

use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, api::ApiResource};

use super::{Backoff, Cached, Filter, Mapper, Object, Rule, Step, WatchedKind};

/// How a controller is set up: finalizer, owned kinds, RBAC rules, extra steps, intervals.
///
/// Built by the [`controller`](macro@crate::controller) macro, or by hand in
/// [`Controller::config`](super::Controller::config).
#[must_use]
pub struct Config<K: Object> {
    name: Option<String>,
    finalizer: Option<String>,
    owns: Vec<OwnedKind<K>>,
    rules: Vec<Rule>,
    steps: Vec<Arc<dyn Step<K>>>,
    requeue_after: Option<Duration>,
    skip_observed_generation: bool,
    backoff: Backoff,
    concurrency: u16,
    watches: Vec<WatchedKind<K>>,
    filters: Vec<Filter<K>>,
    prune: bool,
    owned_filters: Vec<(ApiResource, Filter<Cached>)>,
}

impl<K: Object> Default for Config<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Object> Config<K> {
    /// A controller with no finalizer, no owned kinds and no extra rules or steps.
    pub fn new() -> Self {
        Self {
            name: None,
            finalizer: None,
            owns: Vec::new(),
            rules: Vec::new(),
            steps: Vec::new(),
            requeue_after: None,
            skip_observed_generation: false,
            backoff: Backoff::default(),
            concurrency: 0,
            watches: Vec::new(),
            filters: Vec::new(),
            prune: false,
            owned_filters: Vec::new(),
        }
    }

    /// The controller's name in logs, metrics and events (default: the kind, lowercased).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Put this finalizer on every object so that [`cleanup`](super::Reconcile::cleanup) runs
    /// (at least once, retried to success; see there) before the object goes away.
    pub fn finalizer(mut self, name: impl Into<String>) -> Self {
        self.finalizer = Some(name.into());
        self
    }

    /// Watch descendants of kind `Child`: a change to one that the object owns reconciles the
    /// object again. Adds the RBAC rule the descendant step needs.
    pub fn owns<Child>(mut self) -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.owned_entry::<Child>();
        self
    }

    /// The declaration of the owned kind `Child`, added if [`owns`](Self::owns) did not.
    fn owned_entry<Child>(&mut self) -> &mut OwnedKind<K>
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        let resource = ApiResource::erase::<Child>(&());
        let index = match self
            .owns
            .iter()
            .position(|owned| owned.resource == resource)
        {
            Some(index) => index,
            None => {
                self.owns.push(OwnedKind::of::<Child>());
                self.owns.len() - 1
            }
        };
        &mut self.owns[index]
    }

    /// An RBAC rule the controller's own code needs (beyond what the SDK adds by itself).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Run `step` before the author's `apply`/`cleanup`, after the built-in steps, in the order
    /// added.
    pub fn step(mut self, step: impl Step<K> + 'static) -> Self {
        self.steps.push(Arc::new(step));
        self
    }

    /// Reconcile every object at least this often, even when nothing changed.
    pub fn requeue_after(mut self, every: Duration) -> Self {
        self.requeue_after = Some(every);
        self
    }

    /// Skip `apply` when `status.observedGeneration` equals `metadata.generation`, and record
    /// the generation in the status after each successful apply.
    ///
    /// The status type must declare the field (`observed_generation: Option<i64>`, serialized
    /// as `observedGeneration`): the CRD schema needs it, or the API server prunes it.
    ///
    /// Only for controllers whose descendants are not edited by others: a change to a
    /// descendant does not bump the parent's generation, so drift would not be repaired.
    pub fn skip_observed_generation(mut self) -> Self {
        self.skip_observed_generation = true;
        self
    }

    /// Retry policy for failed reconciles.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many objects may be reconciled at once (0, the default, means no limit). One object
    /// is never reconciled twice at the same time.
    pub fn concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Prune descendants of every owned kind: after a successful `apply`, delete the
    /// descendants of the object that an earlier reconcile registered and this one did not.
    ///
    /// Only objects the SDK applied for this object are ever deleted: those in the owned
    /// kind's watch cache that carry [`DESCENDANT_LABEL`](super::DESCENDANT_LABEL)`=<this
    /// controller's name>` and an owner reference with `controller: true` to the object's UID.
    /// An object created by hand, by another controller, or without the label is left alone.
    /// Each delete carries a precondition on the UID and resource version the cache showed, so
    /// an object recreated or changed meanwhile is not deleted. A reconcile whose cache holds
    /// no stale descendant sends nothing. `cleanup` prunes nothing: owner references let the
    /// garbage collector remove the descendants with the object.
    ///
    /// To prune only some kinds, declare them with [`owns_pruned`](Self::owns_pruned).
    pub fn prune(mut self, prune: bool) -> Self {
        self.prune = prune;
        self
    }

    /// Watch descendants of kind `Child`, as [`owns`](Self::owns), and prune them: descendants
    /// of this kind registered in an earlier reconcile and not in the last one are deleted (see
    /// [`prune`](Self::prune) for which objects qualify).
    pub fn owns_pruned<Child>(mut self) -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.owned_entry::<Child>().prune = true;
        self
    }

    /// The controller's name: the one set, else the kind in lower case.
    pub fn controller_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| K::kind(&()).to_lowercase())
    }

    /// The finalizer, if one was declared.
    pub fn finalizer_name(&self) -> Option<&str> {
        self.finalizer.as_deref()
    }

    /// The owned kinds, in the order declared.
    pub fn owned_kinds(&self) -> &[OwnedKind<K>] {
        &self.owns
    }

    /// The RBAC rules declared by the author (not yet those the SDK adds).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The author's steps, in the order added (they run after the built-in ones).
    pub fn steps(&self) -> &[Arc<dyn Step<K>>] {
        &self.steps
    }

    /// How often every object is reconciled even when nothing changed, if set.
    pub fn requeue_interval(&self) -> Option<Duration> {
        self.requeue_after
    }

    /// Whether `apply` is skipped for an already observed generation.
    pub fn skips_observed_generation(&self) -> bool {
        self.skip_observed_generation
    }

    /// The retry policy for failed reconciles.
    pub fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// How many objects may be reconciled at once (0: no limit).
    pub fn concurrency_limit(&self) -> u16 {
        self.concurrency
    }

    /// Watch and cache every object of the owned kind `Child`, not only those carrying this
    /// controller's [`DESCENDANT_LABEL`](super::DESCENDANT_LABEL) (declares `Child` as owned if
    /// [`owns`](Self::owns) did not).
    ///
    /// By default an owned kind is watched with the selector `bonny.dev/controller=<name>`, so
    /// that objects the SDK did not apply are neither streamed nor cached. Use this when the
    /// controller adopts children created before it (or by someone else) and must be woken by
    /// their changes; it costs memory for every object of the kind in the watched namespaces.
    pub fn adopt_existing<Child>(mut self) -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.owned_entry::<Child>().adopt = true;
        self
    }

    /// Watch objects of kind `Related`, which the controller does not own: an event on one
    /// reconciles the primaries `mapper` names for it ([`Mapper::field`], [`Mapper::function`]).
    /// Adds the RBAC rule (get, list, watch) the watch needs, checked at startup, and makes the
    /// kind readable with [`Axn::cache`](super::Axn::cache).
    pub fn watches<Related>(mut self, mapper: Mapper<K, Related>) -> Self
    where
        Related: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.watches.push(mapper.into_watched());
        self
    }

    /// Reconcile on an event of the reconciled kind only when `filter` passes (several: when
    /// any of them passes). The first sight of an object and its deletion always pass; the
    /// periodic [`requeue_after`](Self::requeue_after) and retries are not events and still run.
    pub fn filter(mut self, filter: Filter<K>) -> Self {
        self.filters.push(filter);
        self
    }

    /// Reconcile on an event of an owned `Child` only when `filter` passes (several: when any
    /// of them passes); declare the kind with [`owns`](Self::owns) too.
    pub fn filter_owned<Child>(mut self, filter: Filter<Child>) -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.owned_filters
            .push((ApiResource::erase::<Child>(&()), filter.erase()));
        self
    }

    /// The watched (related) kinds, in the order declared.
    pub fn watched_kinds(&self) -> &[WatchedKind<K>] {
        &self.watches
    }

    /// The filters on the reconciled kind's events.
    pub fn filters(&self) -> &[Filter<K>] {
        &self.filters
    }

    /// Whether descendants of every owned kind are pruned ([`prune`](Self::prune)).
    pub fn prunes(&self) -> bool {
        self.prune
    }

    /// The owned kinds whose stale descendants are deleted: all of them with
    /// [`prune`](Self::prune), else those declared with [`owns_pruned`](Self::owns_pruned).
    pub fn pruned_kinds(&self) -> impl Iterator<Item = &OwnedKind<K>> {
        self.owns
            .iter()
            .filter(move |owned| self.prune || owned.prune)
    }

    /// The filters on the events of the owned kind `resource`.
    pub(crate) fn owned_filters(&self, resource: &ApiResource) -> Vec<Filter<Cached>> {
        self.owned_filters
            .iter()
            .filter(|(kind, _)| kind == resource)
            .map(|(_, filter)| filter.clone())
            .collect()
    }

    /// Own descendants of kind `Child` (as [`owns`](Self::owns), which it implies) but watch and
    /// cache their **metadata only**: the watch asks the API server for
    /// `PartialObjectMetadata`, so neither the stream nor the cache carries a body (`data`,
    /// `spec`, `status`). For controllers that only need to know that a descendant changed; it
    /// saves the memory and the decoding of every body.
    ///
    /// What it costs:
    /// - **The apply decision reads a hash, not the body.** Each descendant of this kind is
    ///   applied with the annotation [`APPLIED_HASH`](super::APPLIED_HASH), a SHA-256 of the
    ///   body the SDK sends. A reconcile skips the apply when the cached metadata shows that
    ///   hash, holds the desired labels, annotations and owner reference, and shows the resource
    ///   version the SDK's own last apply of it returned. An edit of the body by someone else
    ///   changes the resource version, so it is restored by one apply. After a restart (nothing
    ///   remembered yet) the hash is trusted: a body edited by someone else while the operator
    ///   was down is not restored until the desired body changes or someone edits the object
    ///   again.
    /// - **Reads see no body.** [`Axn::cache`](super::Axn::cache) returns objects of this kind
    ///   with their metadata and an empty body: a type whose body fields are all optional
    ///   (`ConfigMap`, `Secret`, `Deployment`: `data`/`spec` are `Option`s in k8s-openapi)
    ///   decodes with them `None`; a type with a required body field (a custom resource whose
    ///   `spec` is not optional) does not decode, and reads skip its objects with a warning
    ///   naming the missing field. A [`filter_owned`](Self::filter_owned) function sees the
    ///   same empty bodies.
    /// - **One cache per kind.** The operator's cache of a kind (per namespace scope) holds
    ///   metadata only when every controller declaring it asks for that; one controller owning
    ///   or watching it in full makes it full for all (this controller's apply decision stays
    ///   the hash one).
    pub fn owns_metadata<Child>(mut self) -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        self.owned_entry::<Child>().metadata_only = true;
        self
    }
}

impl<K: Object> fmt::Debug for Config<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("finalizer", &self.finalizer)
            .field("owns", &self.owns)
            .field("rules", &self.rules)
            .field("steps", &self.steps.len())
            .field("requeue_after", &self.requeue_after)
            .field("skip_observed_generation", &self.skip_observed_generation)
            .field("backoff", &self.backoff)
            .field("watches", &self.watches)
            .field("filters", &self.filters)
            .field("prune", &self.prune)
            .finish()
    }
}

/// A kind of descendant a controller owns and watches.
pub struct OwnedKind<K: Object> {
    resource: ApiResource,
    adopt: bool,
    prune: bool,
    metadata_only: bool,
    owner: PhantomData<fn() -> K>,
}

impl<K: Object> OwnedKind<K> {
    fn of<Child>() -> Self
    where
        Child: Object + Resource<Scope = NamespaceResourceScope>,
    {
        Self {
            resource: ApiResource::erase::<Child>(&()),
            adopt: false,
            prune: false,
            metadata_only: false,
            owner: PhantomData,
        }
    }

    /// Group, version, kind and plural of the descendant.
    pub fn api_resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Whether every object of the kind is watched, not only the SDK's own descendants (see
    /// [`Config::adopt_existing`]).
    pub fn adopts_existing(&self) -> bool {
        self.adopt
    }

    /// Whether it was declared with [`Config::owns_pruned`] (see also [`Config::pruned_kinds`]).
    pub fn is_pruned(&self) -> bool {
        self.prune
    }

    /// Whether its cache holds metadata only (see [`Config::owns_metadata`]).
    pub fn is_metadata_only(&self) -> bool {
        self.metadata_only
    }
}

impl<K: Object> Clone for OwnedKind<K> {
    fn clone(&self) -> Self {
        Self {
            resource: self.resource.clone(),
            adopt: self.adopt,
            prune: self.prune,
            metadata_only: self.metadata_only,
            owner: PhantomData,
        }
    }
}

impl<K: Object> fmt::Debug for OwnedKind<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedKind")
            .field("api_version", &self.resource.api_version)
            .field("kind", &self.resource.kind)
            .field("adopt", &self.adopt)
            .field("prune", &self.prune)
            .field("metadata_only", &self.metadata_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    use super::*;

    #[test]
    fn a_kind_declared_several_ways_is_owned_once_with_every_flag() {
        let config = Config::<ConfigMap>::default()
            .owns::<Secret>()
            .owns_pruned::<Secret>()
            .adopt_existing::<Secret>()
            .owns_metadata::<Secret>()
            .owns::<Secret>();
        let [owned] = config.owned_kinds() else {
            panic!(
                "one owned kind expected, got {}",
                config.owned_kinds().len()
            );
        };
        assert!(owned.is_pruned() && owned.adopts_existing() && owned.is_metadata_only());
        // Each flag alone declares the kind with only that flag.
        let config = Config::<ConfigMap>::default().owns_metadata::<Secret>();
        let [owned] = config.owned_kinds() else {
            panic!("one owned kind expected");
        };
        assert!(owned.is_metadata_only() && !owned.is_pruned() && !owned.adopts_existing());
    }
}
