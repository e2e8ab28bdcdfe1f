//! Session rows kept in memory, so that authenticating an agent's request (every fetch, every
//! usage report) does not cost a database round trip.
//!
//! This is only sound because the SQLite file has one writer: the data directory's
//! `broker.lock` keeps a second broker and `rotate-master-key` out, `user add` writes only the
//! users table, and every change to a session row in this process goes through
//! [`super::SqliteStore`], which announces it here with [`SessionCache::change`] for as long as
//! it runs. (A store shared by several brokers cannot know of the others' changes in time, so
//! the PostgreSQL engine has no such cache.) Three rules keep a cached row equal to the
//! database's:
//!
//! * while a change of a session is in progress, reads of that session bypass the cache, so
//!   they see exactly what the database shows: live before the commit, ended after it;
//! * when the change is over (committed, failed, or its future dropped), the entry is dropped,
//!   and the next read loads the row again;
//! * a read that started before any change began must not store what it read once that change
//!   has begun: a generation counter, bumped at the start and at the end of every change, tells.
//!
//! An ended session's row is final, so ended rows are cached too. Expiry needs nothing: the
//! caller compares the row's `expires_at` with the clock on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::SessionRecord;

/// Rows kept at most. Past this, every cached row is dropped (they are reloaded on use): a
/// bound on memory, not an eviction policy, since a broker rarely serves this many sessions.
const MAX_ENTRIES: usize = 32_768;

/// The cache. Cheap to clone; clones share their entries.
#[derive(Debug, Clone, Default)]
pub struct SessionCache {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Bumped at the start and at the end of every change.
    generation: u64,
}

#[derive(Debug)]
enum Entry {
    Cached(SessionRecord),
    /// This many changes of the session are in progress.
    Changing(usize),
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(SessionRecord),
    /// Not cached: read the database, then offer the row with [`SessionCache::offer`].
    Miss(Ticket),
    /// Being changed: read the database and keep nothing.
    Bypass,
}

/// The generation a read started at.
#[derive(Debug)]
pub struct Ticket {
    generation: u64,
}

/// A change of one session in progress; dropping it ends it.
#[must_use = "the change is over when this value is dropped"]
pub struct Change {
    cache: SessionCache,
    id: String,
}

impl Drop for Change {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        inner.generation = inner.generation.wrapping_add(1);
        match inner.entries.get_mut(&self.id) {
            Some(Entry::Changing(n)) if *n > 1 => *n -= 1,
            _ => {
                inner.entries.remove(&self.id);
            }
        }
    }
}

impl SessionCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change under this lock is one insert, remove or counter update, so a panic
        // elsewhere while it was held leaves it consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached row of session `id`, or how to read it.
    pub fn lookup(&self, id: &str) -> Lookup {
        let inner = self.lock();
        match inner.entries.get(id) {
            Some(Entry::Cached(record)) => Lookup::Hit(record.clone()),
            Some(Entry::Changing(_)) => Lookup::Bypass,
            None => Lookup::Miss(Ticket { generation: inner.generation }),
        }
    }

    /// Keeps `record`, read from the database after `ticket` was issued, unless a change began
    /// since.
    pub fn offer(&self, ticket: Ticket, record: &SessionRecord) {
        let mut inner = self.lock();
        if inner.generation != ticket.generation || inner.entries.contains_key(&record.id) {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.retain(|_, entry| matches!(entry, Entry::Changing(_)));
        }
        inner.entries.insert(record.id.clone(), Entry::Cached(record.clone()));
    }

    /// Announces a change of session `id`, from before its first write until the returned
    /// value is dropped (after the commit, or when it failed).
    pub fn change(&self, id: &str) -> Change {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        match inner.entries.get_mut(id) {
            Some(Entry::Changing(n)) => *n += 1,
            _ => {
                inner.entries.insert(id.to_owned(), Entry::Changing(1));
            }
        }
        Change { cache: self.clone(), id: id.to_owned() }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, ended_at: Option<i64>) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            owner_id: 1,
            label: None,
            created_at: 10,
            expires_at: 1000,
            ended_at,
            ended_reason: ended_at.map(|_| "user".to_owned()),
            enrolled: true,
            decoys: false,
            serials: Default::default(),
        }
    }

    fn miss(cache: &SessionCache, id: &str) -> Ticket {
        match cache.lookup(id) {
            Lookup::Miss(ticket) => ticket,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn a_row_read_is_kept_and_dropped_when_its_session_changes() {
        let cache = SessionCache::default();
        let ticket = miss(&cache, "s1");
        cache.offer(ticket, &row("s1", None));
        assert!(matches!(cache.lookup("s1"), Lookup::Hit(r) if r == row("s1", None)));
        let change = cache.change("s1");
        assert!(matches!(cache.lookup("s1"), Lookup::Bypass), "reads go to the database");
        drop(change);
        let ticket = miss(&cache, "s1");
        cache.offer(ticket, &row("s1", Some(20)));
        assert!(matches!(cache.lookup("s1"), Lookup::Hit(r) if r.ended_at == Some(20)));
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = SessionCache::default();
        // Read before the end committed; the end starts and finishes before the row is offered.
        let ticket = miss(&cache, "s1");
        drop(cache.change("s1"));
        cache.offer(ticket, &row("s1", None));
        assert!(matches!(cache.lookup("s1"), Lookup::Miss(_)), "the stale live row was dropped");
        // The same while the change is still running.
        let ticket = miss(&cache, "s1");
        let change = cache.change("s1");
        cache.offer(ticket, &row("s1", None));
        assert!(matches!(cache.lookup("s1"), Lookup::Bypass));
        drop(change);
        assert!(matches!(cache.lookup("s1"), Lookup::Miss(_)));
    }

    #[test]
    fn overlapping_changes_bypass_until_the_last_is_over() {
        let cache = SessionCache::default();
        let first = cache.change("s1");
        let second = cache.change("s1");
        drop(first);
        assert!(matches!(cache.lookup("s1"), Lookup::Bypass));
        drop(second);
        assert!(matches!(cache.lookup("s1"), Lookup::Miss(_)));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_changes_in_progress() {
        let cache = SessionCache::default();
        let change = cache.change("busy");
        for i in 0..MAX_ENTRIES + 10 {
            let id = format!("s{i}");
            let ticket = miss(&cache, &id);
            cache.offer(ticket, &row(&id, None));
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert!(matches!(cache.lookup("busy"), Lookup::Bypass));
        drop(change);
    }
}
