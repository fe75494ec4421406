//! [`Directory`]: finding the entry of an address, through the cache.
//!
//! A lookup escapes the address into the mapping's `user_filter` (RFC 4515),
//! runs a paged subtree search from `base_dn` (RFC 2696, so a broad filter
//! never hits the server's size limit), skips continuation references (case
//! C14) and picks one entry. Answers go through the cache module; the
//! connection module keeps the LDAP connection alive. Journal targets and the
//! hidden check build on this module in `targets` and `hidden`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ldap3::adapters::PagedResults;
use ldap3::{Ldap, Scope};
use tracing::{debug, warn};

use crate::cache::{Answer, Counters, DirectoryStats, LookupCache};
use crate::config::{url_scheme, DirectoryConfig};
use crate::connection::Connection;
use crate::entry::{self, Entry};
use crate::error::{DirectoryError, RC_NO_SUCH_OBJECT};
use crate::filter::user_filter;
use crate::mapping::Mapping;

/// Entries per page of a paged search (Active Directory's MaxPageSize is 1000).
const PAGE_SIZE: i32 = 500;

/// The answer of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The directory holds an entry for the address.
    Found(Arc<Entry>),
    /// The directory answered, and holds no entry for the address.
    NotFound,
}

impl Lookup {
    /// The entry, when found.
    pub fn entry(&self) -> Option<&Arc<Entry>> {
        match self {
            Lookup::Found(entry) => Some(entry),
            Lookup::NotFound => None,
        }
    }
}

/// Handle on the directory: cheap to clone, shared by all sessions.
#[derive(Clone)]
pub struct Directory {
    pub(crate) inner: Arc<Inner>,
}

/// The state shared by all clones of a [`Directory`].
pub(crate) struct Inner {
    pub(crate) config: DirectoryConfig,
    pub(crate) mapping: Mapping,
    /// Journal attributes, translated through the mapping.
    pub(crate) journal_attributes: Vec<String>,
    /// Attributes requested by a lookup.
    pub(crate) lookup_attributes: Vec<String>,
    /// Attributes requested when reading a target or group member.
    pub(crate) target_attributes: Vec<String>,
    pub(crate) connection: Connection,
    cache: LookupCache,
    counters: Counters,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.inner.config.url)
            .field("base_dn", &self.inner.config.base_dn)
            .field("journal_attributes", &self.inner.journal_attributes)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Prepares the directory: reads the bind password, translates the
    /// journal `attributes` (names or legacy property values) through the
    /// mapping. Opens no connection; the first lookup does.
    pub fn new(
        config: DirectoryConfig,
        mapping: Mapping,
        attributes: Vec<String>,
    ) -> Result<Directory, DirectoryError> {
        url_scheme(&config.url).map_err(DirectoryError::Config)?;
        if config.timeout.is_zero() {
            return Err(DirectoryError::Config(
                "timeout must be greater than zero".into(),
            ));
        }
        let password = config.password().map_err(DirectoryError::Config)?;
        if config.bind_dn.is_some() && password.is_none() {
            return Err(DirectoryError::Config(
                "bind_dn is set but no bind password".into(),
            ));
        }

        let mut journal_attributes = Vec::new();
        for configured in &attributes {
            let name = mapping
                .attribute_for(configured)
                .map_err(|e| DirectoryError::Config(e.to_string()))?;
            push_unique(&mut journal_attributes, name);
        }
        let mut target_attributes = Vec::new();
        let basics = [
            Some(&mapping.mail),
            mapping.addresses.as_ref(),
            mapping.hidden.as_ref(),
        ];
        for name in basics.into_iter().flatten() {
            push_unique(&mut target_attributes, name.clone());
        }
        push_unique(&mut target_attributes, "objectClass".into());
        push_unique(&mut target_attributes, mapping.group_member.clone());
        let mut lookup_attributes = target_attributes.clone();
        for name in &journal_attributes {
            push_unique(&mut lookup_attributes, name.clone());
        }

        let cache = LookupCache::new(
            config.cache_ttl,
            config.negative_cache_ttl,
            config.stale_ttl,
            config.cache_capacity,
        );
        let connection = Connection::new(&config, password);
        let inner = Inner {
            config,
            mapping,
            journal_attributes,
            lookup_attributes,
            target_attributes,
            connection,
            cache,
            counters: Counters::default(),
        };
        Ok(Directory {
            inner: Arc::new(inner),
        })
    }

    /// The mapping in use.
    pub fn mapping(&self) -> &Mapping {
        &self.inner.mapping
    }

    /// The journal attributes fetched by every lookup, as attribute names.
    pub fn journal_attributes(&self) -> &[String] {
        &self.inner.journal_attributes
    }

    /// Counters since start, for metrics.
    pub fn stats(&self) -> DirectoryStats {
        let connection = &self.inner.connection;
        let connects = connection.connects.load(Ordering::Relaxed);
        let failures = connection.connect_failures.load(Ordering::Relaxed);
        self.inner.counters.snapshot(connects, failures)
    }

    /// Forgets every cached answer (fresh and stale).
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Finds the entry of `address`. Answers from the cache while fresh;
    /// concurrent lookups of one address make one query; while the directory
    /// cannot be reached, an expired answer serves up to `stale_ttl`.
    pub async fn lookup(&self, address: &str) -> Result<Lookup, DirectoryError> {
        self.lookup_with_age(address)
            .await
            .map(|(lookup, _)| lookup)
    }

    /// As [`Directory::lookup`], and whether the answer is a stale one served
    /// because the directory could not be reached: a caller that keeps
    /// answers of its own must not keep a stale one as fresh.
    pub async fn lookup_with_age(&self, address: &str) -> Result<(Lookup, bool), DirectoryError> {
        let counters = &self.inner.counters;
        Counters::bump(&counters.lookups);
        let address = address.trim();
        // RFC 5321 §4.1.2 allows no control characters in a mailbox, and
        // OpenLDAP's IA5 matching stops at a NUL: escaped or not,
        // "alice@example.com\0" would find alice. Such input names nobody.
        if address.is_empty() || address.chars().any(char::is_control) {
            debug!(address = ?address, "Address with control characters not looked up.");
            return Ok((Lookup::NotFound, false));
        }
        let key = address.to_lowercase();

        let outcome = self
            .inner
            .cache
            .get_or_query(&key, self.query(address))
            .await;
        let err = match outcome {
            Ok(Answer::Hit(lookup)) => {
                Counters::bump(&counters.hits);
                return Ok((lookup, false));
            }
            Ok(Answer::Queried(lookup)) => {
                Counters::bump(&counters.misses);
                return Ok((lookup, false));
            }
            Err(err) => (*err).clone(),
        };

        // The directory failed us: an expired answer beats a 451 while it is down.
        if err.is_temporary() {
            if let Some(lookup) = self.inner.cache.stale(&key).await {
                Counters::bump(&counters.stale_serves);
                warn!(
                    address = %address,
                    error = %err,
                    "Directory unreachable; serving a stale entry."
                );
                return Ok((lookup, true));
            }
        }
        Counters::bump(&counters.errors);
        warn!(address = %address, error = %err, "Directory lookup failed.");
        Err(err)
    }

    /// Asks the directory for `address`, bypassing the cache.
    async fn query(&self, address: &str) -> Result<Lookup, DirectoryError> {
        let filter = user_filter(&self.inner.mapping.user_filter, address);
        let entries = self
            .search_subtree(&filter, &self.inner.lookup_attributes)
            .await?;
        debug!(address = %address, matches = entries.len(), "Directory searched.");
        Ok(match choose(entries, address) {
            Some(entry) => Lookup::Found(Arc::new(entry)),
            None => Lookup::NotFound,
        })
    }

    /// A paged subtree search from `base_dn`; references are skipped.
    pub(crate) async fn search_subtree(
        &self,
        filter: &str,
        attributes: &[String],
    ) -> Result<Vec<Entry>, DirectoryError> {
        let base = self.inner.config.base_dn.as_str();
        let mapping = &self.inner.mapping;
        self.inner
            .connection
            .run(|mut ldap: Ldap| async move {
                let paging = PagedResults::new(PAGE_SIZE);
                let mut stream = ldap
                    .streaming_search_with(paging, base, Scope::Subtree, filter, attributes)
                    .await?;
                let mut entries = Vec::new();
                while let Some(raw) = stream.next().await? {
                    // Continuation references (C14) and intermediates yield None.
                    entries.extend(entry::parse(raw, mapping));
                }
                stream.finish().await.success()?;
                Ok(entries)
            })
            .await
            .map_err(|err| match err {
                DirectoryError::Protocol {
                    code: RC_NO_SUCH_OBJECT,
                    ..
                } => DirectoryError::Config(format!(
                    "base_dn {base} does not exist or the bind DN may not see it"
                )),
                other => other,
            })
    }

    /// Reads the entry at `dn` (base scope); `None` when there is no such entry.
    pub(crate) async fn read_entry(
        &self,
        dn: &str,
        attributes: &[String],
    ) -> Result<Option<Entry>, DirectoryError> {
        let mapping = &self.inner.mapping;
        let timeout = self.inner.connection.timeout();
        self.inner
            .connection
            .run(|mut ldap: Ldap| async move {
                let result = ldap
                    .with_timeout(timeout)
                    .search(dn, Scope::Base, "(objectClass=*)", attributes)
                    .await?;
                if result.1.rc == RC_NO_SUCH_OBJECT {
                    return Ok(None);
                }
                let (raws, _) = result.success()?;
                Ok(raws.into_iter().find_map(|raw| entry::parse(raw, mapping)))
            })
            .await
    }
}

/// Picks the entry for `address` among several matches: the one whose
/// primary address is it, then one holding it at all, then the first.
fn choose(mut entries: Vec<Entry>, address: &str) -> Option<Entry> {
    if entries.len() <= 1 {
        return entries.pop();
    }
    let index = entries
        .iter()
        .position(|e| e.is_primary(address))
        .or_else(|| entries.iter().position(|e| e.has_address(address)))
        .unwrap_or(0);
    let chosen = entries.swap_remove(index);
    let others: Vec<&str> = entries.iter().map(|e| e.dn.as_str()).collect();
    warn!(
        address = %address,
        chosen = %chosen.dn,
        others = ?others,
        "Several directory entries match one address; using the best match."
    );
    Some(chosen)
}

/// Appends `name` unless an attribute of that name (any case) is there.
fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
        list.push(name);
    }
}
