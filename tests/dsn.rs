//! Delivery failures (PRODUCT.md §4): a journal copy that fails permanently
//! yields an RFC 3464 DSN to the NDR address and never to the original
//! sender; an original that fails yields the normal DSN to its sender, which
//! says nothing about journaling, and none at all for a `<>` sender.

mod common;

use common::*;

/// DSNs: transactions from the null sender to `rcpt`.
fn dsns_to<'a>(txs: &'a [Transaction], rcpt: &str) -> Vec<&'a Transaction> {
    txs.iter()
        .filter(|t| t.mail_from.is_empty() && t.has_rcpt(rcpt))
        .collect()
}

/// Header fields unfolded and whitespace squeezed, for searching a DSN.
fn squeezed(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data)
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    text.split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn journal_copy_refused_yields_dsn_to_ndr_address_only() {
    let sink = Sink::start();
    sink.set_reply(JOURNAL, Reply::Permanent);
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let sent = message(
        "alice@example.org",
        "bob@example.com",
        "refused journal",
        "rj@example.org",
        "x",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("alice@example.org", &["bob@example.com"], &sent)
        .starts_with("250"));

    let txs = sink.wait_for(|t| !dsns_to(t, JOURNAL_NDR).is_empty(), DELIVERY);
    let dsn = dsns_to(&txs, JOURNAL_NDR)[0];
    assert_eq!(dsn.rcpts, vec![JOURNAL_NDR], "{}", sink.dump());
    let text = squeezed(&dsn.data);
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: multipart/report;")
            && lower.contains("report-type=delivery-status"),
        "DSN is not multipart/report; report-type=delivery-status:\n{text}"
    );
    assert!(
        lower.contains("final-recipient: rfc822; journal@example.com")
            || lower.contains("final-recipient: rfc822;journal@example.com"),
        "DSN lacks Final-Recipient of the journal target:\n{text}"
    );
    assert!(
        lower.contains("action: failed"),
        "DSN lacks Action: failed:\n{text}"
    );

    // The original still reaches bob; its sender hears nothing.
    let txs = sink.wait_for(|t| !delivered_to(t, "bob@example.com").is_empty(), DELIVERY);
    assert_relayed(
        delivered_to(&txs, "bob@example.com")[0],
        "alice@example.org",
        &sent,
    );
    let txs = sink.settle(QUIET, DELIVERY);
    assert!(
        txs.iter().all(|t| !t.has_rcpt("alice@example.org")),
        "the original sender got something:\n{}",
        sink.dump()
    );
    assert_eq!(dsns_to(&txs, JOURNAL_NDR).len(), 1, "{}", sink.dump());
}

#[test]
fn journal_copy_temporarily_refused_is_delivered_once_later() {
    let sink = Sink::start();
    sink.set_reply(JOURNAL, Reply::TempFailTimes(2));
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let sent = message(
        "alice@example.org",
        "bob@example.com",
        "retry",
        "retry@example.org",
        "x",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("alice@example.org", &["bob@example.com"], &sent)
        .starts_with("250"));

    sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    let txs = sink.settle(QUIET, DELIVERY);
    assert_eq!(journal_txs(&txs).len(), 1, "{}", sink.dump());
    assert!(
        txs.iter().all(|t| !t.mail_from.is_empty()),
        "unexpected DSN:\n{}",
        sink.dump()
    );
    let attempts = sink.rcpt_attempts();
    let tries = attempts
        .iter()
        .filter(|a| a.rcpt.eq_ignore_ascii_case(JOURNAL))
        .count();
    assert_eq!(tries, 3, "two 451s, then accepted:\n{}", sink.dump());
}

#[test]
fn original_refused_yields_dsn_to_sender_without_journal_words() {
    let sink = Sink::start();
    sink.set_reply("bob@example.com", Reply::Permanent);
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let sent = message(
        "alice@example.org",
        "bob@example.com",
        "to nobody",
        "nobody@example.org",
        "x",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("alice@example.org", &["bob@example.com"], &sent)
        .starts_with("250"));

    let txs = sink.wait_for(|t| !dsns_to(t, "alice@example.org").is_empty(), DELIVERY);
    let dsn = dsns_to(&txs, "alice@example.org")[0];
    let text = squeezed(&dsn.data);
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("report-type=delivery-status"),
        "not a DSN:\n{text}"
    );
    assert!(
        lower.contains("bob@example.com"),
        "DSN does not name the failed recipient:\n{text}"
    );
    // The product's own name may appear in trace fields; nothing else may
    // reveal that the message was journaled.
    let scrubbed = lower.replace("mailjournal", "");
    assert!(
        !scrubbed.contains("journal"),
        "the DSN to the original sender mentions journaling:\n{text}"
    );

    let txs = sink.settle(QUIET, DELIVERY);
    assert_eq!(
        dsns_to(&txs, "alice@example.org").len(),
        1,
        "{}",
        sink.dump()
    );
    assert!(dsns_to(&txs, JOURNAL_NDR).is_empty(), "{}", sink.dump());
}

#[test]
fn original_from_null_sender_that_fails_yields_no_dsn() {
    let sink = Sink::start();
    sink.set_reply("bob@example.com", Reply::Permanent);
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let sent = message(
        "MAILER-DAEMON@example.org",
        "bob@example.com",
        "bounce",
        "nb@example.org",
        "x",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("", &["bob@example.com"], &sent)
        .starts_with("250"));

    // Wait for the refused attempt and the journal copy, then for quiet.
    sink.wait_until("an attempt to deliver to bob", DELIVERY, |s| {
        s.rcpt_attempts()
            .iter()
            .any(|a| a.rcpt == "bob@example.com" && a.code == 550)
    });
    sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    sink.settle(QUIET, DELIVERY);
    let stray: Vec<_> = sink
        .rcpt_attempts()
        .into_iter()
        .filter(|a| a.mail_from.is_empty() && a.rcpt != "bob@example.com")
        .collect();
    assert!(
        stray.is_empty(),
        "a DSN was attempted: {stray:?}\n{}",
        sink.dump()
    );
    assert!(
        sink.transactions().iter().all(|t| !t.mail_from.is_empty()),
        "{}",
        sink.dump()
    );
}
