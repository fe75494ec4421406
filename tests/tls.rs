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

/// A one-shot SMTP server with TLS from the first byte (like port 465),
/// written in Python's standard library; it prints what it received.
const IMPLICIT_TLS_SINK: &str = r#"
import socket, ssl, sys
cert, key, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(5)
open(port_file, "w").write(str(listener.getsockname()[1]))
listener.settimeout(30)
raw, _ = listener.accept()
conn = context.wrap_socket(raw, server_side=True)
f = conn.makefile("rb")
def say(line):
    conn.sendall(line + b"\r\n")
say(b"220 implicit.tls.test ESMTP")
rcpts = []
while True:
    line = f.readline()
    if not line:
        break
    verb = line[:4].upper()
    if verb == b"EHLO":
        say(b"250-implicit.tls.test")
        say(b"250 8BITMIME")
    elif verb == b"MAIL":
        say(b"250 ok")
    elif verb == b"RCPT":
        rcpts.append(line.split(b"<", 1)[1].split(b">", 1)[0].decode())
        say(b"250 ok")
    elif verb == b"DATA":
        say(b"354 go")
        while f.readline() not in (b".\r\n", b""):
            pass
        say(b"250 delivered over tls")
        print("DELIVERED", " ".join(rcpts), conn.version(), flush=True)
        break
    elif verb == b"QUIT":
        say(b"221 bye")
        break
    else:
        say(b"250 ok")
"#;

#[test]
fn smtps_next_hops_speak_tls_from_the_first_byte() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let (cert, key) = certificate(keys.path());
    let port_file = keys.path().join("port");
    let server = Command::new("python3")
        .arg("-c")
        .arg(IMPLICIT_TLS_SINK)
        .args([&cert, &key, &port_file.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    wait_until("the TLS sink to listen", DELIVERY, || {
        std::fs::read_to_string(&port_file).is_ok_and(|p| !p.is_empty())
    });
    let port = std::fs::read_to_string(&port_file).expect("port");

    let sink = Sink::start();
    let mut config = GatewayConfig::new(sink.port());
    config.journal_next_hop = format!("smtps://127.0.0.1:{port}");
    let gateway = Gateway::start(&config);
    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    let data = message(
        "a@example.net",
        "bob@example.com",
        "smtps",
        "smtps@example.net",
        "x",
    );
    let reply = client.send_message("a@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());

    let output = server.wait_with_output().expect("TLS sink");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("DELIVERED journal@example.com TLSv1."),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
