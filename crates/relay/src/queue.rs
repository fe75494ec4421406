//! The queue manager: runs deliveries from the spool until each is paid.
//!
//! One task owns the state of every delivery in memory (the spool holds the
//! same on disk). It starts attempts when they are due, at most
//! [`MAX_IN_FLIGHT`] at once, and books their outcomes: delivered recipients
//! are done, refused ones get a DSN to the delivery's reverse path, deferred
//! ones wait `retry_initial`, doubling up to `retry_max`, until `max_age`
//! turns them into failures too. Outcomes go to the spool in the next group
//! commit; losing one in a crash only repeats an attempt.
//!
//! `mailjournal queue` talks to this task through [`QueueHandle`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use policy::{Address, ReversePath, Route};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn, Instrument};

use crate::deliver::{Deliverer, Outcome};
use crate::dsn::{self, DsnInput, FailedRecipient};
use crate::next_hop::NextHop;
use crate::spool::{
    now_ms, now_secs, Batch, Delivery, DeliveryKind, QueueId, Recipient, RecipientState, Spool,
};

/// Most delivery attempts under way at once.
pub const MAX_IN_FLIGHT: usize = 128;

/// How long a stopping gateway waits for attempts under way to finish.
const FINISH_LIMIT: Duration = Duration::from_secs(20);

/// What the queue manager needs to know of the configuration.
#[derive(Clone)]
pub struct QueueSettings {
    /// Our hostname, for DSNs.
    pub hostname: String,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Age past which a delivery fails.
    pub max_age: Duration,
    /// Routing, to send DSNs of originals the right way.
    pub routing: policy::Routing,
    /// Next hop of local recipients.
    pub inbound_next_hop: NextHop,
    /// Next hop of other recipients.
    pub outbound_next_hop: NextHop,
    /// Next hop of journal copies and their DSNs.
    pub journal_next_hop: NextHop,
}

enum Command {
    Enqueue(Vec<(Delivery, Option<Arc<Vec<u8>>>)>),
    Finished {
        id: QueueId,
        outcomes: Vec<Outcome>,
        /// The header block of what was sent, quoted by a DSN if one is due.
        headers: Vec<u8>,
    },
    Retry(Option<QueueId>, oneshot::Sender<usize>),
    Delete(QueueId, oneshot::Sender<usize>),
    List(oneshot::Sender<Vec<Delivery>>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the queue manager; cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl QueueHandle {
    /// Hands newly accepted deliveries over (already committed to the spool).
    pub fn enqueue(&self, deliveries: Vec<(Delivery, Option<Arc<Vec<u8>>>)>) {
        let _ = self.commands.send(Command::Enqueue(deliveries));
    }

    /// Makes one message or delivery (or all) due now; returns how many.
    pub async fn retry(&self, id: Option<QueueId>) -> usize {
        let (reply, wait) = oneshot::channel();
        let _ = self.commands.send(Command::Retry(id, reply));
        wait.await.unwrap_or(0)
    }

    /// Deletes a message's deliveries (or one delivery); returns how many.
    pub async fn delete(&self, id: QueueId) -> usize {
        let (reply, wait) = oneshot::channel();
        let _ = self.commands.send(Command::Delete(id, reply));
        wait.await.unwrap_or(0)
    }

    /// Every delivery in the queue.
    pub async fn list(&self) -> Vec<Delivery> {
        let (reply, wait) = oneshot::channel();
        let _ = self.commands.send(Command::List(reply));
        wait.await.unwrap_or_default()
    }

    /// Stops starting attempts and waits until booked outcomes are on disk.
    pub async fn shutdown(&self) {
        let (reply, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).is_ok() {
            let _ = wait.await;
        }
    }
}

struct Entry {
    delivery: Delivery,
    body: Option<Arc<Vec<u8>>>,
    in_flight: bool,
    deleted: bool,
}

struct Manager {
    settings: QueueSettings,
    spool: Spool,
    deliverer: Arc<Deliverer>,
    entries: HashMap<QueueId, Entry>,
    body_refs: HashMap<QueueId, usize>,
    due: BTreeSet<(u64, QueueId)>,
    in_flight: usize,
    commands: mpsc::UnboundedSender<Command>,
    stopping: bool,
}

/// Starts the queue manager with what the spool holds.
pub fn start(
    settings: QueueSettings,
    spool: Spool,
    deliverer: Arc<Deliverer>,
) -> Result<QueueHandle, crate::spool::SpoolError> {
    let stored = spool.deliveries()?;
    let orphans = spool.orphan_bodies(&stored)?;
    if !orphans.is_empty() {
        spool.submit(Batch {
            remove_bodies: orphans,
            ..Batch::default()
        });
    }

    let (commands, receiver) = mpsc::unbounded_channel();
    let mut manager = Manager {
        settings,
        spool,
        deliverer,
        entries: HashMap::new(),
        body_refs: HashMap::new(),
        due: BTreeSet::new(),
        in_flight: 0,
        commands: commands.clone(),
        stopping: false,
    };
    if !stored.is_empty() {
        info!(
            deliveries = stored.len(),
            "Resuming deliveries from the spool."
        );
    }
    for delivery in stored {
        manager.insert(delivery, None);
    }
    tokio::spawn(manager.run(receiver));
    Ok(QueueHandle { commands })
}

impl Manager {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Command>) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut stop: Option<(oneshot::Sender<()>, tokio::time::Instant)> = None;
        loop {
            // Stopping: wait for attempts under way, so that what they
            // delivered is booked and not sent again after the restart.
            if let Some((_, deadline)) = &stop {
                if self.in_flight == 0 || tokio::time::Instant::now() >= *deadline {
                    if self.in_flight > 0 {
                        warn!(
                            in_flight = self.in_flight,
                            "Stopping with deliveries under way; they are tried again at start."
                        );
                    }
                    // FIFO: once this commit is on disk, so is all before it.
                    let _ = self.spool.commit(Batch::default()).await;
                    if let Some((reply, _)) = stop.take() {
                        let _ = reply.send(());
                    }
                    return;
                }
            }
            self.launch_due();

            let wake = match (self.due.first(), &stop) {
                (_, Some((_, deadline))) => {
                    deadline.saturating_duration_since(tokio::time::Instant::now())
                }
                (Some(&(at, _)), None) if self.in_flight < MAX_IN_FLIGHT => {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                }
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = housekeeping.tick() => {
                    self.publish_gauges();
                    self.deliverer.expire_idle();
                }
                command = receiver.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.stopping = true;
                        stop = Some((reply, tokio::time::Instant::now() + FINISH_LIMIT));
                    }
                    Some(command) => self.handle(command),
                    None => return,
                },
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Queue depth and the age of the oldest delivery, for `/metrics`.
    fn publish_gauges(&self) {
        let oldest = self.entries.values().map(|e| e.delivery.created).min();
        let age = oldest.map_or(0, |created| now_secs().saturating_sub(created));
        crate::metrics::queue(self.entries.len(), age);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Enqueue(deliveries) => {
                for (delivery, body) in deliveries {
                    self.insert(delivery, body);
                }
            }
            Command::Finished {
                id,
                outcomes,
                headers,
            } => self.finished(id, outcomes, &headers),
            Command::Retry(id, reply) => {
                let now = now_ms();
                let chosen: Vec<QueueId> = self
                    .entries
                    .values()
                    .filter(|e| id.is_none_or(|id| e.delivery.id == id || e.delivery.message == id))
                    .map(|e| e.delivery.id)
                    .collect();
                for id in &chosen {
                    self.reschedule(*id, now);
                }
                let _ = reply.send(chosen.len());
            }
            Command::Delete(id, reply) => {
                let chosen: Vec<QueueId> = self
                    .entries
                    .values()
                    .filter(|e| e.delivery.id == id || e.delivery.message == id)
                    .map(|e| e.delivery.id)
                    .collect();
                let mut batch = Batch::default();
                for delivery_id in &chosen {
                    info!(queue_id = %delivery_id, "Delivery deleted by the operator.");
                    if self.entries.get(delivery_id).is_some_and(|e| e.in_flight) {
                        if let Some(entry) = self.entries.get_mut(delivery_id) {
                            entry.deleted = true;
                        }
                        batch.remove_deliveries.push(*delivery_id);
                    } else {
                        self.remove(*delivery_id, &mut batch);
                    }
                }
                self.spool.submit(batch);
                let _ = reply.send(chosen.len());
            }
            Command::List(reply) => {
                let mut all: Vec<Delivery> =
                    self.entries.values().map(|e| e.delivery.clone()).collect();
                all.sort_by_key(|d| d.id);
                let _ = reply.send(all);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn insert(&mut self, delivery: Delivery, body: Option<Arc<Vec<u8>>>) {
        *self.body_refs.entry(delivery.body).or_default() += 1;
        self.due.insert((delivery.next_attempt_ms, delivery.id));
        self.entries.insert(
            delivery.id,
            Entry {
                delivery,
                body,
                in_flight: false,
                deleted: false,
            },
        );
    }

    fn reschedule(&mut self, id: QueueId, at: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        self.due.remove(&(entry.delivery.next_attempt_ms, id));
        entry.delivery.next_attempt_ms = at;
        if !entry.in_flight {
            self.due.insert((at, id));
        }
    }

    /// Drops a delivery, and its body when nothing else needs it.
    fn remove(&mut self, id: QueueId, batch: &mut Batch) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.due.remove(&(entry.delivery.next_attempt_ms, id));
        batch.remove_deliveries.push(id);
        let body = entry.delivery.body;
        if let Some(count) = self.body_refs.get_mut(&body) {
            *count -= 1;
            if *count == 0 {
                self.body_refs.remove(&body);
                batch.remove_bodies.push(body);
            }
        }
    }

    fn launch_due(&mut self) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        while self.in_flight < MAX_IN_FLIGHT {
            let Some(&(at, id)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.remove(&(at, id));
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.in_flight = true;
            self.in_flight += 1;

            let delivery = entry.delivery.clone();
            // Keep the bytes in memory only for the first attempt; a retry
            // reads them from the spool, so a long queue does not fill memory.
            let body = entry.body.take();
            let spool = self.spool.clone();
            let deliverer = Arc::clone(&self.deliverer);
            let commands = self.commands.clone();
            let span = tracing::info_span!(
                "delivery",
                queue_id = %delivery.id,
                message_id = %delivery.message,
                kind = delivery.kind.as_str(),
                next_hop = %delivery.next_hop,
                attempt = delivery.attempts + 1,
            );
            tokio::spawn(
                async move {
                    let (outcomes, headers) = attempt(&delivery, body, &spool, &deliverer).await;
                    let _ = commands.send(Command::Finished {
                        id: delivery.id,
                        outcomes,
                        headers,
                    });
                }
                .instrument(span),
            );
        }
    }

    fn finished(&mut self, id: QueueId, outcomes: Vec<Outcome>, headers: &[u8]) {
        self.in_flight -= 1;
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.in_flight = false;
        let mut batch = Batch::default();
        if entry.deleted {
            self.remove(id, &mut batch);
            self.spool.submit(batch);
            return;
        }

        let failed = book_attempt(&mut entry.delivery, outcomes, self.settings.max_age);
        let delivery = entry.delivery.clone();

        // Done, or back in line after the backoff.
        if delivery.pending().next().is_none() {
            self.remove(id, &mut batch);
        } else {
            let backoff = backoff(&self.settings, delivery.attempts);
            self.reschedule(id, now_ms() + backoff.as_millis() as u64);
            batch.put_deliveries.push(delivery.clone());
        }

        if !failed.is_empty() {
            self.bounce(&delivery, &failed, headers, &mut batch);
        }
        self.spool.submit(batch);
    }

    /// A DSN for what failed, to the delivery's reverse path: the sender of
    /// an original, the NDR address of a journal copy; never to `<>`, never
    /// for a DSN.
    fn bounce(
        &mut self,
        delivery: &Delivery,
        failed: &[FailedRcpt],
        headers: &[u8],
        batch: &mut Batch,
    ) {
        match (&delivery.reverse_path, delivery.kind) {
            (_, DeliveryKind::Dsn) => error!(
                queue_id = %delivery.id,
                "A delivery status notification could not be delivered; dropped."
            ),
            (ReversePath::Null, _) => {}
            (ReversePath::Mailbox(to), kind) => {
                if kind == DeliveryKind::Journal {
                    crate::metrics::journal_dsn_sent(delivery.direction);
                }
                self.add_dsn(to, kind, delivery, failed, headers, batch);
            }
        }
    }

    fn add_dsn(
        &mut self,
        to: &Address,
        kind: DeliveryKind,
        failed: &Delivery,
        recipients: &[FailedRcpt],
        headers: &[u8],
        batch: &mut Batch,
    ) {
        let id = self.spool.next_id();
        let unique = id.to_string();
        let date = rfc5322_now();
        let arrival = rfc5322_date(failed.created);
        let remote_host = match NextHop::parse(&failed.next_hop) {
            Ok(NextHop::Smtp { host, .. }) => Some(host),
            _ => None,
        };
        let failed_list: Vec<FailedRecipient<'_>> = recipients
            .iter()
            .map(|f| FailedRecipient {
                address: &f.address,
                reason: &f.reason,
                expired: f.expired,
            })
            .collect();
        let bytes = dsn::render(&DsnInput {
            hostname: &self.settings.hostname,
            unique: &unique,
            date: &date,
            to,
            remote_mta: remote_host.as_deref(),
            arrival_date: &arrival,
            failed: &failed_list,
            message: headers,
        });

        // Journal copies bounce to the NDR address by the journal's way.
        let next_hop = match kind {
            DeliveryKind::Journal => &self.settings.journal_next_hop,
            _ => match self.settings.routing.route(to) {
                Route::Inbound => &self.settings.inbound_next_hop,
                Route::Outbound => &self.settings.outbound_next_hop,
            },
        };
        let dsn = Delivery {
            id,
            message: failed.message,
            body: id,
            kind: DeliveryKind::Dsn,
            direction: failed.direction,
            next_hop: next_hop.to_string(),
            reverse_path: ReversePath::Null,
            recipients: vec![Recipient {
                address: to.clone(),
                state: RecipientState::Pending(None),
            }],
            created: now_secs(),
            attempts: 0,
            next_attempt_ms: 0,
            size: bytes.len() as u64,
        };
        info!(
            queue_id = %id,
            message_id = %failed.message,
            failed_delivery = %failed.id,
            to = %to,
            "DSN queued."
        );
        let bytes = Arc::new(bytes);
        batch.put_bodies.push((id, Arc::clone(&bytes)));
        batch.put_deliveries.push(dsn.clone());
        self.insert(dsn, Some(bytes));
    }
}

/// A recipient that failed in this attempt, for the DSN.
struct FailedRcpt {
    address: Address,
    reason: String,
    expired: bool,
}

/// Books one attempt's outcomes on the delivery's pending recipients, in the
/// order they were sent, turning deferrals past `max_age` into failures.
/// Returns the recipients that failed now.
fn book_attempt(
    delivery: &mut Delivery,
    outcomes: Vec<Outcome>,
    max_age: Duration,
) -> Vec<FailedRcpt> {
    delivery.attempts += 1;
    let expired = now_secs().saturating_sub(delivery.created) >= max_age.as_secs();
    let mut failed = Vec::new();
    let mut outcomes = outcomes.into_iter();
    for recipient in delivery.recipients.iter_mut() {
        if !matches!(recipient.state, RecipientState::Pending(_)) {
            continue;
        }
        let outcome = outcomes
            .next()
            .unwrap_or_else(|| Outcome::Deferred("no outcome reported".into()));
        recipient.state = book(outcome);
        log_outcome(&delivery.id, &delivery.message, delivery.kind, recipient);

        match &recipient.state {
            RecipientState::Failed(reason) => failed.push(FailedRcpt {
                address: recipient.address.clone(),
                reason: reason.clone(),
                expired: false,
            }),
            RecipientState::Pending(reason) if expired => {
                let reason = format!(
                    "delivery expired after {} days: {}",
                    max_age.as_secs() / 86400,
                    reason.as_deref().unwrap_or("no attempt succeeded")
                );
                warn!(
                    queue_id = %delivery.id,
                    message_id = %delivery.message,
                    recipient = %recipient.address,
                    "Delivery expired."
                );
                recipient.state = RecipientState::Failed(reason.clone());
                failed.push(FailedRcpt {
                    address: recipient.address.clone(),
                    reason,
                    expired: true,
                });
            }
            _ => {}
        }
        let label = match recipient.state {
            RecipientState::Delivered(_) => "delivered",
            RecipientState::Failed(_) => "failed",
            RecipientState::Pending(_) => "deferred",
        };
        crate::metrics::delivery(delivery.kind, delivery.direction, label);
    }
    failed
}

fn book(outcome: Outcome) -> RecipientState {
    match outcome {
        Outcome::Delivered(reply) => RecipientState::Delivered(reply),
        Outcome::Failed(reply) => RecipientState::Failed(reply),
        Outcome::Deferred(reason) => RecipientState::Pending(Some(reason)),
    }
}

fn log_outcome(id: &QueueId, message: &QueueId, kind: DeliveryKind, recipient: &Recipient) {
    match &recipient.state {
        RecipientState::Delivered(reply) => info!(
            queue_id = %id, message_id = %message, kind = kind.as_str(),
            recipient = %recipient.address, reply = %reply, "Delivered."
        ),
        RecipientState::Failed(reply) => warn!(
            queue_id = %id, message_id = %message, kind = kind.as_str(),
            recipient = %recipient.address, reply = %reply, "Delivery failed."
        ),
        RecipientState::Pending(reason) => info!(
            queue_id = %id, message_id = %message, kind = kind.as_str(),
            recipient = %recipient.address, reason = reason.as_deref().unwrap_or(""),
            "Delivery deferred."
        ),
    }
}

/// `retry_initial`, doubling per attempt, at most `retry_max`.
fn backoff(settings: &QueueSettings, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    settings
        .retry_initial
        .saturating_mul(factor)
        .min(settings.retry_max)
}

/// One attempt of one delivery, to its pending recipients: the outcomes and
/// the header block of what was sent.
async fn attempt(
    delivery: &Delivery,
    body: Option<Arc<Vec<u8>>>,
    spool: &Spool,
    deliverer: &Deliverer,
) -> (Vec<Outcome>, Vec<u8>) {
    let count = delivery.pending().count();
    match load_body(delivery, body, spool).await {
        Ok(body) => {
            let recipients: Vec<Address> = delivery.pending().map(|r| r.address.clone()).collect();
            let headers = policy::report::header_block(&body).to_vec();
            let outcomes = match NextHop::parse(&delivery.next_hop) {
                Ok(hop) => {
                    deliverer
                        .deliver(&hop, &delivery.reverse_path, &recipients, &body)
                        .await
                }
                Err(e) => vec![Outcome::Deferred(format!("bad next hop: {e}")); count],
            };
            (outcomes, headers)
        }
        Err(reason) => (vec![Outcome::Deferred(reason); count], Vec::new()),
    }
}

/// The bytes to send: kept from acceptance for a first attempt, read from
/// the spool for a retry.
async fn load_body(
    delivery: &Delivery,
    body: Option<Arc<Vec<u8>>>,
    spool: &Spool,
) -> Result<Arc<Vec<u8>>, String> {
    if let Some(body) = body {
        return Ok(body);
    }
    let spool = spool.clone();
    let id = delivery.body;
    match tokio::task::spawn_blocking(move || spool.body(id)).await {
        Ok(Ok(Some(body))) => Ok(Arc::new(body)),
        Ok(Ok(None)) => {
            error!(queue_id = %delivery.id, "Message body missing from the spool.");
            Err("body missing from the spool".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The current time as an RFC 5322 date.
pub fn rfc5322_now() -> String {
    rfc5322_date(now_secs())
}

/// Seconds since the epoch as an RFC 5322 date in UTC.
pub fn rfc5322_date(secs: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let text = httpdate::fmt_http_date(time);
    text.strip_suffix(" GMT")
        .map(|t| format!("{t} +0000"))
        .unwrap_or(text)
}
