//! The mapping file: how to read a particular directory (product contract §2).
//!
//! A mapping names the search filter that finds a user by address, the
//! attributes that hold mail addresses, the hidden flag and group members, and
//! the table that turns legacy Exchange 5.5 property ids (`0x80360000`) into
//! attribute names. Two presets ship with the product, committed as
//! `deploy/mappings/*.toml` and compiled into the crate; a user's own file
//! replaces either. This module only parses and validates; the lookup module
//! uses the result.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Preset names and their text, as committed under `deploy/mappings/`.
const PRESETS: [(&str, &str); 2] = [
    (
        "active-directory",
        include_str!("../../../deploy/mappings/active-directory.toml"),
    ),
    (
        "openldap",
        include_str!("../../../deploy/mappings/openldap.toml"),
    ),
];

/// The placeholder in `user_filter` replaced by the escaped address.
pub const ADDRESS_PLACEHOLDER: &str = "{address}";

/// Why a mapping cannot be loaded, or a configured attribute not translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The mapping file could not be read.
    #[error("cannot read mapping file {path}: {reason}")]
    Read {
        /// The file named by `directory.mapping`.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The mapping text is not valid TOML or has unknown keys.
    #[error("mapping {origin}: {reason}")]
    Parse {
        /// Preset name or file path.
        origin: String,
        /// What the parser said.
        reason: String,
    },
    /// A key of the mapping has a value that cannot work.
    #[error("mapping {origin}: {key}: {reason}")]
    Invalid {
        /// Preset name or file path.
        origin: String,
        /// The offending key.
        key: String,
        /// Why it cannot work.
        reason: String,
    },
    /// A legacy property value has a non-zero low word.
    #[error("legacy property {value}: the low word must be 0 (property id {id:#06X})")]
    LegacyLowWord {
        /// The configured value, as written.
        value: String,
        /// The property id in its high word.
        id: u16,
    },
    /// A legacy property id is not in `[custom_attributes]`.
    #[error("legacy property {value}: property id {id:#06X} is not in [custom_attributes]")]
    UnknownPropertyId {
        /// The configured value, as written.
        value: String,
        /// The property id in its high word.
        id: u16,
    },
    /// A configured attribute is neither a legacy property nor an attribute name.
    #[error("{value:?} is neither an attribute name nor a legacy property such as 0x80360000")]
    BadAttribute {
        /// The configured value, as written.
        value: String,
    },
}

/// The mapping file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    user_filter: String,
    mail: String,
    #[serde(default)]
    addresses: Option<String>,
    #[serde(default)]
    hidden: Option<String>,
    group_member: String,
    #[serde(default)]
    journal_value_prefix: Option<String>,
    #[serde(default)]
    custom_attributes: BTreeMap<String, String>,
}

/// How mailjournal reads one kind of directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Filter finding a user by address; holds `{address}` at least once.
    pub user_filter: String,
    /// Attribute holding the mail address.
    pub mail: String,
    /// Multi-valued attribute of SMTP addresses (`SMTP:`/`smtp:` prefixed, or plain).
    pub addresses: Option<String>,
    /// Boolean attribute: TRUE hides the entry from the address book.
    pub hidden: Option<String>,
    /// Attribute holding the DNs of a group's members.
    pub group_member: String,
    /// When set, only journal values with this prefix count, prefix removed.
    pub journal_value_prefix: Option<String>,
    /// Legacy property id (high word) to attribute name.
    pub custom_attributes: BTreeMap<u16, String>,
}

impl Mapping {
    /// Names of the presets that ship with the product.
    pub fn preset_names() -> impl Iterator<Item = &'static str> {
        PRESETS.iter().map(|(name, _)| *name)
    }

    /// Loads a preset by name, or else the mapping file at that path.
    pub fn load(spec: &str) -> Result<Mapping, MappingError> {
        if let Some((name, text)) = PRESETS.iter().find(|(name, _)| *name == spec) {
            return Mapping::from_toml(text, name);
        }
        Mapping::from_file(Path::new(spec))
    }

    /// Loads a mapping file.
    pub fn from_file(path: &Path) -> Result<Mapping, MappingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MappingError::Read {
            path: origin.clone(),
            reason: e.to_string(),
        })?;
        Mapping::from_toml(&text, &origin)
    }

    /// Parses mapping text; `origin` (preset name or path) appears in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Mapping, MappingError> {
        let raw: RawMapping = toml::from_str(text).map_err(|e| MappingError::Parse {
            origin: origin.into(),
            reason: e.message().to_string(),
        })?;
        let invalid = |key: &str, reason: String| MappingError::Invalid {
            origin: origin.into(),
            key: key.into(),
            reason,
        };

        if !raw.user_filter.contains(ADDRESS_PLACEHOLDER) {
            return Err(invalid(
                "user_filter",
                format!("must contain {ADDRESS_PLACEHOLDER}"),
            ));
        }
        if !balanced_filter(&raw.user_filter) {
            return Err(invalid(
                "user_filter",
                "must be one parenthesised filter".into(),
            ));
        }
        let names = [
            ("mail", Some(&raw.mail)),
            ("addresses", raw.addresses.as_ref()),
            ("hidden", raw.hidden.as_ref()),
            ("group_member", Some(&raw.group_member)),
        ];
        for (key, value) in names {
            if let Some(value) = value {
                if !is_attribute_name(value) {
                    return Err(invalid(key, format!("{value:?} is not an attribute name")));
                }
            }
        }
        if raw.journal_value_prefix.as_deref() == Some("") {
            return Err(invalid(
                "journal_value_prefix",
                "must not be empty when set".into(),
            ));
        }

        let mut custom_attributes = BTreeMap::new();
        for (id, attribute) in &raw.custom_attributes {
            let key = format!("custom_attributes.{id}");
            let number = parse_hex(id)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| invalid(&key, "a property id is written 0x8036".into()))?;
            if !is_attribute_name(attribute) {
                return Err(invalid(
                    &key,
                    format!("{attribute:?} is not an attribute name"),
                ));
            }
            custom_attributes.insert(number, attribute.clone());
        }

        Ok(Mapping {
            user_filter: raw.user_filter,
            mail: raw.mail,
            addresses: raw.addresses,
            hidden: raw.hidden,
            group_member: raw.group_member,
            journal_value_prefix: raw.journal_value_prefix,
            custom_attributes,
        })
    }

    /// Translates a configured journal attribute: a legacy property value such
    /// as `0x80360000` (property id in the high word, 0 in the low word, as
    /// the Exchange 5.5 IMS Extension took it) goes through
    /// `[custom_attributes]`; an attribute name passes through unchanged.
    pub fn attribute_for(&self, configured: &str) -> Result<String, MappingError> {
        let value = configured.trim();
        let is_hex = value.len() > 2 && value[..2].eq_ignore_ascii_case("0x");
        if !is_hex {
            if is_attribute_name(value) {
                return Ok(value.to_string());
            }
            return Err(MappingError::BadAttribute {
                value: configured.into(),
            });
        }

        let number = parse_hex(value)
            .filter(|_| value.len() <= 10)
            .ok_or_else(|| MappingError::BadAttribute {
                value: configured.into(),
            })?;
        let id = (number >> 16) as u16;
        if number & 0xFFFF != 0 {
            return Err(MappingError::LegacyLowWord {
                value: configured.into(),
                id,
            });
        }
        self.custom_attributes
            .get(&id)
            .cloned()
            .ok_or_else(|| MappingError::UnknownPropertyId {
                value: configured.into(),
                id,
            })
    }
}

/// Parses `0x` followed by one to eight hex digits.
fn parse_hex(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// An attribute description (RFC 4512 §2.5): a name or OID, options after `;`.
pub(crate) fn is_attribute_name(name: &str) -> bool {
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let keystring = base.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !base.is_empty()
        && base
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    (keystring || oid)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// True when the filter is one parenthesised expression with balanced
/// parentheses (escaped ones in values are written `\28`/`\29`, RFC 4515 §3).
fn balanced_filter(filter: &str) -> bool {
    let filter = filter.trim();
    if !filter.starts_with('(') || !filter.ends_with(')') {
        return false;
    }
    let mut depth = 0usize;
    for (i, c) in filter.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 && i + 1 != filter.len() {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Mapping {
        Mapping::load("active-directory").expect("preset loads")
    }

    #[test]
    fn presets_hold_all_fifteen_custom_attributes() {
        for name in Mapping::preset_names() {
            let m = Mapping::load(name).expect("preset loads");
            assert_eq!(m.custom_attributes.len(), 15, "{name}");
            for (n, id) in (0x802Du16..=0x8036).enumerate() {
                assert_eq!(
                    m.custom_attributes[&id],
                    format!("extensionAttribute{}", n + 1)
                );
            }
            for (n, id) in (0x8C57u16..=0x8C5B).enumerate() {
                assert_eq!(
                    m.custom_attributes[&id],
                    format!("extensionAttribute{}", n + 11)
                );
            }
        }
        let openldap = Mapping::load("openldap").expect("preset loads");
        assert_eq!(openldap.user_filter, "(mail={address})");
        assert_eq!(openldap.hidden, None);
        assert_eq!(ad().hidden.as_deref(), Some("msExchHideFromAddressLists"));
    }

    #[test]
    fn legacy_property_translation() {
        let m = ad();
        assert_eq!(
            m.attribute_for("0x80360000").as_deref(),
            Ok("extensionAttribute10")
        );
        assert_eq!(
            m.attribute_for("0x8C5B0000").as_deref(),
            Ok("extensionAttribute15")
        );
        assert_eq!(
            m.attribute_for("0x802d0000").as_deref(),
            Ok("extensionAttribute1")
        );
        assert_eq!(
            m.attribute_for("extensionAttribute10").as_deref(),
            Ok("extensionAttribute10")
        );

        let err = m.attribute_for("0x80360001").expect_err("low word set");
        assert_eq!(
            err,
            MappingError::LegacyLowWord {
                value: "0x80360001".into(),
                id: 0x8036
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("0x80360001") && text.contains("0x8036"),
            "{text}"
        );

        let err = m.attribute_for("0x12340000").expect_err("unknown id");
        let text = err.to_string();
        assert!(
            text.contains("0x12340000") && text.contains("0x1234"),
            "{text}"
        );

        assert!(m.attribute_for("0x").is_err());
        assert!(m.attribute_for("0x1234567890").is_err());
        assert!(m.attribute_for("mail)(x").is_err());
        assert!(m.attribute_for("").is_err());
    }

    #[test]
    fn own_mapping_file_is_validated() {
        let ok = "user_filter = \"(uid={address})\"\nmail = \"mail\"\ngroup_member = \"member\"\n\
                  journal_value_prefix = \"journal=\"\n\
                  [custom_attributes]\n0x8036 = \"description\"\n";
        let m = Mapping::from_toml(ok, "own.toml").expect("valid");
        assert_eq!(m.attribute_for("0x80360000").as_deref(), Ok("description"));
        assert_eq!(m.addresses, None);

        let no_placeholder = ok.replace("{address}", "x");
        let err = Mapping::from_toml(&no_placeholder, "own.toml").expect_err("no placeholder");
        assert!(err.to_string().contains("user_filter"), "{err}");

        let unbalanced = ok.replace("(uid={address})", "(uid={address}))(x=y");
        assert!(Mapping::from_toml(&unbalanced, "own.toml").is_err());

        let bad_id = ok.replace("0x8036 =", "\"8036\" =");
        let err = Mapping::from_toml(&bad_id, "own.toml").expect_err("bad id");
        assert!(err.to_string().contains("custom_attributes.8036"), "{err}");

        let unknown = format!("extra = 1\n{ok}");
        assert!(Mapping::from_toml(&unknown, "own.toml").is_err());
        let err = Mapping::load("/nonexistent/mapping.toml").expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/mapping.toml"),
            "{err}"
        );
    }
}
