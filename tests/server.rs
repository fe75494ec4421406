//! Server limits, the laptop sample configuration, and queue expiry.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn sessions_past_max_connections_get_421() {
    let sink = Sink::start();
    let mut config = GatewayConfig::new(sink.port());
    config.max_connections = 2;
    let gateway = Gateway::start(&config);

    // The harness's readiness probe may hold a slot for a moment: take two
    // sessions that are both greeted, trying again until they are.
    let greeted = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut line = [0u8; 3];
        std::io::Read::read_exact(s, &mut line).is_ok() && &line == b"220"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (first, _second) = loop {
        let mut a = std::net::TcpStream::connect(gateway.smtp_addr()).expect("connect");
        let mut b = std::net::TcpStream::connect(gateway.smtp_addr()).expect("connect");
        if greeted(&mut a) && greeted(&mut b) {
            break (a, b);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two sessions never both greeted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut third = std::net::TcpStream::connect(gateway.smtp_addr()).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut banner = String::new();
    std::io::Read::read_to_string(&mut third, &mut banner).expect("read banner");
    assert!(banner.starts_with("421 4.7.0"), "{banner:?}");

    // A slot comes back when a session ends.
    drop(first);
    wait_until("a free session slot", Duration::from_secs(5), || {
        std::net::TcpStream::connect(gateway.smtp_addr())
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut buf = [0u8; 3];
                std::io::Read::read_exact(&mut s, &mut buf).ok()?;
                Some(&buf == b"220")
            })
            .unwrap_or(false)
    });
}

#[test]
fn the_sample_configuration_delivers_into_maildirs_under_var() {
    // Run from a scratch directory holding a copy of deploy/, as `make run`
    // runs from the checkout.
    let work = tempfile::tempdir().expect("temporary directory");
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/mailjournal.toml"
    ))
    .expect("deploy/mailjournal.toml");
    let port = free_port();
    let text = sample.replace("127.0.0.1:2525", &format!("127.0.0.1:{port}"));
    std::fs::create_dir_all(work.path().join("deploy")).expect("mkdir");
    std::fs::write(work.path().join("deploy/mailjournal.toml"), text).expect("write sample");

    let check = Command::new(env!("CARGO_BIN_EXE_mailjournal"))
        .args(["check", "--config", "deploy/mailjournal.toml"])
        .current_dir(work.path())
        .output()
        .expect("run check");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_mailjournal"))
        .args(["serve", "--config", "deploy/mailjournal.toml"])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the gateway to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(address).is_ok()
    });

    let mut client = SmtpClient::connect(address);
    client.ehlo();
    let data = message(
        "alice@example.net",
        "bob@example.com",
        "demo",
        "demo@example.net",
        "hi",
    );
    let reply = client.send_message("alice@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let mail = work.path().join("var/mail/bob@example.com/new");
    let journal = work.path().join("var/journal/journal@example.com/new");
    let files = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    wait_until("both Maildirs to fill", DELIVERY, || {
        files(&mail) == 1 && files(&journal) == 1
    });

    let entry = std::fs::read_dir(&journal)
        .expect("journal maildir")
        .next()
        .expect("one file")
        .expect("entry");
    let report = std::fs::read(entry.path()).expect("read journal copy");
    let report = String::from_utf8_lossy(&report);
    assert!(
        report.starts_with("Return-Path: <journal-ndr@example.com>\r\n"),
        "{report}"
    );
    assert!(report.contains("X-MS-Journal-Report:"), "{report}");
    assert!(report.contains("Recipient: bob@example.com"), "{report}");

    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_journal_copy_that_outlives_max_age_bounces_to_the_ndr_address() {
    let sink = Sink::start();
    sink.set_reply(JOURNAL, Reply::TempFailTimes(u32::MAX));
    let mut config = GatewayConfig::new(sink.port());
    config.max_age = "2s".into();
    config.retry_initial = "1s".into();
    config.retry_max = "1s".into();
    let gateway = Gateway::start(&config);

    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    let data = message(
        "alice@example.net",
        "bob@example.com",
        "ages",
        "age@example.net",
        "x",
    );
    let reply = client.send_message("alice@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let txs = sink.wait_for(
        |t| {
            t.iter()
                .any(|t| t.mail_from.is_empty() && t.has_rcpt(JOURNAL_NDR))
        },
        Duration::from_secs(20),
    );
    let dsn = txs.iter().find(|t| t.mail_from.is_empty()).expect("a DSN");
    assert!(dsn.contains("Status: 4.4.7"), "{}", dsn.text());
    assert!(
        dsn.contains("Final-Recipient: rfc822; journal@example.com"),
        "{}",
        dsn.text()
    );
    let txs = sink.settle(QUIET, Duration::from_secs(10));
    assert!(
        !txs.iter()
            .any(|t| t.mail_from.is_empty() && t.has_rcpt("alice@example.net")),
        "the original sender heard of journaling:\n{}",
        sink.dump()
    );
}
