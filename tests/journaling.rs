//! Journaling end to end (PRODUCT.md §4, §5): every relayed message yields
//! one journal copy from the direction's NDR address to its journal target,
//! as a copy (`format = "copy"`) or as an Exchange-style envelope report.

mod common;

use common::*;

/// Three sinks, so that routing to the right next hop is checked too.
struct Hops {
    inbound: Sink,
    outbound: Sink,
    journal: Sink,
}

impl Hops {
    fn start() -> Hops {
        Hops {
            inbound: Sink::start(),
            outbound: Sink::start(),
            journal: Sink::start(),
        }
    }

    fn config(&self) -> GatewayConfig {
        GatewayConfig::with_hops(
            self.inbound.port(),
            self.outbound.port(),
            self.journal.port(),
        )
    }
}

#[test]
fn inbound_message_is_relayed_and_journaled_as_copy() {
    let hops = Hops::start();
    let gw = Gateway::start(&hops.config());
    let sent = message(
        "alice@example.org",
        "bob@example.com",
        "inbound copy",
        "in-1@example.org",
        "hi",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    let reply = c.send_message("alice@example.org", &["bob@example.com"], &sent);
    assert!(reply.starts_with("250"), "{reply}");
    c.quit();

    let originals = hops.inbound.wait_for(|t| !t.is_empty(), DELIVERY);
    let journals = hops.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    assert_eq!(originals[0].rcpts, vec!["bob@example.com"]);
    let received = assert_relayed(&originals[0], "alice@example.org", &sent);
    let received_text = String::from_utf8_lossy(&received).to_string();
    assert!(
        received_text.contains(HOSTNAME),
        "Received field names our host: {received_text}"
    );
    assert_copy(&journals[0], "inbound", &received, &sent);

    let originals = hops.inbound.settle(QUIET, DELIVERY);
    let journals = hops.journal.settle(QUIET, DELIVERY);
    assert_eq!(originals.len(), 1, "{}", hops.inbound.dump());
    assert_eq!(journals.len(), 1, "{}", hops.journal.dump());
    assert!(
        hops.outbound.transactions().is_empty(),
        "{}",
        hops.outbound.dump()
    );
}

#[test]
fn outbound_message_is_relayed_and_journaled_as_copy() {
    let hops = Hops::start();
    let gw = Gateway::start(&hops.config());
    let sent = message(
        "alice@example.com",
        "carol@example.net",
        "outbound copy",
        "out-1@example.com",
        "x",
    );

    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    let reply = c.send_message("alice@example.com", &["carol@example.net"], &sent);
    assert!(reply.starts_with("250"), "{reply}");
    c.quit();

    let originals = hops.outbound.wait_for(|t| !t.is_empty(), DELIVERY);
    let journals = hops.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    assert_eq!(originals[0].rcpts, vec!["carol@example.net"]);
    let received = assert_relayed(&originals[0], "alice@example.com", &sent);
    assert_copy(&journals[0], "outbound", &received, &sent);

    assert_eq!(
        hops.journal.settle(QUIET, DELIVERY).len(),
        1,
        "{}",
        hops.journal.dump()
    );
    assert!(
        hops.inbound.transactions().is_empty(),
        "{}",
        hops.inbound.dump()
    );
}

#[test]
fn outbound_local_recipients_go_to_the_inbound_next_hop() {
    let hops = Hops::start();
    let gw = Gateway::start(&hops.config());
    let sent = message(
        "alice@example.com",
        "bob@example.com",
        "mixed",
        "mixed@example.com",
        "x",
    );

    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    let reply = c.send_message(
        "alice@example.com",
        &["bob@example.com", "carol@example.net"],
        &sent,
    );
    assert!(reply.starts_with("250"), "{reply}");

    let local = hops
        .inbound
        .wait_for(|t| !delivered_to(t, "bob@example.com").is_empty(), DELIVERY);
    let remote = hops.outbound.wait_for(
        |t| !delivered_to(t, "carol@example.net").is_empty(),
        DELIVERY,
    );
    assert!(
        !local[0].has_rcpt("carol@example.net"),
        "{}",
        hops.inbound.dump()
    );
    assert!(
        !remote[0].has_rcpt("bob@example.com"),
        "{}",
        hops.outbound.dump()
    );

    let journals = hops.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    let (dir, _) = split_leading_field(&journals[0].data, "X-Mailjournal-Direction");
    assert_eq!(dir, b"X-Mailjournal-Direction: outbound\r\n");
    assert_eq!(
        hops.journal.settle(QUIET, DELIVERY).len(),
        1,
        "{}",
        hops.journal.dump()
    );
}

/// Direction comes from the client's network, never from the sender's
/// domain, and a journal marker from outside does not skip journaling.
#[test]
fn outside_client_claiming_local_sender_and_marker_is_still_journaled_inbound() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let mut sent = b"X-Mailjournal-Direction: outbound\r\n".to_vec();
    sent.extend(message(
        "ceo@example.com",
        "bob@example.com",
        "spoof",
        "spoof@example.com",
        "x",
    ));

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("ceo@example.com", &["bob@example.com"], &sent)
        .starts_with("250"));

    let txs = sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    let journal = journal_txs(&txs)[0].clone();
    let (dir, rest) = split_leading_field(&journal.data, "X-Mailjournal-Direction");
    assert_eq!(dir, b"X-Mailjournal-Direction: inbound\r\n");
    let (_, rest) = split_received(rest);
    assert_bytes_eq(rest, &sent, "journal copy keeps the forged marker as data");
}

/// Inbound and outbound name the same journal target and NDR address: each
/// message still yields exactly one copy, however many recipients it has.
#[test]
fn same_target_for_both_directions_gives_one_copy_per_message() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));

    let inbound = message(
        "x@example.org",
        "bob@example.com",
        "one-in",
        "one-in@example.org",
        "a",
    );
    let mut c = SmtpClient::connect(gw.smtp_addr());
    let reply = c.send_message(
        "x@example.org",
        &["bob@example.com", "dave@example.com"],
        &inbound,
    );
    assert!(reply.starts_with("250"), "{reply}");

    let outbound = message(
        "bob@example.com",
        "x@example.org",
        "one-out",
        "one-out@example.com",
        "b",
    );
    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    let reply = c.send_message(
        "bob@example.com",
        &["x@example.org", "dave@example.com"],
        &outbound,
    );
    assert!(reply.starts_with("250"), "{reply}");

    sink.wait_for(|t| journal_txs(t).len() >= 2, DELIVERY);
    let txs = sink.settle(QUIET, DELIVERY);
    let journals = journal_txs(&txs);
    assert_eq!(
        with_marker_refs(&journals, "one-in@example.org"),
        1,
        "{}",
        sink.dump()
    );
    assert_eq!(
        with_marker_refs(&journals, "one-out@example.com"),
        1,
        "{}",
        sink.dump()
    );
    assert_eq!(journals.len(), 2, "{}", sink.dump());
    for j in journals {
        assert_eq!(j.rcpts, vec![JOURNAL], "{}", sink.dump());
        assert_eq!(j.mail_from, JOURNAL_NDR);
    }
}

fn with_marker_refs(txs: &[&Transaction], marker: &str) -> usize {
    txs.iter().filter(|t| t.contains(marker)).count()
}

#[test]
fn inbound_envelope_report() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()).envelope());
    let sent = message(
        "alice@example.org",
        "bob@example.com",
        "Quarterly numbers",
        "env-in@example.org",
        "x",
    );

    let mut c = SmtpClient::connect(gw.smtp_addr());
    let reply = c.send_message("alice@example.org", &["bob@example.com"], &sent);
    assert!(reply.starts_with("250"), "{reply}");

    let txs = sink.wait_for(
        |t| journal_txs(t).len() == 1 && !delivered_to(t, "bob@example.com").is_empty(),
        DELIVERY,
    );
    assert_relayed(
        delivered_to(&txs, "bob@example.com")[0],
        "alice@example.org",
        &sent,
    );
    let journal = journal_txs(&txs)[0];
    assert_eq!(journal.mail_from, JOURNAL_NDR);
    assert_eq!(journal.rcpts, vec![JOURNAL]);

    let report = EnvelopeReport::parse(&journal.data);
    report.assert_headers(REPORT_SENDER, Some("Quarterly numbers"), HOSTNAME);
    assert_eq!(
        report.field_lines(),
        vec![
            "Sender: alice@example.org",
            "Subject: Quarterly numbers",
            "Message-Id: <env-in@example.org>",
            "Recipient: bob@example.com",
        ],
        "envelope lines of the report"
    );
    report.assert_embeds(&sent);
    report.check_with_python(&sent);
}

#[test]
fn outbound_envelope_report_places_recipients_by_header() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()).envelope());
    let sent = b"From: Alice <alice@example.com>\r\nTo: Carol <carol@example.net>\r\n\
Cc: dave@example.net, \"Bob\" <bob@example.com>\r\nSubject: plans\r\n\
Message-ID: <env-out@example.com>\r\n\r\nbody\r\n"
        .to_vec();
    let rcpts = [
        "carol@example.net",
        "dave@example.net",
        "erin@example.net",
        "bob@example.com",
    ];

    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    let reply = c.send_message("alice@example.com", &rcpts, &sent);
    assert!(reply.starts_with("250"), "{reply}");

    let txs = sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    let report = EnvelopeReport::parse(&journal_txs(&txs)[0].data);
    report.assert_headers(REPORT_SENDER, Some("plans"), HOSTNAME);
    let lines = report.field_lines();
    assert_eq!(
        &lines[..3],
        &[
            "Sender: alice@example.com",
            "Subject: plans",
            "Message-Id: <env-out@example.com>"
        ],
        "report lines: {lines:#?}"
    );
    let mut recipients: Vec<&str> = lines[3..].to_vec();
    recipients.sort();
    assert_eq!(
        recipients,
        vec![
            "Bcc: erin@example.net",
            "Cc: bob@example.com",
            "Cc: dave@example.net",
            "To: carol@example.net",
        ],
        "report lines: {lines:#?}"
    );
    report.assert_embeds(&sent);
    report.check_with_python(&sent);
}

#[test]
fn envelope_report_of_null_sender_without_message_id() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()).envelope());
    let sent =
        b"From: MAILER-DAEMON@example.org\r\nTo: bob@example.com\r\nSubject: bounce\r\n\r\nx\r\n";

    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("", &["bob@example.com"], sent)
        .starts_with("250"));

    let txs = sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    let report = EnvelopeReport::parse(&journal_txs(&txs)[0].data);
    assert_eq!(
        report.field_lines(),
        vec![
            "Sender: Unspecified Address",
            "Subject: bounce",
            "Message-Id: Unknown Message-ID",
            "Recipient: bob@example.com",
        ]
    );
    report.assert_embeds(sent);
    report.check_with_python(sent);
}

/// A journal marker proves nothing by itself: an insider who adds one to
/// outbound mail is journaled all the same. Only our own copy coming back
/// from inside (sent from the NDR address) is not journaled again.
#[test]
fn a_marker_from_inside_skips_journaling_only_for_our_own_returning_copies() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let mut client = SmtpClient::connect_inside(gw.smtp_addr());
    client.ehlo();

    let evasive = b"From: bob@example.com\r\nTo: carol@example.net\r\nX-MS-Journal-Report:\r\n\
        Subject: please do not journal me\r\n\r\nx\r\n";
    let reply = client.send_message("bob@example.com", &["carol@example.net"], evasive);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let returning = b"From: journal-reports@example.com\r\nTo: journal@example.net\r\n\
        X-MS-Journal-Report:\r\nSubject: a report coming back\r\n\r\nx\r\n";
    let reply = client.send_message(JOURNAL_NDR, &["archive@example.net"], returning);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let txs = sink.settle(QUIET, std::time::Duration::from_secs(15));
    let journaled = |marker: &str| {
        journal_txs(&txs)
            .iter()
            .filter(|t| t.contains(marker))
            .count()
    };
    assert_eq!(journaled("please do not journal me"), 1, "{}", sink.dump());
    assert_eq!(journaled("a report coming back"), 0, "{}", sink.dump());
    assert_eq!(
        delivered_to(&txs, "archive@example.net").len(),
        1,
        "{}",
        sink.dump()
    );
}
