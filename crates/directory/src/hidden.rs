//! The hidden-recipient check (product contract §1, "hidden recipient").
//!
//! The Exchange 5.5 journaling instructions ask that every journal and NDR
//! target have its SMTP addresses removed and be hidden from the address
//! book, so that nobody outside can write into the journal and nobody inside
//! finds it. `mailjournal check` and `lookup` report both properties for each
//! configured target; this module computes them from directory entries.
//!
//! "Reachable from outside" means the entry holds an SMTP address in a local
//! domain. When the entry has proxy addresses (Exchange), only its `SMTP:` and
//! `smtp:` proxy addresses count, because they are what Exchange accepts mail
//! for: a journal mailbox with only an `X500:` proxy address is unreachable
//! even though its `mail` attribute still shows an address. Without proxy
//! addresses, the mail values count.

use crate::entry::{smtp_addresses, Entry};
use crate::error::DirectoryError;
use crate::lookup::{Directory, Lookup};
use crate::mapping::Mapping;

/// The hidden-recipient status of one journal or NDR target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenStatus {
    /// The directory holds an entry for the target.
    pub found: bool,
    /// The entry's DN, when found.
    pub dn: Option<String>,
    /// The entry is hidden from the address book.
    pub hidden: bool,
    /// The entry holds an SMTP address in a local domain.
    pub reachable_from_outside: bool,
}

impl HiddenStatus {
    /// True when the target is found, hidden and unreachable from outside.
    pub fn ok(&self) -> bool {
        self.found && self.hidden && !self.reachable_from_outside
    }

    /// The status of a target absent from the directory.
    pub fn not_found() -> HiddenStatus {
        HiddenStatus {
            found: false,
            dn: None,
            hidden: false,
            reachable_from_outside: false,
        }
    }

    /// The status of a directory entry.
    pub fn of_entry(entry: &Entry, mapping: &Mapping, local_domains: &[String]) -> HiddenStatus {
        let mail = entry.get(&mapping.mail);
        let proxies: &[String] = match &mapping.addresses {
            Some(attr) if !attr.eq_ignore_ascii_case(&mapping.mail) => entry.get(attr),
            _ => &[],
        };
        let routable = if proxies.is_empty() {
            smtp_addresses(&[], mail)
        } else {
            smtp_addresses(proxies, &[])
        };
        let reachable_from_outside = routable.iter().any(|a| in_local_domain(a, local_domains));
        HiddenStatus {
            found: true,
            dn: Some(entry.dn.clone()),
            hidden: entry.hidden,
            reachable_from_outside,
        }
    }
}

/// True when the domain of `address` is one of `local_domains` (ignoring case).
fn in_local_domain(address: &str, local_domains: &[String]) -> bool {
    address.rsplit_once('@').is_some_and(|(_, domain)| {
        let domain = domain.trim_end_matches('.');
        local_domains
            .iter()
            .any(|local| local.trim_end_matches('.').eq_ignore_ascii_case(domain))
    })
}

impl Directory {
    /// The hidden-recipient status of the target `address`, found with the
    /// mapping's `user_filter`.
    pub async fn hidden_status(
        &self,
        address: &str,
        local_domains: &[String],
    ) -> Result<HiddenStatus, DirectoryError> {
        Ok(match self.lookup(address).await? {
            Lookup::Found(entry) => HiddenStatus::of_entry(&entry, self.mapping(), local_domains),
            Lookup::NotFound => HiddenStatus::not_found(),
        })
    }

    /// The hidden-recipient status of the entry at `dn` (an `ldap:///` target).
    pub async fn hidden_status_dn(
        &self,
        dn: &str,
        local_domains: &[String],
    ) -> Result<HiddenStatus, DirectoryError> {
        let dn = dn.trim();
        let dn = if dn.len() > 8 && dn[..8].eq_ignore_ascii_case("ldap:///") {
            match crate::targets::classify_value(dn) {
                Some(crate::targets::TargetValue::Dn(dn)) => dn,
                _ => {
                    return Err(DirectoryError::Config(format!(
                        "{dn:?} is not an ldap:/// URL"
                    )))
                }
            }
        } else {
            dn.to_string()
        };
        Ok(match self.entry_at(&dn).await? {
            Some(entry) => HiddenStatus::of_entry(&entry, self.mapping(), local_domains),
            None => HiddenStatus::not_found(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(attrs: &[(&str, &str)]) -> Entry {
        let mapping = Mapping::load("active-directory").expect("preset");
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in attrs {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        Entry::from_attributes("cn=t".into(), map, &mapping)
    }

    #[test]
    fn x500_only_hidden_mailbox_is_ok() {
        let mapping = Mapping::load("active-directory").expect("preset");
        let local = vec!["example.com".to_string()];
        let hidden = entry(&[
            ("mail", "journal@example.com"),
            ("proxyAddresses", "X500:/o=Org/cn=journal"),
            ("msExchHideFromAddressLists", "TRUE"),
        ]);
        assert!(HiddenStatus::of_entry(&hidden, &mapping, &local).ok());

        let visible = entry(&[
            ("mail", "journal@example.com"),
            ("proxyAddresses", "smtp:journal@EXAMPLE.com"),
        ]);
        let status = HiddenStatus::of_entry(&visible, &mapping, &local);
        assert!(status.reachable_from_outside && !status.hidden && !status.ok());

        let mail_only = entry(&[
            ("mail", "journal@example.com"),
            ("msExchHideFromAddressLists", "TRUE"),
        ]);
        assert!(HiddenStatus::of_entry(&mail_only, &mapping, &local).reachable_from_outside);
        let elsewhere = entry(&[("mail", "journal@archive.example.net")]);
        assert!(!HiddenStatus::of_entry(&elsewhere, &mapping, &local).reachable_from_outside);
        assert!(!HiddenStatus::not_found().ok());
    }
}
