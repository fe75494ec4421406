//! End-to-end test harness for mailjournal.
//!
//! The tests run the real binary (`Gateway`) and talk SMTP to it over TCP on
//! 127.0.0.1 (`SmtpClient`); the gateway relays to recording SMTP servers
//! (`Sink`). A client from 127.0.0.1 is outside (inbound mail), one from
//! 127.0.0.2 is inside (outbound mail). Nothing here sleeps to assert: every
//! wait polls a condition against a deadline and fails with a dump of what
//! the sink saw and the tail of the gateway's log.
//!
//! Each test file compiles this module on its own, so not every helper is
//! used by every file.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod gateway;
pub mod http;
pub mod mime;
pub mod report;
pub mod sink;

use std::time::{Duration, Instant};

pub use client::{case_path, Reply as SmtpReply, SmtpClient, Step};
pub use gateway::{
    free_port, Gateway, GatewayConfig, HOSTNAME, JOURNAL, JOURNAL_NDR, REPORT_SENDER,
};
pub use http::http_get;
pub use mime::{assert_bytes_eq, assert_crlf_only, split_leading_field, split_received, wire_form};
pub use report::EnvelopeReport;
pub use sink::{Behaviour, Reply, Sink, Transaction};

/// How long a test waits for a delivery the gateway should make promptly.
pub const DELIVERY: Duration = Duration::from_secs(20);

/// How long the sink must stay quiet before a test asserts that something
/// did not happen (longer than the test configuration's `retry_max`).
pub const QUIET: Duration = Duration::from_millis(2500);

/// Polls `cond` until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A small CRLF message with the usual header fields.
pub fn message(from: &str, to: &str, subject: &str, id: &str, body: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: Mon, 01 Dec 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// Journal deliveries: transactions addressed to the journal target.
pub fn journal_txs(txs: &[Transaction]) -> Vec<&Transaction> {
    txs.iter().filter(|t| t.has_rcpt(JOURNAL)).collect()
}

/// Non-journal deliveries that include `rcpt`.
pub fn delivered_to<'a>(txs: &'a [Transaction], rcpt: &str) -> Vec<&'a Transaction> {
    txs.iter()
        .filter(|t| t.has_rcpt(rcpt) && !t.has_rcpt(JOURNAL))
        .collect()
}

/// Transactions whose data contains `marker`.
pub fn with_marker<'a>(txs: &'a [Transaction], marker: &str) -> Vec<&'a Transaction> {
    txs.iter().filter(|t| t.contains(marker)).collect()
}

/// Asserts that a relayed original is one prepended `Received:` field plus
/// exactly the bytes the client sent, from the original envelope sender.
/// Returns the Received field.
pub fn assert_relayed(tx: &Transaction, from: &str, sent: &[u8]) -> Vec<u8> {
    assert_eq!(
        tx.mail_from, from,
        "envelope sender of the relayed original"
    );
    let (received, rest) = split_received(&tx.data);
    assert_bytes_eq(rest, sent, "relayed original after the Received field");
    received.to_vec()
}

/// Asserts a `format = "copy"` journal copy: from the NDR address to the
/// journal target, `X-Mailjournal-Direction: <direction>`, then the same
/// Received field as the relayed original, then the original bytes.
pub fn assert_copy(journal: &Transaction, direction: &str, received: &[u8], sent: &[u8]) {
    assert_eq!(
        journal.mail_from, JOURNAL_NDR,
        "envelope sender of the journal copy"
    );
    assert_eq!(
        journal.rcpts.len(),
        1,
        "journal copy recipients: {:?}",
        journal.rcpts
    );
    assert!(
        journal.has_rcpt(JOURNAL),
        "journal copy recipients: {:?}",
        journal.rcpts
    );
    let (dir, rest) = split_leading_field(&journal.data, "X-Mailjournal-Direction");
    assert_bytes_eq(
        dir,
        format!("X-Mailjournal-Direction: {direction}\r\n").as_bytes(),
        "direction header of the journal copy",
    );
    let (recv, rest) = split_received(rest);
    assert_bytes_eq(recv, received, "Received field of the journal copy");
    assert_bytes_eq(rest, sent, "journal copy after its prepended fields");
}
