//! Tests of the configuration rules: each rule refused with its key.
use super::*;

const GOOD: &str = r#"
[server]
hostname = "gw.example.com"
listen = ["127.0.0.1:2525"]
spool_dir = "/tmp/spool"

[routing]
local_domains = ["example.com"]
internal_networks = ["10.0.0.0/8"]
inbound_next_hop = "smtp://mail.example.internal:25"
outbound_next_hop = "smtp://smarthost.example.internal:25"

[journal]
format = "envelope"
report_sender = "journal-reports@example.com"
inbound = "journal@example.com"
inbound_ndr = "journal-ndr@example.com"
outbound = "journal@example.com"
outbound_ndr = "journal-ndr@example.com"
"#;

fn load(text: &str) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "mailjournal-config-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("mailjournal.toml");
    std::fs::write(&path, text).expect("write config");
    let result = Settings::load(&path);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn problems(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("configuration was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_contract_example_loads_with_defaults() {
    let settings = load(GOOD).expect("valid configuration");
    assert_eq!(settings.server.max_message_size, 36_700_160);
    assert_eq!(settings.queue.retry_initial, Duration::from_secs(60));
    assert_eq!(settings.queue.max_age, Duration::from_secs(5 * 86400));
    assert_eq!(
        settings.routing.journal_next_hop,
        settings.routing.inbound_next_hop
    );
    let inbound = settings.journal.rules.inbound.expect("inbound rules");
    assert_eq!(inbound.ndr.as_str(), "journal-ndr@example.com");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let text = GOOD.replace("[queue]", "").replace(
        "spool_dir = \"/tmp/spool\"",
        "spool_dir = \"/tmp/spool\"\nspool = 1",
    );
    let message = problems(&text);
    assert!(message.contains("unknown field `spool`"), "{message}");
    assert!(message.contains("mailjournal.toml"), "{message}");
}

#[test]
fn a_journaled_direction_needs_its_ndr_address() {
    let text = GOOD.replace("inbound_ndr = \"journal-ndr@example.com\"\n", "");
    let message = problems(&text);
    assert!(
        message.contains("journal.inbound_ndr: required"),
        "{message}"
    );
}

#[test]
fn a_recipient_attribute_needs_the_directory_and_the_ndr_address() {
    let text = GOOD
        .replace("outbound = \"journal@example.com\"\n", "")
        .replace("outbound_ndr = \"journal-ndr@example.com\"\n", "")
        + "outbound_recipient_attribute = \"extensionAttribute10\"\n";
    let message = problems(&text);
    assert!(
        message.contains("journal.outbound_ndr: required"),
        "{message}"
    );
    assert!(
        message.contains("journal.outbound_recipient_attribute: needs a [directory]"),
        "{message}"
    );
}

#[test]
fn ldap_targets_need_the_directory() {
    let text = GOOD.replace(
        "inbound = \"journal@example.com\"",
        "inbound = \"ldap:///CN=Journal,DC=example,DC=com\"",
    );
    let message = problems(&text);
    assert!(
        message.contains("ldap:/// targets need a [directory]"),
        "{message}"
    );
}

#[test]
fn envelope_reports_need_a_report_sender() {
    let text = GOOD.replace("report_sender = \"journal-reports@example.com\"\n", "");
    let message = problems(&text);
    assert!(
        message.contains("journal.report_sender: required"),
        "{message}"
    );
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let text = GOOD
        .replace("\"127.0.0.1:2525\"", "\"nowhere\"")
        .replace("\"10.0.0.0/8\"", "\"10.0.0.0/99\"")
        .replace("smtp://smarthost.example.internal:25", "ftp://x")
        .replace(
            "journal@example.com\"\ninbound_ndr",
            "not an address\"\ninbound_ndr",
        );
    let message = problems(&text);
    for key in [
        "server.listen",
        "routing.internal_networks",
        "routing.outbound_next_hop",
        "journal.inbound",
    ] {
        assert!(
            message.contains(&format!("{key}:")),
            "{key} missing in {message}"
        );
    }
}

#[test]
fn durations_must_be_readable() {
    let text = format!("{GOOD}\n[queue]\nretry_initial = \"soon\"\n");
    let message = problems(&text);
    assert!(message.contains("bad duration \"soon\""), "{message}");
    let text = format!("{GOOD}\n[queue]\nretry_initial = \"2h\"\nretry_max = \"1h\"\n");
    let message = problems(&text);
    assert!(
        message.contains("queue.retry_max: must not be shorter"),
        "{message}"
    );
}

#[test]
fn inbound_and_outbound_may_share_target_and_ndr() {
    let settings = load(GOOD).expect("valid configuration");
    assert_eq!(settings.journal.rules.protected_addresses().len(), 2);
}

#[test]
fn tls_needs_both_files() {
    let text = GOOD.replace(
        "spool_dir = \"/tmp/spool\"",
        "spool_dir = \"/tmp/spool\"\ntls_cert = \"/x.pem\"",
    );
    let message = problems(&text);
    assert!(message.contains("server.tls_key: required"), "{message}");
}

#[test]
fn legacy_property_values_must_translate_through_the_mapping() {
    let directory =
        "\n[directory]\nurl = \"ldap://127.0.0.1:389\"\nbase_dn = \"dc=example,dc=com\"\n";
    let good = GOOD.replace(
        "outbound_ndr = \"journal-ndr@example.com\"\n",
        "outbound_ndr = \"journal-ndr@example.com\"\n\
         inbound_recipient_attribute = \"0x80360000\"\n",
    ) + directory;
    let settings = load(&good).expect("0x80360000 is custom attribute 10");
    assert_eq!(
        settings.journal.inbound_recipient_attribute.as_deref(),
        Some("0x80360000")
    );

    for (value, id) in [("0x80360001", "0x8036"), ("0x12340000", "0x1234")] {
        let text = good.replace("0x80360000", value);
        let message = problems(&text);
        assert!(
            message.contains("journal.inbound_recipient_attribute")
                && message.contains(value)
                && message.to_lowercase().contains(&id.to_lowercase()),
            "{value}: {message}"
        );
    }
}
