//! One SMTP session, from greeting to QUIT (RFC 5321 §4.1, §4.3).
//!
//! The session reads commands, keeps the transaction (MAIL, RCPTs), asks
//! `policy` about each recipient, reads the data with [`DataReader`], and
//! hands the finished transaction to [`Intake`]. Replies are buffered and
//! flushed only when no further command is already waiting, which is all
//! PIPELINING (RFC 2920) asks of a server.
//!
//! STARTTLS (RFC 3207) ends the session object: the caller wraps the socket
//! in TLS and starts a fresh session on it, so nothing said in clear text
//! survives the upgrade, neither state nor buffered input.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use policy::{Address, Direction, RecipientTargets, ReversePath, Route};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::command::{self, Command};
use super::data::{DataReader, Feed};
use crate::intake::{self, Envelope, Intake};
use crate::metrics::{self, Rejection};
use crate::resolver::Resolver;

/// RFC 5321 §4.5.3.2.7: the server waits five minutes for a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// RFC 5321 §4.5.3.2.5: three minutes for each block of data.
const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// Longest command line we read (RFC 5321 §4.5.3.1.4 says 512 with
/// extensions adding to it).
const MAX_COMMAND_LINE: usize = 4096;

/// Recipients per message, as Postfix's `smtpd_recipient_limit`.
pub const MAX_RECIPIENTS: usize = 1000;

/// Errors after which the session is closed, as Postfix's hard limit.
const MAX_ERRORS: usize = 20;

/// What a session needs from the server, shared by all sessions.
pub struct SessionContext {
    /// Our hostname, for the greeting and EHLO.
    pub hostname: String,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Routing and relay control.
    pub routing: policy::Routing,
    /// Where accepted transactions go.
    pub intake: Intake,
    /// Whether STARTTLS can be offered.
    pub tls_available: bool,
    /// Journal targets from the directory.
    pub resolver: Resolver,
}

/// How a session ended.
pub enum Ending<S> {
    /// The session is over; the socket may be dropped.
    Closed,
    /// The client asked for STARTTLS and was told to go ahead: wrap the
    /// socket and start a new session on it.
    StartTls(S),
}

struct Transaction {
    reverse_path: ReversePath,
    recipients: Vec<(Address, Route)>,
    /// Journal targets the directory holds for recipients (or the sender).
    found: Vec<RecipientTargets>,
    /// The envelope sender's targets were looked up (outbound).
    sender_looked_up: bool,
    /// MAIL carried SMTPUTF8.
    smtputf8: bool,
}

/// One session on one socket.
pub struct Session<'a, S> {
    stream: S,
    context: &'a SessionContext,
    client: IpAddr,
    direction: Direction,
    tls: bool,
    helo: Option<String>,
    esmtp: bool,
    transaction: Option<Transaction>,
    input: Vec<u8>,
    output: Vec<u8>,
    errors: usize,
    shutdown: watch::Receiver<bool>,
}

enum Step {
    Continue,
    Close,
    StartTls,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Session<'a, S> {
    /// A session on `stream` from `client`.
    pub fn new(
        stream: S,
        context: &'a SessionContext,
        client: IpAddr,
        tls: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Session<'a, S> {
        Session {
            stream,
            context,
            client,
            direction: context.routing.direction(client),
            tls,
            helo: None,
            esmtp: false,
            transaction: None,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
            errors: 0,
            shutdown,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self, greet: bool) -> std::io::Result<Ending<S>> {
        if greet {
            let greeting = format!("220 {} ESMTP mailjournal", self.context.hostname);
            self.reply(&greeting);
        }

        loop {
            let Some(line) = self.next_line().await? else {
                return Ok(Ending::Closed);
            };
            match self.command(&line).await? {
                Step::Continue => {}
                Step::Close => {
                    self.flush().await?;
                    return Ok(Ending::Closed);
                }
                Step::StartTls => {
                    self.flush().await?;
                    return Ok(Ending::StartTls(self.stream));
                }
            }
            if self.errors >= MAX_ERRORS {
                self.reply("421 4.7.0 Too many errors, closing connection");
                self.flush().await?;
                return Ok(Ending::Closed);
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> std::io::Result<Step> {
        let parsed = match command::parse(line) {
            Ok(parsed) => parsed,
            Err(reply) => {
                self.error(reply);
                return Ok(Step::Continue);
            }
        };

        match parsed {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail {
                reverse_path,
                declared_size,
                eight_bit: _,
                smtputf8,
            } => self.mail(reverse_path, declared_size, smtputf8),
            Command::Rcpt(recipient) => self.rcpt(recipient).await,
            Command::Data => return self.data().await,
            Command::Rset => {
                self.transaction = None;
                self.reply("250 2.0.0 Ok");
            }
            Command::Noop => self.reply("250 2.0.0 Ok"),
            Command::Quit => {
                self.reply("221 2.0.0 Bye");
                return Ok(Step::Close);
            }
            Command::Vrfy => self.reply("252 2.5.0 Cannot VRFY user, but will accept message"),
            Command::Expn => self.error("502 5.5.1 EXPN not available"),
            Command::Help => self.reply("214 2.0.0 See RFC 5321"),
            Command::StartTls => return Ok(self.starttls()),
            Command::Bdat(size) => return self.bdat(size).await,
            Command::Auth => self.error("502 5.5.1 AUTH not available"),
            Command::NotImplemented(verb) => {
                let _ = verb;
                self.error("502 5.5.1 Command not implemented");
            }
        }
        Ok(Step::Continue)
    }

    fn hello(&mut self, name: String, esmtp: bool) {
        self.transaction = None;
        self.esmtp = esmtp;
        self.helo = Some(name);
        if !esmtp {
            let reply = format!("250 {}", self.context.hostname);
            self.reply(&reply);
            return;
        }

        let mut lines = vec![
            self.context.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.context.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.context.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            let reply = format!("250{separator}{line}");
            self.reply(&reply);
        }
    }

    fn mail(&mut self, reverse_path: ReversePath, declared_size: Option<usize>, smtputf8: bool) {
        if self.transaction.is_some() {
            self.error("503 5.5.1 Nested MAIL command");
            return;
        }
        // RFC 1870 §6.2: refuse a declared size over the limit at once.
        if declared_size.is_some_and(|size| size > self.context.max_message_size) {
            self.error("552 5.3.4 Message size exceeds fixed maximum message size");
            return;
        }
        // RFC 6531 §3.6.3: a UTF-8 address needs SMTPUTF8 on MAIL.
        if !smtputf8 && !reverse_path.as_str().is_ascii() {
            self.error("553 5.6.7 SMTPUTF8 is required for this address");
            return;
        }
        self.transaction = Some(Transaction {
            reverse_path,
            recipients: Vec::new(),
            found: Vec::new(),
            sender_looked_up: false,
            smtputf8,
        });
        self.reply("250 2.1.0 Ok");
    }

    async fn rcpt(&mut self, recipient: Address) {
        let Some(transaction) = self.transaction.as_ref() else {
            self.error("503 5.5.1 Need MAIL command");
            return;
        };
        if !transaction.smtputf8 && !recipient.as_str().is_ascii() {
            self.error("553 5.6.7 SMTPUTF8 is required for this address");
            return;
        }
        if transaction.recipients.len() >= MAX_RECIPIENTS {
            metrics::rejected(self.direction, Rejection::TooManyRecipients);
            self.reply("452 4.5.3 Too many recipients");
            return;
        }

        let admitted = self.context.routing.admit(self.direction, &recipient);
        let route = match admitted {
            Ok(_)
                if self.direction == Direction::Inbound
                    && self.context.resolver.is_global_target(&recipient) =>
            {
                Err(policy::Refusal::ProtectedTarget)
            }
            other => other,
        };
        let route = match route {
            Ok(route) => route,
            Err(refusal) => {
                let reason = match refusal {
                    policy::Refusal::RelayDenied => Rejection::RelayDenied,
                    policy::Refusal::ProtectedTarget => Rejection::ProtectedTarget,
                };
                metrics::rejected(self.direction, reason);
                info!(
                    client = %self.client,
                    direction = %self.direction,
                    recipient = %recipient,
                    reply = refusal.reply(),
                    "Recipient refused."
                );
                self.error(refusal.reply());
                return;
            }
        };

        // Nothing is accepted without its journal targets (contract §4).
        match self.directory_targets(&recipient).await {
            Ok(found) => {
                if let Some(transaction) = self.transaction.as_mut() {
                    transaction.found.extend(found);
                    transaction.recipients.push((recipient, route));
                }
                self.reply("250 2.1.5 Ok");
            }
            Err(e) => {
                metrics::rejected(self.direction, Rejection::DirectoryUnavailable);
                warn!(
                    client = %self.client,
                    recipient = %recipient,
                    error = %e,
                    "Journal targets unknown: recipient deferred."
                );
                self.reply("451 4.4.3 Directory unavailable, try again later");
            }
        }
    }

    /// The directory's journal targets this recipient adds: its own inbound,
    /// the envelope sender's outbound (looked up once per transaction).
    async fn directory_targets(
        &mut self,
        recipient: &Address,
    ) -> Result<Vec<RecipientTargets>, crate::resolver::ResolveError> {
        let resolver = &self.context.resolver;
        if !resolver.active(self.direction) {
            return Ok(Vec::new());
        }
        resolver.global_targets(self.direction)?;

        let owner = match self.direction {
            Direction::Inbound => Some(recipient.clone()),
            Direction::Outbound => {
                let Some(transaction) = self.transaction.as_ref() else {
                    return Ok(Vec::new());
                };
                if transaction.sender_looked_up {
                    None
                } else {
                    transaction.reverse_path.mailbox().cloned()
                }
            }
        };
        let found = match &owner {
            Some(owner) => resolver.targets_of(self.direction, owner).await?,
            None => None,
        };
        if self.direction == Direction::Outbound {
            if let Some(transaction) = self.transaction.as_mut() {
                transaction.sender_looked_up = true;
            }
        }
        Ok(found.into_iter().collect())
    }

    async fn data(&mut self) -> std::io::Result<Step> {
        let Some(transaction) = self.transaction.take() else {
            self.error("503 5.5.1 Need MAIL command");
            return Ok(Step::Continue);
        };
        if transaction.recipients.is_empty() {
            self.error("554 5.5.1 No valid recipients");
            return Ok(Step::Continue);
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.flush().await?;

        let Some(reader) = self.read_data().await? else {
            info!(client = %self.client, "Client went away during DATA; nothing accepted.");
            return Ok(Step::Close);
        };
        if reader.oversize() {
            metrics::rejected(self.direction, Rejection::Oversize);
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(Step::Continue);
        }
        let normalised = reader.normalised();
        let message = reader.into_message();
        // RFC 5322 §2.3 has no NUL in a message, and no next hop without
        // BINARYMIME may be sent one: refuse before accepting responsibility.
        if message.contains(&0) {
            self.reply("554 5.6.0 Message contains NUL characters");
            return Ok(Step::Continue);
        }
        if intake::looping(&message) {
            metrics::rejected(self.direction, Rejection::Loop);
            self.reply("554 5.4.6 Too many hops, mail loop suspected");
            return Ok(Step::Continue);
        }

        let helo = self
            .helo
            .clone()
            .unwrap_or_else(|| format!("[{}]", self.client));
        let protocol = match (self.esmtp, self.tls) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, true) => "SMTPS",
            (false, false) => "SMTP",
        };
        // Resolved at RCPT already; a refresh since only changes the list.
        let resolved_globals = self
            .context
            .resolver
            .global_targets(self.direction)
            .unwrap_or_default();
        let envelope = Envelope {
            direction: self.direction,
            client: self.client,
            helo: &helo,
            protocol,
            reverse_path: &transaction.reverse_path,
            recipients: &transaction.recipients,
            resolved_globals: &resolved_globals,
            found: &transaction.found,
        };
        let size = message.len();
        match self.context.intake.accept(&envelope, message).await {
            Ok(id) => {
                metrics::accepted(self.direction);
                info!(
                    message_id = %id,
                    client = %self.client,
                    direction = %self.direction,
                    sender = %transaction.reverse_path,
                    recipients = transaction.recipients.len(),
                    size,
                    bare_line_ends_fixed = normalised,
                    "Message accepted."
                );
                let reply = format!("250 2.0.0 Ok: queued as {id}");
                self.reply(&reply);
            }
            Err(e) => {
                metrics::rejected(self.direction, Rejection::SpoolFailure);
                warn!(
                    client = %self.client,
                    error = %e,
                    "Message not spooled; client told to retry."
                );
                self.reply("451 4.3.0 Temporary failure writing the queue, try again later");
            }
        }
        Ok(Step::Continue)
    }

    /// Reads the data up to CRLF.CRLF; `None` if the client went away.
    async fn read_data(&mut self) -> std::io::Result<Option<DataReader>> {
        let mut reader = DataReader::new(self.context.max_message_size);
        loop {
            match reader.feed(&self.input) {
                Feed::Done { consumed } => {
                    self.input.drain(..consumed);
                    return Ok(Some(reader));
                }
                Feed::More { consumed } => {
                    self.input.drain(..consumed);
                }
            }
            if !self.read_more(DATA_BLOCK_TIMEOUT).await? {
                return Ok(None);
            }
        }
    }

    /// BDAT without CHUNKING: the chunk is read and dropped, so its bytes are
    /// never taken for commands, then refused.
    async fn bdat(&mut self, size: usize) -> std::io::Result<Step> {
        if size > self.context.max_message_size {
            self.reply("552 5.3.4 Chunk exceeds fixed maximum message size; closing");
            return Ok(Step::Close);
        }
        let mut left = size;
        loop {
            let take = left.min(self.input.len());
            self.input.drain(..take);
            left -= take;
            if left == 0 {
                break;
            }
            if !self.read_more(DATA_BLOCK_TIMEOUT).await? {
                return Ok(Step::Close);
            }
        }
        self.transaction = None;
        self.error("502 5.5.1 BDAT not available (no CHUNKING)");
        Ok(Step::Continue)
    }

    fn starttls(&mut self) -> Step {
        if !self.context.tls_available {
            self.error("502 5.5.1 STARTTLS not available");
            return Step::Continue;
        }
        if self.tls {
            self.error("503 5.5.1 TLS already active");
            return Step::Continue;
        }
        self.reply("220 2.0.0 Ready to start TLS");
        // RFC 3207 §5: whatever the client sent after STARTTLS in clear text
        // must not be read as commands after the handshake.
        self.input.clear();
        Step::StartTls
    }

    /// The next command line, CRLF included; `None` when the session ends.
    async fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut discarding = false;
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                if discarding {
                    self.error("500 5.5.2 Line too long");
                    discarding = false;
                    continue;
                }
                return Ok(Some(line));
            }
            if self.input.len() > MAX_COMMAND_LINE {
                self.input.clear();
                discarding = true;
            }

            self.flush().await?;
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                more = self.read_more(COMMAND_TIMEOUT) => {
                    if !more? {
                        return Ok(None);
                    }
                }
                _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                    self.reply("421 4.3.2 Service shutting down, try again later");
                    self.flush().await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads more input within `limit` (RFC 5321 §4.5.3.2). `false` when
    /// the client went away, or stayed silent and was told 421.
    async fn read_more(&mut self, limit: std::time::Duration) -> std::io::Result<bool> {
        match timeout(limit, self.stream.read_buf(&mut self.input)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.reply("421 4.4.2 Timeout, closing connection");
                self.flush().await?;
                Ok(false)
            }
        }
    }

    fn reply(&mut self, line: &str) {
        debug!(client = %self.client, reply = line, "Reply.");
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await?;
            self.output.clear();
        }
        Ok(())
    }
}

/// Shares the context among sessions.
pub type SharedContext = Arc<SessionContext>;
