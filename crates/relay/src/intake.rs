//! Intake: turns an accepted transaction into spool entries.
//!
//! Called between the client's final dot and our 250. It asks `policy` what
//! the message owes — the original to each next hop, one journal copy to the
//! journal targets from the direction's NDR address — prepends our trace
//! field (RFC 5321 §4.4), renders the journal copy, and commits all of it to
//! the spool in one transaction. Only when that returns is the client told
//! the message is ours.

use std::net::IpAddr;
use std::sync::Arc;

use policy::report::{
    render_copy, render_envelope, ReportRecipient, DIRECTION_FIELD, REPORT_FIELD,
};
use policy::{
    headers, Address, Direction, JournalFormat, JournalRules, RecipientTargets, ReportInput,
    ReversePath, Route,
};
use tracing::info;

use crate::config::Settings;
use crate::next_hop::NextHop;
use crate::queue::{rfc5322_now, QueueHandle};
use crate::spool::{
    now_secs, Batch, Delivery, DeliveryKind, QueueId, Recipient, RecipientState, Spool, SpoolError,
};

/// Most recipients in one outgoing transaction (Postfix uses 50).
const RECIPIENTS_PER_DELIVERY: usize = 100;

/// Most `Received:` fields before a message is taken for a loop (RFC 5321 §6.3).
pub const MAX_HOPS: usize = 100;

/// An accepted transaction, as the session hands it over.
pub struct Envelope<'a> {
    /// Direction, from the client's network.
    pub direction: Direction,
    /// The client's address.
    pub client: IpAddr,
    /// The client's EHLO/HELO name.
    pub helo: &'a str,
    /// Whether the session used TLS and ESMTP.
    pub protocol: &'static str,
    /// MAIL FROM.
    pub reverse_path: &'a ReversePath,
    /// RCPT TO, each with its route.
    pub recipients: &'a [(Address, Route)],
    /// Resolved `ldap:///` global journal targets of the direction.
    pub resolved_globals: &'a [Address],
    /// Journal targets the directory holds per recipient (or sender).
    pub found: &'a [RecipientTargets],
}

/// What intake needs of the configuration.
pub struct Intake {
    hostname: String,
    format: JournalFormat,
    report_sender: Option<Address>,
    rules: JournalRules,
    inbound_next_hop: NextHop,
    outbound_next_hop: NextHop,
    journal_next_hop: NextHop,
    spool: Spool,
    queue: QueueHandle,
}

impl Intake {
    /// Intake for `settings`, writing to `spool` and handing to `queue`.
    pub fn new(settings: &Settings, spool: Spool, queue: QueueHandle) -> Intake {
        Intake {
            hostname: settings.server.hostname.clone(),
            format: settings.journal.format,
            report_sender: settings.journal.report_sender.clone(),
            rules: settings.journal.rules.clone(),
            inbound_next_hop: settings.routing.inbound_next_hop.clone(),
            outbound_next_hop: settings.routing.outbound_next_hop.clone(),
            journal_next_hop: settings.routing.journal_next_hop.clone(),
            spool,
            queue,
        }
    }

    /// Spools the message and everything it owes; returns its queue id once
    /// all of it is on disk.
    pub async fn accept(
        &self,
        envelope: &Envelope<'_>,
        data: Vec<u8>,
    ) -> Result<QueueId, SpoolError> {
        let id = self.spool.next_id();
        let created = now_secs();
        let date = rfc5322_now();

        // The trace field goes in front of the data where it lies, rather
        // than into a second copy of a message that may be tens of MiB.
        // TODO: the journal copy is still a full second copy of the message,
        // in memory and in the spool; storing it as a prefix plus a reference
        // to the original's bytes would halve both for large messages.
        let mut message = data;
        let trace = self.trace_field(envelope, id, &date);
        message.splice(0..0, trace.bytes());
        let message = Arc::new(message);

        let mut batch = Batch::default();
        let mut handed: Vec<(Delivery, Option<Arc<Vec<u8>>>)> = Vec::new();
        batch.put_bodies.push((id, Arc::clone(&message)));

        // The original: one delivery per next hop (and per chunk of recipients).
        for route in [Route::Inbound, Route::Outbound] {
            let hop = match route {
                Route::Inbound => &self.inbound_next_hop,
                Route::Outbound => &self.outbound_next_hop,
            };
            let recipients: Vec<&Address> = envelope
                .recipients
                .iter()
                .filter(|(_, r)| *r == route)
                .map(|(a, _)| a)
                .collect();
            for chunk in recipients.chunks(RECIPIENTS_PER_DELIVERY) {
                let delivery = self.delivery(
                    self.spool.next_id(),
                    id,
                    DeliveryKind::Original,
                    envelope,
                    hop,
                    envelope.reverse_path.clone(),
                    chunk.iter().map(|a| (*a).clone()).collect(),
                    created,
                    message.len(),
                );
                handed.push((delivery.clone(), Some(Arc::clone(&message))));
                batch.put_deliveries.push(delivery);
            }
        }

        // The journal copy.
        if let Some(plan) = self.journal_plan(envelope, &message) {
            let journal_id = self.spool.next_id();
            let copy =
                Arc::new(self.render_journal(envelope, &plan.targets, journal_id, &date, &message));
            let delivery = self.delivery(
                journal_id,
                id,
                DeliveryKind::Journal,
                envelope,
                &self.journal_next_hop,
                ReversePath::Mailbox(plan.ndr.clone()),
                plan.targets.clone(),
                created,
                copy.len(),
            );
            info!(
                queue_id = %journal_id,
                message_id = %id,
                direction = %envelope.direction,
                ndr = %plan.ndr,
                targets = ?plan.targets,
                "Journal targets chosen."
            );
            batch.put_bodies.push((journal_id, Arc::clone(&copy)));
            handed.push((delivery.clone(), Some(copy)));
            batch.put_deliveries.push(delivery);
        }

        self.spool.commit(batch).await?;
        self.queue.enqueue(handed);
        Ok(id)
    }

    // TODO: a journal marker field (X-MS-Journal-Report) on mail from outside is
    // relayed unchanged; an Exchange server behind us takes it for "already
    // journaled" and skips its own journaling. Renaming such fields on inbound
    // mail would protect that, at the price of not relaying those bytes as sent.

    /// The journal transaction the message owes, if any. A journal copy that
    /// comes back from inside is not journaled again; the same marker from
    /// outside is not trusted (product contract §4).
    fn journal_plan(&self, envelope: &Envelope<'_>, message: &[u8]) -> Option<policy::JournalPlan> {
        let marked = headers::first(message, REPORT_FIELD).is_some()
            || headers::first(message, DIRECTION_FIELD).is_some();
        if self
            .rules
            .is_returning_copy(envelope.direction, envelope.reverse_path, marked)
        {
            info!(
                direction = %envelope.direction,
                sender = %envelope.reverse_path,
                "Our own journal copy coming back from inside: not journaled again."
            );
            return None;
        }
        self.rules.plan(
            envelope.direction,
            envelope.resolved_globals,
            envelope.found,
        )
    }

    fn render_journal(
        &self,
        envelope: &Envelope<'_>,
        targets: &[Address],
        journal_id: QueueId,
        date: &str,
        message: &[u8],
    ) -> Vec<u8> {
        match (self.format, &self.report_sender) {
            (JournalFormat::Envelope, Some(report_sender)) => {
                let recipients: Vec<ReportRecipient> = envelope
                    .recipients
                    .iter()
                    .map(|(address, _)| ReportRecipient {
                        address: address.clone(),
                        expanded_from: None,
                    })
                    .collect();
                render_envelope(&ReportInput {
                    direction: envelope.direction,
                    reverse_path: envelope.reverse_path,
                    recipients: &recipients,
                    report_sender,
                    targets,
                    hostname: &self.hostname,
                    unique: &journal_id.to_string(),
                    date,
                    message,
                })
            }
            // The configuration requires a report sender for envelope reports.
            _ => render_copy(envelope.direction, message),
        }
    }

    /// Our `Received:` field (RFC 5321 §4.4), folded to stay short.
    fn trace_field(&self, envelope: &Envelope<'_>, id: QueueId, date: &str) -> String {
        let helo = crate::smtp::command::clean_helo(envelope.helo);
        let recipient = match envelope.recipients {
            [(only, _)] => format!("\r\n\tfor <{only}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{}])\r\n\tby {} (mailjournal) with {} id {id}{recipient};\
             \r\n\t{date}\r\n",
            envelope.client, self.hostname, envelope.protocol
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn delivery(
        &self,
        id: QueueId,
        message: QueueId,
        kind: DeliveryKind,
        envelope: &Envelope<'_>,
        hop: &NextHop,
        reverse_path: ReversePath,
        recipients: Vec<Address>,
        created: u64,
        size: usize,
    ) -> Delivery {
        Delivery {
            id,
            message,
            body: if kind == DeliveryKind::Original {
                message
            } else {
                id
            },
            kind,
            direction: envelope.direction,
            next_hop: hop.to_string(),
            reverse_path,
            recipients: recipients
                .into_iter()
                .map(|address| Recipient {
                    address,
                    state: RecipientState::Pending(None),
                })
                .collect(),
            created,
            attempts: 0,
            next_attempt_ms: 0,
            size: size as u64,
        }
    }
}

/// Whether a message has passed through too many hops already.
pub fn looping(message: &[u8]) -> bool {
    headers::count(message, "Received") >= MAX_HOPS
}
