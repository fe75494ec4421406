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
    Finished { id: QueueId, outcomes: Vec<Outcome> },
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
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.launch_due();

            let wake = match self.due.first() {
                Some(&(at, _)) if self.in_flight < MAX_IN_FLIGHT && !self.stopping => {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                }
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = gauges.tick() => self.publish_gauges(),
                command = receiver.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.stopping = true;
                        // FIFO: once this commit is on disk, so is all before it.
                        let _ = self.spool.commit(Batch::default()).await;
                        let _ = reply.send(());
                        return;
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
            Command::Finished { id, outcomes } => self.finished(id, outcomes),
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
                    let outcomes = attempt(&delivery, body, &spool, &deliverer).await;
                    let _ = commands.send(Command::Finished {
                        id: delivery.id,
                        outcomes,
                    });
                }
                .instrument(span),
            );
        }
    }

    fn finished(&mut self, id: QueueId, outcomes: Vec<Outcome>) {
        self.in_flight -= 1;
        let max_age = self.settings.max_age.as_secs();
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

        // Book each pending recipient's outcome, in the order they were sent.
        let delivery = &mut entry.delivery;
        delivery.attempts += 1;
        let expired = now_secs().saturating_sub(delivery.created) >= max_age;
        let mut newly_failed: Vec<(Address, String, bool)> = Vec::new();
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
            let label = match &recipient.state {
                RecipientState::Delivered(_) => "delivered",
                RecipientState::Failed(_) => "failed",
                RecipientState::Pending(_) if expired => "failed",
                RecipientState::Pending(_) => "deferred",
            };
            crate::metrics::delivery(delivery.kind, delivery.direction, label);
            match &recipient.state {
                RecipientState::Failed(reason) => {
                    newly_failed.push((recipient.address.clone(), reason.clone(), false))
                }
                RecipientState::Pending(reason) if expired => {
                    let reason = format!(
                        "delivery expired after {} days: {}",
                        max_age / 86400,
                        reason.as_deref().unwrap_or("no attempt succeeded")
                    );
                    warn!(
                        queue_id = %delivery.id,
                        message_id = %delivery.message,
                        recipient = %recipient.address,
                        "Delivery expired."
                    );
                    recipient.state = RecipientState::Failed(reason.clone());
                    newly_failed.push((recipient.address.clone(), reason, true));
                }
                _ => {}
            }
        }

        // A DSN for what failed, to the reverse path; never for <>, never for
        // a DSN.
        let dsn = match (&delivery.reverse_path, delivery.kind) {
            (_, DeliveryKind::Dsn) | (ReversePath::Null, _) => {
                if !newly_failed.is_empty() && delivery.kind == DeliveryKind::Dsn {
                    error!(
                        queue_id = %delivery.id,
                        "A delivery status notification could not be delivered; dropped."
                    );
                }
                None
            }
            (ReversePath::Mailbox(to), kind) if !newly_failed.is_empty() => {
                Some((to.clone(), kind, delivery.clone()))
            }
            _ => None,
        };

        let done = delivery.pending().next().is_none();
        if done {
            self.remove(id, &mut batch);
        } else {
            let backoff = backoff(&self.settings, delivery.attempts);
            let at = now_ms() + backoff.as_millis() as u64;
            let delivery = delivery.clone();
            batch.put_deliveries.push(delivery.clone());
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.delivery = delivery;
            }
            self.reschedule(id, at);
        }

        if let Some((to, kind, failed_delivery)) = dsn {
            if kind == DeliveryKind::Journal {
                crate::metrics::journal_dsn_sent(failed_delivery.direction);
            }
            self.add_dsn(&to, kind, &failed_delivery, &newly_failed, &mut batch);
        }
        self.spool.submit(batch);
    }

    fn add_dsn(
        &mut self,
        to: &Address,
        kind: DeliveryKind,
        failed: &Delivery,
        recipients: &[(Address, String, bool)],
        batch: &mut Batch,
    ) {
        let body = match self.spool.body(failed.body) {
            Ok(Some(body)) => body,
            _ => Vec::new(),
        };
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
            .map(|(address, reason, expired)| FailedRecipient {
                address,
                reason,
                expired: *expired,
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
            message: &body,
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

/// One attempt of one delivery, to its pending recipients.
async fn attempt(
    delivery: &Delivery,
    body: Option<Arc<Vec<u8>>>,
    spool: &Spool,
    deliverer: &Deliverer,
) -> Vec<Outcome> {
    let recipients: Vec<Address> = delivery.pending().map(|r| r.address.clone()).collect();
    let hop = match NextHop::parse(&delivery.next_hop) {
        Ok(hop) => hop,
        Err(e) => return vec![Outcome::Deferred(format!("bad next hop: {e}")); recipients.len()],
    };

    let body = match body {
        Some(body) => body,
        None => {
            let spool = spool.clone();
            let id = delivery.body;
            match tokio::task::spawn_blocking(move || spool.body(id)).await {
                Ok(Ok(Some(body))) => Arc::new(body),
                Ok(Ok(None)) => {
                    error!(queue_id = %delivery.id, "Message body missing from the spool.");
                    return vec![Outcome::Deferred("body missing".into()); recipients.len()];
                }
                Ok(Err(e)) => return vec![Outcome::Deferred(e.to_string()); recipients.len()],
                Err(e) => return vec![Outcome::Deferred(e.to_string()); recipients.len()],
            }
        }
    };

    deliverer
        .deliver(&hop, &delivery.reverse_path, &recipients, &body)
        .await
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
