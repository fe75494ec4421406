//! Journal targets: from attribute values to mail addresses.
//!
//! A journal attribute value (several values are allowed) is an SMTP
//! address, a DN, or an `ldap:///DN` URL (RFC 4516, no host: this directory).
//! A DN names a mailbox, whose mail address is the target, or a group, whose
//! members are the targets, recursively: the Exchange 5.5 documentation
//! recommends a distribution list without an SMTP address as the journal
//! target, so the gateway must expand it itself. Expansion is bounded in
//! depth, remembers visited DNs so that cycles end, and follows Active
//! Directory's ranged retrieval of large `member` attributes
//! (`member;range=0-1499`, then `member;range=1500-*`, until a range ends
//! in `*`). Addresses are deduplicated ignoring case.

use std::collections::HashSet;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use tracing::{debug, warn};

use crate::entry::{split_address_type, Entry};
use crate::error::DirectoryError;
use crate::lookup::Directory;
use crate::mapping::is_attribute_name;

/// Deepest group nesting followed.
pub const MAX_GROUP_DEPTH: usize = 8;
/// Member entries read at the same time over the shared connection.
const MEMBER_READ_CONCURRENCY: usize = 32;
/// Bound on ranged-retrieval round trips for one group (1500 values each).
const MAX_RANGE_STEPS: usize = 10_000;

/// One address that receives journal copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The SMTP address.
    pub address: String,
    /// The group (its mail address, else its DN) this address was reached through.
    pub expanded_from: Option<String>,
}

/// What a journal attribute value denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetValue {
    /// An SMTP address.
    Address(String),
    /// A DN, written plainly or as `ldap:///DN`.
    Dn(String),
}

/// One range of a ranged attribute (`member;range=1500-2999`), as Active
/// Directory returns a multi-valued attribute too large for one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeRange {
    /// The attribute without the range option.
    pub attribute: String,
    /// First value index in this part.
    pub start: u64,
    /// Last value index, `None` for `*`: this part is the last.
    pub end: Option<u64>,
}

/// Parses an attribute name carrying a range option, e.g.
/// `member;range=0-1499` or `member;range=1500-*`.
pub fn parse_range(name: &str) -> Option<AttributeRange> {
    let mut attribute = Vec::new();
    let mut range = None;
    for part in name.split(';') {
        match part.get(..6) {
            Some(p) if p.eq_ignore_ascii_case("range=") => range = Some(&part[6..]),
            _ => attribute.push(part),
        }
    }
    let (start, end) = range?.split_once('-')?;
    let start = start.parse().ok()?;
    let end = match end {
        "*" => None,
        digits => Some(digits.parse().ok()?),
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(AttributeRange {
        attribute: attribute.join(";"),
        start,
        end,
    })
}

/// The attribute to request for the part after `range`, `None` when
/// `range` was the last part.
pub fn next_range_request(range: &AttributeRange) -> Option<String> {
    let end = range.end?;
    Some(format!("{};range={}-*", range.attribute, end + 1))
}

/// Classifies a journal attribute value; `None` when it is none of the
/// three forms.
pub fn classify_value(value: &str) -> Option<TargetValue> {
    let value = value.trim();
    if let Some(rest) = strip_prefix_ignore_case(value, "ldap:///") {
        let dn_part = rest.split('?').next().unwrap_or_default();
        let dn = percent_decode(dn_part)?;
        return looks_like_dn(&dn).then_some(TargetValue::Dn(dn));
    }
    if strip_prefix_ignore_case(value, "ldap://").is_some() {
        // Another server: not followed.
        return None;
    }
    let value = match split_address_type(value) {
        Some((kind, address)) if kind.eq_ignore_ascii_case("smtp") => address.trim(),
        _ => value,
    };
    if looks_like_address(value) {
        return Some(TargetValue::Address(value.to_string()));
    }
    looks_like_dn(value).then(|| TargetValue::Dn(value.to_string()))
}

/// `local@domain` with a plain domain after the last `@`.
fn looks_like_address(value: &str) -> bool {
    match value.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// `attribute=value` as the first RDN (RFC 4514 §3).
fn looks_like_dn(value: &str) -> bool {
    value
        .split_once('=')
        .is_some_and(|(attr, rest)| is_attribute_name(attr.trim()) && !rest.trim().is_empty())
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// Undoes `%XX` escapes of an LDAP URL (RFC 4516 §2.1).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The lower-case form of a DN used to detect cycles.
fn dn_key(dn: &str) -> String {
    dn.split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// Targets collected so far, unique by address ignoring case.
#[derive(Default)]
struct Collected {
    targets: Vec<Target>,
    seen: HashSet<String>,
}

impl Collected {
    fn push(&mut self, address: &str, expanded_from: Option<&str>) {
        if self.seen.insert(address.to_lowercase()) {
            let expanded_from = expanded_from.map(str::to_string);
            self.targets.push(Target {
                address: address.to_string(),
                expanded_from,
            });
        }
    }
}

impl Directory {
    /// The journal targets named by `attribute` (a name or legacy property
    /// value, one of the attributes given to [`Directory::new`]) on `entry`.
    pub async fn targets(
        &self,
        entry: &Entry,
        attribute: &str,
    ) -> Result<Vec<Target>, DirectoryError> {
        let attribute = self
            .inner
            .mapping
            .attribute_for(attribute)
            .map_err(|e| DirectoryError::Config(e.to_string()))?;
        if !self
            .inner
            .journal_attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&attribute))
        {
            return Err(DirectoryError::Config(format!(
                "attribute {attribute} is not one of the journal attributes the directory fetches"
            )));
        }

        let prefix = self.inner.mapping.journal_value_prefix.as_deref();
        let mut collected = Collected::default();
        for raw in entry.get(&attribute) {
            let value = match prefix {
                Some(prefix) => match strip_prefix_ignore_case(raw.trim(), prefix) {
                    Some(rest) => rest,
                    None => continue,
                },
                None => raw.as_str(),
            };
            if value.trim().is_empty() {
                continue;
            }
            match classify_value(value) {
                Some(TargetValue::Address(address)) => collected.push(&address, None),
                Some(TargetValue::Dn(dn)) => self.expand_dn(&dn, &mut collected).await?,
                None => {
                    return Err(DirectoryError::InvalidValue {
                        attribute: attribute.clone(),
                        value: raw.clone(),
                    })
                }
            }
        }
        debug!(dn = %entry.dn, attribute = %attribute, targets = collected.targets.len(),
            "Journal targets resolved.");
        Ok(collected.targets)
    }

    /// The targets named by a DN or `ldap:///DN` (a global journal target):
    /// the mailbox's address, or the members of the group.
    pub async fn resolve_dn(&self, dn: &str) -> Result<Vec<Target>, DirectoryError> {
        let dn = match classify_value(dn) {
            Some(TargetValue::Dn(dn)) => dn,
            _ => {
                return Err(DirectoryError::Config(format!(
                    "{dn:?} is not a DN or ldap:/// URL"
                )))
            }
        };
        let mut collected = Collected::default();
        self.expand_dn(&dn, &mut collected).await?;
        Ok(collected.targets)
    }

    /// Reads the entry of a DN (for `lookup` and the hidden check of
    /// `ldap:///` targets).
    pub async fn entry_at(&self, dn: &str) -> Result<Option<Entry>, DirectoryError> {
        self.read_entry(dn, &self.inner.lookup_attributes).await
    }

    /// Adds the address of the mailbox at `dn`, or its group's members.
    async fn expand_dn(&self, dn: &str, out: &mut Collected) -> Result<(), DirectoryError> {
        let entry = self
            .read_entry(dn, &self.inner.target_attributes)
            .await?
            .ok_or_else(|| DirectoryError::NoSuchObject(dn.to_string()))?;
        if self.is_group(&entry) {
            return self.expand_group(entry, out).await;
        }
        match entry.mail.as_ref().or(entry.addresses.first()) {
            Some(address) => {
                out.push(address, None);
                Ok(())
            }
            None => Err(DirectoryError::NoAddress(entry.dn)),
        }
    }

    /// Adds the addresses of a group's members, level by level.
    async fn expand_group(&self, group: Entry, out: &mut Collected) -> Result<(), DirectoryError> {
        let label = group.mail.clone().unwrap_or_else(|| group.dn.clone());
        let mut visited = HashSet::from([dn_key(&group.dn)]);
        let mut level = vec![group];

        for _depth in 0..MAX_GROUP_DEPTH {
            // Member DNs of this level not met before: cycles end here.
            let mut member_dns = Vec::new();
            for group in &level {
                member_dns.extend(self.all_members(group).await?);
            }
            member_dns.retain(|dn| visited.insert(dn_key(dn)));
            if member_dns.is_empty() {
                return Ok(());
            }

            let members = self.read_members(member_dns).await?;
            level = Vec::new();
            for member in members {
                if self.is_group(&member) {
                    level.push(member);
                } else if let Some(address) = member.mail.as_ref().or(member.addresses.first()) {
                    out.push(address, Some(&label));
                } else {
                    debug!(
                        group = %label,
                        member = %member.dn,
                        "Group member without address skipped."
                    );
                }
            }
        }
        if !level.is_empty() {
            warn!(group = %label, depth = MAX_GROUP_DEPTH,
                "Group nesting too deep; deeper members get no journal copy.");
        }
        Ok(())
    }

    /// Reads member entries concurrently; members that no longer exist are skipped.
    async fn read_members(&self, dns: Vec<String>) -> Result<Vec<Entry>, DirectoryError> {
        let attributes = &self.inner.target_attributes;
        let found: Vec<(String, Option<Entry>)> = stream::iter(dns)
            .map(|dn| async move {
                let entry = self.read_entry(&dn, attributes).await?;
                Ok::<_, DirectoryError>((dn, entry))
            })
            .buffered(MEMBER_READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut entries = Vec::with_capacity(found.len());
        for (dn, entry) in found {
            match entry {
                Some(entry) => entries.push(entry),
                None => warn!(member = %dn, "Group member does not exist; skipped."),
            }
        }
        Ok(entries)
    }

    /// All member DNs of a group, following ranged retrieval to the end.
    async fn all_members(&self, group: &Entry) -> Result<Vec<String>, DirectoryError> {
        let member_attr = &self.inner.mapping.group_member;
        let mut members = group.get(member_attr).to_vec();
        let mut next = ranged_part(group, member_attr, &mut members);

        let mut steps = 0;
        while let Some(request) = next {
            steps += 1;
            if steps > MAX_RANGE_STEPS {
                warn!(group = %group.dn, "Ranged member retrieval did not end; stopped.");
                break;
            }
            let Some(part) = self.read_entry(&group.dn, &[request]).await? else {
                break;
            };
            next = ranged_part(&part, member_attr, &mut members);
        }
        Ok(members)
    }

    /// True when the entry is a group: it has members, or a group class.
    pub(crate) fn is_group(&self, entry: &Entry) -> bool {
        let member_attr = &self.inner.mapping.group_member;
        let has_members = entry.values.keys().any(|name| {
            name.eq_ignore_ascii_case(member_attr)
                || parse_range(name).is_some_and(|r| r.attribute.eq_ignore_ascii_case(member_attr))
        });
        has_members
            || ["group", "groupOfNames", "groupOfUniqueNames"]
                .iter()
                .any(|class| entry.has_object_class(class))
    }
}

/// Appends the values of a ranged member attribute in `entry`; returns the
/// request for the next part, if any.
fn ranged_part(entry: &Entry, member_attr: &str, members: &mut Vec<String>) -> Option<String> {
    let (range, values) = entry.values.iter().find_map(|(name, values)| {
        parse_range(name)
            .filter(|r| r.attribute.eq_ignore_ascii_case(member_attr))
            .map(|r| (r, values))
    })?;
    members.extend(values.iter().cloned());
    next_range_request(&range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranged_attribute_names() {
        let first = parse_range("member;range=0-1499").expect("ranged");
        assert_eq!(
            first,
            AttributeRange {
                attribute: "member".into(),
                start: 0,
                end: Some(1499)
            }
        );
        assert_eq!(
            next_range_request(&first).as_deref(),
            Some("member;range=1500-*")
        );

        let last = parse_range("member;Range=1500-*").expect("ranged");
        assert_eq!(last.end, None);
        assert_eq!(next_range_request(&last), None);

        let tagged = parse_range("member;binary;range=3000-4499").expect("ranged");
        assert_eq!(tagged.attribute, "member;binary");
        assert_eq!(
            next_range_request(&tagged).as_deref(),
            Some("member;binary;range=4500-*")
        );

        assert_eq!(parse_range("member"), None);
        assert_eq!(parse_range("member;range=x-1"), None);
        assert_eq!(parse_range("member;range=10-5"), None);
        assert_eq!(parse_range("member;range=5"), None);
    }

    #[test]
    fn ranged_parts_are_followed_in_order() {
        let mut members = Vec::new();
        let mut entry = Entry {
            dn: "cn=g".into(),
            mail: None,
            addresses: vec![],
            hidden: false,
            values: [(
                "member;range=0-1".to_string(),
                vec!["cn=a".into(), "cn=b".into()],
            )]
            .into(),
        };
        let next = ranged_part(&entry, "member", &mut members);
        assert_eq!(next.as_deref(), Some("member;range=2-*"));
        entry.values = [("member;range=2-*".to_string(), vec!["cn=c".into()])].into();
        assert_eq!(ranged_part(&entry, "member", &mut members), None);
        assert_eq!(members, ["cn=a", "cn=b", "cn=c"]);
    }

    #[test]
    fn values_are_classified() {
        let address = |a: &str| Some(TargetValue::Address(a.into()));
        let dn = |d: &str| Some(TargetValue::Dn(d.into()));
        assert_eq!(
            classify_value("journal@example.com"),
            address("journal@example.com")
        );
        assert_eq!(
            classify_value(" SMTP:journal@example.com "),
            address("journal@example.com")
        );
        assert_eq!(
            classify_value("SRS0=x=y=z=a@fwd.example"),
            address("SRS0=x=y=z=a@fwd.example")
        );
        assert_eq!(
            classify_value("CN=Legal,OU=Groups,DC=example,DC=com"),
            dn("CN=Legal,OU=Groups,DC=example,DC=com")
        );
        assert_eq!(
            classify_value("ldap:///cn=Compliance%20Team,ou=Groups,dc=example,dc=com?mail"),
            dn("cn=Compliance Team,ou=Groups,dc=example,dc=com")
        );
        assert_eq!(classify_value("ldap://other.example/cn=x"), None);
        assert_eq!(classify_value("ldap:///"), None);
        assert_eq!(classify_value("X500:/o=Org/cn=journal"), None);
        assert_eq!(classify_value("just text"), None);
    }
}
