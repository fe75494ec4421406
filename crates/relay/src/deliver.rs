//! Delivery attempts: one transaction to one next hop.
//!
//! SMTP goes through `lettre`'s connection type, which brings the greeting,
//! EHLO, STARTTLS (rustls) and reply parsing. Three of its habits are worked
//! around here, because each loses or alters mail (see the field cases):
//! its `Address` refuses local parts over 64 octets, so MAIL and RCPT are
//! written as raw commands; it ends the data with CRLF.CRLF even when the
//! data already ends in CRLF, so the last CRLF is handed over as part of the
//! terminator; and its timeout does not cover the greeting, so every step
//! runs under a `tokio` timeout of ours.
//!
//! Connections that finished a transaction cleanly are kept for a short while
//! and reused for the next delivery to the same next hop.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use policy::{Address, ReversePath};
use tokio::time::timeout;

use crate::next_hop::{NextHop, TlsMode};

/// How long an idle connection is kept for reuse.
const IDLE_KEEP: Duration = Duration::from_secs(10);

/// Most idle connections kept per next hop.
const IDLE_PER_HOP: usize = 32;

/// The outcome for one recipient of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop took responsibility; its reply.
    Delivered(String),
    /// Try again later; why.
    Deferred(String),
    /// Refused for good; the reply.
    Failed(String),
}

/// Time limits of one attempt.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connect, greeting, EHLO, STARTTLS.
    pub connect: Duration,
    /// Each command, and the data with its final reply.
    pub command: Duration,
}

/// Delivers to next hops; holds the idle connection pool.
pub struct Deliverer {
    hello: ClientId,
    limits: Limits,
    idle: Mutex<HashMap<String, Vec<(AsyncSmtpConnection, Instant)>>>,
}

impl Deliverer {
    /// A deliverer that greets as `hostname`.
    pub fn new(hostname: &str, limits: Limits) -> Deliverer {
        Deliverer {
            hello: ClientId::Domain(hostname.to_owned()),
            limits,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// One attempt: returns an outcome per recipient, in order.
    pub async fn deliver(
        &self,
        hop: &NextHop,
        reverse_path: &ReversePath,
        recipients: &[Address],
        body: &[u8],
    ) -> Vec<Outcome> {
        match hop {
            NextHop::Maildir { path } => {
                deliver_maildir(path, reverse_path, recipients, body).await
            }
            NextHop::Smtp { host, port, tls } => {
                self.deliver_smtp(hop, host, *port, *tls, reverse_path, recipients, body)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver_smtp(
        &self,
        hop: &NextHop,
        host: &str,
        port: u16,
        tls: TlsMode,
        reverse_path: &ReversePath,
        recipients: &[Address],
        body: &[u8],
    ) -> Vec<Outcome> {
        let key = hop.to_string();

        // A pooled connection first; if the server dropped it, a fresh one.
        // Nothing has been handed over at MAIL, so trying again is safe.
        if let Some(mut connection) = self.take_idle(&key) {
            match self
                .transaction(&mut connection, reverse_path, recipients, body)
                .await
            {
                Ok(outcomes) => {
                    self.put_idle(key, connection);
                    return outcomes;
                }
                Err(Stage::BeforeMail(_)) => close(connection).await,
                Err(stage) => {
                    close(connection).await;
                    return stage.into_outcomes(recipients.len());
                }
            }
        }

        let mut connection = match self.connect(host, port, tls).await {
            Ok(connection) => connection,
            Err(reason) => {
                return vec![Outcome::Deferred(reason); recipients.len()];
            }
        };
        match self
            .transaction(&mut connection, reverse_path, recipients, body)
            .await
        {
            Ok(outcomes) => {
                self.put_idle(key, connection);
                outcomes
            }
            Err(stage) => {
                close(connection).await;
                stage.into_outcomes(recipients.len())
            }
        }
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
        tls: TlsMode,
    ) -> Result<AsyncSmtpConnection, String> {
        let limit = self.limits.connect;
        let tls_parameters = || {
            // Like Postfix's "may" and "encrypt" levels: encryption without
            // certificate checks, since internal hops often use private CAs.
            TlsParameters::builder(host.to_owned())
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true)
                .build_rustls()
                .map_err(|e| format!("TLS setup for {host}: {e}"))
        };
        let implicit = match tls {
            TlsMode::Implicit => Some(tls_parameters()?),
            _ => None,
        };

        let connecting = AsyncSmtpConnection::connect_tokio1(
            (host, port),
            Some(limit),
            &self.hello,
            implicit,
            None,
        );
        let mut connection = match timeout(limit, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(format!("connect to {host}:{port}: {e}")),
            Err(_) => {
                return Err(format!(
                    "connect to {host}:{port}: no greeting within {}s",
                    limit.as_secs()
                ))
            }
        };

        let wants_starttls = matches!(tls, TlsMode::Opportunistic | TlsMode::Required);
        if wants_starttls && connection.can_starttls() {
            let upgrade = connection.starttls(tls_parameters()?, &self.hello);
            match timeout(limit, upgrade).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("STARTTLS with {host}:{port}: {e}")),
                Err(_) => return Err(format!("STARTTLS with {host}:{port}: timed out")),
            }
        } else if tls == TlsMode::Required {
            close(connection).await;
            return Err(format!(
                "{host}:{port} does not offer STARTTLS, which is required"
            ));
        }
        Ok(connection)
    }

    /// MAIL, RCPT for each recipient, DATA. Per-recipient outcomes, or the
    /// stage at which the session broke.
    async fn transaction(
        &self,
        connection: &mut AsyncSmtpConnection,
        reverse_path: &ReversePath,
        recipients: &[Address],
        body: &[u8],
    ) -> Result<Vec<Outcome>, Stage> {
        let limit = self.limits.command;
        let info = connection.server_info().clone();

        let mut mail = format!("MAIL FROM:<{}>", reverse_path.as_str());
        if info.supports_feature(Extension::EightBitMime) && !body.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        let utf8 =
            !reverse_path.as_str().is_ascii() || recipients.iter().any(|r| !r.as_str().is_ascii());
        if utf8 && info.supports_feature(Extension::SmtpUtfEight) {
            mail.push_str(" SMTPUTF8");
        }
        match timeout(limit, connection.command(Raw(mail))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_permanent() => {
                return Ok(vec![Outcome::Failed(reply_text(&e)); recipients.len()])
            }
            Ok(Err(e)) if e.is_transient() => {
                return Ok(vec![Outcome::Deferred(reply_text(&e)); recipients.len()])
            }
            Ok(Err(e)) => return Err(Stage::BeforeMail(format!("MAIL: {e}"))),
            Err(_) => return Err(Stage::BeforeMail("MAIL: timed out".into())),
        }

        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let rcpt = format!("RCPT TO:<{}>", recipient.as_str());
            match timeout(limit, connection.command(Raw(rcpt))).await {
                Ok(Ok(_)) => outcomes.push(None),
                Ok(Err(e)) if e.is_permanent() => {
                    outcomes.push(Some(Outcome::Failed(reply_text(&e))))
                }
                Ok(Err(e)) if e.is_transient() => {
                    outcomes.push(Some(Outcome::Deferred(reply_text(&e))))
                }
                Ok(Err(e)) => return Err(Stage::BeforeData(format!("RCPT: {e}"))),
                Err(_) => return Err(Stage::BeforeData("RCPT: timed out".into())),
            }
        }

        if outcomes.iter().all(Option::is_some) {
            // Nobody accepted: close the transaction and keep the session.
            let _ = timeout(limit, connection.command(Raw("RSET".into()))).await;
            return Ok(outcomes.into_iter().flatten().collect());
        }

        match timeout(limit, connection.command(Raw("DATA".into()))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_permanent() || e.is_transient() => {
                let failed = |_| {
                    if e.is_permanent() {
                        Outcome::Failed(reply_text(&e))
                    } else {
                        Outcome::Deferred(reply_text(&e))
                    }
                };
                return Ok(outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| failed(())))
                    .collect());
            }
            Ok(Err(e)) => return Err(Stage::BeforeData(format!("DATA: {e}"))),
            Err(_) => return Err(Stage::BeforeData("DATA: timed out".into())),
        }

        // lettre writes CRLF.CRLF after the data; our data always ends in
        // CRLF, which is the first half of that terminator (RFC 5321 §4.1.1.4).
        let data = body.strip_suffix(b"\r\n").unwrap_or(body);
        let accepted = match timeout(limit, connection.message(data)).await {
            Ok(Ok(response)) => Outcome::Delivered(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(e)) if e.is_permanent() => Outcome::Failed(reply_text(&e)),
            Ok(Err(e)) if e.is_transient() => Outcome::Deferred(reply_text(&e)),
            Ok(Err(e)) => return Err(Stage::AfterData(format!("after data: {e}"))),
            Err(_) => return Err(Stage::AfterData("no reply to the final dot".into())),
        };
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| accepted.clone()))
            .collect())
    }

    /// Closes idle connections kept longer than [`IDLE_KEEP`], so a next hop
    /// that gets no more traffic is not held open.
    pub fn expire_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for list in idle.values_mut() {
                list.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
            }
            idle.retain(|_, list| !list.is_empty());
        }
    }

    fn take_idle(&self, key: &str) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((connection, since)) = list.pop() {
            if since.elapsed() < IDLE_KEEP && !connection.has_broken() {
                return Some(connection);
            }
        }
        None
    }

    fn put_idle(&self, key: String, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            list.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
            if list.len() < IDLE_PER_HOP {
                list.push((connection, Instant::now()));
            }
        }
    }
}

/// Ends a session politely if the server still answers, but never waits
/// long for it: a next hop that stalls must not hold the attempt (case C17).
async fn close(mut connection: AsyncSmtpConnection) {
    let _ = timeout(Duration::from_secs(2), connection.abort()).await;
}

/// Where an SMTP session broke down.
enum Stage {
    /// Before MAIL was accepted: nothing handed over.
    BeforeMail(String),
    /// Before DATA was accepted: nothing handed over.
    BeforeData(String),
    /// After the data went out with no usable reply: the next hop may or may
    /// not have the message (RFC 1047); we must try again and risk a duplicate.
    AfterData(String),
}

impl Stage {
    fn into_outcomes(self, count: usize) -> Vec<Outcome> {
        let reason = match self {
            Stage::BeforeMail(r) | Stage::BeforeData(r) | Stage::AfterData(r) => r,
        };
        vec![Outcome::Deferred(reason); count]
    }
}

/// A command written exactly as given, CRLF added.
struct Raw(String);

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

fn reply_text(error: &lettre::transport::smtp::Error) -> String {
    error.to_string()
}

/// Delivers into `root/<recipient>/` Maildirs (tmp, fsync, rename to new).
async fn deliver_maildir(
    root: &Path,
    reverse_path: &ReversePath,
    recipients: &[Address],
    body: &[u8],
) -> Vec<Outcome> {
    let root = root.to_path_buf();
    let reverse_path = reverse_path.clone();
    let recipients = recipients.to_vec();
    let body = Arc::new(body.to_vec());
    let work = tokio::task::spawn_blocking(move || {
        recipients
            .iter()
            .map(|r| match write_maildir(&root, &reverse_path, r, &body) {
                Ok(name) => Outcome::Delivered(format!("maildir {name}")),
                Err(e) => Outcome::Deferred(format!("maildir {}: {e}", root.display())),
            })
            .collect::<Vec<_>>()
    });
    match work.await {
        Ok(outcomes) => outcomes,
        Err(e) => vec![Outcome::Deferred(format!("maildir writer: {e}"))],
    }
}

fn write_maildir(
    root: &Path,
    reverse_path: &ReversePath,
    recipient: &Address,
    body: &[u8],
) -> std::io::Result<String> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);

    let folder = root.join(folder_name(recipient));
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(folder.join(sub))?;
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{}P{}Q{}.mailjournal",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );

    // What a local delivery agent adds: who sent it, for whom it was.
    let tmp = folder.join("tmp").join(&name);
    let mut file = std::fs::File::create(&tmp)?;
    write!(file, "Return-Path: <{}>\r\n", reverse_path.as_str())?;
    write!(file, "Delivered-To: {}\r\n", recipient.as_str())?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, folder.join("new").join(&name))?;
    std::fs::File::open(folder.join("new"))?.sync_all()?;
    Ok(name)
}

/// A folder name for a recipient that cannot climb out of the root: every
/// byte outside a safe set is written as `%XX`, and so is a leading dot.
fn folder_name(recipient: &Address) -> String {
    let mut name = String::new();
    for (i, b) in recipient.key().to_ascii_lowercase().bytes().enumerate() {
        let safe = b.is_ascii_alphanumeric() || b"@-_+=".contains(&b) || (b == b'.' && i > 0);
        if safe {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_cannot_escape_the_maildir_root() {
        let hostile = Address::parse("\"../../etc\"@example.com", false).expect("address");
        let name = folder_name(&hostile);
        assert!(!name.contains('/'), "{name}");
        assert!(!name.starts_with('.'), "{name}");
        let plain = Address::parse("Bob@Example.com", false).expect("address");
        assert_eq!(folder_name(&plain), "bob@example.com");
    }
}
