//! A controller that reads objects it does not own: a Copier copies `data.value` of the
//! ConfigMap its `spec.source` names into its status, and counts the Secrets labelled
//! `copier=<its name>`. Three declarations of it: watching both kinds (the field form for
//! ConfigMaps, the function form for Secrets), with a filter on its own events; and not
//! watching at all, for the negative case.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bonny::{kube::runtime::reflector::ObjectRef, prelude::*};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "e2e.bonny.dev",
    version = "v1",
    kind = "Copier",
    namespaced,
    status = "CopierStatus"
)]
pub struct CopierSpec {
    /// The ConfigMap to copy from, in the Copier's namespace.
    pub source: Option<String>,
}

/// The status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CopierStatus {
    /// `data.value` of the source, as last read from the cache.
    pub copied: Option<String>,
    /// How many Secrets labelled `copier=<name>` the cache held.
    pub secrets: Option<usize>,
}

/// A Copier named `name` copying from `source`.
pub fn copier(name: &str, source: Option<&str>) -> Copier {
    Copier::new(
        name,
        CopierSpec {
            source: source.map(str::to_owned),
        },
    )
}

/// Reconciles per Copier name, shared with the test.
#[derive(Clone, Default, Debug)]
pub struct Reconciles(Arc<Mutex<HashMap<String, usize>>>);

impl Reconciles {
    /// Reconciles of `name` so far.
    pub fn of(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Every count so far.
    pub fn all(&self) -> HashMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, name: String) {
        *self.0.lock().unwrap().entry(name).or_default() += 1;
    }
}

/// The Copier a Secret labelled `copier=<name>` concerns.
pub fn copier_of(secret: &Secret) -> Option<ObjectRef<Copier>> {
    let name = secret.metadata.labels.as_ref()?.get("copier")?;
    Some(ObjectRef::new(name).within(secret.metadata.namespace.as_deref()?))
}

/// What both declarations do: copy from the cache when the kinds are cached, else read the
/// API server (the declaration without watches has no cache of them).
async fn copy(
    axn: &mut Axn<Copier>,
    reconciles: &Reconciles,
    cached: bool,
) -> Result<Action, ReconcileError> {
    reconciles.count(axn.name());
    let namespace = axn.namespace().unwrap_or_default();
    let source = axn.object().spec.source.clone();
    let (copied, secrets) = if cached {
        let copied = source
            .and_then(|source| axn.cache::<ConfigMap>().ok()?.get(&namespace, &source))
            .and_then(|map| map.data?.get("value").cloned());
        let selector = bonny::kube::core::Selector::from_iter([("copier".to_owned(), axn.name())]);
        let secrets = axn.cache::<Secret>()?.list_labelled(&selector).len();
        (copied, Some(secrets))
    } else {
        let maps: kube::Api<ConfigMap> = kube::Api::namespaced(axn.client().clone(), &namespace);
        let copied = match source {
            Some(source) => maps
                .get_opt(&source)
                .await
                .map_err(ReconcileError::from)?
                .and_then(|map| map.data?.get("value").cloned()),
            None => None,
        };
        (copied, None)
    };
    axn.set_status(CopierStatus { copied, secrets })?;
    Ok(Action::await_change())
}

/// Watches the source ConfigMaps (field form) and the labelled Secrets (function form);
/// reconciles on its own events only when the generation changed.
#[bonny::controller(
    resource = Copier,
    watches = [ConfigMap(field = spec.source), Secret(map = copier_of)],
    filters = [generation_changed],
)]
#[derive(Clone, Default)]
pub struct CopierController {
    /// Reconciles per Copier.
    pub reconciles: Reconciles,
}

impl Reconcile<Copier> for CopierController {
    async fn apply(&self, axn: &mut Axn<Copier>) -> Result<Action, ReconcileError> {
        copy(axn, &self.reconciles, true).await
    }
}

/// The same without watches or filters: it reads the source from the API server and is not
/// told when the source changes.
#[bonny::controller(
    resource = Copier,
    name = "copier-unwatched",
    rbac(group = "", resources = ["configmaps"], verbs = ["get"])
)]
#[derive(Clone, Default)]
pub struct UnwatchedCopierController {
    /// Reconciles per Copier.
    pub reconciles: Reconciles,
}

impl Reconcile<Copier> for UnwatchedCopierController {
    async fn apply(&self, axn: &mut Axn<Copier>) -> Result<Action, ReconcileError> {
        copy(axn, &self.reconciles, false).await
    }
}
