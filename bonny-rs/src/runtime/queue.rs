//! Where the SDK sees kube-runtime's hidden work queue: the trigger streams that feed it (an
//! object of the controller's kind changed, or an owned object whose owner is one), counted as
//! adds on the controller's [`WorkQueue`] before kube-runtime's scheduler merges them.
//! Requeues and starts are recorded by `reconcile`.

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::{
    Resource, ResourceExt,
    api::DynamicObject,
    runtime::reflector::{Lookup, ObjectRef},
};

use super::intake::cooperative;
use crate::observe::{QueueKey, WorkQueue};

/// The queue key of the object `reference` names, of any kind.
pub(crate) fn key<K: Lookup + ?Sized>(reference: &ObjectRef<K>) -> QueueKey {
    QueueKey::new(reference.namespace.as_deref(), &reference.name)
}

/// `objects`, each counted as an add of its own key.
///
/// A controller's triggers start with every object of its cache, all at hand: each spends a
/// unit of the task's tokio budget ([`cooperative`]), so that kube-runtime's scheduler, which
/// takes requests while any is ready, lets the controller's stop be seen between stretches.
pub(crate) fn count_triggers<K>(
    objects: impl Stream<Item = Arc<K>>,
    queue: Arc<WorkQueue>,
) -> impl Stream<Item = Arc<K>>
where
    K: Resource,
{
    cooperative(objects).inspect(move |object| {
        queue.added(QueueKey::new(
            object.meta().namespace.as_deref(),
            object.meta().name.as_deref().unwrap_or_default(),
        ));
    })
}

/// `children`, each counted as an add of every owner of kind `K` it names (the owners
/// kube-runtime's `owns` triggers).
pub(crate) fn count_owner_triggers<K, E>(
    children: impl Stream<Item = Result<DynamicObject, E>>,
    queue: Arc<WorkQueue>,
) -> impl Stream<Item = Result<DynamicObject, E>>
where
    K: Resource<DynamicType = ()>,
{
    children.inspect_ok(move |child| {
        let namespace = ResourceExt::namespace(child);
        for owner in child.owner_references() {
            if let Some(reference) = ObjectRef::<K>::from_owner_ref(namespace.as_deref(), owner, ())
            {
                queue.added(key(&reference));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{
        api::ObjectMeta,
        runtime::{Controller, controller::Action, reflector},
    };
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::observe::Metrics;

    #[tokio::test]
    async fn a_controller_sees_its_stop_while_taking_in_a_large_cache() {
        const OBJECTS: usize = 5_000;
        let objects: Vec<_> = (0..OBJECTS)
            .map(|i| {
                Arc::new(ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("o-{i}")),
                        namespace: Some("n".into()),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                })
            })
            .collect();
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        // The triggers of a controller started on a warm cache: every object at hand at once.
        let triggers = count_triggers(
            futures::stream::iter(objects)
                .inspect(move |_| {
                    counted.fetch_add(1, Ordering::Relaxed);
                })
                .chain(futures::stream::pending()),
            Metrics::new().work_queue("test"),
        );
        // A synced (empty) cache: kube-runtime reconciles only once its store is ready.
        let (store, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let stop = CancellationToken::new();
        let controller = Controller::for_shared_stream(triggers, store)
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(
                |_, _| async { Ok::<_, Infallible>(Action::await_change()) },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {});
        // One thread: the stopper runs only when the controller lets go of it.
        let controller = tokio::spawn(controller);
        let stopper = tokio::spawn({
            let taken = taken.clone();
            async move {
                while taken.load(Ordering::Relaxed) == 0 {
                    tokio::task::yield_now().await;
                }
                stop.cancel();
                taken.load(Ordering::Relaxed)
            }
        });
        let asked = stopper.await.unwrap();
        controller.await.unwrap();
        let taken = taken.load(Ordering::Relaxed);
        // Without yielding, kube-runtime's scheduler takes every trigger in one go.
        assert!(
            asked < 1_000 && taken < 1_000,
            "the stop ran after {asked} and the controller ended after {taken} of {OBJECTS} triggers"
        );
    }
}
