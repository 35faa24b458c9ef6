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
