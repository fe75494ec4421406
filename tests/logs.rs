//! Logs for operators: one JSON object per line with `--log-format json`,
//! the queue id on every line of a message's story, no secrets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn a_message_story_is_told_in_json_lines_with_its_queue_id_and_no_password() {
    let sink = Sink::start();
    let work = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let closed_ldap = free_port();
    let mut config = GatewayConfig::new(sink.port());
    // A directory that cannot be reached: its errors are logged, the bind
    // password must not be.
    config.extra = format!(
        "[directory]\nurl = \"ldap://127.0.0.1:{closed_ldap}\"\n\
         bind_dn = \"cn=svc,dc=example,dc=com\"\nbind_password = \"s3cret-bind-pw\"\n\
         base_dn = \"dc=example,dc=com\"\ntimeout = \"1s\"\n"
    );
    let text = config
        .to_toml()
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{spool}", &work.path().join("spool").display().to_string());
    let path = work.path().join("mailjournal.toml");
    std::fs::write(&path, text).expect("write configuration");
    let log = work.path().join("log.jsonl");

    let mut child = Command::new(env!("CARGO_BIN_EXE_mailjournal"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
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
        "story",
        "story@example.net",
        "x",
    );
    let reply = client.send_message("alice@example.net", &["bob@example.com"], &data);
    assert!(reply.starts_with("250"), "{}", reply.line());
    let id = reply
        .line()
        .rsplit(' ')
        .next()
        .expect("queue id")
        .trim()
        .to_owned();
    sink.wait_for(|t| t.len() >= 2, DELIVERY);
    wait_until("both deliveries to be logged", DELIVERY, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("Delivered.").count() >= 2
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("gateway exit");
    assert_eq!(status.code(), Some(0));

    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(
        !text.contains("s3cret-bind-pw"),
        "the bind password was logged:\n{text}"
    );
    let mut story = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if line.contains(&id) {
            let message = event["fields"]["message"].as_str().unwrap_or("").to_owned();
            story.push(message);
        }
    }
    for step in ["Journal targets chosen.", "Message accepted.", "Delivered."] {
        assert!(
            story.iter().any(|m| m == step),
            "{step:?} not logged with {id}: {story:?}"
        );
    }
    assert_eq!(
        story.iter().filter(|m| *m == "Delivered.").count(),
        2,
        "{story:?}"
    );
}
