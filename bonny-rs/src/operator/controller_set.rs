//! The set of controllers that leader election opens and closes as one, and the watch caches
//! they run on: started with them (cold standby, the default), or once for the whole run so
//! that a standby keeps them synced while it waits for the Lease (warm standby).

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    observe::Metrics,
    runtime::{Registration, RunContext},
};

use super::{ControllersEvent, Observer};

/// Starts every registered controller, and stops them all, as many times as asked.
///
/// Stopping cancels their watches, lets in-flight reconciles finish within the grace period,
/// aborts what is left, and returns only once every task has ended. The caches stop with the
/// controllers, unless they are kept warm; then [`stop_caches`](Self::stop_caches) ends them.
///
/// Warm caches only read: every write still leaves through the guarded client of
/// `runtime`, and only from a controller, which runs only while the Lease is held.
pub(crate) struct ControllerSet {
    registrations: Arc<[Box<dyn Registration>]>,
    runtime: RunContext,
    grace: Duration,
    warm: bool,
    running: Option<Running>,
    caches: Option<Running>,
    leadership: Option<(Metrics, String)>,
    observer: Option<Observer>,
}

struct Running {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl ControllerSet {
    pub(crate) fn new(
        registrations: Arc<[Box<dyn Registration>]>,
        runtime: RunContext,
        grace: Duration,
        observer: Option<Observer>,
        warm: bool,
    ) -> Self {
        for registration in registrations.iter() {
            registration.declare_caches(&runtime);
        }
        Self {
            registrations,
            runtime,
            grace,
            warm,
            running: None,
            caches: None,
            leadership: None,
            observer,
        }
    }

    /// Reflect opening and closing in the leader gauge of the Lease `lease`.
    pub(crate) fn report_leadership(&mut self, metrics: Metrics, lease: String) {
        metrics.set_leader(&lease, false);
        self.leadership = Some((metrics, lease));
    }

    /// With warm standby, start the caches now (before the Lease is held) and keep them.
    pub(crate) fn warm_up(&mut self) {
        if self.warm {
            self.start_caches();
            tracing::info!("warm standby: caches started, kept synced while waiting for the Lease");
        }
    }

    fn start_caches(&mut self) {
        if self.caches.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        self.runtime.caches.start(
            &self.runtime.client,
            &self.runtime.metrics,
            &stop,
            &mut tasks,
        );
        for registration in self.registrations.iter() {
            registration.start_caches(&self.runtime, &stop, &mut tasks);
        }
        self.caches = Some(Running { stop, tasks });
    }

    /// Stops the caches (and the controllers first, if running).
    pub(crate) async fn stop_caches(&mut self) {
        self.stop().await;
        if let Some(Running { stop, mut tasks }) = self.caches.take() {
            stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }

    pub(crate) fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        self.notify(ControllersEvent::Starting);
        self.start_caches();
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for registration in self.registrations.iter() {
            registration.spawn(&self.runtime, &stop, &mut tasks);
        }
        self.runtime.health.mark_started();
        tracing::info!(
            controllers = self.registrations.len(),
            "controllers started"
        );
        self.running = Some(Running { stop, tasks });
    }

    pub(crate) async fn stop(&mut self) {
        self.stop_within(self.grace).await;
    }

    /// Stops every controller, aborting what is still running after `grace` (at once when
    /// zero).
    async fn stop_within(&mut self, grace: Duration) {
        let Some(Running { stop, mut tasks }) = self.running.take() else {
            return;
        };
        stop.cancel();
        if grace.is_zero() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        } else {
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                tracing::warn!(
                    ?grace,
                    "reconciles still running after the grace period; aborting them"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        self.runtime.health.caches_stopped();
        if !self.warm
            && let Some(Running { stop, mut tasks }) = self.caches.take()
        {
            stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!("controllers stopped");
        self.notify(ControllersEvent::Stopped);
    }

    fn notify(&self, event: ControllersEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    /// Completes when a controller task ends on its own (it should not while running).
    pub(crate) async fn exited(&mut self) {
        match &mut self.running {
            Some(running) if !running.tasks.is_empty() => {
                let _ = running.tasks.join_next().await;
            }
            _ => std::future::pending().await,
        }
    }
}

impl crate::leader::Gate for ControllerSet {
    async fn open(&mut self) {
        self.start();
        if let Some((metrics, lease)) = &self.leadership {
            metrics.set_leader(lease, true);
        }
    }

    async fn close(&mut self, how: crate::leader::Closing) {
        match how {
            crate::leader::Closing::Abort => self.stop_within(Duration::ZERO).await,
            _ => self.stop().await,
        }
        if let Some((metrics, lease)) = &self.leadership {
            metrics.set_leader(lease, false);
        }
    }
}
