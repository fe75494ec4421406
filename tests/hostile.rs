//! Hostile and awkward input found by trying the gateway as an outsider:
//! disguised journal addresses, address literals, NUL bytes, UTF-8
//! addresses, parameters of extensions we do not offer, BDAT, and the
//! admin endpoints that operators rely on.

mod common;

use std::time::Duration;

use common::*;

fn gateway(sink: &Sink) -> Gateway {
    Gateway::start(&GatewayConfig::new(sink.port()))
}

fn session(gateway: &Gateway) -> SmtpClient {
    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    client
}

#[test]
fn journal_and_ndr_mailboxes_cannot_be_reached_in_disguise() {
    let sink = Sink::start();
    let gateway = gateway(&sink);
    let mut client = session(&gateway);
    client.expect("MAIL FROM:<mallory@example.net>", "250");

    // One mailbox, written differently: quotes, escapes, case, subaddress.
    for disguised in [
        "\"journal\"@example.com",
        "\"JOURNAL\"@example.com",
        "\"\\journal\"@example.com",
        "\"journal-ndr\"@EXAMPLE.COM",
        "journal+x@example.com",
        "Journal-NDR+bounce@example.com",
    ] {
        client.expect(&format!("RCPT TO:<{disguised}>"), "550 5.1.1");
    }
    // Asking the next server to relay onwards is relaying.
    for hack in [
        "journal%example.com@example.com",
        "example.com!journal@example.com",
    ] {
        client.expect(&format!("RCPT TO:<{hack}>"), "550 5.7.1");
    }
    client.expect("RCPT TO:<bob@[127.0.0.1]>", "550 5.7.1");
    client.expect("DATA", "554");
    client.expect("QUIT", "221");

    let txs = sink.settle(QUIET, Duration::from_secs(10));
    assert!(txs.is_empty(), "{}", sink.dump());
}

#[test]
fn address_literal_senders_are_accepted() {
    let sink = Sink::start();
    let gateway = gateway(&sink);
    let mut client = session(&gateway);
    for sender in ["a@[192.0.2.1]", "a@[IPv6:2001:db8::1]"] {
        let data = message(sender, "bob@example.com", "literal", "lit@example.net", "x");
        let reply = client.send_message(sender, &["bob@example.com"], &data);
        assert!(reply.starts_with("250"), "{sender}: {}", reply.line());
    }
    sink.wait_for(|t| delivered_to(t, "bob@example.com").len() == 2, DELIVERY);
}

#[test]
fn a_message_with_nul_bytes_is_refused_and_nothing_is_sent() {
    let sink = Sink::start();
    let gateway = gateway(&sink);
    let mut client = session(&gateway);
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<bob@example.com>", "250");
    client.expect("DATA", "354");
    client.send_raw(b"Subject: nul\0here\r\n\r\nbo\0dy\r\n.\r\n");
    let reply = client.read_reply();
    assert!(reply.starts_with("554 5.6.0"), "{}", reply.line());
    client.expect("NOOP", "250");

    let txs = sink.settle(QUIET, Duration::from_secs(10));
    assert!(txs.is_empty(), "{}", sink.dump());
}

#[test]
fn utf8_addresses_need_smtputf8_and_journal_copies_keep_it() {
    let sink = Sink::start();
    let gateway = Gateway::start(&GatewayConfig::new(sink.port()).envelope());
    let mut client = session(&gateway);

    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<b\u{f6}@example.com>", "553 5.6.7");
    client.expect("RSET", "250");

    client.expect(
        "MAIL FROM:<j\u{f6}s\u{e9}@ex\u{e4}mple.net> SMTPUTF8",
        "250",
    );
    client.expect("RCPT TO:<bob@example.com>", "250");
    client.expect("DATA", "354");
    client.send_raw(
        "From: j\u{f6}s\u{e9}@ex\u{e4}mple.net\r\nSubject: \u{fc}tf\r\n\r\nhi\r\n.\r\n".as_bytes(),
    );
    let reply = client.read_reply();
    assert!(reply.starts_with("250"), "{}", reply.line());

    let txs = sink.wait_for(|t| !journal_txs(t).is_empty() && t.len() >= 2, DELIVERY);

    // The original has a UTF-8 sender and header: it needs SMTPUTF8.
    let original = delivered_to(&txs, "bob@example.com")[0];
    assert!(
        original.mail_params.to_uppercase().contains("SMTPUTF8"),
        "{}",
        original.mail_params
    );

    // The report's own header is ASCII (RFC 2047), the original rides as
    // message/global (RFC 6532 §3.7), which needs 8BITMIME, not SMTPUTF8.
    let journal = journal_txs(&txs)[0];
    assert!(
        journal.mail_params.to_uppercase().contains("BODY=8BITMIME"),
        "{}",
        journal.mail_params
    );
    let text = journal.text();
    let head = &text[..text.find("\r\n\r\n").expect("a header block")];
    assert!(head.is_ascii(), "report header is not ASCII:\n{head}");
    assert!(text.contains("Content-Type: message/global"), "{text}");
}

#[test]
fn parameters_of_extensions_not_offered_are_refused() {
    let sink = Sink::start();
    let gateway = gateway(&sink);
    let mut client = session(&gateway);
    client.expect("MAIL FROM:<a@example.net> RET=HDRS ENVID=x", "555 5.5.4");
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<bob@example.com> NOTIFY=NEVER", "555 5.5.4");
    client.expect("RCPT TO:<bob@example.com>", "250");
}

#[test]
fn a_bdat_chunk_is_swallowed_not_read_as_commands() {
    let sink = Sink::start();
    let gateway = gateway(&sink);
    let mut client = session(&gateway);
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<bob@example.com>", "250");
    client.send_raw(b"BDAT 16 LAST\r\nRSET\r\nQUIT\r\nxxxx");
    let reply = client.read_reply();
    assert!(reply.starts_with("502 5.5.1"), "{}", reply.line());
    client.expect("NOOP", "250");
}

#[test]
fn outbound_reports_place_quoted_header_recipients_in_to() {
    let sink = Sink::start();
    let gateway = Gateway::start(&GatewayConfig::new(sink.port()).envelope());
    let mut client = SmtpClient::connect_inside(gateway.smtp_addr());
    client.ehlo();
    let data =
        b"From: a@example.com\r\nTo: \"bob@legacy\"@example.net\r\nTo: carol@example.net\r\n\
        Subject: quoted\r\n\r\nx\r\n";
    let rcpts = [
        "\"bob@legacy\"@example.net",
        "carol@example.net",
        "dave@example.net",
    ];
    let reply = client.send_message("a@example.com", &rcpts, data);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let txs = sink.wait_for(|t| !journal_txs(t).is_empty(), DELIVERY);
    let text = journal_txs(&txs)[0].text();
    for line in [
        "To: \"bob@legacy\"@example.net\r\n",
        "To: carol@example.net\r\n",
        "Bcc: dave@example.net\r\n",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
}

#[test]
fn metrics_and_health_are_served_on_the_admin_listener() {
    let sink = Sink::start();
    let admin = free_port();
    let mut config = GatewayConfig::new(sink.port());
    config.admin_port = Some(admin);
    let gateway = Gateway::start(&config);

    let mut client = session(&gateway);
    client.expect("MAIL FROM:<a@example.net>", "250");
    client.expect("RCPT TO:<x@example.org>", "550 5.7.1");
    client.expect("RSET", "250");
    let data = message(
        "a@example.net",
        "bob@example.com",
        "metrics",
        "m@example.net",
        "x",
    );
    client.send_message("a@example.net", &["bob@example.com"], &data);
    sink.wait_for(|t| t.len() >= 2, DELIVERY);

    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("spool: ok"), "{body}");

    wait_until("journal delivery to be counted", DELIVERY, || {
        let (_, body) = http_get(admin, "/metrics");
        body.contains(
            "mailjournal_journal_copies_total{direction=\"inbound\",outcome=\"delivered\"} 1",
        )
    });
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    for expected in [
        "mailjournal_sessions_total",
        "mailjournal_messages_accepted_total{direction=\"inbound\"} 1",
        "mailjournal_messages_rejected_total{direction=\"inbound\",reason=\"relay_denied\"} 1",
        "mailjournal_deliveries_total{kind=\"original\",outcome=\"delivered\"} 1",
        "mailjournal_queue_depth",
    ] {
        assert!(body.contains(expected), "{expected} missing:\n{body}");
    }
}

#[test]
fn health_fails_naming_the_directory_when_it_does_not_answer() {
    let sink = Sink::start();
    let admin = free_port();
    let closed_ldap = free_port();
    let mut config = GatewayConfig::new(sink.port());
    config.extra = format!(
        "[directory]\nurl = \"ldap://127.0.0.1:{closed_ldap}\"\n\
         base_dn = \"dc=example,dc=com\"\ntimeout = \"1s\"\n"
    );
    config.admin_port = Some(admin);
    let _gateway = Gateway::start(&config);

    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("spool: ok"), "{body}");
    assert!(body.contains("directory: failed"), "{body}");
}
