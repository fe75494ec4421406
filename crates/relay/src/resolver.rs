//! Journal targets that come from the directory (product contract §1, §4).
//!
//! Three kinds: per-recipient targets (inbound: each local recipient's
//! journal attribute), per-sender targets (outbound: the envelope sender's),
//! and global targets written as `ldap:///DN` (a mailbox or a group). The
//! directory crate finds entries and expands DNs and groups, and caches
//! entries; this module asks it at RCPT time, keeps expanded targets for the
//! cache TTL, checks each newly seen target once for being hidden, and turns
//! every failure into "try again later" — nothing is accepted without its
//! journal targets resolved.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use directory::{Directory, DirectoryError, HiddenStatus, Lookup, Mapping};
use policy::{Address, Direction, RecipientTargets};
use tracing::{error, info, warn};

use crate::config::Settings;

/// How often unresolved `ldap:///` global targets are tried again.
const GLOBAL_RETRY: Duration = Duration::from_secs(30);

/// Why journal targets could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The directory failed to answer; the client should retry.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// `ldap:///` global targets of this direction are not resolved yet.
    #[error("global ldap:/// journal targets not resolved yet")]
    GlobalsPending,
}

#[derive(Default)]
struct Globals {
    inbound: Option<Vec<Address>>,
    outbound: Option<Vec<Address>>,
}

/// Resolves directory journal targets for the SMTP sessions.
#[derive(Clone)]
pub struct Resolver {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    directory: Directory,
    inbound_attribute: Option<String>,
    outbound_attribute: Option<String>,
    inbound_dns: Vec<String>,
    outbound_dns: Vec<String>,
    globals: RwLock<Globals>,
    expanded: moka::future::Cache<TargetKey, (Targets, bool)>,
    /// The same answers, kept `stale_ttl` longer, for while LDAP is down:
    /// a stale user entry is no help if its DN or group targets cannot be
    /// expanded again.
    stale: moka::future::Cache<TargetKey, Targets>,
    local_domains: Vec<String>,
    seen: Mutex<HashSet<String>>,
    counters: Counters,
}

/// Whose targets, in which direction: the address in lower case.
type TargetKey = (Direction, String);

/// Expanded journal targets, shared between caches and callers.
type Targets = Arc<Vec<Address>>;

/// Per-recipient lookups as the sessions see them (for `/metrics`).
#[derive(Default)]
struct Counters {
    lookups: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stale_serves: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Running totals of per-recipient lookups since start.
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupStats {
    /// Recipients (or senders) whose journal targets were asked for.
    pub lookups: u64,
    /// Answered from the cache.
    pub hits: u64,
    /// Answered by asking the directory.
    pub misses: u64,
    /// Answered by an expired answer while the directory was unreachable.
    pub stale_serves: u64,
    /// Not answered: the client got 451 4.4.3.
    pub errors: u64,
}

impl Resolver {
    /// A resolver for `settings`; without `[directory]` it resolves nothing.
    pub fn new(settings: &Settings) -> Result<Resolver, DirectoryError> {
        let Some(config) = settings.directory.clone() else {
            return Ok(Resolver { inner: None });
        };
        let mapping =
            Mapping::load(&config.mapping).map_err(|e| DirectoryError::Config(e.to_string()))?;
        let journal = &settings.journal;
        let attributes: Vec<String> = [
            journal.inbound_recipient_attribute.clone(),
            journal.outbound_recipient_attribute.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let ttl = config.cache_ttl;
        let stale_ttl = config.cache_ttl + config.stale_ttl;
        let capacity = config.cache_capacity;
        let directory = Directory::new(config, mapping, attributes)?;
        Ok(Resolver {
            inner: Some(Arc::new(Inner {
                directory,
                inbound_attribute: journal.inbound_recipient_attribute.clone(),
                outbound_attribute: journal.outbound_recipient_attribute.clone(),
                inbound_dns: journal.directory_targets.inbound.clone(),
                outbound_dns: journal.directory_targets.outbound.clone(),
                globals: RwLock::new(Globals::default()),
                expanded: moka::future::Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(capacity)
                    .build(),
                stale: moka::future::Cache::builder()
                    .time_to_live(stale_ttl)
                    .max_capacity(capacity)
                    .build(),
                local_domains: settings.routing.local_domains.clone(),
                seen: Mutex::new(HashSet::new()),
                counters: Counters::default(),
            })),
        })
    }

    /// Running totals of per-recipient lookups; zero without a directory.
    pub fn stats(&self) -> LookupStats {
        let Some(inner) = &self.inner else {
            return LookupStats::default();
        };
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &inner.counters;
        LookupStats {
            lookups: read(&c.lookups),
            hits: read(&c.hits),
            misses: read(&c.misses),
            stale_serves: read(&c.stale_serves),
            errors: read(&c.errors),
        }
    }

    /// The directory, when one is configured.
    pub fn directory(&self) -> Option<&Directory> {
        self.inner.as_ref().map(|i| &i.directory)
    }

    /// Whether RCPT needs the directory for this direction.
    pub fn active(&self, direction: Direction) -> bool {
        self.inner.as_ref().is_some_and(|i| match direction {
            Direction::Inbound => i.inbound_attribute.is_some() || !i.inbound_dns.is_empty(),
            Direction::Outbound => i.outbound_attribute.is_some() || !i.outbound_dns.is_empty(),
        })
    }

    /// The journal targets the directory holds for `address` (the recipient
    /// inbound, the envelope sender outbound); `None` when it holds none.
    pub async fn targets_of(
        &self,
        direction: Direction,
        address: &Address,
    ) -> Result<Option<RecipientTargets>, ResolveError> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let attribute = match direction {
            Direction::Inbound => &inner.inbound_attribute,
            Direction::Outbound => &inner.outbound_attribute,
        };
        let Some(attribute) = attribute else {
            return Ok(None);
        };

        let key = (direction, address.as_str().to_ascii_lowercase());
        let counters = &inner.counters;
        Counters::bump(&counters.lookups);
        let queried = AtomicBool::new(false);
        let fresh = inner
            .expanded
            .try_get_with(key.clone(), async {
                queried.store(true, Ordering::Relaxed);
                let (lookup, stale) = inner.directory.lookup_with_age(address.as_str()).await?;
                let entry = match lookup {
                    Lookup::Found(entry) => entry,
                    Lookup::NotFound => return Ok((Arc::new(Vec::new()), stale)),
                };
                let found = inner.directory.targets(&entry, attribute).await?;
                let addresses = to_addresses(found.into_iter().map(|t| t.address));
                Ok::<_, DirectoryError>((Arc::new(addresses), stale))
            })
            .await;
        let targets = match fresh {
            Ok((targets, false)) => {
                let bump = if queried.load(Ordering::Relaxed) {
                    &counters.misses
                } else {
                    &counters.hits
                };
                Counters::bump(bump);
                inner.stale.insert(key, Arc::clone(&targets)).await;
                targets
            }
            Ok((targets, true)) => {
                // The directory served its own stale entry: good for this
                // message, not to be kept as fresh, and no reason to extend
                // how long our stale copy may serve.
                inner.expanded.invalidate(&key).await;
                Counters::bump(&counters.stale_serves);
                targets
            }
            Err(e) if e.is_temporary() => match inner.stale.get(&key).await {
                Some(targets) => {
                    Counters::bump(&counters.stale_serves);
                    warn!(address = %address, error = %e,
                        "Directory unreachable; serving stale journal targets.");
                    targets
                }
                None => {
                    Counters::bump(&counters.errors);
                    return Err(ResolveError::Directory((*e).clone()));
                }
            },
            Err(e) => {
                Counters::bump(&counters.errors);
                return Err(ResolveError::Directory((*e).clone()));
            }
        };

        if targets.is_empty() {
            return Ok(None);
        }
        for target in targets.iter() {
            self.check_once(target);
        }
        Ok(Some(RecipientTargets {
            owner: address.clone(),
            targets: targets.to_vec(),
        }))
    }

    /// The resolved `ldap:///` global targets of a direction; an error while
    /// they are not resolved yet.
    pub fn global_targets(&self, direction: Direction) -> Result<Vec<Address>, ResolveError> {
        let Some(inner) = &self.inner else {
            return Ok(Vec::new());
        };
        let dns = match direction {
            Direction::Inbound => &inner.inbound_dns,
            Direction::Outbound => &inner.outbound_dns,
        };
        if dns.is_empty() {
            return Ok(Vec::new());
        }
        let globals = inner
            .globals
            .read()
            .map_err(|_| ResolveError::GlobalsPending)?;
        let resolved = match direction {
            Direction::Inbound => &globals.inbound,
            Direction::Outbound => &globals.outbound,
        };
        resolved.clone().ok_or(ResolveError::GlobalsPending)
    }

    /// Whether `address` is a resolved global target (protected from outside).
    pub fn is_global_target(&self, address: &Address) -> bool {
        [Direction::Inbound, Direction::Outbound]
            .into_iter()
            .any(|d| {
                self.global_targets(d).is_ok_and(|all| {
                    all.iter()
                        .any(|t| t.base_mailbox() == address.base_mailbox())
                })
            })
    }

    /// Resolves the `ldap:///` global targets now; `Ok` when there are none.
    pub async fn resolve_globals(&self) -> Result<(), DirectoryError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        for direction in [Direction::Inbound, Direction::Outbound] {
            let dns = match direction {
                Direction::Inbound => &inner.inbound_dns,
                Direction::Outbound => &inner.outbound_dns,
            };
            if dns.is_empty() {
                continue;
            }
            let mut addresses = Vec::new();
            for dn in dns {
                let found = inner.directory.resolve_dn(dn).await?;
                addresses.extend(found.into_iter().map(|t| t.address));
            }
            let addresses = to_addresses(addresses.into_iter());
            info!(
                direction = %direction,
                targets = ?addresses,
                "Global ldap:/// journal targets resolved."
            );
            if let Ok(mut globals) = inner.globals.write() {
                match direction {
                    Direction::Inbound => globals.inbound = Some(addresses),
                    Direction::Outbound => globals.outbound = Some(addresses),
                }
            }
        }
        Ok(())
    }

    /// Keeps `ldap:///` global targets resolved: retried until they are,
    /// then refreshed every `refresh`.
    pub fn spawn_global_refresh(&self, refresh: Duration) {
        let has_dns = self
            .inner
            .as_ref()
            .is_some_and(|i| !i.inbound_dns.is_empty() || !i.outbound_dns.is_empty());
        if !has_dns {
            return;
        }
        let resolver = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match resolver.resolve_globals().await {
                    Ok(()) => refresh,
                    Err(e) => {
                        error!(error = %e, "Cannot resolve global ldap:/// journal targets; \
                            their direction answers 451 until they are.");
                        GLOBAL_RETRY
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// The hidden status of one target.
    pub async fn hidden_status(&self, target: &str) -> Result<HiddenStatus, DirectoryError> {
        let Some(inner) = &self.inner else {
            return Ok(HiddenStatus::not_found());
        };
        if target.to_ascii_lowercase().starts_with("ldap:///") {
            inner
                .directory
                .hidden_status_dn(target, &inner.local_domains)
                .await
        } else {
            inner
                .directory
                .hidden_status(target, &inner.local_domains)
                .await
        }
    }

    /// Checks a per-recipient target the first time it is seen, in the
    /// background, and logs once if it is visible or reachable from outside.
    fn check_once(&self, target: &Address) {
        let Some(inner) = &self.inner else {
            return;
        };
        let first = inner
            .seen
            .lock()
            .is_ok_and(|mut seen| seen.insert(target.as_str().to_ascii_lowercase()));
        if !first {
            return;
        }
        let resolver = self.clone();
        let target = target.clone();
        tokio::spawn(async move {
            match resolver.hidden_status(target.as_str()).await {
                Ok(status) if status.ok() => {}
                Ok(status) => warn!(
                    target = %target,
                    found = status.found,
                    hidden = status.hidden,
                    reachable_from_outside = status.reachable_from_outside,
                    "Journal target is not a hidden recipient."
                ),
                Err(e) => {
                    info!(target = %target, error = %e, "Hidden check of a journal target failed.")
                }
            }
        });
    }
}

/// Parses directory addresses; one that is not an address is logged and left out.
fn to_addresses(found: impl Iterator<Item = String>) -> Vec<Address> {
    let mut addresses: Vec<Address> = Vec::new();
    for text in found {
        match Address::from_config(&text) {
            Ok(address) => {
                if !addresses.iter().any(|a| a.same_mailbox(&address)) {
                    addresses.push(address);
                }
            }
            Err(e) => {
                warn!(
                    value = %text,
                    error = %e,
                    "Directory journal target is not an address; ignored."
                )
            }
        }
    }
    addresses
}

/// One line of the hidden-recipient report of `check` and of the start.
#[derive(Debug)]
pub struct HiddenRow {
    /// What the address is, e.g. "inbound target", "outbound NDR".
    pub role: String,
    /// The address or `ldap:///DN` as configured.
    pub target: String,
    /// What the directory said.
    pub status: Result<HiddenStatus, String>,
}

impl HiddenRow {
    /// Whether the target passes: found, hidden, not reachable from outside.
    pub fn ok(&self) -> bool {
        self.status.as_ref().is_ok_and(HiddenStatus::ok)
    }

    /// A short verdict for a table.
    pub fn verdict(&self) -> String {
        match &self.status {
            Err(e) => format!("UNKNOWN ({e})"),
            Ok(s) if s.ok() => "ok: hidden, no SMTP address in a local domain".into(),
            Ok(s) if !s.found => "WARN: not found in the directory".into(),
            Ok(s) => {
                let mut problems = Vec::new();
                if !s.hidden {
                    problems.push("visible in the address book");
                }
                if s.reachable_from_outside {
                    problems.push("has an SMTP address in a local domain (reachable from outside)");
                }
                format!("WARN: {}", problems.join(", "))
            }
        }
    }
}

impl Resolver {
    /// The hidden check of every configured global target and NDR address
    /// (product contract §3): empty without a directory.
    pub async fn hidden_report(&self, settings: &Settings) -> Vec<HiddenRow> {
        if self.inner.is_none() {
            return Vec::new();
        }
        let journal = &settings.journal;
        let mut wanted: Vec<(String, String)> = Vec::new();
        for (name, rules, dns) in [
            (
                "inbound",
                &journal.rules.inbound,
                &journal.directory_targets.inbound,
            ),
            (
                "outbound",
                &journal.rules.outbound,
                &journal.directory_targets.outbound,
            ),
        ] {
            if let Some(rules) = rules {
                for target in &rules.targets {
                    wanted.push((format!("{name} target"), target.as_str().to_owned()));
                }
                for dn in dns {
                    wanted.push((format!("{name} target"), format!("ldap:///{dn}")));
                }
                wanted.push((format!("{name} NDR"), rules.ndr.as_str().to_owned()));
            }
        }

        let mut rows: Vec<HiddenRow> = Vec::new();
        for (role, target) in wanted {
            if let Some(row) = rows
                .iter_mut()
                .find(|r| r.target.eq_ignore_ascii_case(&target))
            {
                row.role.push_str(", ");
                row.role.push_str(&role);
                continue;
            }
            let status = self.hidden_status(&target).await.map_err(|e| e.to_string());
            rows.push(HiddenRow {
                role,
                target,
                status,
            });
        }
        rows
    }
}
