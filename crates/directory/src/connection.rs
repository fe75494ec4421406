//! The one shared LDAP connection, and getting it back when it breaks.
//!
//! All lookups multiplex over a single ldap3 `Ldap` handle whose connection is
//! driven by a spawned task. Servers close idle connections (Active Directory
//! after `MaxConnIdleTime`, OpenLDAP after `olcIdleTimeout`), restart, or
//! vanish behind a firewall; a handle to such a connection then fails forever
//! (case C16). So every operation runs through [`Connection::run`]: on a lost
//! connection it reconnects, binds again and retries the operation once; if
//! that fails too, the error is temporary and the caller answers `451`.
//!
//! Reconnecting is serialised by a mutex around the connection slot, and a
//! generation counter keeps a caller holding an old handle from throwing away
//! a connection someone else just made. Callers that queued behind a failed
//! attempt take its error instead of each trying again, so an outage costs
//! one connection attempt at a time, not one per waiting lookup.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::config::{DirectoryConfig, Secret};
use crate::error::{classify, DirectoryError, Failure};

/// Histogram of LDAP operation latency in seconds, reconnects included
/// (recorded through the `metrics` facade; nothing happens without a recorder).
pub const LATENCY_METRIC: &str = "mailjournal_directory_latency_seconds";

/// The connection slot guarded by the mutex.
struct Slot {
    /// The live handle, if any.
    ldap: Option<Ldap>,
    /// Number of connection attempts made so far; names the current handle.
    generation: u64,
    /// The outcome of the last attempt when it failed.
    last_error: Option<DirectoryError>,
}

/// A self-healing LDAP connection shared by all lookups.
pub(crate) struct Connection {
    url: String,
    starttls: bool,
    bind_dn: Option<String>,
    password: Option<Secret>,
    timeout: Duration,
    slot: Mutex<Slot>,
    /// Mirror of `Slot::generation`, readable without the lock.
    attempts: AtomicU64,
    /// Successful connections made, for statistics.
    pub(crate) connects: AtomicU64,
    /// Failed connection attempts, for statistics.
    pub(crate) connect_failures: AtomicU64,
}

impl Connection {
    /// Prepares a connection; nothing is opened until the first operation.
    pub(crate) fn new(config: &DirectoryConfig, password: Option<Secret>) -> Connection {
        Connection {
            url: config.url.clone(),
            starttls: config.starttls,
            bind_dn: config.bind_dn.clone(),
            password,
            timeout: config.timeout,
            slot: Mutex::new(Slot {
                ldap: None,
                generation: 0,
                last_error: None,
            }),
            attempts: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    /// The per-operation time bound.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `op` on the shared handle, bounded by the timeout, and records
    /// its latency. A lost connection is replaced and `op` retried once.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let started = std::time::Instant::now();
        let result = self.run_once_or_twice(op).await;
        metrics::histogram!(LATENCY_METRIC).record(started.elapsed().as_secs_f64());
        result
    }

    async fn run_once_or_twice<T, F, Fut>(&self, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let mut retried = false;
        loop {
            let (generation, ldap) = self.handle().await?;
            let outcome = match tokio::time::timeout(self.timeout, op(ldap)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => classify(err),
                Err(_) => (DirectoryError::Timeout, Failure::ConnectionLost),
            };
            match outcome {
                (err, Failure::Operation) => return Err(err),
                (DirectoryError::Timeout, _) => {
                    // A half-open connection shows as silence: drop it so the
                    // next operation reconnects, but do not spend another
                    // timeout on this one.
                    self.invalidate(generation).await;
                    return Err(DirectoryError::Timeout);
                }
                (err, Failure::ConnectionLost) => {
                    self.invalidate(generation).await;
                    if retried {
                        return Err(match err {
                            DirectoryError::Protocol { .. } | DirectoryError::Unreachable(_) => err,
                            other => DirectoryError::Unreachable(other.to_string()),
                        });
                    }
                    info!(error = %err, "Directory connection lost; reconnecting once.");
                    retried = true;
                }
            }
        }
    }

    /// Returns the live handle, connecting first if there is none.
    async fn handle(&self) -> Result<(u64, Ldap), DirectoryError> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut slot = self.slot.lock().await;
        let generation = slot.generation;
        if let Some(ldap) = slot.ldap.as_mut() {
            if !ldap.is_closed() {
                return Ok((generation, ldap.clone()));
            }
            debug!(
                generation = slot.generation,
                "Directory connection found closed."
            );
            slot.ldap = None;
        }
        if slot.generation != seen {
            if let Some(err) = &slot.last_error {
                // Someone tried while we waited for the lock, and failed.
                return Err(err.clone());
            }
        }

        slot.generation += 1;
        self.attempts.store(slot.generation, Ordering::Release);
        match self.connect().await {
            Ok(ldap) => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                slot.ldap = Some(ldap.clone());
                slot.last_error = None;
                Ok((slot.generation, ldap))
            }
            Err(err) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                warn!(url = %self.url, error = %err, "Cannot connect to the directory.");
                slot.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Forgets the handle of `generation` unless it was already replaced.
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.generation == generation {
            slot.ldap = None;
        }
    }

    /// Opens a connection (TLS or StartTLS as configured) and binds.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls);
        let opened = tokio::time::timeout(
            self.timeout,
            LdapConnAsync::with_settings(settings, &self.url),
        )
        .await;
        let (conn, mut ldap) = match opened {
            Err(_) => return Err(DirectoryError::Timeout),
            Ok(Err(err)) => return Err(lost_to_unreachable(classify(err).0)),
            Ok(Ok(pair)) => pair,
        };
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(err) = conn.drive().await {
                debug!(url = %url, error = %err, "Directory connection ended.");
            }
        });

        // Simple bind (RFC 4513 §5.1.3); anonymous when no DN is configured.
        if let (Some(dn), Some(password)) = (&self.bind_dn, &self.password) {
            let bound = tokio::time::timeout(
                self.timeout,
                ldap.with_timeout(self.timeout)
                    .simple_bind(dn, password.expose()),
            )
            .await;
            let result = match bound {
                Err(_) => return Err(DirectoryError::Timeout),
                Ok(Err(err)) => return Err(lost_to_unreachable(classify(err).0)),
                Ok(Ok(result)) => result,
            };
            if result.rc != 0 {
                let _ = ldap.unbind().await;
                return Err(DirectoryError::from_result(result.rc, &result.text));
            }
        }
        debug!(url = %self.url, "Connected to the directory.");
        Ok(ldap)
    }
}

/// While connecting, anything but a typed refusal means "cannot reach it".
fn lost_to_unreachable(err: DirectoryError) -> DirectoryError {
    match err {
        DirectoryError::Protocol { code: 0, text } => DirectoryError::Unreachable(text),
        other => other,
    }
}

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_slapd;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use ldap3::exop::WhoAmI;

    use super::test_slapd::{Fixture, Slapd};
    use super::*;

    /// A round trip that proves the handle works.
    async fn who_am_i(mut ldap: Ldap) -> Result<(), LdapError> {
        ldap.extended(WhoAmI).await?.success().map(|_| ())
    }

    // A handle that looks alive but whose connection is gone cannot be made
    // on demand with a real server (slapd's own closes are seen at once), so
    // the first attempt fails the way ldap3 reports a dead connection.
    #[tokio::test]
    async fn lost_connection_is_replaced_and_the_operation_retried_once() {
        let slapd = Slapd::start(Fixture::ActiveDirectory);
        let config = slapd.config();
        let connection = Connection::new(&config, config.bind_password.clone());

        let calls = AtomicU32::new(0);
        let outcome = connection
            .run(|ldap| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        return Err(LdapError::EndOfStream);
                    }
                    who_am_i(ldap).await
                }
            })
            .await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            connection.connects.load(Ordering::SeqCst),
            2,
            "reconnected and rebound"
        );

        let calls = AtomicU32::new(0);
        let outcome: Result<(), _> = connection
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(LdapError::EndOfStream) }
            })
            .await;
        assert!(
            matches!(outcome, Err(DirectoryError::Unreachable(_))),
            "{outcome:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "retried once, not more");
    }
}
