//! `mailjournal import-registry` against regedit exports (product contract
//! §3, and §2 for the `[journal]` rules the output must meet).
//!
//! The fixtures under `tests/fixtures/registry/` are written by
//! `make_fixtures.py` in the encodings regedit uses: UTF-16LE with a mark for
//! version 5.00, Windows-1252 for REGEDIT4, and UTF-8 as hand editors save.
//! Each converted section is pasted into a full configuration and handed to
//! `mailjournal check --offline`, so the output is proven usable, not only
//! well-formed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mailjournal");

const EXTENSION: &str =
    r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\MSExchangeIMC\Parameters\Extension";

/// Every section but `[journal]`, in the shape of deploy/mailjournal.toml.
const BASE: &str = r#"[server]
hostname = "gw.example.test"
listen = ["127.0.0.1:2525"]
spool_dir = "{spool}"

[routing]
local_domains = ["example.com"]
internal_networks = ["127.0.0.2/32"]
inbound_next_hop = "smtp://mail.example.internal:25"
outbound_next_hop = "smtp://smarthost.example.internal:25"

[queue]
retry_initial = "1m"
retry_max = "1h"
max_age = "5d"
"#;

/// For per-recipient journaling; `check --offline` does not bind.
const DIRECTORY: &str = r#"
[directory]
url = "ldap://127.0.0.1:389"
base_dn = "DC=example,DC=com"
mapping = "active-directory"
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry")
        .join(name)
}

fn import(path: &Path) -> Output {
    Command::new(BIN)
        .arg("import-registry")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run mailjournal import-registry")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Imports a fixture, expects exit 0, and returns the parsed `[journal]`
/// table with stdout and stderr.
fn convert(name: &str) -> (toml::Table, String, String) {
    convert_expecting(name, 0)
}

/// As [`convert`], expecting the exit code `code` (1 when a value could not
/// be converted: the section is printed, but it is not ready to use).
fn convert_expecting(name: &str, code: i32) -> (toml::Table, String, String) {
    let output = import(&fixture(name));
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(code), "{name}: {err}");
    let document: toml::Table =
        toml::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
    assert_eq!(document.len(), 1, "only [journal]: {out}");
    let journal = document["journal"]
        .as_table()
        .expect("[journal] is a table")
        .clone();
    (journal, out, err)
}

fn value<'a>(journal: &'a toml::Table, key: &str) -> Option<&'a str> {
    journal.get(key).and_then(toml::Value::as_str)
}

/// Pastes a converted section, its report_sender hint taken up as the
/// administrator would, into a full configuration and runs `check --offline`.
fn check(converted: &str, directory: bool) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let journal: String = converted
        .lines()
        .map(|line| {
            line.strip_prefix("# report_sender = ")
                .map_or(line.to_string(), |rest| format!("report_sender = {rest}"))
        })
        .map(|line| line + "\n")
        .collect();
    let mut text = BASE.replace("{spool}", &dir.path().join("spool").display().to_string());
    text.push('\n');
    text.push_str(&journal);
    if directory {
        text.push_str(DIRECTORY);
    }
    let path = dir.path().join("mailjournal.toml");
    std::fs::write(&path, &text).expect("write configuration");
    Command::new(BIN)
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run mailjournal check")
}

fn expect_accepted(converted: &str, directory: bool) {
    let output = check(converted, directory);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check refused the converted section:\n{converted}\n{}",
        stderr(&output)
    );
}

#[test]
fn utf16_export_converts_all_six_values() {
    let (journal, out, err) = convert("utf16-crlf.reg");
    assert_eq!(value(&journal, "inbound"), Some("journal@example.com"));
    assert_eq!(
        value(&journal, "inbound_ndr"),
        Some("journal-ndr@example.com")
    );
    assert_eq!(value(&journal, "outbound"), Some("journal-out@example.com"));
    assert_eq!(
        value(&journal, "outbound_ndr"),
        Some("journal-ndr@example.com")
    );
    assert_eq!(
        value(&journal, "inbound_recipient_attribute"),
        Some("0x80360000")
    );
    assert_eq!(
        value(&journal, "outbound_recipient_attribute"),
        Some("0x8C5B0000")
    );
    assert!(!journal.contains_key("format"), "{out}");

    // Each legacy value carries the attribute it maps to, on the line above.
    assert!(
        out.contains(
            "# custom attribute 10: extensionAttribute10\n\
             inbound_recipient_attribute = \"0x80360000\"\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("# custom attribute 15: extensionAttribute15\n"),
        "{out}"
    );
    assert!(
        out.contains(concat!(
            "# report_sender = \"journal-reports@example.com\"",
            "  # needed for format = \"envelope\"\n"
        )),
        "{out}"
    );

    let parent = EXTENSION.trim_end_matches(r"\Extension");
    assert!(
        err.contains(&format!("other keys ignored: {parent}\n")),
        "{err}"
    );
    assert!(
        !err.contains("warning:") && !err.contains("error:"),
        "{err}"
    );
    expect_accepted(&out, true);
}

#[test]
fn regedit4_ansi_export_decodes_windows_1252_and_escapes() {
    let (journal, out, err) = convert("ansi-1252.reg");
    assert_eq!(
        value(&journal, "inbound"),
        Some("journal.société@example.com")
    );
    assert_eq!(
        value(&journal, "outbound"),
        Some("archive\u{2019}s@example.com")
    );
    assert_eq!(
        value(&journal, "inbound_ndr"),
        Some("\"journal team\"@example.com")
    );
    assert_eq!(
        value(&journal, "outbound_ndr"),
        Some(r#""ndr\\box"@example.com"#)
    );
    assert!(!err.contains("warning:"), "{err}");
    expect_accepted(&out, false);
}

#[test]
fn wrapped_hex_values_do_not_derail_the_values_after_them() {
    let (journal, out, err) = convert("continuation.reg");
    assert_eq!(value(&journal, "inbound"), Some("journal@example.com"));
    assert_eq!(
        value(&journal, "inbound_ndr"),
        Some("journal-ndr@example.com")
    );
    assert_eq!(value(&journal, "outbound"), Some("journal@example.com"));
    assert_eq!(
        value(&journal, "outbound_ndr"),
        Some("journal-ndr@example.com")
    );
    assert!(
        err.contains("warning: unknown values, not converted: Routes\n"),
        "{err}"
    );
    assert!(!err.contains("line "), "no unreadable line: {err}");
    expect_accepted(&out, false);
}

#[test]
fn journaling_without_its_ndr_value_is_reported_as_the_original_required() {
    let (journal, out, err) = convert("missing-ndr.reg");
    assert_eq!(value(&journal, "inbound"), Some("journal@example.com"));
    assert_eq!(
        value(&journal, "outbound_recipient_attribute"),
        Some("0x80360000")
    );
    assert!(!journal.contains_key("inbound_ndr") && !journal.contains_key("outbound_ndr"));
    assert!(
        err.contains(
            "InboundJournal is set but InboundJournalNDR is missing: the original product \
             required it, and so does mailjournal (journal.inbound_ndr)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "OutboundRecipJournalProp is set but OutboundJournalNDR is missing: the original \
             product required it, and so does mailjournal (journal.outbound_ndr)"
        ),
        "{err}"
    );

    // check agrees: the same section is refused for the same key.
    let output = check(&out, true);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("journal.inbound_ndr"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_values_and_odd_types_are_named_never_dropped() {
    let (journal, out, err) = convert("unknown-values.reg");
    // Names and key paths compare without regard to case.
    assert_eq!(value(&journal, "inbound"), Some("journal@example.com"));
    assert_eq!(
        value(&journal, "inbound_ndr"),
        Some("journal-ndr@example.com")
    );
    // hex(2) is reported, "-" deletes, hex(1) is reported.
    for key in ["outbound", "outbound_ndr", "inbound_recipient_attribute"] {
        assert!(!journal.contains_key(key), "{key}: {out}");
    }
    assert!(
        err.contains("warning: unknown values, not converted: @ (the default value), Foo, Bar\n"),
        "{err}"
    );
    assert!(
        err.contains("OutboundJournal (line 7): unsupported value type hex(2) (REG_EXPAND_SZ)"),
        "{err}"
    );
    assert!(
        err.contains("InboundRecipJournalProp (line 11): unsupported value type hex(1) (REG_SZ)"),
        "{err}"
    );
    assert!(
        !err.contains("OutboundJournalNDR"),
        "a deletion is simply absent: {err}"
    );
    expect_accepted(&out, false);
}

#[test]
fn bad_legacy_properties_are_errors_naming_value_and_id() {
    let (journal, out, err) = convert_expecting("bad-dword.reg", 1);
    assert!(
        !journal.contains_key("inbound_recipient_attribute"),
        "{out}"
    );
    assert!(
        !journal.contains_key("outbound_recipient_attribute"),
        "{out}"
    );
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line for {needle}: {err}"))
            .to_string()
    };
    let low_word = line("InboundRecipJournalProp");
    assert!(low_word.starts_with("error:"), "{low_word}");
    assert!(
        low_word.contains("0x80360001") && low_word.contains("0x8036)"),
        "{low_word}"
    );
    assert!(low_word.contains("low word"), "{low_word}");
    let unknown = line("OutboundRecipJournalProp");
    assert!(unknown.starts_with("error:"), "{unknown}");
    assert!(
        unknown.contains("0x12340000") && unknown.contains("0x1234 "),
        "{unknown}"
    );
    // Left in the output as comments, so the administrator sees them there too.
    assert!(
        out.contains("# inbound_recipient_attribute = \"0x80360001\""),
        "{out}"
    );
}

#[test]
fn addresses_that_are_not_smtp_are_kept_with_a_warning() {
    let (journal, out, err) = convert("x500.reg");
    assert_eq!(
        value(&journal, "inbound"),
        Some("/o=Example/ou=Paris/cn=Recipients/cn=Journal")
    );
    assert_eq!(
        value(&journal, "inbound_ndr"),
        Some("EX:/o=Example/ou=Paris/cn=Recipients/cn=JournalNDR")
    );
    // Backslash and quotes survive regedit's escaping and TOML's.
    assert_eq!(
        value(&journal, "outbound"),
        Some(r#"EXAMPLE\journal "archive""#)
    );
    assert_eq!(
        value(&journal, "outbound_ndr"),
        Some("journal-ndr@example.com")
    );
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("mailjournal needs an SMTP address or ldap:///DN"))
        .collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(warnings[0].contains("X.500"), "{err}");
    assert!(warnings[1].contains("EX:"), "{err}");
    assert!(
        out.contains(r#"outbound = "EXAMPLE\\journal \"archive\"""#),
        "{out}"
    );
}

#[test]
fn a_file_without_the_extension_key_exits_2_saying_so() {
    let output = import(&fixture("no-extension-key.reg"));
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(r"MSExchangeIMC\Parameters\Extension key"),
        "{err}"
    );
}

#[test]
fn unreadable_or_invalid_files_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cases: [(&str, &[u8], &str); 3] = [
        ("text.reg", b"hello, world\n", "not a registry export"),
        ("odd.reg", b"\xFF\xFEW\x00i", "odd number of bytes"),
        ("empty.reg", b"", "empty"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write file");
        let output = import(&path);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
    }

    let output = import(&dir.path().join("missing.reg"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn current_control_set_wins_over_the_other_control_sets() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let other = EXTENSION.replace("CurrentControlSet", "ControlSet001");
    let text = format!(
        "REGEDIT4\r\n\r\n[{other}]\r\n\"InboundJournal\"=\"old@example.com\"\r\n\r\n\
         [{EXTENSION}]\r\n\"InboundJournal\"=\"new@example.com\"\r\n\
         \"InboundJournalNDR\"=\"ndr@example.com\"\r\n"
    );
    let path = dir.path().join("hive.reg");
    std::fs::write(&path, text).expect("write file");
    let output = import(&path);
    let (out, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(out.contains("inbound = \"new@example.com\"\n"), "{out}");
    assert!(err.contains("2 Extension keys in the file"), "{err}");
    assert!(
        err.contains(&format!("other keys ignored: {other}")),
        "{err}"
    );
}

/// Like mail-parser's corpus: every fixture reads the same with LF and CRLF.
#[test]
fn every_fixture_reads_the_same_with_lf_and_crlf() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut ran = 0;
    for entry in std::fs::read_dir(fixture("")).expect("fixture folder") {
        let path = entry.expect("fixture entry").path();
        if path.extension().is_none_or(|e| e != "reg") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read fixture");
        let utf16 = bytes.starts_with(&[0xFF, 0xFE]);
        let (crlf, lf): (&[u8], &[u8]) = if utf16 {
            (b"\r\0\n\0", b"\n\0")
        } else {
            (b"\r\n", b"\n")
        };
        let swapped = if contains(&bytes, crlf) {
            replace(&bytes, crlf, lf, utf16)
        } else {
            replace(&bytes, lf, crlf, utf16)
        };
        let copy = dir.path().join(path.file_name().expect("file name"));
        std::fs::write(&copy, swapped).expect("write copy");

        let (a, b) = (import(&path), import(&copy));
        let name = path.display();
        assert_eq!(a.status.code(), b.status.code(), "{name}");
        assert_eq!(stdout(&a), stdout(&b), "{name}");
        let own_path = |o: &Output, p: &Path| stderr(o).replace(&p.display().to_string(), "FILE");
        assert_eq!(own_path(&a, &path), own_path(&b, &copy), "{name}");
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} fixtures found");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Replaces `from` by `to`, on code-unit boundaries for UTF-16.
fn replace(bytes: &[u8], from: &[u8], to: &[u8], utf16: bool) -> Vec<u8> {
    let step = if utf16 { 2 } else { 1 };
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].starts_with(from) {
            out.extend_from_slice(to);
            at += from.len();
        } else {
            out.extend_from_slice(&bytes[at..(at + step).min(bytes.len())]);
            at += step;
        }
    }
    out
}

#[test]
fn help_describes_the_command() {
    let output = Command::new(BIN)
        .args(["import-registry", "--help"])
        .output()
        .expect("run mailjournal");
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(
        text.contains("Parameters") && text.contains("[journal]"),
        "{text}"
    );
    assert!(text.contains("<FILE>"), "{text}");

    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run mailjournal");
    assert!(
        stdout(&output).contains("import-registry"),
        "{}",
        stdout(&output)
    );
}
