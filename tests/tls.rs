//! TLS on both sides: STARTTLS offered to clients when a certificate is
//! configured (RFC 3207), and STARTTLS used towards next hops that offer it
//! (opportunistic) or demanded (`?tls=required`).

mod common;

use std::process::{Command, Stdio};

use common::*;

/// A self-signed certificate and key written as PEM files into `dir`.
fn certificate(dir: &std::path::Path) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("generate a certificate");
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert.display().to_string(), key.display().to_string())
}

/// A gateway configuration whose `[server]` has the certificate.
fn with_tls(config: &GatewayConfig, cert: &str, key: &str) -> String {
    config.to_toml().replacen(
        "max_connections",
        &format!("tls_cert = {cert:?}\ntls_key = {key:?}\nmax_connections"),
        1,
    )
}

fn python(script: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 is needed for this test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn starttls_is_offered_and_mail_flows_over_it() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let (cert, key) = certificate(keys.path());
    let sink = Sink::start();
    let gateway = Gateway::start_toml(&with_tls(&GatewayConfig::new(sink.port()), &cert, &key));

    let mut client = SmtpClient::connect(gateway.smtp_addr());
    let ehlo = client.ehlo();
    assert!(ehlo.has_keyword("STARTTLS"), "{}", ehlo.text());

    let script = r#"
import smtplib, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.ehlo()
s.starttls(context=context)
code, text = s.ehlo()
assert b"STARTTLS" not in text, text
s.sendmail("alice@example.net", ["bob@example.com"],
           b"Subject: over tls\r\nMessage-ID: <tls1@example.net>\r\n\r\nsecret\r\n")
s.quit()
print("sent")
"#;
    let port = gateway.smtp_addr().port().to_string();
    let (ok, output) = python(script, &[&port]);
    assert!(ok, "{output}");

    let txs = sink.wait_for(
        |t| t.iter().any(|t| t.has_rcpt("bob@example.com")),
        DELIVERY,
    );
    let original = delivered_to(&txs, "bob@example.com")[0];
    assert!(
        original.text().contains("with ESMTPS id"),
        "{}",
        original.text()
    );
}

#[test]
fn commands_sent_before_the_handshake_are_discarded() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let (cert, key) = certificate(keys.path());
    let sink = Sink::start();
    let gateway = Gateway::start_toml(&with_tls(&GatewayConfig::new(sink.port()), &cert, &key));

    // CVE-2011-0411: a command pipelined after STARTTLS in clear text must
    // not be answered inside the TLS session.
    let script = r#"
import socket, ssl, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = sock.makefile("rb")
assert f.readline().startswith(b"220")
sock.sendall(b"EHLO x\r\n")
while True:
    line = f.readline()
    if line[3:4] == b" ":
        break
sock.sendall(b"STARTTLS\r\nRSET\r\n")
assert f.readline().startswith(b"220"), "no 220 to STARTTLS"
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
tls = context.wrap_socket(sock, server_hostname="localhost")
tls.settimeout(1.0)
try:
    data = tls.recv(100)
    print("UNEXPECTED", data)
    sys.exit(1)
except socket.timeout:
    pass
tls.sendall(b"NOOP\r\n")
tls.settimeout(5)
reply = tls.recv(100)
assert reply.startswith(b"250"), reply
print("ok")
"#;
    let port = gateway.smtp_addr().port().to_string();
    let (ok, output) = python(script, &[&port]);
    assert!(ok, "{output}");
}

#[test]
fn delivery_uses_starttls_when_the_next_hop_offers_it() {
    // Hop: a second gateway with a certificate, relaying to the sink.
    let keys = tempfile::tempdir().expect("temporary directory");
    let (cert, key) = certificate(keys.path());
    let sink = Sink::start();
    let mut inner = GatewayConfig::new(sink.port());
    inner.internal_networks = vec!["127.0.0.0/8".into()];
    let hop = Gateway::start_toml(&with_tls(&inner, &cert, &key));

    // Front gateway: originals to the TLS hop (required), journal to the
    // plain sink with tls=required, which must not be delivered.
    let mut front = GatewayConfig::new(sink.port());
    front.inbound_next_hop = format!("smtp://127.0.0.1:{}?tls=required", hop.smtp_addr().port());
    front.journal_next_hop = format!("smtp://127.0.0.1:{}?tls=required", sink.port());
    let gateway = Gateway::start(&front);

    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    let data = message(
        "a@example.net",
        "bob@example.com",
        "tls hop",
        "hop@example.net",
        "x",
    );
    let reply = client.send_message("a@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());

    // The hop received it over TLS from the front gateway and relayed it.
    let txs = sink.wait_for(
        |t| {
            t.iter()
                .any(|t| t.has_rcpt("bob@example.com") && t.contains("tls hop"))
        },
        DELIVERY,
    );
    let relayed = delivered_to(&txs, "bob@example.com");
    assert!(
        relayed
            .iter()
            .any(|t| t.text().contains("(mailjournal) with ESMTPS")),
        "{}",
        sink.dump()
    );

    // The journal copy waits: the plain sink does not offer STARTTLS.
    wait_until("the journal copy to be deferred", DELIVERY, || {
        let listing = gateway.cli(&["queue", "list"]);
        String::from_utf8_lossy(&listing.stdout).contains("does not offer STARTTLS")
    });
    let front_journal: Vec<_> = sink
        .transactions()
        .into_iter()
        .filter(|t| t.mail_from == JOURNAL_NDR && t.contains("tls hop") && !t.contains("ESMTPS"))
        .collect();
    assert!(front_journal.is_empty(), "{}", sink.dump());
}
