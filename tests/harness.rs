//! Tests of the test harness itself, without the gateway: the client talks
//! straight to the sink, so a failure here is a harness bug, not a product
//! bug.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::mime::{self, multipart_parts};
use common::{Behaviour, Reply, Sink, SmtpClient};

#[test]
fn sink_records_unstuffed_data_and_envelope() {
    let sink = Sink::start();
    let mut c = SmtpClient::connect(sink.addr());
    let ehlo = c.ehlo();
    for kw in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.has_keyword(kw), "{kw} in {ehlo}");
    }
    let data = b"Subject: x\r\n\r\n.leading dot\r\n.\r\n..two\r\nlast\r\n";
    let reply = c.send_message("\"a b\"@example.org", &["bob@example.com"], data);
    assert_eq!(reply.code, 250, "{reply}");

    // A second transaction on the same connection, after RSET.
    c.expect("RSET", "250");
    let reply = c.send_message(
        "",
        &["carol@example.com", "dave@example.com"],
        b"no newline",
    );
    assert_eq!(reply.code, 250, "{reply}");
    c.quit();

    let txs = sink.wait_for(|t| t.len() == 2, Duration::from_secs(5));
    assert_eq!(txs[0].mail_from, "\"a b\"@example.org");
    assert_eq!(txs[0].rcpts, vec!["bob@example.com"]);
    mime::assert_bytes_eq(&txs[0].data, data, "unstuffed data");
    assert_eq!(txs[1].mail_from, "");
    assert_eq!(txs[1].rcpts.len(), 2);
    assert_eq!(txs[1].data, b"no newline\r\n");
    assert_eq!(txs[0].session, txs[1].session);
}

#[test]
fn sink_ends_data_only_at_crlf_dot_crlf() {
    let sink = Sink::start();
    let mut c = SmtpClient::connect(sink.addr());
    c.ehlo();
    c.expect("MAIL FROM:<a@example.org>", "250");
    c.expect("RCPT TO:<b@example.com>", "250");
    c.expect("DATA", "354");
    c.send_raw(b"one\n.\r\ntwo\r.\r\nthree\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    c.expect("NOOP", "250");
    let txs = sink.wait_for(|t| t.len() == 1, Duration::from_secs(5));
    assert_eq!(txs[0].data, b"one\n.\r\ntwo\r.\r\nthree\r\n");
}

#[test]
fn sink_scripts_rcpt_replies() {
    let sink = Sink::start();
    sink.set_reply("Perm@Example.com", Reply::Permanent);
    sink.set_reply("temp@example.com", Reply::TempFailTimes(2));
    let mut c = SmtpClient::connect(sink.addr());
    c.ehlo();
    c.expect("MAIL FROM:<a@example.org>", "250");
    c.expect("RCPT TO:<perm@example.com>", "550 5.1.1");
    c.expect("RCPT TO:<temp@example.com>", "451 4.3.0");
    c.expect("RCPT TO:<TEMP@example.com>", "451 4.3.0");
    c.expect("RCPT TO:<temp@example.com>", "250");
    c.expect("DATA", "354");
    c.send_raw(b"x\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);
    let txs = sink.wait_for(|t| t.len() == 1, Duration::from_secs(5));
    assert_eq!(txs[0].rcpts, vec!["temp@example.com"]);
    assert_eq!(sink.rcpt_attempts().len(), 4);
}

#[test]
fn sink_behaviours_and_restart_on_same_port() {
    let mut sink = Sink::start();
    sink.set_behaviour(Behaviour::Silent);
    let s = TcpStream::connect(sink.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        std::io::Read::read(&mut &s, &mut buf).is_err(),
        "silent sink sent something"
    );

    sink.set_behaviour(Behaviour::StallAfterData);
    let mut c = SmtpClient::connect(sink.addr());
    c.set_read_timeout(Duration::from_millis(500));
    c.ehlo();
    c.expect("MAIL FROM:<a@example.org>", "250");
    c.expect("RCPT TO:<b@example.com>", "250");
    c.expect("DATA", "354");
    c.send_raw(b"x\r\n.\r\n");
    assert!(
        c.try_read_reply().is_err(),
        "stalled sink answered the final dot"
    );
    assert_eq!(sink.stalled(), 1);
    assert!(sink.transactions().is_empty());

    let port = sink.port();
    sink.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped sink still listens"
    );
    let sink = Sink::start_on(port);
    let mut c = SmtpClient::connect(sink.addr());
    assert_eq!(
        c.send_message("a@example.org", &["b@example.com"], b"y\r\n")
            .code,
        250
    );
}

#[test]
fn mime_helpers() {
    assert_eq!(mime::wire_form(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
    let data = b"Received: from x\r\n\tby y; date\r\nSubject: s\r\n\r\nbody\r\n";
    let (recv, rest) = common::split_received(data);
    assert_eq!(recv, b"Received: from x\r\n\tby y; date\r\n");
    assert_eq!(rest, b"Subject: s\r\n\r\nbody\r\n");
    assert_eq!(
        mime::header(data, "received").as_deref(),
        Some("from x\tby y; date")
    );

    let multi = b"Content-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\npreamble\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nSender: a\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: s\r\n\r\nx\r\n\r\n--b--\r\n";
    let parts = multipart_parts(multi);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].body, b"Sender: a\r\n");
    assert_eq!(parts[1].body, b"Subject: s\r\n\r\nx\r\n");
    assert_eq!(
        parts[1].header("content-type").as_deref(),
        Some("message/rfc822")
    );
}
