//! Envelope addresses as they travel on the wire.
//!
//! An address is kept exactly as the client wrote it between `<` and `>`
//! (quotes, escapes and case intact, RFC 5321 §4.1.2), because a gateway that
//! rewrites local parts breaks SRS, VERP and quoted mailboxes. Comparisons
//! use a normalised key: the local part as written and the domain in lower
//! case; `postmaster` compares without regard to case (RFC 5321 §4.5.1).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest path we accept, in octets (RFC 5321 §4.5.3.1.3 says 256).
pub const MAX_PATH_LEN: usize = 256;

/// Why a path given in MAIL or RCPT is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is longer than RFC 5321 allows.
    #[error("address longer than {MAX_PATH_LEN} octets")]
    TooLong,
    /// The path holds a control character or a NUL.
    #[error("address contains a control character")]
    ControlCharacter,
    /// The local part is neither a dot-string nor a closed quoted string.
    #[error("malformed local part")]
    BadLocalPart,
    /// The domain is empty or holds characters no domain may hold.
    #[error("malformed domain")]
    BadDomain,
    /// A mailbox without `@domain` where one is required.
    #[error("address has no domain")]
    NoDomain,
}

/// One envelope address (a mailbox, or the unqualified `Postmaster`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    raw: String,
}

impl Address {
    /// Parses a path as written between the angle brackets, keeping it as is.
    ///
    /// A source route (`@a,@b:user@c`, RFC 5321 §4.1.2) is dropped, as the
    /// RFC allows. `allow_bare` admits a local part without a domain, which
    /// is how `<Postmaster>` is written.
    pub fn parse(path: &str, allow_bare: bool) -> Result<Address, AddressError> {
        if path.len() > MAX_PATH_LEN {
            return Err(AddressError::TooLong);
        }
        if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(AddressError::ControlCharacter);
        }

        let mailbox = strip_source_route(path);
        let (local, domain) = split_mailbox(mailbox)?;
        check_local_part(local)?;
        match domain {
            Some(domain) => check_domain(domain)?,
            None if allow_bare => {}
            None => return Err(AddressError::NoDomain),
        }

        Ok(Address {
            raw: mailbox.to_owned(),
        })
    }

    /// Builds an address from configuration, where a domain is required.
    pub fn from_config(text: &str) -> Result<Address, AddressError> {
        let text = text.trim();
        let text = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(text);
        Address::parse(text, false)
    }

    /// The address exactly as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The local part as written, quotes included.
    pub fn local_part(&self) -> &str {
        match split_mailbox(&self.raw) {
            Ok((local, _)) => local,
            Err(_) => &self.raw,
        }
    }

    /// The domain as written, if any.
    pub fn domain(&self) -> Option<&str> {
        split_mailbox(&self.raw).ok().and_then(|(_, domain)| domain)
    }

    /// The comparison key: local part as written, domain lower-cased, and the
    /// whole address lower-cased where it is a postmaster address.
    pub fn key(&self) -> String {
        match self.domain() {
            Some(domain) => {
                let local = self.local_part();
                if local.eq_ignore_ascii_case("postmaster") {
                    format!("postmaster@{}", domain.to_ascii_lowercase())
                } else {
                    format!("{}@{}", local, domain.to_ascii_lowercase())
                }
            }
            None => self.raw.to_ascii_lowercase(),
        }
    }

    /// The local part as the mailbox it names, in lower case: a quoted
    /// string names the same mailbox as the same characters unquoted
    /// (RFC 5321 §4.1.2), so `"journal"` and `journal` are one mailbox.
    pub fn unquoted_local(&self) -> String {
        let local = self.local_part();
        let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
            return local.to_lowercase();
        };
        let mut plain = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => plain.extend(chars.next()),
                c => plain.push(c),
            }
        }
        plain.to_lowercase()
    }

    /// The mailbox a receiving server may deliver to, as far as a gateway can
    /// tell: unquoted, the bang path (`host!user`) and percent hack
    /// (`user%host`) undone, the subaddress (`user+tag`) dropped.
    pub fn base_mailbox(&self) -> String {
        let local = self.unquoted_local();
        let local = local.rsplit('!').next().unwrap_or(&local);
        let local = local.split('%').next().unwrap_or(local);
        let local = local.split('+').next().unwrap_or(local);
        match self.domain() {
            Some(domain) => format!("{local}@{}", domain.to_ascii_lowercase()),
            None => local.to_owned(),
        }
    }

    /// Whether the local part carries a routing hack (`%` or `!` outside a
    /// quoted form's meaning), which asks the next server to relay onwards.
    pub fn has_routing_hack(&self) -> bool {
        let local = self.unquoted_local();
        local.contains('%') || local.contains('!')
    }

    /// Whether both name one mailbox: local parts compared unquoted and
    /// without case, the way mail servers and directories match them.
    pub fn same_mailbox(&self, other: &Address) -> bool {
        self.unquoted_local() == other.unquoted_local()
            && match (self.domain(), other.domain()) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            }
    }

    /// Whether the domain is one of `domains` (compared without case). A bare
    /// `Postmaster` belongs to every local domain.
    pub fn in_domains(&self, domains: &[String]) -> bool {
        match self.domain() {
            Some(domain) => domains.iter().any(|d| d.eq_ignore_ascii_case(domain)),
            None => true,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.raw)
    }
}

/// The reverse path of a transaction: a mailbox, or the null sender `<>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReversePath {
    /// `MAIL FROM:<>`: bounces and reports, which never get a DSN back.
    Null,
    /// A mailbox that may receive delivery status notifications.
    Mailbox(Address),
}

impl ReversePath {
    /// The path as it goes between angle brackets on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReversePath::Null => "",
            ReversePath::Mailbox(address) => address.as_str(),
        }
    }

    /// The mailbox, unless this is the null sender.
    pub fn mailbox(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(address) => Some(address),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.as_str())
    }
}

fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@') {
        if let Some(colon) = path.find(':') {
            return &path[colon + 1..];
        }
    }
    path
}

/// Splits at the `@` that is outside a quoted local part.
fn split_mailbox(mailbox: &str) -> Result<(&str, Option<&str>), AddressError> {
    let bytes = mailbox.as_bytes();
    let local_end = if bytes.first() == Some(&b'"') {
        let mut i = 1;
        let mut closed = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    closed = Some(i + 1);
                    break;
                }
                _ => i += 1,
            }
        }
        closed.ok_or(AddressError::BadLocalPart)?
    } else {
        mailbox.rfind('@').unwrap_or(mailbox.len())
    };

    let local = &mailbox[..local_end];
    match &mailbox[local_end..] {
        "" => Ok((local, None)),
        rest => match rest.strip_prefix('@') {
            Some(domain) => Ok((local, Some(domain))),
            None => Err(AddressError::BadLocalPart),
        },
    }
}

fn check_local_part(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::BadLocalPart);
    }
    if local.starts_with('"') {
        // The quoted string was closed by split_mailbox; inside it RFC 5321
        // allows any printable character, escaped where needed.
        return Ok(());
    }

    // Dot-string (RFC 5321 §4.1.2), widened to UTF-8 for SMTPUTF8 (RFC 6531).
    const SPECIALS: &[u8] = b"()<>[]:;@\\,\" ";
    let atoms_ok = local
        .split('.')
        .all(|atom| !atom.is_empty() && !atom.bytes().any(|b| SPECIALS.contains(&b)));
    if atoms_ok {
        Ok(())
    } else {
        Err(AddressError::BadLocalPart)
    }
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() || domain.len() > 255 {
        return Err(AddressError::BadDomain);
    }
    if domain.starts_with('[') {
        // An address literal such as [192.0.2.1] or [IPv6:...].
        let ok = domain.ends_with(']')
            && domain[1..domain.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":.".contains(&b));
        return if ok {
            Ok(())
        } else {
            Err(AddressError::BadDomain)
        };
    }

    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    });
    if labels_ok {
        Ok(())
    } else {
        Err(AddressError::BadDomain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Result<Address, AddressError> {
        Address::parse(path, false)
    }

    #[test]
    fn quoted_local_parts_keep_their_quotes() {
        let address = parse("\"alice smith\"@example.com").expect("quoted local part");
        assert_eq!(address.as_str(), "\"alice smith\"@example.com");
        assert_eq!(address.domain(), Some("example.com"));

        let address = parse("\"bob@legacy\"@example.net").expect("@ inside quotes");
        assert_eq!(address.local_part(), "\"bob@legacy\"");
        assert_eq!(address.domain(), Some("example.net"));

        let address = parse("\"carol\\\\ops\"@example.net").expect("escaped backslash");
        assert_eq!(address.local_part(), "\"carol\\\\ops\"");
    }

    #[test]
    fn long_local_parts_are_accepted() {
        let local = format!("SRS0=k3Zp=QX=lists.example.org={}", "b".repeat(80));
        let address = parse(&format!("{local}@example.org")).expect("SRS address");
        assert!(address.local_part().len() > 64);
    }

    #[test]
    fn postmaster_may_stand_alone_in_rcpt_only() {
        assert!(Address::parse("Postmaster", true).is_ok());
        assert_eq!(parse("Postmaster"), Err(AddressError::NoDomain));
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(
            parse("a\0b@example.com"),
            Err(AddressError::ControlCharacter)
        );
        assert_eq!(parse("a b@example.com"), Err(AddressError::BadLocalPart));
        assert_eq!(parse("a@exa mple.com"), Err(AddressError::BadDomain));
        assert_eq!(parse("\"open@example.com"), Err(AddressError::BadLocalPart));
        assert_eq!(parse("@example.com"), Err(AddressError::BadLocalPart));
        assert_eq!(parse("a@"), Err(AddressError::BadDomain));
        assert_eq!(parse(&"a".repeat(300)), Err(AddressError::TooLong));
    }

    #[test]
    fn source_routes_are_dropped() {
        let address = parse("@relay.example:bob@example.com").expect("source route");
        assert_eq!(address.as_str(), "bob@example.com");
    }

    #[test]
    fn keys_fold_domain_case_only() {
        let a = parse("Bob@Example.COM").expect("address");
        assert_eq!(a.key(), "Bob@example.com");
        let p = parse("POSTMASTER@Example.com").expect("address");
        assert_eq!(p.key(), "postmaster@example.com");
        assert!(a.same_mailbox(&parse("bob@example.com").expect("address")));
    }

    #[test]
    fn quoted_and_plain_forms_are_one_mailbox() {
        let plain = parse("journal@example.com").expect("a");
        for same in [
            "\"journal\"@example.com",
            "\"JOURNAL\"@Example.COM",
            "\"\\journal\"@example.com",
        ] {
            assert!(parse(same).expect(same).same_mailbox(&plain), "{same}");
        }
        assert!(!parse("\"journal x\"@example.com")
            .expect("a")
            .same_mailbox(&plain));
    }

    #[test]
    fn base_mailboxes_undo_subaddresses_and_routing_hacks() {
        for (text, base) in [
            ("journal+x@example.com", "journal@example.com"),
            ("journal%example.com@example.com", "journal@example.com"),
            ("example.com!journal@example.com", "journal@example.com"),
            ("\"Journal+tag\"@EXAMPLE.com", "journal@example.com"),
        ] {
            assert_eq!(parse(text).expect(text).base_mailbox(), base, "{text}");
        }
        assert!(parse("a%b@example.com").expect("a").has_routing_hack());
        assert!(!parse("a.b@example.com").expect("a").has_routing_hack());
    }

    #[test]
    fn domain_membership_ignores_case() {
        let domains = vec!["example.com".to_owned()];
        assert!(parse("x@EXAMPLE.com").expect("a").in_domains(&domains));
        assert!(!parse("x@example.net").expect("a").in_domains(&domains));
    }
}
