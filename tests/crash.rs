//! Durability (PRODUCT.md §4): what the gateway acknowledged with `250` is
//! delivered, journal copies included, even if the process is killed with
//! SIGKILL before any next hop was reachable.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

const N: usize = 20;

#[test]
fn acknowledged_messages_survive_sigkill() {
    // A port that refuses connections until the sink comes back on it.
    let mut sink = Sink::start();
    let port = sink.port();
    sink.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "next hop should be down"
    );

    let mut gw = Gateway::start(&GatewayConfig::new(port));
    let mut expected = Vec::new();
    for i in 0..N {
        let marker = format!("crash-{i:02}@example");
        let inside = i % 2 == 1;
        let (from, to) = if inside {
            (
                "alice@example.com".to_string(),
                format!("user{i:02}@example.net"),
            )
        } else {
            (
                "alice@example.org".to_string(),
                format!("bob{i:02}@example.com"),
            )
        };
        let sent = message(&from, &to, &format!("crash {i}"), &marker, "durable?");
        let mut c = if inside {
            SmtpClient::connect_inside(gw.smtp_addr())
        } else {
            SmtpClient::connect(gw.smtp_addr())
        };
        let reply = c.send_message(&from, &[&to], &sent);
        assert!(reply.starts_with("250"), "message {i}: {reply}");
        c.quit();
        expected.push((marker, from, to, sent));
    }

    gw.kill9();
    gw.restart();
    let sink = Sink::start_on(port);

    let all_there = |txs: &[Transaction]| {
        expected.iter().all(|(marker, _, to, _)| {
            let mine = with_marker(txs, marker);
            mine.iter().any(|t| t.has_rcpt(to)) && mine.iter().any(|t| t.has_rcpt(JOURNAL))
        })
    };
    sink.wait_for(all_there, Duration::from_secs(60));
    let txs = sink.settle(QUIET, Duration::from_secs(20));

    for (marker, from, to, sent) in &expected {
        let mine = with_marker(&txs, marker);
        let originals: Vec<_> = mine.iter().filter(|t| t.has_rcpt(to)).collect();
        let journals: Vec<_> = mine.iter().filter(|t| t.has_rcpt(JOURNAL)).collect();
        // At-least-once delivery: a copy in flight at the kill may repeat once.
        assert!(
            originals.len() <= 2,
            "{marker}: {} originals\n{}",
            originals.len(),
            sink.dump()
        );
        assert!(
            journals.len() <= 2,
            "{marker}: {} journal copies\n{}",
            journals.len(),
            sink.dump()
        );
        assert_relayed(originals[0], from, sent);
        assert_eq!(journals[0].mail_from, JOURNAL_NDR);
    }
}

/// SIGTERM while a next hop is still answering the final dot: the gateway
/// waits for the answer and books it, so nothing is sent twice after a
/// restart (a duplicate journal copy lands in an archive for good).
#[test]
fn a_clean_stop_books_deliveries_under_way_and_sends_nothing_twice() {
    let sink = Sink::start();
    sink.set_behaviour(Behaviour::SlowAfterData);
    let mut gateway = Gateway::start(&GatewayConfig::new(sink.port()));

    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    let data = message(
        "a@example.net",
        "bob@example.com",
        "in flight",
        "fly@example.net",
        "x",
    );
    let reply = client.send_message("a@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());
    client.expect("QUIT", "221");

    // Both the original and the journal copy are waiting for the sink's 250.
    sink.wait_until("both deliveries to reach the final dot", DELIVERY, |s| {
        s.slow_started() >= 2
    });
    let status = gateway.terminate();
    assert_eq!(status.code(), Some(0));

    sink.set_behaviour(Behaviour::Normal);
    gateway.restart();
    let txs = sink.settle(QUIET, Duration::from_secs(15));
    assert_eq!(
        delivered_to(&txs, "bob@example.com").len(),
        1,
        "{}",
        sink.dump()
    );
    assert_eq!(journal_txs(&txs).len(), 1, "{}", sink.dump());
}
