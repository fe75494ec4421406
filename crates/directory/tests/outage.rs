//! The directory going away: stale answers, restarts, idle drops (C16), and
//! refused credentials. Each test owns its slapd, since it stops it.

mod common;

use std::time::Duration;

use common::{Fixture, Options, Slapd};
use directory::{Directory, DirectoryConfig, DirectoryError, Lookup, Mapping, Secret};

fn ad_directory(config: DirectoryConfig) -> Directory {
    let mapping = Mapping::load("active-directory").expect("preset");
    Directory::new(config, mapping, vec!["extensionAttribute10".into()]).expect("directory")
}

async fn expect_found(directory: &Directory, address: &str) {
    match directory.lookup(address).await {
        Ok(Lookup::Found(_)) => {}
        other => panic!("lookup {address:?}: expected an entry, got {other:?}"),
    }
}

#[tokio::test]
async fn stale_entries_serve_while_slapd_is_down_then_it_recovers() {
    let mut slapd = Slapd::start(Fixture::ActiveDirectory);
    let mut config = slapd.config();
    config.cache_ttl = Duration::from_millis(300);
    config.stale_ttl = Duration::from_secs(3600);
    config.timeout = Duration::from_secs(2);
    let directory = ad_directory(config);

    expect_found(&directory, "alice@example.com").await;
    slapd.stop();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Expired but within stale_ttl: still served, and counted.
    expect_found(&directory, "alice@example.com").await;
    assert_eq!(directory.stats().stale_serves, 1);

    // Never seen: nothing to serve, a temporary error (451 at RCPT).
    let err = directory
        .lookup("bob@example.com")
        .await
        .expect_err("slapd is down");
    assert!(err.is_temporary(), "{err:?}");
    assert!(matches!(err, DirectoryError::Unreachable(_)), "{err:?}");
    // The error was not cached: once slapd is back, bob is found.
    slapd.restart();
    expect_found(&directory, "bob@example.com").await;
    expect_found(&directory, "alice@example.com").await;
    let stats = directory.stats();
    assert_eq!(stats.errors, 1);
    assert_eq!(
        stats.connects, 2,
        "one connection before, one after the restart"
    );
}

#[tokio::test]
async fn c16_idle_connection_closed_by_server_reconnects_transparently() {
    let slapd = Slapd::start_with(
        Fixture::ActiveDirectory,
        Options {
            idle_timeout: Some(2),
        },
    );
    let directory = ad_directory(slapd.config());

    expect_found(&directory, "alice@example.com").await;
    // slapd checks idle connections every idle_timeout/2; give it time to act.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    expect_found(&directory, "erin@example.com").await;
    expect_found(&directory, "frank@example.com").await;
    let stats = directory.stats();
    assert_eq!(stats.errors, 0);
    assert_eq!(
        stats.connects, 2,
        "the dropped connection was replaced once"
    );
}

#[tokio::test]
async fn wrong_password_is_bad_credentials_not_an_outage() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let mut config = slapd.config();
    config.bind_password = Some(Secret::new("not-the-password"));
    let directory = ad_directory(config);

    let err = directory
        .lookup("alice@example.com")
        .await
        .expect_err("bind refused");
    assert_eq!(err, DirectoryError::BadCredentials);
    assert!(!err.is_temporary());
}

#[tokio::test]
async fn anonymous_may_bind_but_not_read() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let mut config = slapd.config();
    config.bind_dn = None;
    config.bind_password = None;
    let directory = ad_directory(config);
    // The ACL hides everything from anonymous, the base DN included.
    let err = directory
        .lookup("alice@example.com")
        .await
        .expect_err("base invisible");
    assert!(
        matches!(err, DirectoryError::Config(ref m) if m.contains("base_dn")),
        "{err:?}"
    );
    assert!(err.is_permanent());
}

#[tokio::test]
async fn nothing_listening_is_a_temporary_error_without_a_connection_storm() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let mut config = slapd.config();
    drop(slapd);
    config.timeout = Duration::from_secs(1);
    let directory = ad_directory(config);

    // Distinct addresses, so the cache cannot merge the lookups.
    let lookups: Vec<_> = (0..50)
        .map(|n| {
            let directory = directory.clone();
            tokio::spawn(async move { directory.lookup(&format!("user{n}@example.com")).await })
        })
        .collect();
    for lookup in lookups {
        let err = lookup.await.expect("task").expect_err("nothing listens");
        assert!(err.is_temporary(), "{err:?}");
    }
    let stats = directory.stats();
    assert_eq!(stats.errors, 50);
    assert!(
        stats.connect_failures <= 2,
        "{} connection attempts",
        stats.connect_failures
    );
}

#[tokio::test]
async fn tls_failures_are_errors_not_panics() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);

    // ldaps:// against a server that speaks plain LDAP: the handshake fails.
    let mut config = slapd.config();
    config.url = slapd.url().replace("ldap://", "ldaps://");
    config.timeout = Duration::from_secs(2);
    let err = ad_directory(config)
        .lookup("alice@example.com")
        .await
        .expect_err("no TLS");
    assert!(err.is_temporary(), "{err:?}");

    // StartTLS (RFC 4513 §3) against a server without certificates: refused.
    let mut config = slapd.config();
    config.starttls = true;
    let err = ad_directory(config)
        .lookup("alice@example.com")
        .await
        .expect_err("no TLS");
    assert!(
        matches!(err, DirectoryError::Protocol { code: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_permanent());
}
