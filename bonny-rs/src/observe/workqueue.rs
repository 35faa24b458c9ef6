//! The work queue of one controller as the SDK sees it: kube-runtime's scheduler is hidden, so
//! the queue is measured at its edges — a trigger for a key arrives (an add), a requeue is
//! scheduled (an add once it is due), a reconcile starts (the key leaves the queue) and ends.
//!
//! The meanings are client-go's: depth counts distinct keys waiting, an add that merges into a
//! waiting key still counts as an add, queue duration runs from the time a key is due to the
//! start of its reconcile, work duration is the reconcile's. Every operation is O(1); only a
//! scrape walks the waiting keys (to count the due ones) and the running ones.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

/// An object of a controller's kind, as its queue knows it: a hash of namespace and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct QueueKey(u64);

impl QueueKey {
    /// The key of the object `name` in `namespace` (`None` for a cluster-scoped object).
    pub(crate) fn new(namespace: Option<&str>, name: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        namespace.hash(&mut hasher);
        name.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// A key in the queue.
#[derive(Debug)]
struct Waiting {
    /// When it is (or was) due to run.
    due: Instant,
    /// Whether its add was counted: a requeue counts once it is due, as client-go's delayed
    /// add does.
    counted: bool,
}

#[derive(Debug, Default)]
struct State {
    waiting: HashMap<QueueKey, Waiting>,
    running: HashMap<QueueKey, Instant>,
}

/// What a scrape reads of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct QueueGauges {
    /// Keys due and not yet started.
    pub(crate) depth: usize,
    /// Seconds spent so far by the reconciles running now, summed.
    pub(crate) unfinished: f64,
    /// Seconds the longest-running reconcile has run so far.
    pub(crate) longest: f64,
}

/// The queue of one controller (all its namespace scopes), shared by the watches that add to
/// it and the reconciles that take from it. Dropped when the controller stops, so a new term
/// starts empty.
#[derive(Debug)]
pub(crate) struct WorkQueue {
    state: Mutex<State>,
    adds: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
}

impl WorkQueue {
    pub(crate) fn new(adds: Counter, queue_duration: Histogram, work_duration: Histogram) -> Self {
        Self {
            state: Mutex::default(),
            adds,
            queue_duration,
            work_duration,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A trigger for `key` arrived: it is due now.
    pub(crate) fn added(&self, key: QueueKey) {
        self.added_at(key, Instant::now());
    }

    fn added_at(&self, key: QueueKey, now: Instant) {
        self.adds.inc();
        let mut state = self.state();
        let waiting = state.waiting.entry(key).or_insert(Waiting {
            due: now,
            counted: true,
        });
        // A requeue not yet due merges into this add (kube-runtime runs the key once, at the
        // earlier time): it is this add, not another.
        waiting.due = waiting.due.min(now);
        waiting.counted = true;
    }

    /// A reconcile (or the error policy) asked for `key` to run again `after` this long.
    pub(crate) fn requeued(&self, key: QueueKey, after: Duration) {
        self.requeued_at(key, after, Instant::now());
    }

    fn requeued_at(&self, key: QueueKey, after: Duration, now: Instant) {
        let due = now.checked_add(after).unwrap_or(now);
        let mut state = self.state();
        let waiting = state.waiting.entry(key).or_insert(Waiting {
            due,
            counted: false,
        });
        waiting.due = waiting.due.min(due);
    }

    /// The reconcile of `key` starts: it leaves the queue.
    pub(crate) fn started(&self, key: QueueKey) {
        self.started_at(key, Instant::now());
    }

    fn started_at(&self, key: QueueKey, now: Instant) {
        let mut state = self.state();
        let waited = match state.waiting.remove(&key) {
            Some(waiting) => {
                if !waiting.counted {
                    self.adds.inc();
                }
                now.saturating_duration_since(waiting.due)
            }
            // Started without an add the SDK saw: count it, so adds never trail starts.
            None => {
                self.adds.inc();
                Duration::ZERO
            }
        };
        state.running.insert(key, now);
        drop(state);
        self.queue_duration.observe(waited.as_secs_f64());
    }

    /// The reconcile of `key` ended, whatever its result.
    pub(crate) fn finished(&self, key: QueueKey) {
        self.finished_at(key, Instant::now());
    }

    fn finished_at(&self, key: QueueKey, now: Instant) {
        let started = self.state().running.remove(&key);
        if let Some(started) = started {
            self.work_duration
                .observe(now.saturating_duration_since(started).as_secs_f64());
        }
    }

    /// `key` left the queue without a reconcile: its object is gone.
    pub(crate) fn forget(&self, key: QueueKey) {
        let now = Instant::now();
        let waiting = self.state().waiting.remove(&key);
        if let Some(waiting) = waiting
            && !waiting.counted
            && waiting.due <= now
        {
            self.adds.inc();
        }
    }

    /// The gauges as of `now`; requeues that fell due since the last look are counted as adds.
    pub(crate) fn gauges(&self, now: Instant) -> QueueGauges {
        let mut state = self.state();
        let mut depth = 0;
        let mut newly_due = 0;
        for waiting in state.waiting.values_mut() {
            if waiting.due <= now {
                depth += 1;
                if !waiting.counted {
                    waiting.counted = true;
                    newly_due += 1;
                }
            }
        }
        let mut unfinished = 0.0;
        let mut longest: f64 = 0.0;
        for started in state.running.values() {
            let ran = now.saturating_duration_since(*started).as_secs_f64();
            unfinished += ran;
            longest = longest.max(ran);
        }
        drop(state);
        self.adds.inc_by(newly_due);
        QueueGauges {
            depth,
            unfinished,
            longest,
        }
    }

    /// Keys waiting (due or not) and running: what the queue holds in memory.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let state = self.state();
        (state.waiting.len(), state.running.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn queue() -> WorkQueue {
        WorkQueue::new(
            Counter::default(),
            Histogram::new([0.1, 1.0]),
            Histogram::new([0.1, 1.0]),
        )
    }

    fn key(name: &str) -> QueueKey {
        QueueKey::new(Some("default"), name)
    }

    #[test]
    fn depth_counts_distinct_waiting_keys_and_adds_count_every_trigger() {
        let queue = queue();
        let now = Instant::now();
        queue.added_at(key("a"), now);
        queue.added_at(key("a"), now);
        queue.added_at(key("b"), now);
        assert_eq!(queue.gauges(now).depth, 2);
        assert_eq!(queue.adds.get(), 3);
        queue.started_at(key("a"), now + Duration::from_millis(50));
        let gauges = queue.gauges(now + Duration::from_secs(2));
        assert_eq!(gauges.depth, 1);
        assert!((gauges.longest - 1.95).abs() < 1e-6, "{gauges:?}");
        assert!((gauges.unfinished - 1.95).abs() < 1e-6, "{gauges:?}");
        queue.finished_at(key("a"), now + Duration::from_secs(3));
        queue.started_at(key("b"), now + Duration::from_secs(3));
        queue.finished_at(key("b"), now + Duration::from_secs(3));
        assert_eq!(
            queue.gauges(now + Duration::from_secs(3)),
            QueueGauges::default()
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("work", "", queue.work_duration.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("work_sum 2.95\n") && text.contains("work_count 2\n"),
            "{text}"
        );
        assert_eq!(queue.held(), (0, 0));
    }

    #[test]
    fn a_requeue_is_an_add_once_it_is_due() {
        let queue = queue();
        let now = Instant::now();
        queue.requeued_at(key("a"), Duration::from_secs(10), now);
        assert_eq!(queue.gauges(now).depth, 0);
        assert_eq!(queue.adds.get(), 0);
        let later = now + Duration::from_secs(10);
        assert_eq!(queue.gauges(later).depth, 1);
        assert_eq!(queue.adds.get(), 1);
        // Seen again: counted once.
        assert_eq!(queue.gauges(later).depth, 1);
        queue.started_at(key("a"), later);
        assert_eq!(queue.adds.get(), 1);
    }

    #[test]
    fn a_trigger_merges_a_pending_requeue_into_one_add() {
        let queue = queue();
        let now = Instant::now();
        queue.requeued_at(key("a"), Duration::from_secs(10), now);
        queue.added_at(key("a"), now + Duration::from_secs(1));
        queue.started_at(key("a"), now + Duration::from_secs(1));
        queue.finished_at(key("a"), now + Duration::from_secs(1));
        assert_eq!(queue.adds.get(), 1);
        assert_eq!(queue.held(), (0, 0));
    }

    #[test]
    fn a_gone_object_leaves_the_queue() {
        let queue = queue();
        queue.added(key("a"));
        queue.forget(key("a"));
        assert_eq!(queue.held(), (0, 0));
        assert_eq!(queue.adds.get(), 1);
    }
}
