//! The gateway's metrics, by name, in one place (product contract §6).
//!
//! Recorded through the `metrics` facade; `mailjournal serve` installs a
//! Prometheus recorder and [`crate::admin`] renders it at `/metrics`.
//! Without a recorder (tests of the library, other commands) recording costs
//! next to nothing.

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use policy::Direction;

use crate::spool::DeliveryKind;

/// SMTP sessions open now.
pub const SESSIONS_OPEN: &str = "mailjournal_sessions_open";
/// SMTP sessions since start.
pub const SESSIONS_TOTAL: &str = "mailjournal_sessions_total";
/// Messages acknowledged with 250, by direction.
pub const MESSAGES_ACCEPTED: &str = "mailjournal_messages_accepted_total";
/// Messages or recipients refused, by direction and reason.
pub const MESSAGES_REJECTED: &str = "mailjournal_messages_rejected_total";
/// Journal copy outcomes per target, by direction and outcome.
pub const JOURNAL_COPIES: &str = "mailjournal_journal_copies_total";
/// Delivery outcomes per recipient, by kind and outcome.
pub const DELIVERIES: &str = "mailjournal_deliveries_total";
/// Deliveries in the queue.
pub const QUEUE_DEPTH: &str = "mailjournal_queue_depth";
/// Age of the oldest delivery in the queue, in seconds.
pub const QUEUE_OLDEST_AGE: &str = "mailjournal_queue_oldest_age_seconds";
/// Directory lookups.
pub const DIRECTORY_LOOKUPS: &str = "mailjournal_directory_lookups_total";
/// Directory lookups answered from the cache.
pub const DIRECTORY_HITS: &str = "mailjournal_directory_cache_hits_total";
/// Directory lookups that asked the directory.
pub const DIRECTORY_MISSES: &str = "mailjournal_directory_cache_misses_total";
/// Directory lookups answered by an expired entry while LDAP was down.
pub const DIRECTORY_STALE: &str = "mailjournal_directory_stale_serves_total";
/// Directory lookups that failed.
pub const DIRECTORY_ERRORS: &str = "mailjournal_directory_errors_total";

/// Why a message or recipient was refused (the `reason` label).
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    /// Outside client, foreign domain.
    RelayDenied,
    /// Outside client, journal or NDR address.
    ProtectedTarget,
    /// Journal targets could not be resolved (451).
    DirectoryUnavailable,
    /// Over `max_message_size`.
    Oversize,
    /// Too many `Received:` fields.
    Loop,
    /// The spool could not take it (451).
    SpoolFailure,
    /// Over the recipient limit.
    TooManyRecipients,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::RelayDenied => "relay_denied",
            Rejection::ProtectedTarget => "protected_target",
            Rejection::DirectoryUnavailable => "directory_unavailable",
            Rejection::Oversize => "oversize",
            Rejection::Loop => "loop",
            Rejection::SpoolFailure => "spool_failure",
            Rejection::TooManyRecipients => "too_many_recipients",
        }
    }
}

/// Installs the Prometheus recorder for this process.
pub fn install() -> Result<PrometheusHandle, String> {
    const LATENCY_BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(directory::LATENCY_METRIC.to_owned()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
        .inspect(|_| describe())
}

/// `# HELP` lines, and zeros for the series a dashboard expects from the
/// start rather than from the first event.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(SESSIONS_OPEN, "SMTP sessions open now.");
    describe_counter!(SESSIONS_TOTAL, "SMTP sessions since start.");
    describe_counter!(MESSAGES_ACCEPTED, "Messages acknowledged with 250.");
    describe_counter!(
        MESSAGES_REJECTED,
        "Messages or recipients refused, by reason."
    );
    describe_counter!(
        JOURNAL_COPIES,
        "Journal copy outcomes per target and attempt."
    );
    describe_counter!(DELIVERIES, "Delivery outcomes per recipient and attempt.");
    describe_gauge!(
        QUEUE_DEPTH,
        "Deliveries (transactions) waiting in the spool."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest waiting delivery."
    );
    describe_counter!(DIRECTORY_LOOKUPS, "Per-recipient journal target lookups.");
    describe_counter!(DIRECTORY_HITS, "Lookups answered from the cache.");
    describe_counter!(DIRECTORY_MISSES, "Lookups that asked the directory.");
    describe_counter!(
        DIRECTORY_STALE,
        "Lookups answered stale while LDAP was down."
    );
    describe_counter!(DIRECTORY_ERRORS, "Lookups that failed (451 4.4.3).");
    describe_histogram!(
        directory::LATENCY_METRIC,
        Unit::Seconds,
        "Latency of LDAP operations, reconnects included."
    );

    gauge!(SESSIONS_OPEN).set(0.0);
    counter!(SESSIONS_TOTAL).absolute(0);
    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(QUEUE_OLDEST_AGE).set(0.0);
    for direction in [Direction::Inbound, Direction::Outbound] {
        counter!(MESSAGES_ACCEPTED, "direction" => direction.as_str()).absolute(0);
    }
}

/// A session opened.
pub fn session_opened() {
    counter!(SESSIONS_TOTAL).increment(1);
    gauge!(SESSIONS_OPEN).increment(1.0);
}

/// A session ended.
pub fn session_closed() {
    gauge!(SESSIONS_OPEN).decrement(1.0);
}

/// A message was acknowledged.
pub fn accepted(direction: Direction) {
    counter!(MESSAGES_ACCEPTED, "direction" => direction.as_str()).increment(1);
}

/// A message or recipient was refused.
pub fn rejected(direction: Direction, reason: Rejection) {
    counter!(MESSAGES_REJECTED, "direction" => direction.as_str(), "reason" => reason.label())
        .increment(1);
}

/// One recipient's outcome of one attempt.
pub fn delivery(kind: DeliveryKind, direction: Direction, outcome: &'static str) {
    counter!(DELIVERIES, "kind" => kind.as_str(), "outcome" => outcome).increment(1);
    if kind == DeliveryKind::Journal {
        counter!(JOURNAL_COPIES, "direction" => direction.as_str(), "outcome" => outcome)
            .increment(1);
    }
}

/// A DSN was queued for a failed journal copy.
pub fn journal_dsn_sent(direction: Direction) {
    counter!(JOURNAL_COPIES, "direction" => direction.as_str(), "outcome" => "dsn_sent")
        .increment(1);
}

/// The queue's size and the age of its oldest delivery.
pub fn queue(depth: usize, oldest_age_secs: u64) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_OLDEST_AGE).set(oldest_age_secs as f64);
}

/// The per-recipient lookup totals, copied into counters at scrape time.
pub fn directory(stats: &crate::resolver::LookupStats) {
    counter!(DIRECTORY_LOOKUPS).absolute(stats.lookups);
    counter!(DIRECTORY_HITS).absolute(stats.hits);
    counter!(DIRECTORY_MISSES).absolute(stats.misses);
    counter!(DIRECTORY_STALE).absolute(stats.stale_serves);
    counter!(DIRECTORY_ERRORS).absolute(stats.errors);
}
