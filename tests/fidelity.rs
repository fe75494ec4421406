//! Fidelity: every message of `tests/fixtures/messages/*.eml` goes through
//! the gateway unchanged, behind the one `Received:` field it prepends, both
//! to the next hop and inside the journal copy or envelope report. All of
//! them go through one gateway per format, to keep the suite fast.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mime::diff_summary;
use common::*;

const SENDER: &str = "fidelity@example.org";

/// The fixture messages, in name order, each with the recipient it is sent
/// to and its wire form (what the gateway must store: CRLF line ends).
fn fixtures() -> Vec<(PathBuf, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/messages");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 30,
        "want at least 30 fixture messages, found {}",
        paths.len()
    );
    paths
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let bytes = std::fs::read(&p).expect("read fixture");
            (p, format!("fid{i:03}@example.com"), wire_form(&bytes))
        })
        .collect()
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sends every fixture in one session from an outside client and returns
/// the gateway's reply to each, failing with the list of refused ones.
fn send_all(gw: &Gateway, messages: &[(PathBuf, String, Vec<u8>)]) {
    let mut c = SmtpClient::connect(gw.smtp_addr());
    let mut refused = Vec::new();
    for (path, rcpt, data) in messages {
        let reply = c.send_message(SENDER, &[rcpt], data);
        if reply.code != 250 {
            refused.push(format!("{}: {reply}", name(path)));
            c.expect("RSET", "250");
        }
    }
    c.quit();
    assert!(
        refused.is_empty(),
        "the gateway refused fixture messages:\n{}",
        refused.join("\n")
    );
}

fn config(sink: &Sink) -> GatewayConfig {
    GatewayConfig::new(sink.port()).max_message_size(50 * 1024 * 1024)
}

#[test]
fn fixtures_relayed_and_journaled_unchanged_as_copies() {
    let messages = fixtures();
    let sink = Sink::start();
    let gw = Gateway::start(&config(&sink));
    send_all(&gw, &messages);

    let n = messages.len();
    let wait = Duration::from_secs(30);
    sink.wait_for(|t| journal_txs(t).len() >= n && t.len() >= 2 * n, wait);
    let txs = sink.settle(QUIET, DELIVERY);

    let mut problems = Vec::new();
    let journals = journal_txs(&txs);
    for (path, rcpt, sent) in &messages {
        let originals = delivered_to(&txs, rcpt);
        if originals.len() != 1 {
            problems.push(format!(
                "{}: {} deliveries to {rcpt}",
                name(path),
                originals.len()
            ));
            continue;
        }
        let (received, rest) = split_received(&originals[0].data);
        if let Some(d) = diff_summary(rest, sent) {
            problems.push(format!("{}: relayed original differs: {d}", name(path)));
        }
        let mut expected_journal = b"X-Mailjournal-Direction: inbound\r\n".to_vec();
        expected_journal.extend_from_slice(received);
        expected_journal.extend_from_slice(sent);
        let copies = journals
            .iter()
            .filter(|j| j.data == expected_journal)
            .count();
        if copies != 1 {
            problems.push(format!(
                "{}: {copies} exact journal copies (want 1)",
                name(path)
            ));
        }
    }
    assert_eq!(journals.len(), n, "one journal copy per message");
    assert!(
        problems.is_empty(),
        "{} of {n} fixtures:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn fixtures_embedded_unchanged_in_envelope_reports() {
    let messages = fixtures();
    let sink = Sink::start();
    let gw = Gateway::start(&config(&sink).envelope());
    send_all(&gw, &messages);

    let n = messages.len();
    let wait = Duration::from_secs(30);
    sink.wait_for(|t| journal_txs(t).len() >= n && t.len() >= 2 * n, wait);
    let txs = sink.settle(QUIET, DELIVERY);
    let journals = journal_txs(&txs);
    assert_eq!(journals.len(), n, "one journal report per message");
    let reports: Vec<EnvelopeReport> = journals
        .iter()
        .map(|j| EnvelopeReport::parse(&j.data))
        .collect();

    let mut problems = Vec::new();
    for (path, rcpt, sent) in &messages {
        let originals = delivered_to(&txs, rcpt);
        if originals.len() != 1 {
            problems.push(format!(
                "{}: {} deliveries to {rcpt}",
                name(path),
                originals.len()
            ));
            continue;
        }
        let (_, rest) = split_received(&originals[0].data);
        if let Some(d) = diff_summary(rest, sent) {
            problems.push(format!("{}: relayed original differs: {d}", name(path)));
        }
        let line = format!("Recipient: {rcpt}");
        let mine: Vec<&EnvelopeReport> = reports
            .iter()
            .filter(|r| r.fields.contains(&line))
            .collect();
        let [report] = mine.as_slice() else {
            problems.push(format!(
                "{}: {} reports list {rcpt}",
                name(path),
                mine.len()
            ));
            continue;
        };
        if !report.embedded.ends_with(sent) {
            let tail = &report.embedded[report.embedded.len().saturating_sub(sent.len())..];
            let d = diff_summary(tail, sent).unwrap_or_default();
            problems.push(format!("{}: message/rfc822 part differs: {d}", name(path)));
            continue;
        }
        let result = std::panic::catch_unwind(|| {
            report.assert_embeds(sent);
            report.check_with_python(sent);
        });
        if result.is_err() {
            problems.push(format!(
                "{}: report check failed (see the panic above)",
                name(path)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {n} fixtures:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
