//! Reads the text of a regedit export: its `[key]` sections and their
//! `"name"=data` values, in file order.
//!
//! It knows regedit's syntax (comments, `\\` and `\"` escapes, `dword:`,
//! `hex:` and `hex(N):` data, `-` deletions, the default value `@`, lines
//! wrapped with a trailing backslash) and nothing of what the values mean;
//! the parent module converts them. Only a missing header is fatal: a line
//! it cannot read is kept as a problem for the report.

/// A regedit export: its keys in file order, and lines it could not read.
#[derive(Debug, Default)]
pub(super) struct Export {
    /// Every `[path]` section, deletions included.
    pub(super) keys: Vec<Key>,
    /// Lines that were skipped, with their number and why.
    pub(super) problems: Vec<String>,
}

/// One `[path]` section; the same path may appear more than once.
#[derive(Debug)]
pub(super) struct Key {
    /// The key path as written, hive first.
    pub(super) path: String,
    /// `[-path]`: the section deletes the key.
    pub(super) deleted: bool,
    /// The values of this section, in file order.
    pub(super) values: Vec<Value>,
}

/// One `"name"=data` or `@=data` line.
#[derive(Debug, Clone)]
pub(super) struct Value {
    /// The line the value starts on, for the report.
    pub(super) line: usize,
    /// `None` is the default value, written `@`.
    pub(super) name: Option<String>,
    pub(super) data: Data,
}

/// The data of one value, as regedit wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Data {
    /// `"text"`: REG_SZ.
    String(String),
    /// `dword:80360000`: REG_DWORD.
    Dword(u32),
    /// `hex:..` (REG_BINARY, kind 3) or `hex(N):..`.
    Hex { kind: u32, bytes: Vec<u8> },
    /// `-`: the value is deleted, so absent.
    Delete,
    /// Data we could not read, and why.
    Invalid(String),
}

const HEADERS: [&str; 2] = ["REGEDIT4", "Windows Registry Editor Version 5.00"];

/// Reads the text of an export. Only a missing header is fatal; a line that
/// is neither key, value nor comment is noted and skipped.
pub(super) fn parse(text: &str) -> Result<Export, String> {
    let mut export = Export::default();
    let mut header = false;
    for (line, content) in logical_lines(text) {
        let content = content.trim();
        if content.is_empty() || content.starts_with(';') {
            continue;
        }
        if !header {
            if !HEADERS.contains(&content) {
                return Err(format!(
                    "the first line is {content:?}, not REGEDIT4 or {:?}",
                    HEADERS[1]
                ));
            }
            header = true;
            continue;
        }

        if let Some(path) = content.strip_prefix('[') {
            let Some(path) = path.strip_suffix(']') else {
                export
                    .problems
                    .push(format!("line {line}: key without closing bracket, ignored"));
                continue;
            };
            let (path, deleted) = match path.strip_prefix('-') {
                Some(path) => (path, true),
                None => (path, false),
            };
            export.keys.push(Key {
                path: path.to_owned(),
                deleted,
                values: Vec::new(),
            });
        } else if content.starts_with('"') || content.starts_with('@') {
            let value = match parse_value(content) {
                Ok((name, data)) => Value { line, name, data },
                Err(reason) => {
                    export
                        .problems
                        .push(format!("line {line}: {reason}, ignored"));
                    continue;
                }
            };
            match export.keys.last_mut() {
                Some(key) => key.values.push(value),
                None => export
                    .problems
                    .push(format!("line {line}: value before any key, ignored")),
            }
        } else {
            export.problems.push(format!(
                "line {line}: neither a key, a value nor a comment, ignored"
            ));
        }
    }
    if !header {
        return Err("the file is empty".into());
    }
    Ok(export)
}

/// Joins the lines regedit wrapped (a trailing backslash outside a string),
/// numbering each logical line by its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.lines().enumerate() {
        let (number, mut joined) = match pending.take() {
            Some((number, mut joined)) => {
                joined.push_str(physical.trim_start());
                (number, joined)
            }
            None => (index + 1, physical.to_owned()),
        };
        if continues(&joined) {
            let end = joined.trim_end().len() - 1;
            joined.truncate(end);
            pending = Some((number, joined));
        } else {
            lines.push((number, joined));
        }
    }
    lines.extend(pending);
    lines
}

/// Whether a line ends with a continuation backslash: outside any string,
/// and not in a comment.
fn continues(line: &str) -> bool {
    let line = line.trim_end();
    if !line.ends_with('\\') || line.trim_start().starts_with(';') {
        return false;
    }
    let mut in_string = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_string = !in_string,
            '\\' if in_string => {
                chars.next();
            }
            _ => {}
        }
    }
    !in_string
}

/// Splits `"name"=data` or `@=data`.
fn parse_value(line: &str) -> Result<(Option<String>, Data), String> {
    let (name, rest) = match line.strip_prefix('@') {
        Some(rest) => (None, rest),
        None => {
            let (name, rest) = parse_quoted(line)?;
            (Some(name), rest)
        }
    };
    let data = rest
        .trim_start()
        .strip_prefix('=')
        .ok_or("value name not followed by =")?;
    Ok((name, parse_data(data.trim())))
}

/// Reads a regedit string: `"` ... `"` with `\\` and `\"` escaped. Any other
/// backslash is kept as written. Returns the text and what follows it.
fn parse_quoted(text: &str) -> Result<(String, &str), String> {
    let body = text.strip_prefix('"').ok_or("expected a quoted string")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[at + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    Err("string without a closing quote".into())
}

fn parse_data(data: &str) -> Data {
    if data == "-" {
        return Data::Delete;
    }
    if data.starts_with('"') {
        return match parse_quoted(data) {
            Ok((text, rest)) if rest.trim().is_empty() || rest.trim().starts_with(';') => {
                Data::String(text)
            }
            Ok(_) => Data::Invalid("text after the closing quote".into()),
            Err(reason) => Data::Invalid(reason),
        };
    }

    let lower = data.to_ascii_lowercase();
    if let Some(digits) = lower.strip_prefix("dword:") {
        let digits = digits.trim();
        return match u32::from_str_radix(digits, 16) {
            Ok(number) if digits.len() <= 8 => Data::Dword(number),
            _ => Data::Invalid(format!("dword:{digits} is not 8 hexadecimal digits")),
        };
    }
    let hex = if let Some(bytes) = lower.strip_prefix("hex:") {
        Some((3, bytes))
    } else if let Some(rest) = lower.strip_prefix("hex(") {
        rest.split_once("):")
            .and_then(|(kind, bytes)| Some((u32::from_str_radix(kind, 16).ok()?, bytes)))
    } else {
        None
    };
    match hex {
        Some((kind, bytes)) => match parse_hex_bytes(bytes) {
            Some(bytes) => Data::Hex { kind, bytes },
            None => Data::Invalid("hex data that is not comma-separated bytes".into()),
        },
        None => Data::Invalid(format!("unrecognised data {data:?}")),
    }
}

fn parse_hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.trim().is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|byte| {
            let byte = byte.trim();
            (byte.len() <= 2).then(|| u8::from_str_radix(byte, 16).ok())?
        })
        .collect()
}

/// The registry type named by a `hex(N):` prefix, for the report.
pub(super) fn type_name(kind: u32) -> String {
    let name = match kind {
        0 => "REG_NONE",
        1 => "REG_SZ",
        2 => "REG_EXPAND_SZ",
        3 => "REG_BINARY",
        4 => "REG_DWORD",
        7 => "REG_MULTI_SZ",
        0xb => "REG_QWORD",
        _ => return format!("hex({kind:x})"),
    };
    if kind == 3 {
        format!("hex ({name})")
    } else {
        format!("hex({kind:x}) ({name})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_join_and_keep_their_first_line_number() {
        let lines =
            logical_lines("REGEDIT4\r\n\"A\"=hex:01,\\\r\n  02,\\\n  03\n\"B\"=\"C:\\\\\"\n");
        assert_eq!(lines[1], (2, "\"A\"=hex:01,02,03".to_string()));
        assert_eq!(lines[2], (5, "\"B\"=\"C:\\\\\"".to_string()));
        assert!(!continues("\"B\"=\"ends in \\"));
        assert!(!continues("; a comment \\"));
    }

    #[test]
    fn values_of_every_form() {
        assert_eq!(
            parse_value(r#""Na\"me"="a\\b\"c""#),
            Ok((Some("Na\"me".into()), Data::String("a\\b\"c".into())))
        );
        assert_eq!(parse_value("@=\"x\""), Ok((None, Data::String("x".into()))));
        assert_eq!(parse_data("dword:80360000"), Data::Dword(0x8036_0000));
        assert_eq!(parse_data("DWORD:0000001f"), Data::Dword(0x1F));
        assert!(matches!(parse_data("dword:123456789"), Data::Invalid(_)));
        assert_eq!(parse_data("-"), Data::Delete);
        assert_eq!(
            parse_data("hex(1):41,00,00,00"),
            Data::Hex {
                kind: 1,
                bytes: vec![0x41, 0, 0, 0]
            }
        );
        assert_eq!(
            parse_data("hex:"),
            Data::Hex {
                kind: 3,
                bytes: vec![]
            }
        );
        assert!(matches!(parse_data("hex:1,zz"), Data::Invalid(_)));
        assert!(matches!(parse_data("\"a\" b"), Data::Invalid(_)));
        assert!(parse_value("\"unterminated=1").is_err());
    }

    #[test]
    fn a_header_is_required() {
        assert!(parse("; comment\n[HKEY_LOCAL_MACHINE\\X]\n").is_err());
        assert!(parse("").is_err());
        let error = parse("\u{FEFF}REGEDIT4\n[K]\n\"A\"=\"1\"\n")
            .expect_err("a BOM inside the text is not a header");
        assert!(error.contains("REGEDIT4"), "{error}");
        let export = parse("REGEDIT4\n\n[K]\n\"A\"=\"1\"\nrubbish\n").expect("parses");
        assert_eq!(export.keys[0].values.len(), 1);
        assert_eq!(export.problems.len(), 1);
    }
}
