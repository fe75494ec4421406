//! The command line: `check`, `queue`, configuration errors, environment
//! overrides and exit codes (product contract §2, §3).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailjournal");

/// Writes a configuration from `config` into a fresh directory.
fn write_config(config: &GatewayConfig) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = config
        .to_toml()
        .replace("{listen}", &format!("127.0.0.1:{}", free_port()))
        .replace("{spool}", &dir.path().join("spool").display().to_string());
    let path = dir.path().join("mailjournal.toml");
    std::fs::write(&path, text).expect("write configuration");
    (dir, path)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run mailjournal")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_accepts_a_good_configuration_and_describes_it() {
    let (_dir, path) = write_config(&GatewayConfig::new(free_port()));
    let output = run(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("hostname          gw.test.example"), "{text}");
    assert!(text.contains("NDR journal-ndr@example.com"), "{text}");
}

#[test]
fn broken_configurations_exit_2_naming_key_and_file() {
    let mut config = GatewayConfig::new(free_port());
    config.inbound_ndr = String::new();
    config.extra = "[surprise]\nkey = 1\n".into();
    let (_dir, path) = write_config(&config);
    let path = path.to_str().expect("utf-8 path");

    for command in ["check", "serve"] {
        let output = run(&[command, "--config", path], &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(message.contains(path), "{command}: {message}");
        assert!(message.contains("surprise"), "{command}: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
    }

    // Without the unknown section, the broken rule is named.
    config.extra = String::new();
    let (_dir, path) = write_config(&config);
    let output = run(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("journal.inbound_ndr"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_file_and_bad_usage_exit_2() {
    let output = run(&["check", "--config", "/nonexistent/mailjournal.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/mailjournal.toml: no such file"));

    let output = run(&["serve"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = run(&["frobnicate"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_is_there_for_every_command() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["queue", "--help"],
        &["queue", "list", "--help"],
        &["queue", "retry", "--help"],
    ] {
        let output = run(args, &[]);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(stdout(&output).contains("Usage"), "{args:?}");
    }
}

#[test]
fn environment_variables_override_the_file() {
    let (_dir, path) = write_config(&GatewayConfig::new(free_port()));
    let path = path.to_str().expect("utf-8 path");

    let output = run(
        &["check", "--config", path],
        &[
            ("MAILJOURNAL__SERVER__HOSTNAME", "gw.override.example"),
            (
                "MAILJOURNAL__ROUTING__LOCAL_DOMAINS",
                "example.com,example.org",
            ),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("hostname          gw.override.example"),
        "{text}"
    );
    assert!(
        text.contains("local domains     example.com, example.org"),
        "{text}"
    );

    // A bad value from the environment is refused like one from the file.
    let output = run(
        &["check", "--config", path],
        &[("MAILJOURNAL__QUEUE__RETRY_MAX", "whenever")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("bad duration \"whenever\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_busy_listen_address_is_a_runtime_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = GatewayConfig::new(free_port())
        .to_toml()
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{spool}", &dir.path().join("spool").display().to_string());
    let path = dir.path().join("mailjournal.toml");
    std::fs::write(&path, text).expect("write configuration");

    let output = run(
        &["serve", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot listen on"),
        "{}",
        stderr(&output)
    );
}

/// The id the gateway gave in `250 2.0.0 Ok: queued as ID`.
fn queued_id(reply: &SmtpReply) -> String {
    let line = reply.line();
    line.rsplit(' ').next().expect("an id").trim().to_owned()
}

#[test]
fn queue_commands_work_with_the_gateway_running_and_stopped() {
    // The next hop is down: everything stays in the queue.
    let mut sink = Sink::start();
    let port = sink.port();
    sink.stop();
    let mut gateway = Gateway::start(&GatewayConfig::new(port));

    let mut client = SmtpClient::connect(gateway.smtp_addr());
    client.ehlo();
    let first = message(
        "a@example.net",
        "bob@example.com",
        "one",
        "q1@example.net",
        "1",
    );
    let reply = client.send_message("a@example.net", &["bob@example.com"], &first);
    assert!(reply.starts_with("250"), "{}", reply.line());
    let first_id = queued_id(&reply);
    let second = message(
        "a@example.net",
        "carol@example.com",
        "two",
        "q2@example.net",
        "2",
    );
    let reply = client.send_message("a@example.net", &["carol@example.com"], &second);
    let second_id = queued_id(&reply);

    // Running: asked through the control socket.
    let listing = gateway.cli(&["queue", "list"]);
    assert_eq!(listing.status.code(), Some(0), "{}", stderr(&listing));
    let text = stdout(&listing);
    assert!(text.contains("-- 4 deliveries in the queue"), "{text}");
    assert!(
        text.contains("bob@example.com") && text.contains("journal@example.com"),
        "{text}"
    );

    let shown = gateway.cli(&["queue", "show", &first_id]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("Subject: one"),
        "{}",
        stdout(&shown)
    );

    let deleted = gateway.cli(&["queue", "delete", &first_id]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    assert!(
        stdout(&deleted).contains("2 deliveries deleted"),
        "{}",
        stdout(&deleted)
    );
    let missing = gateway.cli(&["queue", "delete", &first_id]);
    assert_eq!(missing.status.code(), Some(1));

    // Stopped: the command opens the spool itself.
    let status = gateway.terminate();
    assert_eq!(status.code(), Some(0));
    let listing = gateway.cli(&["queue", "list"]);
    let text = stdout(&listing);
    assert!(
        text.contains("-- 2 deliveries in the queue"),
        "{text}\n{}",
        stderr(&listing)
    );
    assert!(!text.contains("bob@example.com"), "{text}");
    let retried = gateway.cli(&["queue", "retry", &second_id]);
    assert!(
        stdout(&retried).contains("2 deliveries scheduled"),
        "{}",
        stdout(&retried)
    );

    // Back up with the next hop: what is left arrives, what was deleted not.
    let sink = Sink::start_on(port);
    gateway.restart();
    let txs = sink.wait_for(|t| t.len() >= 2, DELIVERY);
    assert!(txs.iter().any(|t| t.has_rcpt("carol@example.com")));
    let txs = sink.settle(QUIET, Duration::from_secs(10));
    assert!(
        !txs.iter().any(|t| t.has_rcpt("bob@example.com")),
        "{}",
        sink.dump()
    );
}

#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let (_dir, path) = write_config(&GatewayConfig::new(free_port()));
    let mut child = Command::new(BIN)
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailjournal");
    // Like `mailjournal check | head -0`: the reader is gone before we write.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(output.status.code(), Some(0), "{message}");
}
