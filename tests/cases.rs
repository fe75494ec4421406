//! The hostile and awkward inputs of `tests/fixtures/cases/` (copied from the
//! field cases; see their README): each replayed byte for byte against the
//! real gateway, with a recording next hop behind it.

mod common;

use std::time::{Duration, Instant};

use common::mime::{self, find};
use common::*;

/// The message of a case file's first DATA block as the gateway must store
/// it: dot-stuffing undone at CRLF line starts (RFC 5321 §4.5.2), then bare
/// CR and LF normalised to CRLF.
fn case_data(id: &str) -> Vec<u8> {
    let bytes = std::fs::read(case_path(id)).expect("read case file");
    let start = find(&bytes, b"DATA\r\n").expect("case has DATA") + 6;
    let rest = &bytes[start..];
    let block: &[u8] = if rest.starts_with(b".\r\n") {
        &[]
    } else {
        &rest[..find(rest, b"\r\n.\r\n").expect("data ends") + 2]
    };
    let mut unstuffed = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in block.iter().enumerate() {
        if !(at_line_start && b == b'.') {
            unstuffed.push(b);
        }
        at_line_start = b == b'\n' && i > 0 && block[i - 1] == b'\r';
    }
    mime::wire_form(&unstuffed)
}

/// Replays a case from an outside (127.0.0.1) or inside (127.0.0.2) client.
fn replay(gw: &Gateway, id: &str, inside: bool) -> Vec<Step> {
    let mut c = if inside {
        SmtpClient::connect_inside(gw.smtp_addr())
    } else {
        SmtpClient::connect(gw.smtp_addr())
    };
    c.replay_steps(&case_path(id))
}

/// Asserts the replies to the replayed commands, in order, by prefix.
fn assert_replies(steps: &[Step], want: &[&str]) {
    let got: Vec<String> = steps
        .iter()
        .map(|s| format!("{} -> {}", s.sent, s.reply.line()))
        .collect();
    assert_eq!(
        steps.len(),
        want.len(),
        "replies:\n{got:#?}\nwant prefixes {want:?}"
    );
    for (step, prefix) in steps.iter().zip(want) {
        assert!(
            step.reply.starts_with(prefix),
            "C: {}\nS: {}\nwant {prefix:?}; all replies:\n{got:#?}",
            step.sent,
            step.reply
        );
    }
}

/// The relayed original to `rcpt` and the journal copy, waited for, with a
/// check that exactly one of each arrived.
fn original_and_journal(sink: &Sink, rcpt: &str) -> (Transaction, Transaction) {
    sink.wait_for(
        |t| !delivered_to(t, rcpt).is_empty() && !journal_txs(t).is_empty(),
        DELIVERY,
    );
    let txs = sink.settle(QUIET, DELIVERY);
    let originals = delivered_to(&txs, rcpt);
    let journals = journal_txs(&txs);
    assert_eq!(
        originals.len(),
        1,
        "one original to {rcpt}:\n{}",
        sink.dump()
    );
    assert_eq!(journals.len(), 1, "one journal copy:\n{}", sink.dump());
    (originals[0].clone(), journals[0].clone())
}

fn smuggling_case(id: &str) {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, id, true);
    // A 221 to QUIT also proves the gateway answered only the commands sent:
    // a smuggled MAIL/RCPT/DATA would have shifted every later reply.
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let expected = case_data(id);
    let (original, journal) = original_and_journal(&sink, "bob@example.net");
    assert_relayed(&original, "alice@example.com", &expected);
    assert!(
        original.contains("urgent wire transfer"),
        "normalised message keeps the text"
    );
    assert_crlf_only(&original.data, "relayed original");
    assert!(
        journal.contains("urgent wire transfer"),
        "journal copy is the same message"
    );
    assert_crlf_only(&journal.data, "journal copy");

    let txs = sink.transactions();
    assert!(
        txs.iter().all(|t| !t.has_rcpt("victim@example.net")),
        "{}",
        sink.dump()
    );
    assert!(
        txs.iter().all(|t| t.mail_from != "ceo@example.com"),
        "{}",
        sink.dump()
    );
    let attempts = sink.rcpt_attempts();
    assert!(
        attempts.iter().all(|a| a.rcpt != "victim@example.net"),
        "{}",
        sink.dump()
    );
}

#[test]
fn c01a_lf_dot_crlf_smuggles_nothing() {
    smuggling_case("C01a");
}

#[test]
fn c01b_lf_dot_lf_smuggles_nothing() {
    smuggling_case("C01b");
}

#[test]
fn c02a_cr_dot_cr_smuggles_nothing() {
    smuggling_case("C02a");
}

#[test]
fn c02b_bare_lf_is_normalised_identically_for_relay_and_journal() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C02b", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let expected = case_data("C02b");
    assert!(find(&expected, b"page one line\r\npage two line\r\nend\r\n").is_some());
    let (original, journal) = original_and_journal(&sink, "bob@example.com");
    let received = assert_relayed(&original, "scanner@example.com", &expected);
    assert_copy(&journal, "inbound", &received, &expected);
}

#[test]
fn c03a_lone_dot_after_354_ends_data_at_once() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let mut c = SmtpClient::connect(gw.smtp_addr());
    c.set_read_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let steps = c.replay_steps(&case_path("C03a"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow replies: {steps:#?}"
    );
    assert_eq!(steps.len(), 6, "{steps:#?}");
    let answer = &steps[4].reply;
    assert!(
        answer.code == 250 || (500..600).contains(&answer.code),
        "empty data: {answer}"
    );
    assert!(steps[5].reply.starts_with("221"), "{steps:#?}");
    if answer.code == 250 {
        let txs = sink.wait_for(|t| !delivered_to(t, "bob@example.com").is_empty(), DELIVERY);
        assert_relayed(
            delivered_to(&txs, "bob@example.com")[0],
            "alice@example.com",
            b"",
        );
    }
}

#[test]
fn c03b_stuffed_first_line_keeps_one_dot() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C03b", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let expected = b".first line begins with one dot\r\nsecond line\r\n";
    assert_eq!(case_data("C03b"), expected);
    let (original, journal) = original_and_journal(&sink, "bob@example.com");
    let received = assert_relayed(&original, "alice@example.com", expected);
    assert_copy(&journal, "inbound", &received, expected);
}

#[test]
fn c03c_dot_lines_are_restuffed_when_relaying() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C03c", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let expected = case_data("C03c");
    let body = b"line before\r\n.\r\n.hidden line starting with a dot\r\nline after: ";
    assert!(find(&expected, body).is_some(), "fixture as expected");
    let (original, journal) = original_and_journal(&sink, "bob@example.com");
    let received = assert_relayed(&original, "alice@example.com", &expected);
    assert_copy(&journal, "inbound", &received, &expected);
}

#[test]
fn c05a_quoted_local_parts_keep_their_quotes() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C05a", true);
    assert_replies(&steps, &["250", "250", "250", "250", "354", "250", "221"]);

    let bob = r#""bob@legacy"@example.net"#;
    let carol = r#""carol\\ops"@example.net"#;
    let txs = sink.wait_for(
        |t| {
            let rcpts: Vec<&String> = t.iter().flat_map(|t| &t.rcpts).collect();
            rcpts.iter().any(|r| *r == bob) && rcpts.iter().any(|r| *r == carol)
        },
        DELIVERY,
    );
    for tx in txs.iter().filter(|t| !t.has_rcpt(JOURNAL)) {
        assert_eq!(
            tx.mail_from,
            r#""alice smith"@example.com"#,
            "{}",
            sink.dump()
        );
        assert_relayed(tx, r#""alice smith"@example.com"#, &case_data("C05a"));
    }
    sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
}

#[test]
fn c05b_long_srs_local_part_is_relayed() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C05b", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let srs = concat!(
        "SRS0=k3Zp=QX=lists.example.org=",
        "bounce-7f3a9c2e5d1b4a608e7c9f2d1a3b5c7e-bob=example.com@example.org"
    );
    let (original, _journal) = original_and_journal(&sink, "bob@example.com");
    assert_relayed(&original, srs, &case_data("C05b"));
}

const C06_REPLIES: &[&str] = &[
    "250", "250", "250", "250", "354", "250", "250", "250", "221",
];

#[test]
fn c06_null_sender_and_postmaster_are_accepted() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C06", false);
    // MAIL FROM:<> AUTH=<>, RCPT alice, RCPT <Postmaster>, DATA, data, RSET,
    // MAIL FROM:<postmaster> (a real sender, not the null one), QUIT.
    assert_replies(&steps, C06_REPLIES);

    let txs = sink.wait_for(
        |t| !delivered_to(t, "alice@example.com").is_empty() && !journal_txs(t).is_empty(),
        DELIVERY,
    );
    let original = delivered_to(&txs, "alice@example.com")[0];
    assert_relayed(original, "", &case_data("C06"));
    let txs = sink.settle(QUIET, DELIVERY);
    // `<Postmaster>` (RFC 5321 §4.1.1.3) goes to the inbound next hop as is,
    // from the null sender, with the same data.
    let postmaster: Vec<_> = txs.iter().filter(|t| t.has_rcpt("Postmaster")).collect();
    assert_eq!(postmaster.len(), 1, "{}", sink.dump());
    assert_relayed(postmaster[0], "", &case_data("C06"));
    assert_eq!(journal_txs(&txs).len(), 1, "{}", sink.dump());
}

#[test]
fn c06_null_sender_message_that_fails_yields_no_dsn() {
    let sink = Sink::start();
    sink.set_default_reply(Reply::Permanent);
    sink.set_reply(JOURNAL, Reply::Accept);
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    assert_replies(&replay(&gw, "C06", false), C06_REPLIES);

    sink.wait_until("a refused attempt for alice", DELIVERY, |s| {
        s.rcpt_attempts()
            .iter()
            .any(|a| a.rcpt == "alice@example.com" && a.code == 550)
    });
    sink.wait_for(|t| journal_txs(t).len() == 1, DELIVERY);
    sink.settle(QUIET, DELIVERY);
    let dsn_attempts: Vec<_> = sink
        .rcpt_attempts()
        .into_iter()
        .filter(|a| a.mail_from.is_empty())
        .filter(|a| {
            let r = a.rcpt.to_ascii_lowercase();
            r != "alice@example.com" && !r.starts_with("postmaster")
        })
        .collect();
    assert!(
        dsn_attempts.is_empty(),
        "a DSN was attempted: {dsn_attempts:?}\n{}",
        sink.dump()
    );
}

#[test]
fn c07a_undeclared_oversize_refused_at_final_dot() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()).max_message_size(8192));
    let steps = replay(&gw, "C07a", false);
    assert_replies(&steps, &["250", "250", "250", "354", "552 5.3.4", "221"]);

    // A small message afterwards goes through; the big one never does.
    let small = message(
        "a@example.org",
        "bob@example.com",
        "small",
        "small@example.org",
        "x",
    );
    let mut c = SmtpClient::connect(gw.smtp_addr());
    assert!(c
        .send_message("a@example.org", &["bob@example.com"], &small)
        .starts_with("250"));
    sink.wait_for(|t| with_marker(t, "small@example.org").len() == 2, DELIVERY);
    let txs = sink.settle(QUIET, DELIVERY);
    assert!(
        with_marker(&txs, "<c07@example.com>").is_empty(),
        "{}",
        sink.dump()
    );
}

#[test]
fn c07b_declared_oversize_refused_at_mail() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C07b", false);
    assert_replies(&steps, &["250", "552 5.3.4", "221"]);
}

#[test]
fn c21_data_is_relayed_byte_identical() {
    let sink = Sink::start();
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C21", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let expected = case_data("C21");
    assert!(expected.ends_with(b"last line of the body\r\n"));
    let (original, journal) = original_and_journal(&sink, "bob@example.com");
    let received = assert_relayed(&original, "alice@example.com", &expected);
    assert_copy(&journal, "inbound", &received, &expected);
}

/// C17: a next hop that never greets, then one that speaks only implicit
/// TLS, then one that goes silent after the final dot. Every attempt must be
/// time-bounded (the sink sees the gateway give up and close), and once the
/// next hop behaves, the original and the journal copy arrive exactly once.
#[test]
fn c17_stalling_next_hop_is_bounded_and_retried_without_duplicates() {
    let sink = Sink::start();
    sink.set_behaviour(Behaviour::Silent);
    let gw = Gateway::start(&GatewayConfig::new(sink.port()));
    let steps = replay(&gw, "C03c", false);
    assert_replies(&steps, &["250", "250", "250", "354", "250", "221"]);

    let phase = Duration::from_secs(20);
    for (now, next) in [
        (Behaviour::Silent, Behaviour::TlsOnly),
        (Behaviour::TlsOnly, Behaviour::StallAfterData),
    ] {
        let what = format!("the gateway to give up on a {now:?} next hop");
        sink.wait_until(&what, phase, |s| s.closed_by_peer(now) >= 1);
        sink.set_behaviour(next);
    }
    sink.wait_until(
        "the gateway to give up after a stalled final dot",
        phase,
        |s| s.stalled() >= 1 && s.closed_by_peer(Behaviour::StallAfterData) >= 1,
    );
    sink.set_behaviour(Behaviour::Normal);

    let expected = case_data("C03c");
    let (original, journal) = original_and_journal(&sink, "bob@example.com");
    let received = assert_relayed(&original, "alice@example.com", &expected);
    assert_copy(&journal, "inbound", &received, &expected);
}
