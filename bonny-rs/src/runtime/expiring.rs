//! A bounded map whose entries expire a fixed time after their last insert, oldest first,
//! at O(1) amortised cost per call whatever the number of entries: the runtime's memories
//! (read-your-writes, published events) never walk all their entries on the hot path.

use std::{
    borrow::Borrow,
    collections::{HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

/// The map. Past `capacity` insert records, the oldest entries are dropped early.
pub(crate) struct Expiring<Key, Value> {
    entries: HashMap<Key, (u64, Value)>,
    /// (inserted at, sequence number, key), oldest first. A record whose sequence number is
    /// not the entry's any more (replaced or removed since) is skipped when it comes up.
    order: VecDeque<(Instant, u64, Key)>,
    next: u64,
    ttl: Duration,
    capacity: usize,
}

impl<Key: Hash + Eq + Clone, Value> Expiring<Key, Value> {
    /// Entries live `ttl` after their last insert; at most `capacity` are kept.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            ttl,
            capacity,
        }
    }

    /// Drops the entries inserted `ttl` or longer before `now`. Each insert record is looked
    /// at once in all, so this is O(1) amortised.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= self.ttl)
        {
            self.drop_oldest();
        }
    }

    /// Inserts (or replaces) `key`'s entry; it expires `ttl` after `now`. Past the capacity,
    /// the oldest record goes.
    pub(crate) fn insert(&mut self, key: Key, value: Value, now: Instant) {
        let sequence = self.next;
        self.next += 1;
        self.order.push_back((now, sequence, key.clone()));
        self.entries.insert(key, (sequence, value));
        while self.order.len() > self.capacity {
            self.drop_oldest();
        }
        // Records of entries replaced or removed since wait for their expiry; once they are
        // most of the queue they go at once (each record is looked at once more: O(1)
        // amortised), so a map whose entries live briefly stays small.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|(_, sequence, key)| {
                entries
                    .get(key)
                    .is_some_and(|(current, _)| current == sequence)
            });
            self.order.shrink_to(2 * self.order.len() + 64);
        }
    }

    /// Drops the oldest insert record, and its entry if no later insert replaced it.
    fn drop_oldest(&mut self) {
        if let Some((_, sequence, key)) = self.order.pop_front()
            && self.entries.get(&key).is_some_and(|(s, _)| *s == sequence)
        {
            self.entries.remove(&key);
        }
    }

    pub(crate) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&Value>
    where
        Key: Borrow<Q>,
    {
        self.entries.get(key).map(|(_, value)| value)
    }

    pub(crate) fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<Value>
    where
        Key: Borrow<Q>,
    {
        let removed = self.entries.remove(key).map(|(_, value)| value);
        // A map emptied after a burst gives its room back (halving at most once per
        // quarter of its capacity removed: O(1) amortised).
        if self.entries.capacity() > 4 * self.entries.len() + 64 {
            self.entries.shrink_to(2 * self.entries.len() + 64);
        }
        removed
    }

    pub(crate) fn contains<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        Key: Borrow<Q>,
    {
        self.entries.contains_key(key)
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Insert records held (at most the capacity).
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn expiry_follows_the_last_insert() {
        let mut memory = Expiring::<u32, ()>::new(TTL, 100);
        let start = Instant::now();
        memory.insert(1, (), start);
        memory.insert(2, (), start + TTL / 2);
        // Inserted again: its first record must not expire it.
        memory.insert(1, (), start + TTL / 2);
        memory.expire(start + TTL);
        assert!(memory.contains(&1) && memory.contains(&2));
        memory.expire(start + TTL / 2 + TTL);
        assert_eq!((memory.len(), memory.records()), (0, 0));
    }

    #[test]
    fn records_of_entries_gone_do_not_pile_up() {
        let mut memory = Expiring::<u32, ()>::new(TTL, 1 << 20);
        let start = Instant::now();
        // A burst: many entries, each removed soon after, all within the TTL.
        for key in 0..10_000 {
            memory.insert(key, (), start);
            memory.remove(&key);
        }
        assert_eq!(memory.len(), 0);
        assert!(memory.records() <= 64 + 1, "{} records", memory.records());
        assert!(memory.entries.capacity() <= 4 * 64);
        // Live entries keep their records.
        for key in 0..1_000 {
            memory.insert(key, (), start);
        }
        assert_eq!(memory.len(), 1_000);
        assert!((1_000..=1_000 + 64 + 1).contains(&memory.records()));
        memory.expire(start + TTL);
        assert_eq!((memory.len(), memory.records()), (0, 0));
    }

    #[test]
    fn the_oldest_go_past_the_capacity() {
        let mut memory = Expiring::<u32, ()>::new(TTL, 100);
        let start = Instant::now();
        for key in 0..110 {
            memory.insert(key, (), start);
            memory.expire(start);
        }
        assert_eq!((memory.len(), memory.records()), (100, 100));
        assert!(!memory.contains(&9) && memory.contains(&10) && memory.contains(&109));
        // Records of a key inserted again and again are capped too.
        for _ in 0..1000 {
            memory.insert(7, (), start);
            memory.expire(start);
        }
        assert!(memory.records() <= 100 && memory.contains(&7));
    }
}
