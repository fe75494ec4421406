//! Directory entries as mailjournal sees them, built from raw search results.
//!
//! ldap3 hands back `ResultEntry` values that may be continuation references
//! (RFC 4511 §4.5.3, `searchResRef`): Active Directory sends them for its
//! DomainDnsZones/ForestDnsZones/Configuration partitions whenever a subtree
//! search starts at the domain root (case C14), and ldap3 0.12.1 panics in
//! `SearchEntry::construct` on one. [`parse`] is the only place that calls
//! `construct`, and only after ruling references and intermediates out.
//!
//! An [`Entry`] keeps what the gateway needs: the DN, the mail address, the
//! SMTP addresses (Exchange `proxyAddresses` with the `SMTP:`/`smtp:` prefix
//! removed, other address types dropped), the hidden flag and the values of
//! the attributes asked for, keyed by lower-case attribute name.

use std::collections::HashMap;

use ldap3::{ResultEntry, SearchEntry};

use crate::mapping::Mapping;

/// One directory entry (a user, contact, mailbox or group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Distinguished name.
    pub dn: String,
    /// The first value of the mapping's mail attribute.
    pub mail: Option<String>,
    /// SMTP addresses without prefix, the primary first, no duplicates.
    pub addresses: Vec<String>,
    /// Hidden from the address book.
    pub hidden: bool,
    /// Values of every returned attribute, keyed by lower-case name; ranged
    /// names (`member;range=0-1499`) keep their option.
    pub values: HashMap<String, Vec<String>>,
}

impl Entry {
    /// Values of `attribute` (any case), empty when absent.
    pub fn get(&self, attribute: &str) -> &[String] {
        self.values
            .get(&attribute.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// True when one of the entry's addresses equals `address`, ignoring case.
    pub fn has_address(&self, address: &str) -> bool {
        self.addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address))
            || self
                .mail
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(address))
    }

    /// True when `address` is the entry's primary address.
    pub fn is_primary(&self, address: &str) -> bool {
        let primary = self.addresses.first().or(self.mail.as_ref());
        primary.is_some_and(|p| p.eq_ignore_ascii_case(address))
    }

    /// True when the entry carries object class `class` (any case).
    pub fn has_object_class(&self, class: &str) -> bool {
        self.get("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }

    /// Builds an entry from raw attributes (the form a search returns).
    pub fn from_attributes(
        dn: String,
        attrs: HashMap<String, Vec<String>>,
        mapping: &Mapping,
    ) -> Entry {
        let values: HashMap<String, Vec<String>> = attrs
            .into_iter()
            .map(|(name, vals)| (name.to_ascii_lowercase(), vals))
            .collect();
        let get = |name: &str| {
            values
                .get(&name.to_ascii_lowercase())
                .map(Vec::as_slice)
                .unwrap_or_default()
        };

        let mail_values = get(&mapping.mail);
        let mail = mail_values.first().cloned();
        let proxy_values = mapping.addresses.as_deref().map(get).unwrap_or_default();
        let addresses = smtp_addresses(proxy_values, mail_values);
        let hidden = mapping
            .hidden
            .as_deref()
            .map(get)
            .and_then(<[String]>::first)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("TRUE"));
        Entry {
            dn,
            mail,
            addresses,
            hidden,
            values,
        }
    }
}

/// The SMTP addresses of an entry, primary first: the `SMTP:` value, then the
/// mail values, then `smtp:` and unprefixed values. Other address types
/// (`X500:`, `X400:`, `SIP:` ...) are not mail addresses and are dropped.
pub(crate) fn smtp_addresses(proxy_values: &[String], mail_values: &[String]) -> Vec<String> {
    let mut primary = Vec::new();
    let mut secondary = Vec::new();
    for value in proxy_values {
        match split_address_type(value) {
            Some(("SMTP", address)) => primary.push(address),
            Some((kind, address)) if kind.eq_ignore_ascii_case("smtp") => secondary.push(address),
            Some(_) => {}
            None => secondary.push(value.as_str()),
        }
    }

    let mut out: Vec<String> = Vec::new();
    let ordered = primary
        .into_iter()
        .chain(mail_values.iter().map(String::as_str));
    for address in ordered.chain(secondary) {
        let address = address.trim();
        if !address.is_empty() && !out.iter().any(|a| a.eq_ignore_ascii_case(address)) {
            out.push(address.to_string());
        }
    }
    out
}

/// Splits `TYPE:rest` when the part before the first colon looks like an
/// address type (letters and digits) and comes before any `@`.
pub(crate) fn split_address_type(value: &str) -> Option<(&str, &str)> {
    let (kind, rest) = value.split_once(':')?;
    let is_type =
        !kind.is_empty() && kind.len() <= 16 && kind.chars().all(|c| c.is_ascii_alphanumeric());
    is_type.then_some((kind, rest))
}

/// Turns a raw search result into an entry; `None` for continuation
/// references and intermediate responses, which carry no entry.
pub(crate) fn parse(raw: ResultEntry, mapping: &Mapping) -> Option<Entry> {
    if raw.is_ref() || raw.is_intermediate() {
        return None;
    }
    let entry = SearchEntry::construct(raw);
    Some(Entry::from_attributes(entry.dn, entry.attrs, mapping))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn proxy_addresses_primary_first_other_types_dropped() {
        let proxies = strings(&[
            "smtp:alias@example.com",
            "X500:/o=Org/ou=Site/cn=Recipients/cn=alice",
            "SMTP:Alice@example.com",
            "x400:c=US;a= ;p=Org;o=Site;s=Alice;",
            "smtp:alice@corp.example.com",
        ]);
        let mail = strings(&["alice@example.com"]);
        assert_eq!(
            smtp_addresses(&proxies, &mail),
            strings(&[
                "Alice@example.com",
                "alias@example.com",
                "alice@corp.example.com"
            ])
        );
    }

    #[test]
    fn plain_mail_values_count_as_addresses() {
        let mail = strings(&["olivia@example.com", "o.l@example.com"]);
        assert_eq!(smtp_addresses(&mail, &mail), mail);
        assert_eq!(smtp_addresses(&[], &mail), mail);
    }

    #[test]
    fn entry_from_attributes() {
        let mapping = Mapping::load("active-directory").expect("preset");
        let attrs = HashMap::from([
            ("mail".to_string(), strings(&["journal@example.com"])),
            (
                "proxyAddresses".to_string(),
                strings(&["X500:/o=x/cn=journal"]),
            ),
            ("msExchHideFromAddressLists".to_string(), strings(&["TRUE"])),
            ("extensionAttribute10".to_string(), strings(&["a@b"])),
        ]);
        let entry = Entry::from_attributes("cn=j".into(), attrs, &mapping);
        assert!(entry.hidden);
        assert_eq!(entry.mail.as_deref(), Some("journal@example.com"));
        assert_eq!(entry.addresses, strings(&["journal@example.com"]));
        assert_eq!(
            entry.get("EXTENSIONATTRIBUTE10"),
            strings(&["a@b"]).as_slice()
        );
        assert!(entry.is_primary("JOURNAL@example.com"));
    }
}
