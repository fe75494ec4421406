//! The lookup cache: fresh answers, stale answers for outages, counters.
//!
//! Two moka caches sit side by side. `fresh` holds an answer for
//! `cache_ttl` (found) or `negative_cache_ttl` (not found); its
//! `entry().or_try_insert_with` makes concurrent lookups of one address share
//! one LDAP query. `stale` holds the same answers `stale_ttl` longer and is
//! read only when the directory cannot be reached, so mail keeps flowing
//! through an outage with what we last knew (product contract §2). Errors
//! are never stored in either: an outage must not turn into "this user has no
//! journal address" (case C16).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use crate::error::DirectoryError;
use crate::lookup::Lookup;

/// Counters of the directory, for metrics. All are totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Calls of `lookup`.
    pub lookups: u64,
    /// Lookups answered from the fresh cache (including those that waited for
    /// another caller's query of the same address).
    pub hits: u64,
    /// Lookups that had to ask the directory.
    pub misses: u64,
    /// Lookups answered by an expired entry because the directory was unreachable.
    pub stale_serves: u64,
    /// Lookups that ended in an error.
    pub errors: u64,
    /// LDAP connections established (the first one and every reconnect).
    pub connects: u64,
    /// Connection attempts that failed (refused, timed out, bind refused).
    pub connect_failures: u64,
}

/// The atomic counters behind [`DirectoryStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) lookups: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale_serves: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, connects: u64, connect_failures: u64) -> DirectoryStats {
        DirectoryStats {
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale_serves: self.stale_serves.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            connects,
            connect_failures,
        }
    }
}

/// Per-entry lifetimes: found and not-found answers live for different times.
struct Lifetimes {
    found: Duration,
    not_found: Duration,
}

impl Expiry<String, Lookup> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Lookup,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Lookup::Found(_) => self.found,
            Lookup::NotFound => self.not_found,
        })
    }
}

/// Fresh and stale answers, keyed by lower-case address.
pub(crate) struct LookupCache {
    fresh: Cache<String, Lookup>,
    stale: Cache<String, Lookup>,
}

/// Where an answer came from.
pub(crate) enum Answer {
    /// From the fresh cache.
    Hit(Lookup),
    /// From the directory, just now.
    Queried(Lookup),
}

impl LookupCache {
    pub(crate) fn new(
        found: Duration,
        not_found: Duration,
        stale: Duration,
        capacity: u64,
    ) -> Self {
        let fresh = Cache::builder()
            .max_capacity(capacity)
            .expire_after(Lifetimes { found, not_found })
            .build();
        let stale = Cache::builder()
            .max_capacity(capacity)
            .expire_after(Lifetimes {
                found: found + stale,
                not_found: not_found + stale,
            })
            .build();
        LookupCache { fresh, stale }
    }

    /// The fresh answer for `key`, or the result of `query`; concurrent
    /// callers for one key share one query. A successful answer is stored
    /// in both caches; an error is stored nowhere.
    pub(crate) async fn get_or_query<F>(
        &self,
        key: &str,
        query: F,
    ) -> Result<Answer, Arc<DirectoryError>>
    where
        F: Future<Output = Result<Lookup, DirectoryError>>,
    {
        let entry = self
            .fresh
            .entry(key.to_string())
            .or_try_insert_with(query)
            .await?;
        if entry.is_fresh() {
            let lookup = entry.into_value();
            self.stale.insert(key.to_string(), lookup.clone()).await;
            Ok(Answer::Queried(lookup))
        } else {
            Ok(Answer::Hit(entry.into_value()))
        }
    }

    /// The last known answer for `key`, while within its stale lifetime.
    pub(crate) async fn stale(&self, key: &str) -> Option<Lookup> {
        self.stale.get(key).await
    }

    /// Forgets every answer.
    pub(crate) fn clear(&self) {
        self.fresh.invalidate_all();
        self.stale.invalidate_all();
    }
}
