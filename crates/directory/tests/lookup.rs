//! Lookups against a real slapd: addresses, hostile input, C14, the cache.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, Slapd};
use directory::{Directory, DirectoryConfig, Entry, Lookup, Mapping};

const JOURNAL_ATTRIBUTE: &str = "extensionAttribute10";

fn ad_directory(config: DirectoryConfig) -> Directory {
    let mapping = Mapping::load("active-directory").expect("preset");
    Directory::new(config, mapping, vec![JOURNAL_ATTRIBUTE.into()]).expect("directory")
}

/// Looks `address` up and expects an entry.
async fn expect_found(directory: &Directory, address: &str) -> Arc<Entry> {
    match directory.lookup(address).await {
        Ok(Lookup::Found(entry)) => entry,
        other => panic!("lookup {address:?}: expected an entry, got {other:?}"),
    }
}

/// Looks `address` up and expects "not found", no error.
async fn expect_not_found(directory: &Directory, address: &str) {
    match directory.lookup(address).await {
        Ok(Lookup::NotFound) => {}
        other => panic!("lookup {address:?}: expected not found, got {other:?}"),
    }
}

#[tokio::test]
async fn secondary_proxy_address_and_mixed_case_find_the_user() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(slapd.config());

    let entry = expect_found(&directory, "alice.archer@example.com").await;
    assert_eq!(entry.dn, "cn=Alice Archer,ou=Users,dc=example,dc=com");
    assert_eq!(entry.mail.as_deref(), Some("alice@example.com"));
    assert_eq!(
        entry.addresses,
        [
            "alice@example.com",
            "alice.archer@example.com",
            "aa@corp.example.com"
        ],
        "primary first, X500 dropped"
    );
    assert!(!entry.hidden);
    assert_eq!(entry.get(JOURNAL_ATTRIBUTE), ["alice-manager@example.com"]);

    for address in [
        "ALICE.Archer@Example.COM",
        "AA@corp.example.com",
        "alice@EXAMPLE.com",
    ] {
        let found = expect_found(&directory, address).await;
        assert_eq!(found.dn, entry.dn, "{address}");
    }
    expect_not_found(&directory, "nobody@example.com").await;
}

#[tokio::test]
async fn several_matches_prefer_the_primary_address() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(slapd.config());
    let entry = expect_found(&directory, "henry@example.com").await;
    assert_eq!(entry.dn, "cn=Henry Primary,ou=Users,dc=example,dc=com");
}

#[tokio::test]
async fn hostile_addresses_match_nobody() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(slapd.config());
    let hostile = [
        "*",
        "(",
        ")",
        "\\",
        "\0",
        "alice@example.com\0",
        "*)(mail=*",
        "*)(|(mail=*",
        "alice@example.com)(mail=*",
        "a*@example.com",
        "\\2a",
        "smtp:*",
        "*@example.com",
        "jörg@example.com",
        "x)(objectClass=*))(|(mail=x",
    ];
    for address in hostile {
        expect_not_found(&directory, address).await;
    }
    assert_eq!(directory.stats().errors, 0);
    // The connection survived all of it.
    expect_found(&directory, "alice@example.com").await;
}

#[tokio::test]
async fn c14_continuation_reference_is_skipped() {
    let slapd = Slapd::start(Fixture::OpenLdap);
    let mut mapping = Mapping::load("openldap").expect("preset");
    mapping.journal_value_prefix = Some("journal=".into());
    let directory =
        Directory::new(slapd.config(), mapping, vec!["description".into()]).expect("directory");

    let entry = expect_found(&directory, "alice@example.com").await;
    assert_eq!(entry.dn, "uid=alice,ou=people,dc=example,dc=com");
    let targets = directory
        .targets(&entry, "description")
        .await
        .expect("targets");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].address, "journal-a@archive.example.net");
}

#[tokio::test]
async fn concurrent_lookups_of_one_address_make_one_search() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(slapd.config());
    let before = slapd.completed_searches();

    let lookups: Vec<_> = (0..200)
        .map(|_| {
            let directory = directory.clone();
            tokio::spawn(async move { directory.lookup("bob@example.com").await })
        })
        .collect();
    for lookup in lookups {
        let answer = lookup.await.expect("task").expect("lookup");
        assert!(matches!(answer, Lookup::Found(_)));
    }

    assert_eq!(slapd.searches_since(before), 1, "searches seen by slapd");
    let stats = directory.stats();
    assert_eq!((stats.lookups, stats.misses, stats.hits), (200, 1, 199));
}

#[tokio::test]
async fn expired_entries_are_looked_up_again() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let mut config = slapd.config();
    config.cache_ttl = Duration::from_millis(500);
    config.negative_cache_ttl = Duration::from_millis(500);
    let directory = ad_directory(config);
    let before = slapd.completed_searches();

    expect_found(&directory, "alice@example.com").await;
    expect_not_found(&directory, "ghost@example.com").await;
    expect_found(&directory, "alice@example.com").await;
    expect_not_found(&directory, "ghost@example.com").await;
    assert_eq!(
        slapd.searches_since(before),
        2,
        "second round served from the cache"
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = slapd.completed_searches();
    expect_found(&directory, "alice@example.com").await;
    expect_not_found(&directory, "ghost@example.com").await;
    assert_eq!(
        slapd.searches_since(before),
        2,
        "expired entries asked again"
    );
    let stats = directory.stats();
    assert_eq!((stats.misses, stats.hits, stats.stale_serves), (4, 2, 0));
}
