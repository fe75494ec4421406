//! The SMTP server side of the gateway (PRODUCT.md §4): extensions, relay
//! control, size limits, malformed input, big and broken sessions, and a
//! clean stop.

mod common;

use common::*;

fn gateway() -> (Sink, Gateway) {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    (sink, gw)
}

/// Sends a sentinel message and waits for it and its journal copy: the
/// queue has worked through everything accepted before it (give or take
/// ordering, hence the settle that callers do afterwards).
fn sentinel(sink: &Sink, gw: &Gateway, marker: &str) {
    let sent = message(
        "s@example.org",
        "bob@example.com",
        marker,
        &format!("{marker}@example.org"),
        "s",
    );
    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("s@example.org", &["bob@example.com"], &sent)
        .starts_with("250"));
    c.quit();
    sink.wait_for(|t| with_marker(t, marker).len() >= 2, DELIVERY);
}

#[test]
fn ehlo_advertises_extensions_without_starttls() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    let ehlo = c.ehlo();
    for kw in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.has_keyword(kw), "EHLO lacks {kw}:\n{ehlo}");
    }
    assert!(
        ehlo.lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("SIZE 1048576")),
        "SIZE should announce max_message_size:\n{ehlo}"
    );
    assert!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS offered without a certificate:\n{ehlo}"
    );
    c.expect("HELO client.test.example", "250");
}

#[test]
fn vrfy_answers_252() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.ehlo();
    c.expect("VRFY x", "252");
}

#[test]
fn outside_client_may_send_only_to_local_domains_and_not_to_journal() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<mallory@example.org>", "250");
    c.expect("RCPT TO:<x@example.net>", "550 5.7.1");
    c.expect("RCPT TO:<journal@example.com>", "550 5.1.1");
    c.expect("RCPT TO:<JOURNAL@EXAMPLE.COM>", "550 5.1.1");
    c.expect("RCPT TO:<journal-ndr@example.com>", "550 5.1.1");
    c.expect("RCPT TO:<Journal-NDR@Example.Com>", "550 5.1.1");
    c.expect("RCPT TO:<bob@example.com>", "250");
    c.expect("RCPT TO:<bob@EXAMPLE.COM>", "250");
}

#[test]
fn inside_client_may_send_anywhere_including_journal_addresses() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<alice@example.com>", "250");
    c.expect("RCPT TO:<x@example.net>", "250");
    c.expect("RCPT TO:<journal@example.com>", "250");
    c.expect("RCPT TO:<journal-ndr@example.com>", "250");
    c.expect("RSET", "250");
}

#[test]
fn malformed_commands_get_5xx_and_the_session_survives() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.ehlo();
    // Unknown MAIL parameter or over-long line: 5xx either way.
    let long = format!("MAIL FROM:<a@example.org> X-LONG={}", "x".repeat(2000));
    let with_nul = "MAIL FROM:<al\0ice@example.org>";
    for bad in [
        "MAIL FROM:bob",
        "RCPT TO:<>",
        "FOO",
        with_nul,
        "\0\0\0",
        "DATA",
        long.as_str(),
    ] {
        let reply = c.cmd(bad);
        let shown: String = bad.chars().take(40).collect();
        assert!(
            (500..600).contains(&reply.code),
            "C: {shown:?}\nS: {reply}\nwant 5xx"
        );
        c.expect("NOOP", "250");
    }
    // DATA with a sender but no recipient.
    c.expect("RSET", "250");
    c.expect("MAIL FROM:<alice@example.org>", "250");
    let reply = c.cmd("DATA");
    assert!(
        (500..600).contains(&reply.code),
        "DATA before RCPT: {reply}"
    );
    c.expect("NOOP", "250");
    c.expect("RSET", "250");
    c.expect("MAIL FROM:<alice@example.org>", "250");
    c.expect("RCPT TO:<bob@example.com>", "250");
}

#[test]
fn pipelined_commands_get_replies_in_order() {
    let (sink, gw) = gateway();
    let sent = message(
        "p@example.org",
        "bob@example.com",
        "pipelined",
        "pipe@example.org",
        "x",
    );
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.ehlo();
    c.send_raw(b"MAIL FROM:<p@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    assert!(c.read_reply().starts_with("250"));
    assert!(c.read_reply().starts_with("250"));
    assert!(c.read_reply().starts_with("354"));
    let mut data = sent.clone();
    data.extend_from_slice(b".\r\nNOOP\r\n");
    c.send_raw(&data);
    assert!(c.read_reply().starts_with("250"));
    assert!(c.read_reply().starts_with("250"));
    let txs = sink.wait_for(|t| !delivered_to(t, "bob@example.com").is_empty(), DELIVERY);
    assert_relayed(
        delivered_to(&txs, "bob@example.com")[0],
        "p@example.org",
        &sent,
    );
}

#[test]
fn several_messages_in_one_session() {
    let (sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    let mut sent = Vec::new();
    for i in 0..3 {
        let m = message(
            "s@example.org",
            "bob@example.com",
            &format!("multi-{i}"),
            &format!("multi-{i}@x"),
            "x",
        );
        assert!(c
            .send_message("s@example.org", &["bob@example.com"], &m)
            .starts_with("250"));
        sent.push(m);
    }
    c.quit();
    let txs = sink.wait_for(|t| delivered_to(t, "bob@example.com").len() == 3, DELIVERY);
    for (i, m) in sent.iter().enumerate() {
        let tx = with_marker(&txs, &format!("multi-{i}@x"))
            .into_iter()
            .find(|t| t.has_rcpt("bob@example.com"))
            .expect("each message arrives");
        assert_relayed(tx, "s@example.org", m);
    }
}

#[test]
fn oversize_message_without_size_is_refused_after_data() {
    let (sink, gw) = gateway();
    let mut big = message(
        "a@example.org",
        "bob@example.com",
        "too big",
        "big@example.org",
        "",
    );
    let line = format!("{}\r\n", "y".repeat(998));
    while big.len() <= 1_048_576 + 50_000 {
        big.extend_from_slice(line.as_bytes());
    }
    let mut c = SmtpClient::connect(gw.smtp_addr());
    let reply = c.send_message("a@example.org", &["bob@example.com"], &big);
    assert!(reply.starts_with("552 5.3.4"), "oversize data: {reply}");
    c.expect("NOOP", "250");

    sentinel(&sink, &gw, "after-big");
    let txs = sink.settle(QUIET, DELIVERY);
    assert!(
        with_marker(&txs, "<big@example.org>").is_empty(),
        "{}",
        sink.dump()
    );
}

#[test]
fn declared_oversize_is_refused_at_mail() {
    let (_sink, gw) = gateway();
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<a@example.org> SIZE=1048577", "552 5.3.4");
    c.expect("MAIL FROM:<a@example.org> SIZE=1000", "250");
}

#[test]
fn thousand_recipients_all_arrive_with_one_journal_copy() {
    let (sink, gw) = gateway();
    let rcpts: Vec<String> = (0..1000)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let sent = message(
        "alice@example.com",
        "all@example.com",
        "to everyone",
        "thousand@example.com",
        "x",
    );

    let mut c = SmtpClient::connect_inside(gw.smtp_addr());
    let reply = c.send_message("alice@example.com", &refs, &sent);
    assert!(reply.starts_with("250"), "{reply}");

    let count = |txs: &[Transaction]| {
        let mut got: Vec<String> = txs
            .iter()
            .filter(|t| !t.has_rcpt(JOURNAL))
            .flat_map(|t| t.rcpts.iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        got.sort();
        got.dedup();
        got
    };
    let txs = sink.wait_for(
        |t| count(t).len() >= 1000 && journal_txs(t).len() == 1,
        DELIVERY,
    );
    assert_eq!(count(&txs), rcpts, "every recipient exactly as sent");
    for tx in txs.iter().filter(|t| !t.has_rcpt(JOURNAL)) {
        assert_relayed(tx, "alice@example.com", &sent);
    }
    let txs = sink.settle(QUIET, DELIVERY);
    assert_eq!(journal_txs(&txs).len(), 1, "one journal copy per message");
    let delivered: usize = txs
        .iter()
        .filter(|t| !t.has_rcpt(JOURNAL))
        .map(|t| t.rcpts.len())
        .sum();
    assert_eq!(delivered, 1000, "no recipient delivered twice");
}

#[test]
fn client_disconnecting_mid_data_delivers_nothing() {
    let (sink, gw) = gateway();
    {
        let mut c = SmtpClient::connect(gw.smtp_addr());
        c.ehlo();
        c.expect("MAIL FROM:<a@example.org>", "250");
        c.expect("RCPT TO:<bob@example.com>", "250");
        c.expect("DATA", "354");
        c.send_raw(b"Subject: half\r\nMessage-ID: <half@example.org>\r\n\r\nfirst half of the bo");
        // Dropping the client closes the connection mid-DATA.
    }
    sentinel(&sink, &gw, "after-half");
    let txs = sink.settle(QUIET, DELIVERY);
    assert!(
        with_marker(&txs, "<half@example.org>").is_empty(),
        "{}",
        sink.dump()
    );
}

#[test]
fn sigterm_while_idle_exits_zero() {
    let (_sink, mut gw) = gateway();
    let c = SmtpClient::connect(gw.smtp_addr());
    c.quit();
    let status = gw.terminate();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        gw.log_tail(40)
    );
}

#[test]
fn queue_list_runs() {
    let (_sink, gw) = gateway();
    let out = gw.cli(&["queue", "list"]);
    assert!(
        out.status.success(),
        "queue list: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
