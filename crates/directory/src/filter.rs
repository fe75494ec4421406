//! Building search filters from untrusted addresses (RFC 4515).
//!
//! Every address comes from an SMTP client, so it is hostile until proven
//! otherwise: `*)(mail=*` must stay a literal value and never widen a filter.
//! RFC 4515 §3 requires `*`, `(`, `)`, `\` and NUL in an assertion value to be
//! written as `\XX`; we also escape every byte outside printable ASCII, so a
//! UTF-8 address reaches the server as the exact octets of its value. The
//! whole address is escaped every time; no caller escapes by hand.

use crate::mapping::ADDRESS_PLACEHOLDER;

/// Escapes `value` for use as an assertion value in a filter (RFC 4515 §3).
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x7F.. | ..0x20 => {
                out.push_str(&format!("\\{byte:02x}"));
            }
            _ => out.push(char::from(byte)),
        }
    }
    out
}

/// Places the escaped `address` at every `{address}` of `template`.
pub fn user_filter(template: &str, address: &str) -> String {
    template.replace(ADDRESS_PLACEHOLDER, &escape_filter_value(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(
            escape_filter_value("alice@example.com"),
            "alice@example.com"
        );
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("("), "\\28");
        assert_eq!(escape_filter_value(")"), "\\29");
        assert_eq!(escape_filter_value("\\"), "\\5c");
        assert_eq!(escape_filter_value("a\0b"), "a\\00b");
        assert_eq!(escape_filter_value("*)(mail=*"), "\\2a\\29\\28mail=\\2a");
        assert_eq!(escape_filter_value("jörg@x"), "j\\c3\\b6rg@x");
        assert_eq!(escape_filter_value("a\r\nb"), "a\\0d\\0ab");
    }

    #[test]
    fn injection_stays_inside_the_value() {
        let template = "(|(mail={address})(proxyAddresses=smtp:{address}))";
        let filter = user_filter(template, "*)(mail=*");
        assert_eq!(
            filter,
            "(|(mail=\\2a\\29\\28mail=\\2a)(proxyAddresses=smtp:\\2a\\29\\28mail=\\2a))"
        );
        // Still exactly the two assertions of the template.
        assert_eq!(filter.matches('(').count(), template.matches('(').count());
        let filter = user_filter(template, "x)(|(objectClass=*");
        assert_eq!(filter.matches('(').count(), 3);
        assert_eq!(filter.matches(')').count(), 3);
    }
}
