//! Liveness and readiness, served as `/healthz` and `/readyz`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Default)]
struct Inner {
    /// Set once the operator has started its controllers or its leader election.
    started: bool,
    /// Cache sync state per running controller watch; empty while no controller runs.
    caches: BTreeMap<String, bool>,
    liveness: Vec<Check>,
    readiness: Vec<Check>,
}

/// The operator's health: alive unless a liveness check fails; ready once every running
/// controller's cache has synced (a standby replica, running none, is ready). Cheap to clone.
///
/// Only the operator changes what it reports: authors read it, and add liveness checks.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("caches", &self.lock().caches)
            .finish_non_exhaustive()
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a liveness check: `/healthz` fails while it returns an error.
    pub fn add_liveness_check(
        &self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().liveness.push(Box::new(check));
    }

    /// Add a readiness check: `/readyz` fails while it returns an error.
    pub(crate) fn add_readiness_check(
        &self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().readiness.push(Box::new(check));
    }

    /// The operator is up: controllers started, or standing by for the Lease. Until then
    /// `/readyz` fails.
    pub(crate) fn mark_started(&self) {
        self.lock().started = true;
    }

    /// A controller watch started: not ready until [`Health::cache_synced`].
    pub(crate) fn cache_started(&self, name: &str) {
        self.lock().caches.insert(name.to_owned(), false);
    }

    /// A controller watch has listed everything once.
    pub(crate) fn cache_synced(&self, name: &str) {
        if let Some(synced) = self.lock().caches.get_mut(name) {
            *synced = true;
        }
    }

    /// The controllers stopped (leadership lost or shutdown): nothing to wait for.
    pub(crate) fn caches_stopped(&self) {
        self.lock().caches.clear();
    }

    /// `Ok` when alive, else what failed.
    ///
    /// # Errors
    /// The message of the first failing liveness check.
    pub fn live(&self) -> Result<(), String> {
        self.lock().liveness.iter().try_for_each(|check| check())
    }

    /// `Ok` when ready, else which caches have not synced.
    ///
    /// # Errors
    /// Names the controller watches still syncing.
    pub fn ready(&self) -> Result<(), String> {
        let inner = self.lock();
        if !inner.started {
            return Err("the operator is starting".to_owned());
        }
        inner.readiness.iter().try_for_each(|check| check())?;
        let pending: Vec<&str> = inner
            .caches
            .iter()
            .filter(|(_, synced)| !**synced)
            .map(|(name, _)| name.as_str())
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("caches not synced yet: {}", pending.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn ready_once_started_and_every_running_cache_synced() {
        let health = Health::default();
        assert!(health.ready().is_err());
        health.mark_started();
        assert!(health.ready().is_ok());
        health.cache_started("widget");
        assert!(health.ready().is_err());
        health.cache_synced("widget");
        assert!(health.ready().is_ok());
        health.cache_started("gadget");
        health.caches_stopped();
        assert!(health.ready().is_ok());
    }
}
