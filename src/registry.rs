//! `mailjournal import-registry`: turns a regedit export of the Exchange 5.5
//! IMS Extension settings into the equivalent `[journal]` TOML (product
//! contract §3, and `reference/ims-extension-journaling.txt` for the values).
//!
//! This module owns the whole conversion: `decode` turns the file into text
//! (REGEDIT4 in the ANSI code page Windows-1252, version 5.00 in UTF-16LE
//! with a byte-order mark, or UTF-8), `parse` reads its keys and values, and
//! this file finds the `...\MSExchangeIMC\Parameters\Extension` key and
//! writes the six journaling values as `[journal]` keys. Whatever it cannot
//! convert goes into the report, one line each, so that nothing is dropped in
//! silence. It does not validate the result as a configuration: `mailjournal
//! check` does that, and the legacy property values are checked here with the
//! same mapping preset (`directory::Mapping`) that `check` uses.

use std::fmt;
use std::fmt::Write as _;
use std::path::Path;

use directory::Mapping;
use policy::Address;

use decode::decode;
use parse::{parse, type_name, Data, Export, Value};

mod decode;
mod parse;

/// The key the IMS Extension read its settings from, under any hive prefix.
const EXTENSION_KEY: &str = r"\MSExchangeIMC\Parameters\Extension";

/// The mapping whose `[custom_attributes]` name the attribute in comments.
const PRESET: &str = "active-directory";

/// How many other keys the report names before it counts the rest.
const LISTED_KEYS: usize = 5;

/// Why a registry file cannot be converted at all (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The file could not be read.
    Read { path: String, reason: String },
    /// The file is not a regedit export, or not in an encoding we read.
    Invalid { path: String, reason: String },
    /// The export holds no `...\MSExchangeIMC\Parameters\Extension` key.
    NoExtensionKey { path: String, keys: usize },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Read { path, reason } => write!(f, "cannot read {path}: {reason}"),
            ImportError::Invalid { path, reason } => {
                write!(f, "{path}: not a registry export: {reason}")
            }
            ImportError::NoExtensionKey { path, keys } => write!(
                f,
                "{path}: no ...{EXTENSION_KEY} key in this registry export \
                 ({keys} other {}); export that key with regedit and try again",
                if *keys == 1 { "key" } else { "keys" }
            ),
        }
    }
}

/// The outcome of a conversion: TOML for stdout, report lines for stderr.
#[derive(Debug)]
pub struct Conversion {
    /// The `[journal]` section, with comments.
    pub toml: String,
    /// One line per note, warning or error, already prefixed with its level.
    pub report: Vec<String>,
}

/// Reads the `.reg` file at `path` and converts its Extension key.
pub fn import(path: &Path) -> Result<Conversion, ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImportError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| ImportError::Invalid {
        path: shown.clone(),
        reason,
    };
    let text = decode(&bytes).map_err(invalid)?;
    let export = parse(&text).map_err(invalid)?;
    convert(&export).ok_or(ImportError::NoExtensionKey {
        path: shown.clone(),
        keys: export.keys.len(),
    })
}

/// One direction's three registry values and the keys they become.
struct Names {
    journal: &'static str,
    ndr: &'static str,
    prop: &'static str,
    key: &'static str,
}

const DIRECTIONS: [Names; 2] = [
    Names {
        journal: "InboundJournal",
        ndr: "InboundJournalNDR",
        prop: "InboundRecipJournalProp",
        key: "inbound",
    },
    Names {
        journal: "OutboundJournal",
        ndr: "OutboundJournalNDR",
        prop: "OutboundRecipJournalProp",
        key: "outbound",
    },
];

/// What one direction converted to.
struct Direction {
    target: Option<String>,
    ndr: Option<String>,
    attribute: Option<Attribute>,
}

/// A legacy property value and what the mapping made of it.
enum Attribute {
    /// Translates: the value and the comment naming the attribute.
    Known { value: String, comment: String },
    /// Does not translate: the value and the mapping's reason.
    Bad { value: String, reason: String },
}

/// Converts the Extension key of `export`; `None` if there is none.
fn convert(export: &Export) -> Option<Conversion> {
    let mut report = Vec::new();
    let chosen = extension_key(export, &mut report)?;

    // The values of every section of the chosen key, later ones winning, as
    // they would when regedit imports the file.
    let mut values: Vec<Value> = Vec::new();
    for key in export.keys.iter().filter(|k| same_key(&k.path, &chosen)) {
        if key.deleted {
            values.clear();
        }
        for value in &key.values {
            let same = |v: &Value| match (&v.name, &value.name) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (a, b) => a.is_none() && b.is_none(),
            };
            values.retain(|v| !same(v));
            values.push(value.clone());
        }
    }
    let take = |name: &str| {
        values
            .iter()
            .find(|v| {
                v.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .filter(|v| v.data != Data::Delete)
    };

    let mapping = Mapping::load(PRESET).expect("the active-directory preset is compiled in");
    let mut directions = Vec::new();
    for names in &DIRECTIONS {
        let direction = Direction {
            target: take(names.journal).and_then(|v| address(names.journal, v, &mut report)),
            ndr: take(names.ndr).and_then(|v| address(names.ndr, v, &mut report)),
            attribute: take(names.prop)
                .and_then(|v| attribute(names.prop, v, &mapping, &mut report)),
        };
        ndr_rule(names, &direction, &mut report);
        directions.push(direction);
    }

    // Nothing under the Extension key is dropped without a word.
    let known = |name: &str| {
        DIRECTIONS.iter().any(|d| {
            [d.journal, d.ndr, d.prop]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(name))
        })
    };
    let unknown: Vec<String> = values
        .iter()
        .filter(|v| v.data != Data::Delete)
        .filter_map(|v| match &v.name {
            Some(name) if !known(name) => Some(name.clone()),
            None if v.data != Data::String(String::new()) => Some("@ (the default value)".into()),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        report.push(format!(
            "warning: unknown values, not converted: {}",
            unknown.join(", ")
        ));
    }
    for problem in &export.problems {
        report.push(format!("warning: {problem}"));
    }

    let toml = render(&chosen, &directions, &mut report);
    Some(Conversion { toml, report })
}

/// Picks the Extension key to convert: the one under `CurrentControlSet`
/// when an export of a whole hive holds several control sets, else the
/// first. Every other key is named in the report.
fn extension_key(export: &Export, report: &mut Vec<String>) -> Option<String> {
    let is_extension = |path: &str| {
        path.to_ascii_lowercase()
            .ends_with(&EXTENSION_KEY.to_ascii_lowercase())
    };
    let mut paths: Vec<&str> = Vec::new();
    for key in export.keys.iter().filter(|k| !k.deleted) {
        if !paths.iter().any(|p| same_key(p, &key.path)) {
            paths.push(&key.path);
        }
    }
    let candidates: Vec<&str> = paths.iter().copied().filter(|p| is_extension(p)).collect();
    let chosen = candidates
        .iter()
        .find(|p| p.to_ascii_lowercase().contains(r"\currentcontrolset\"))
        .or(candidates.first())?
        .to_string();

    if candidates.len() > 1 {
        report.push(format!(
            "warning: {} Extension keys in the file; converted {chosen}, the others are ignored",
            candidates.len()
        ));
    }
    let others: Vec<&str> = paths
        .into_iter()
        .filter(|p| !same_key(p, &chosen))
        .collect();
    if !others.is_empty() {
        let mut line = format!(
            "note: other keys ignored: {}",
            others[..others.len().min(LISTED_KEYS)].join(", ")
        );
        if others.len() > LISTED_KEYS {
            let _ = write!(line, " and {} more", others.len() - LISTED_KEYS);
        }
        report.push(line);
    }
    Some(chosen)
}

fn same_key(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A REG_SZ address value, as mailjournal will read it.
fn address(name: &str, value: &Value, report: &mut Vec<String>) -> Option<String> {
    let text = match &value.data {
        Data::String(text) => text.trim(),
        other => {
            unsupported(name, value.line, other, "a REG_SZ address", report);
            return None;
        }
    };
    if text.is_empty() {
        report.push(format!("note: {name} is empty, as if absent"));
        return None;
    }

    // Exchange wrote typed addresses; "SMTP:" is only the type of a plain one.
    let typed = text
        .get(..5)
        .is_some_and(|t| t.eq_ignore_ascii_case("smtp:"));
    if let Some(plain) = text
        .get(5..)
        .filter(|p| typed && Address::from_config(p).is_ok())
    {
        report.push(format!(
            "note: {name}: the address type prefix SMTP: is left out"
        ));
        return Some(plain.to_owned());
    }
    if text.starts_with("ldap:///") {
        return Some(text.to_owned());
    }
    let lower = text.to_ascii_lowercase();
    let kind = if lower.starts_with("/o=") {
        Some("an X.500 address".to_string())
    } else if lower.starts_with("ex:") {
        Some("an Exchange (EX:) address".to_string())
    } else if !text.contains('@') {
        Some("not an SMTP address".to_string())
    } else {
        Address::from_config(text)
            .err()
            .map(|e| format!("not an SMTP address ({e})"))
    };
    if let Some(kind) = kind {
        report.push(format!(
            "warning: {name} = {text:?} is {kind}: mailjournal needs an SMTP address \
             or ldap:///DN of the mailbox or group; converted as is, change it before use"
        ));
    }
    Some(text.to_owned())
}

/// A REG_DWORD legacy property value, checked against the mapping preset.
fn attribute(
    name: &str,
    value: &Value,
    mapping: &Mapping,
    report: &mut Vec<String>,
) -> Option<Attribute> {
    let number = match &value.data {
        Data::Dword(number) => *number,
        Data::Hex { kind: 4, bytes } if bytes.len() == 4 => {
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        }
        Data::String(text) => {
            let text = text.trim();
            let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
            match digits.and_then(|d| u32::from_str_radix(d, 16).ok().filter(|_| d.len() <= 8)) {
                Some(number) => number,
                None => {
                    report.push(format!(
                        "error: {name} = {text:?} is not a property value such as 0x80360000, \
                         not converted"
                    ));
                    return None;
                }
            }
        }
        other => {
            unsupported(name, value.line, other, "a REG_DWORD", report);
            return None;
        }
    };

    let value = format!("0x{number:08X}");
    match mapping.attribute_for(&value) {
        Ok(attribute) => {
            let id = (number >> 16) as u16;
            let comment = match custom_attribute_number(id) {
                Some(n) => format!("custom attribute {n}: {attribute}"),
                None => format!("property {id:#06X}: {attribute}"),
            };
            Some(Attribute::Known { value, comment })
        }
        Err(e) => {
            report.push(format!("error: {name}: {e}"));
            Some(Attribute::Bad {
                value,
                reason: e.to_string(),
            })
        }
    }
}

/// Exchange 5.5 custom attributes 1–10 are 0x802D–0x8036, 11–15 are
/// 0x8C57–0x8C5B (Emsabtag.h).
fn custom_attribute_number(id: u16) -> Option<u16> {
    match id {
        0x802D..=0x8036 => Some(id - 0x802D + 1),
        0x8C57..=0x8C5B => Some(id - 0x8C57 + 11),
        _ => None,
    }
}

fn unsupported(name: &str, line: usize, data: &Data, expected: &str, report: &mut Vec<String>) {
    let what = match data {
        Data::Dword(_) => "unsupported value type dword (REG_DWORD)".to_string(),
        Data::Hex { kind, .. } => format!("unsupported value type {}", type_name(*kind)),
        Data::Invalid(reason) => format!("unreadable value ({reason})"),
        Data::String(_) => "unsupported value type string (REG_SZ)".to_string(),
        Data::Delete => return,
    };
    report.push(format!(
        "warning: {name} (line {line}): {what}; {expected} is expected, not converted"
    ));
}

/// The original product required the NDR value whenever a direction was
/// journaled, globally or per recipient, and so does mailjournal.
fn ndr_rule(names: &Names, direction: &Direction, report: &mut Vec<String>) {
    let set: Vec<&str> = [
        direction.target.as_ref().map(|_| names.journal),
        direction.attribute.as_ref().map(|_| names.prop),
    ]
    .into_iter()
    .flatten()
    .collect();
    match (set.is_empty(), &direction.ndr) {
        (false, None) => report.push(format!(
            "warning: {} {} set but {} is missing: the original product required it, \
             and so does mailjournal (journal.{}_ndr)",
            set.join(" and "),
            if set.len() == 1 { "is" } else { "are" },
            names.ndr,
            names.key
        )),
        (true, Some(_)) => report.push(format!(
            "note: {} is set but neither {} nor {}: {} journaling stays off",
            names.ndr, names.journal, names.prop, names.key
        )),
        _ => {}
    }
}

/// Writes the `[journal]` section, with comments where a value needs one.
fn render(key: &str, directions: &[Direction], report: &mut Vec<String>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted by mailjournal import-registry from the registry key\n# {}",
        comment_text(key)
    );
    out.push_str("[journal]\n");

    let journaled = directions
        .iter()
        .any(|d| d.target.is_some() || d.attribute.is_some());
    if !journaled {
        out.push_str("# No journaling value is set: journaling stays off.\n");
        report.push("note: no journaling value is set under the Extension key".into());
    } else {
        let _ = writeln!(
            out,
            "# report_sender = {}  # needed for format = \"envelope\"",
            toml_string(&format!("journal-reports@{}", report_domain(directions)))
        );
        report.push(
            "note: set journal.report_sender (the From: of envelope reports, the default \
             format) or format = \"copy\"; see the commented line"
                .into(),
        );
    }

    for (names, direction) in DIRECTIONS.iter().zip(directions) {
        let key = names.key;
        if let Some(target) = &direction.target {
            let _ = writeln!(out, "{key} = {}", toml_string(target));
        }
        match &direction.ndr {
            Some(ndr) => {
                let _ = writeln!(out, "{key}_ndr = {}", toml_string(ndr));
            }
            None if direction.target.is_some() || direction.attribute.is_some() => {
                let _ = writeln!(
                    out,
                    "# {key}_ndr = \"\"  # required: the registry has no {}",
                    names.ndr
                );
            }
            None => {}
        }
        match &direction.attribute {
            Some(Attribute::Known { value, comment }) => {
                let _ = writeln!(out, "# {comment}");
                let _ = writeln!(out, "{key}_recipient_attribute = {}", toml_string(value));
            }
            Some(Attribute::Bad { value, reason }) => {
                let _ = writeln!(
                    out,
                    "# {key}_recipient_attribute = {}  # not converted: {}",
                    toml_string(value),
                    comment_text(reason)
                );
            }
            None => {}
        }
    }
    if directions
        .iter()
        .any(|d| matches!(d.attribute, Some(Attribute::Known { .. })))
    {
        report.push(
            "note: per-recipient journaling needs a [directory] section; the comments name \
             the attribute of the active-directory mapping preset"
                .into(),
        );
    }
    out
}

/// The domain for the report_sender hint: that of an NDR address, else of a
/// journal target, else a placeholder.
fn report_domain(directions: &[Direction]) -> String {
    let ndrs = directions.iter().filter_map(|d| d.ndr.as_deref());
    let targets = directions.iter().filter_map(|d| d.target.as_deref());
    ndrs.chain(targets)
        .find_map(|text| {
            Address::from_config(text)
                .ok()
                .and_then(|a| a.domain().map(str::to_owned))
        })
        .unwrap_or_else(|| "example.com".into())
}

/// A TOML basic string (TOML 1.0 §String): quotes, backslashes and control
/// characters escaped, everything else as is.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a TOML comment, which must stay on one line.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(data: Data) -> Value {
        Value {
            line: 1,
            name: Some("X".into()),
            data,
        }
    }

    #[test]
    fn legacy_properties_name_their_custom_attribute() {
        let mapping = Mapping::load(PRESET).expect("preset");
        let mut report = Vec::new();
        let converted = attribute("P", &value(Data::Dword(0x8036_0000)), &mapping, &mut report);
        assert!(matches!(
            converted,
            Some(Attribute::Known { ref comment, .. })
                if comment == "custom attribute 10: extensionAttribute10"
        ));
        let converted = attribute(
            "P",
            &value(Data::String("0x8C570000".into())),
            &mapping,
            &mut report,
        );
        assert!(matches!(
            converted,
            Some(Attribute::Known { ref comment, .. })
                if comment == "custom attribute 11: extensionAttribute11"
        ));
        assert!(report.is_empty(), "{report:?}");

        let converted = attribute("P", &value(Data::Dword(0x8036_0001)), &mapping, &mut report);
        assert!(matches!(converted, Some(Attribute::Bad { .. })));
        assert!(report[0].contains("0x80360001") && report[0].contains("0x8036"));
        assert_eq!(custom_attribute_number(0x802D), Some(1));
        assert_eq!(custom_attribute_number(0x8C5B), Some(15));
        assert_eq!(custom_attribute_number(0x8037), None);
    }

    #[test]
    fn toml_strings_round_trip() {
        for text in [
            "plain@example.com",
            "\"quoted \\\" local\"@example.com",
            "DOMAIN\\journal",
            "tab\tnew\nline\u{1}\u{7F}\u{85}é’",
        ] {
            let document = format!("key = {}\n", toml_string(text));
            let table: toml::Table = toml::from_str(&document).expect("valid TOML");
            assert_eq!(table["key"].as_str(), Some(text), "{document}");
        }
    }
}
