//! Journal targets and the hidden check against a real slapd.

mod common;

use std::sync::Arc;

use common::{Fixture, Slapd};
use directory::{Directory, DirectoryError, Entry, HiddenStatus, Lookup, Mapping, Target};

/// The journal attribute as an Exchange 5.5 administrator configured it.
const LEGACY_PROPERTY: &str = "0x80360000";

fn ad_directory(slapd: &Slapd) -> Directory {
    let mapping = Mapping::load("active-directory").expect("preset");
    Directory::new(slapd.config(), mapping, vec![LEGACY_PROPERTY.into()]).expect("directory")
}

async fn entry(directory: &Directory, address: &str) -> Arc<Entry> {
    match directory.lookup(address).await {
        Ok(Lookup::Found(entry)) => entry,
        other => panic!("lookup {address:?}: expected an entry, got {other:?}"),
    }
}

/// The journal targets of `address`, as (address, expanded_from) pairs.
async fn targets_of(directory: &Directory, address: &str) -> Vec<(String, Option<String>)> {
    let entry = entry(directory, address).await;
    let targets = directory
        .targets(&entry, LEGACY_PROPERTY)
        .await
        .expect("targets");
    targets
        .into_iter()
        .map(
            |Target {
                 address,
                 expanded_from,
             }| (address, expanded_from),
        )
        .collect()
}

fn direct(address: &str) -> (String, Option<String>) {
    (address.to_string(), None)
}

#[tokio::test]
async fn address_dn_and_ldap_url_values() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(&slapd);
    assert_eq!(directory.journal_attributes(), ["extensionAttribute10"]);

    assert_eq!(
        targets_of(&directory, "alice@example.com").await,
        [direct("alice-manager@example.com")]
    );
    assert_eq!(
        targets_of(&directory, "bob@example.com").await,
        [direct("journal@example.com")]
    );
    assert_eq!(
        targets_of(&directory, "carol@example.com").await,
        [direct("compliance-journal@example.com")]
    );
    // A user without the attribute has no targets.
    assert!(targets_of(&directory, "erin@example.com").await.is_empty());
}

#[tokio::test]
async fn nested_group_with_cycle_is_expanded_once() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(&slapd);
    let group = Some("legal-journal@example.com".to_string());
    assert_eq!(
        targets_of(&directory, "dave@example.com").await,
        [
            ("erin@example.com".into(), group.clone()),
            ("frank@example.com".into(), group)
        ]
    );
}

#[tokio::test]
async fn large_group_is_expanded_completely() {
    let slapd = Slapd::start(Fixture::ActiveDirectoryWithLargeGroup(1600));
    let directory = ad_directory(&slapd);
    let targets = targets_of(&directory, "grace@example.com").await;
    assert_eq!(targets.len(), 1600);
    assert_eq!(
        targets[0],
        (
            "staff0001@example.com".into(),
            Some("allstaff@example.com".into())
        )
    );
    assert_eq!(targets[1599].0, "staff1600@example.com");
}

#[tokio::test]
async fn global_ldap_url_target_resolves() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(&slapd);
    let targets = directory
        .resolve_dn("ldap:///cn=Legal%20Journal,ou=Groups,dc=example,dc=com")
        .await
        .expect("group resolves");
    let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addresses, ["erin@example.com", "frank@example.com"]);

    let targets = directory
        .resolve_dn("cn=Journal Mailbox,ou=System Mailboxes,dc=example,dc=com")
        .await
        .expect("mailbox resolves");
    assert_eq!(
        targets,
        [Target {
            address: "journal@example.com".into(),
            expanded_from: None
        }]
    );

    let missing = directory
        .resolve_dn("ldap:///cn=Nobody,dc=example,dc=com")
        .await;
    assert_eq!(
        missing,
        Err(DirectoryError::NoSuchObject(
            "cn=Nobody,dc=example,dc=com".into()
        ))
    );
}

#[tokio::test]
async fn dangling_dn_value_is_a_permanent_error() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(&slapd);
    let ivan = entry(&directory, "ivan@example.com").await;
    let err = directory
        .targets(&ivan, LEGACY_PROPERTY)
        .await
        .expect_err("no such DN");
    assert!(matches!(err, DirectoryError::NoSuchObject(_)), "{err:?}");
    assert!(err.is_permanent());

    // An attribute the directory was not told to fetch is a configuration error.
    let err = directory
        .targets(&ivan, "extensionAttribute11")
        .await
        .expect_err("not fetched");
    assert!(matches!(err, DirectoryError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn openldap_two_values_and_group_url() {
    let slapd = Slapd::start(Fixture::OpenLdap);
    let mut mapping = Mapping::load("openldap").expect("preset");
    mapping.journal_value_prefix = Some("journal=".into());
    let directory =
        Directory::new(slapd.config(), mapping, vec!["description".into()]).expect("directory");

    let olivia = entry(&directory, "O.Owens@example.com").await;
    assert_eq!(
        olivia.addresses,
        ["olivia@example.com", "o.owens@example.com"]
    );
    let targets = directory
        .targets(&olivia, "description")
        .await
        .expect("targets");
    let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "olivia-journal@archive.example.net",
            "sales-journal@archive.example.net"
        ]
    );

    let oscar = entry(&directory, "oscar@example.com").await;
    let targets = directory
        .targets(&oscar, "description")
        .await
        .expect("targets");
    let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(
        addresses,
        ["archivist1@example.com", "archivist2@example.com"]
    );
    assert!(targets
        .iter()
        .all(|t| t.expanded_from.as_deref() == Some("cn=archivists,ou=staff,dc=example,dc=com")));
}

#[tokio::test]
async fn hidden_status_of_journal_targets() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let directory = ad_directory(&slapd);
    let local = vec!["example.com".to_string()];

    let hidden = directory
        .hidden_status("journal@example.com", &local)
        .await
        .expect("status");
    assert_eq!(
        hidden,
        HiddenStatus {
            found: true,
            dn: Some("cn=Journal Mailbox,ou=System Mailboxes,dc=example,dc=com".into()),
            hidden: true,
            reachable_from_outside: false,
        }
    );
    assert!(hidden.ok());

    let visible = directory
        .hidden_status("visible-journal@example.com", &local)
        .await
        .expect("status");
    assert!(visible.found && !visible.hidden && visible.reachable_from_outside);
    assert!(!visible.ok());

    let absent = directory
        .hidden_status("no-journal@example.com", &local)
        .await
        .expect("status");
    assert_eq!(absent, HiddenStatus::not_found());
    assert!(!absent.ok());

    let by_dn = directory
        .hidden_status_dn(
            "ldap:///cn=Compliance%20Journal,ou=System%20Mailboxes,dc=example,dc=com",
            &local,
        )
        .await
        .expect("status");
    assert!(by_dn.ok(), "{by_dn:?}");
}

#[test]
fn legacy_property_translation() {
    let mapping = Mapping::load("active-directory").expect("preset");
    assert_eq!(
        mapping.attribute_for("0x80360000").as_deref(),
        Ok("extensionAttribute10")
    );
    for (value, id) in [("0x80360001", "0x8036"), ("0x12340000", "0x1234")] {
        let err = mapping
            .attribute_for(value)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(value) && err.contains(id), "{err}");
    }
    let config = directory::DirectoryConfig::new("ldap://127.0.0.1:1", "dc=example,dc=com");
    let err = Directory::new(config, mapping, vec!["0x80360001".into()]).expect_err("refused");
    assert!(
        matches!(err, DirectoryError::Config(ref m) if m.contains("0x80360001")),
        "{err:?}"
    );
}
