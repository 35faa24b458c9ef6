//! The seam between the operator and its controllers, whatever their resource types.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Client, Resource, api::ApiResource, core::crd::MergeError, runtime::events::Reporter};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    cache::Caches,
    namespaces::Namespaces,
    preflight::{self, StartupError},
    rbac::Kinds,
    watches,
};
use crate::{
    controller::{Config, Controller, Rule, Scope},
    observe::{Health, Metrics},
};

/// What the operator needs from a controller, whatever its resource type.
pub(crate) trait Registration: Send + Sync {
    /// The controller's name.
    fn name(&self) -> &str;

    /// Checks that the resource and its owned kinds are served and listable before anything
    /// starts; hints name the operator's `binary`.
    fn preflight<'a>(
        &'a self,
        client: &'a Client,
        namespaces: &'a Namespaces,
        binary: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), StartupError>> + Send + 'a>>;

    /// Declares the owned kinds in the operator's shared caches (`runtime.caches`), once,
    /// before any cache starts.
    fn declare_caches(&self, runtime: &RunContext);

    /// Starts the watches of the reconciled kind (one per namespace scope) into `tasks`, until
    /// `stop` is cancelled; [`spawn`](Self::spawn) runs controllers on the last ones started.
    fn start_caches(&self, runtime: &RunContext, stop: &CancellationToken, tasks: &mut JoinSet<()>);

    /// Spawns one reconcile task per namespace scope into `tasks`, fed by the started caches;
    /// each stops taking new work when `shutdown` is cancelled and ends once in-flight
    /// reconciles finish.
    fn spawn(&self, runtime: &RunContext, shutdown: &CancellationToken, tasks: &mut JoinSet<()>);

    /// The kinds the SDK touches for this controller (its own RBAC needs follow from them).
    fn kinds(&self) -> &Kinds;

    /// The RBAC rules the author declared.
    fn author_rules(&self) -> &[Rule];

    /// The resource's CRD, when it is a custom resource declared with the controller.
    fn crd(&self) -> Result<Option<CustomResourceDefinition>, MergeError>;
}

/// What every controller of one operator shares.
#[derive(Clone)]
pub(crate) struct RunContext {
    pub(crate) client: Client,
    pub(crate) namespaces: Namespaces,
    pub(crate) reporter: Reporter,
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
    /// The operator's shared watch caches of owned kinds.
    pub(crate) caches: Caches,
    /// The operator's binary, named in hints (`<binary> manifests`).
    pub(crate) binary: Arc<str>,
}

/// A controller with its declaration, read once.
pub(crate) struct Registered<C: Controller> {
    controller: Arc<C>,
    config: Arc<Config<C::Resource>>,
    name: String,
    kinds: Kinds,
    /// The watches of the reconciled kind last started.
    primaries: Mutex<Vec<watches::Primary<C::Resource>>>,
}

impl<C: Controller> Registered<C> {
    pub(crate) fn new(controller: C) -> Self {
        let config = controller.config();
        let name = config.controller_name();
        let kinds = Kinds {
            resource: ApiResource::erase::<C::Resource>(&()),
            namespaced: <<C::Resource as Resource>::Scope as Scope>::NAMESPACED,
            finalizer: config.finalizer_name().is_some(),
            owned: config
                .owned_kinds()
                .iter()
                .map(|owned| owned.api_resource().clone())
                .collect(),
            watched: config
                .watched_kinds()
                .iter()
                .map(|watched| watched.api_resource().clone())
                .collect(),
        };
        Self {
            controller: Arc::new(controller),
            config: Arc::new(config),
            name,
            kinds,
            primaries: Mutex::default(),
        }
    }
}

impl<C: Controller> Registration for Registered<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn preflight<'a>(
        &'a self,
        client: &'a Client,
        namespaces: &'a Namespaces,
        binary: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), StartupError>> + Send + 'a>> {
        Box::pin(preflight::check(client, namespaces, &self.kinds, binary))
    }

    fn declare_caches(&self, runtime: &RunContext) {
        watches::declare::<C>(&self.config, &self.name, runtime);
    }

    fn start_caches(
        &self,
        runtime: &RunContext,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        let started = watches::start_primaries::<C>(&self.config, runtime, stop, tasks);
        *self
            .primaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = started;
    }

    fn spawn(&self, runtime: &RunContext, shutdown: &CancellationToken, tasks: &mut JoinSet<()>) {
        let primaries = self
            .primaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watches::spawn(
            &self.controller,
            &self.config,
            &self.name,
            runtime,
            &primaries,
            shutdown,
            tasks,
        );
    }

    fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    fn author_rules(&self) -> &[Rule] {
        self.config.rules()
    }

    fn crd(&self) -> Result<Option<CustomResourceDefinition>, MergeError> {
        self.controller.crd()
    }
}
