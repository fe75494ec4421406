//! Per-recipient journaling through a real directory, end to end
//! (PRODUCT.md §1, §2 `[directory]` and the mapping presets, §3 `check` and
//! `lookup`, §4 the `451 4.4.3` rule).
//!
//! Each test starts its own private slapd (the directory crate's test helper,
//! loaded with the LDIF fixtures of `tests/fixtures/ldap/`), two recording
//! sinks (one for relayed originals, one for journal copies) and the real
//! gateway, talks SMTP to it and asserts what reaches the sinks.

mod common;
#[path = "../crates/directory/tests/common/mod.rs"]
mod ldap;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ldap::{Fixture, Options, Slapd, SUFFIX, SVC_DN, SVC_PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_mailjournal");

/// Alice's journal target in both fixtures' AD directory (extensionAttribute10).
const ALICE_MANAGER: &str = "alice-manager@example.com";

/// How the gateway reads the directory and how long it trusts it.
struct DirectorySetup {
    /// Mapping preset name or mapping file path.
    mapping: String,
    cache_ttl: &'static str,
    stale_ttl: &'static str,
}

impl DirectorySetup {
    fn active_directory() -> DirectorySetup {
        DirectorySetup {
            mapping: "active-directory".into(),
            cache_ttl: "5m",
            stale_ttl: "1h",
        }
    }

    fn cache_ttl(mut self, ttl: &'static str) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The `[directory]` section for `slapd`, bound as the service account.
    fn section(&self, slapd: &Slapd) -> String {
        format!(
            "\n[directory]\nurl = {url:?}\nbind_dn = {SVC_DN:?}\nbind_password = {SVC_PASSWORD:?}\n\
             base_dn = {SUFFIX:?}\nmapping = {mapping:?}\ncache_ttl = {cache_ttl:?}\n\
             stale_ttl = {stale_ttl:?}\ntimeout = \"2s\"\n",
            url = slapd.url(),
            mapping = self.mapping,
            cache_ttl = self.cache_ttl,
            stale_ttl = self.stale_ttl,
        )
    }
}

/// The gateway's configuration template: `config` plus `journal_keys` in
/// its `[journal]` section plus the `[directory]` section.
fn gateway_toml(
    config: &GatewayConfig,
    journal_keys: &str,
    slapd: &Slapd,
    dir: &DirectorySetup,
) -> String {
    let mut config = config.clone();
    config.extra = dir.section(slapd);
    let toml = config.to_toml();
    assert!(toml.contains("\n[queue]\n"), "{toml}");
    toml.replacen("\n[queue]\n", &format!("{journal_keys}\n\n[queue]\n"), 1)
}

/// A slapd, a sink for originals, a sink for journal copies and a gateway.
/// The gateway is declared first so that it stops first.
struct Rig {
    gw: Gateway,
    mail: Sink,
    journal: Sink,
    slapd: Slapd,
}

impl Rig {
    fn start(fixture: Fixture, journal_keys: &str, dir: DirectorySetup) -> Rig {
        Self::start_with(Slapd::start(fixture), journal_keys, dir)
    }

    fn start_with(slapd: Slapd, journal_keys: &str, dir: DirectorySetup) -> Rig {
        let mail = Sink::start();
        let journal = Sink::start();
        let config = GatewayConfig::with_hops(mail.port(), mail.port(), journal.port());
        let gw = Gateway::start_toml(&gateway_toml(&config, journal_keys, &slapd, &dir));
        Rig {
            gw,
            mail,
            journal,
            slapd,
        }
    }

    /// Sends one message from outside (inbound) and asserts its acceptance.
    fn send_inbound(&self, rcpts: &[&str], marker: &str) {
        let to = rcpts.join(", ");
        let sent = message(
            "sender@example.org",
            &to,
            marker,
            &format!("{marker}@example.org"),
            marker,
        );
        let mut c = SmtpClient::connect(self.gw.smtp_addr());
        let reply = c.send_message("sender@example.org", rcpts, &sent);
        assert!(reply.starts_with("250"), "DATA for {rcpts:?}: {reply}");
        c.quit();
    }

    /// Sends one message from inside (outbound) and asserts its acceptance.
    fn send_outbound(&self, from: &str, rcpts: &[&str], marker: &str) {
        let to = rcpts.join(", ");
        let sent = message(from, &to, marker, &format!("{marker}@example.com"), marker);
        let mut c = SmtpClient::connect_inside(self.gw.smtp_addr());
        let reply = c.send_message(from, rcpts, &sent);
        assert!(
            reply.starts_with("250"),
            "DATA from {from} for {rcpts:?}: {reply}"
        );
        c.quit();
    }

    /// Waits for `journals` journal transactions and `originals` relayed
    /// originals, then until neither sink has seen anything new (transaction
    /// or RCPT) for `QUIET`, and asserts the counts are exact. Returns the
    /// journal transactions and the originals.
    fn settled(&self, journals: usize, originals: usize) -> (Vec<Transaction>, Vec<Transaction>) {
        self.journal.wait_for(|t| t.len() >= journals, DELIVERY);
        self.mail.wait_for(|t| t.len() >= originals, DELIVERY);
        let activity = || {
            (
                self.journal.transactions().len(),
                self.journal.rcpt_attempts().len(),
                self.mail.transactions().len(),
                self.mail.rcpt_attempts().len(),
            )
        };
        let deadline = Instant::now() + DELIVERY;
        let mut last = activity();
        let mut since = Instant::now();
        while since.elapsed() < QUIET && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let now = activity();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        let (j, m) = (self.journal.transactions(), self.mail.transactions());
        assert_eq!(
            j.len(),
            journals,
            "journal transactions\n{}",
            self.journal.dump()
        );
        assert_eq!(
            m.len(),
            originals,
            "relayed originals\n{}",
            self.mail.dump()
        );
        (j, m)
    }

    /// The journal transactions of the message whose subject is `marker`.
    fn journal_of(&self, marker: &str) -> Vec<Transaction> {
        self.journal
            .transactions()
            .into_iter()
            .filter(|t| t.contains(&format!("\r\nSubject: {marker}\r\n")))
            .collect()
    }
}

/// Lower-cased, sorted recipients, for comparing recipient sets.
fn rcpt_set(tx: &Transaction) -> Vec<String> {
    let mut r: Vec<String> = tx.rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    r
}

/// Asserts one journal transaction from the NDR address to exactly
/// `expected` (each once), carrying the original marked `marker`.
fn assert_journal_tx(tx: &Transaction, marker: &str, expected: &[&str], dump: &str) {
    assert_eq!(tx.mail_from, JOURNAL_NDR, "journal copy sender\n{dump}");
    let mut want: Vec<String> = expected.iter().map(|r| r.to_ascii_lowercase()).collect();
    want.sort();
    assert_eq!(rcpt_set(tx), want, "journal copy recipients\n{dump}");
    assert!(
        tx.contains(marker),
        "journal copy carries the original {marker}\n{dump}"
    );
}

/// The single journal transaction of the message `marker`, asserted to go to `expected`.
fn assert_one_journal(rig: &Rig, marker: &str, expected: &[&str]) {
    let txs = rig.journal_of(marker);
    let dump = rig.journal.dump();
    assert_eq!(txs.len(), 1, "journal transactions of {marker}\n{dump}");
    assert_journal_tx(&txs[0], marker, expected, &dump);
}

fn inbound_keys(attribute: &str) -> String {
    format!("inbound_recipient_attribute = {attribute:?}")
}

// ---------------------------------------------------------------------------
// 1. Inbound per-recipient journaling, active-directory preset
// ---------------------------------------------------------------------------

fn inbound_alice_is_journaled_to_her_manager(attribute: &str) {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys(attribute),
        DirectorySetup::active_directory(),
    );
    rig.send_inbound(&["alice@example.com"], "to-alice");
    let (_, originals) = rig.settled(1, 1);
    assert_one_journal(&rig, "to-alice", &[JOURNAL, ALICE_MANAGER]);
    assert_eq!(originals[0].rcpts, vec!["alice@example.com"]);
    assert_eq!(originals[0].mail_from, "sender@example.org");
}

#[test]
fn inbound_recipient_attribute_by_name() {
    inbound_alice_is_journaled_to_her_manager("extensionAttribute10");
}

#[test]
fn inbound_recipient_attribute_by_legacy_property_tag() {
    inbound_alice_is_journaled_to_her_manager("0x80360000");
}

#[test]
fn inbound_secondary_proxy_address_in_mixed_case_finds_the_user() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    rig.send_inbound(&["Alice.ARCHER@Example.COM"], "mixed-case");
    let (_, originals) = rig.settled(1, 1);
    assert_one_journal(&rig, "mixed-case", &[JOURNAL, ALICE_MANAGER]);
    assert_eq!(
        originals[0].rcpts,
        vec!["Alice.ARCHER@Example.COM"],
        "the recipient is relayed as written"
    );
}

#[test]
fn inbound_dn_ldap_url_and_group_values_expand() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    // carol: ldap:///cn=Compliance%20Journal,... -> compliance-journal@.
    rig.send_inbound(&["carol@example.com"], "to-carol");
    // dave: the group Legal Journal = erin + Legal Nested (frank, Legal
    // Journal again: a cycle, erin again): erin and frank, once each.
    rig.send_inbound(&["dave@example.com"], "to-dave");
    // bob: a DN of the hidden Journal Mailbox = journal@, the global target:
    // one copy.
    rig.send_inbound(&["bob@example.com"], "to-bob");
    rig.settled(3, 3);
    assert_one_journal(
        &rig,
        "to-carol",
        &[JOURNAL, "compliance-journal@example.com"],
    );
    assert_one_journal(
        &rig,
        "to-dave",
        &[JOURNAL, "erin@example.com", "frank@example.com"],
    );
    assert_one_journal(&rig, "to-bob", &[JOURNAL]);
}

#[test]
fn inbound_recipients_sharing_a_target_give_it_one_copy() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    // alice twice (primary and secondary address), bob (whose DN target is
    // the global target), carol and dave: every target once, in one
    // transaction since they share the NDR address.
    rig.send_inbound(
        &[
            "alice@example.com",
            "alice.archer@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "erin@example.com",
        ],
        "shared",
    );
    rig.settled(1, 1);
    assert_one_journal(
        &rig,
        "shared",
        &[
            JOURNAL,
            ALICE_MANAGER,
            "compliance-journal@example.com",
            "erin@example.com",
            "frank@example.com",
        ],
    );
}

// ---------------------------------------------------------------------------
// 2. Outbound per-sender journaling
// ---------------------------------------------------------------------------

#[test]
fn outbound_sender_attribute_names_the_senders_targets() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        "outbound_recipient_attribute = \"extensionAttribute10\"",
        DirectorySetup::active_directory(),
    );
    rig.send_outbound(
        "alice@example.com",
        &["someone@example.net", "other@example.org"],
        "from-alice",
    );
    rig.send_outbound("dave@example.com", &["someone@example.net"], "from-dave");
    // Outbound, the recipients' attributes do not count: only the sender's.
    rig.send_outbound("erin@example.com", &["alice@example.com"], "from-erin");
    rig.settled(3, 3);
    assert_one_journal(&rig, "from-alice", &[JOURNAL, ALICE_MANAGER]);
    assert_one_journal(
        &rig,
        "from-dave",
        &[JOURNAL, "erin@example.com", "frank@example.com"],
    );
    assert_one_journal(&rig, "from-erin", &[JOURNAL]);
}

// ---------------------------------------------------------------------------
// 3. and 9. (C14) The openldap preset with the inetOrgPerson fixture
// ---------------------------------------------------------------------------

/// The shipped openldap preset with `journal_value_prefix = "journal="`
/// switched on, as its comments tell a user to do, written into `dir`.
fn openldap_mapping(dir: &Path) -> PathBuf {
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mappings/openldap.toml");
    let text = std::fs::read_to_string(&preset).expect("deploy/mappings/openldap.toml");
    let commented = "# journal_value_prefix = \"journal=\"";
    assert!(
        text.contains(commented),
        "the preset documents journal_value_prefix"
    );
    let text = text.replacen(commented, "journal_value_prefix = \"journal=\"", 1);
    let path = dir.join("openldap-journal.toml");
    std::fs::write(&path, text).expect("write the mapping file");
    path
}

fn openldap_rig(mappings: &Path) -> Rig {
    let dir = DirectorySetup {
        mapping: openldap_mapping(mappings).display().to_string(),
        ..DirectorySetup::active_directory()
    };
    Rig::start(Fixture::OpenLdap, &inbound_keys("description"), dir)
}

#[test]
fn openldap_preset_reads_prefixed_description_values() {
    let mappings = tempfile::tempdir().expect("temporary directory");
    let rig = openldap_rig(mappings.path());
    // olivia: two journal= values next to an ordinary description; found by
    // her second mail value too.
    rig.send_inbound(&["olivia@example.com"], "to-olivia");
    rig.send_inbound(&["O.Owens@example.com"], "to-oowens");
    // oscar: journal=ldap:///cn=archivists -> the group's two members.
    rig.send_inbound(&["oscar@example.com"], "to-oscar");
    // archivist1: no journal value: global journaling only.
    rig.send_inbound(&["archivist1@example.com"], "to-archivist");
    rig.settled(4, 4);
    let olivia = [
        JOURNAL,
        "olivia-journal@archive.example.net",
        "sales-journal@archive.example.net",
    ];
    assert_one_journal(&rig, "to-olivia", &olivia);
    assert_one_journal(&rig, "to-oowens", &olivia);
    assert_one_journal(
        &rig,
        "to-oscar",
        &[JOURNAL, "archivist1@example.com", "archivist2@example.com"],
    );
    assert_one_journal(&rig, "to-archivist", &[JOURNAL]);
}

/// C14: `ou=partner` is a referral object inside the search scope, so every
/// subtree search from the suffix also returns a continuation reference.
#[test]
fn c14_continuation_reference_in_scope_does_not_hide_the_user() {
    let mappings = tempfile::tempdir().expect("temporary directory");
    let rig = openldap_rig(mappings.path());
    rig.send_inbound(&["alice@example.com"], "c14");
    rig.settled(1, 1);
    assert_one_journal(&rig, "c14", &[JOURNAL, "journal-a@archive.example.net"]);
}

// ---------------------------------------------------------------------------
// 4. Hostile recipient addresses
// ---------------------------------------------------------------------------

#[test]
fn hostile_recipients_neither_crash_nor_inject_into_the_filter() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    // Paths that are valid SMTP: accepted as unknown local users, global
    // journaling only. If `*` reached the filter unescaped, `alice*` or
    // `*` would match alice (or everyone) and bring in her manager.
    let valid = [
        "*@example.com",
        "alice*@example.com",
        "*lice@example.com",
        "\"*\"@example.com",
        "\"(\"@example.com",
        "\"a)\"@example.com",
        "\"a\\\\b\"@example.com",
        "\"*)(mail=*\"@example.com",
        "\"*)(|(mail=*)\"@example.com",
        "\"alice@example.com)(mail=*\"@example.com",
        "\"\\2a\"@example.com",
    ];
    // Paths that are not valid SMTP: a 5xx, nothing else.
    let invalid = [
        "(@example.com",
        "a)@example.com",
        "a\\b@example.com",
        "*)(mail=*@example.com",
        "alice@example.com)(mail=*",
    ];

    let mut c = SmtpClient::connect(rig.gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<sender@example.org>", "250");
    let mut accepted = Vec::new();
    for rcpt in valid {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(reply.code, 250, "RCPT TO:<{rcpt}>: {reply}");
        accepted.push(rcpt);
    }
    for rcpt in invalid {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(
            (500..560).contains(&reply.code),
            "RCPT TO:<{rcpt}> is not a valid path: expected a 5xx, got {reply}"
        );
        c.expect("NOOP", "250");
    }
    // A NUL byte inside the path.
    c.send_raw(b"RCPT TO:<a\0b@example.com>\r\n");
    let reply = c.read_reply();
    assert!(
        (500..560).contains(&reply.code),
        "RCPT with a NUL byte: expected a 5xx, got {reply}"
    );
    c.send_raw(b"RCPT TO:<\"a\0b\"@example.com>\r\n");
    let reply = c.read_reply();
    assert!(
        (500..560).contains(&reply.code),
        "RCPT with a NUL byte in quotes: expected a 5xx, got {reply}"
    );
    c.expect("NOOP", "250");

    c.expect("DATA", "354");
    let sent = message(
        "sender@example.org",
        "x@example.com",
        "hostile",
        "hostile@example.org",
        "x",
    );
    c.send_raw(&common::client::stuff(&sent));
    let reply = c.read_reply();
    assert!(reply.starts_with("250"), "final dot: {reply}");
    c.expect("NOOP", "250");
    c.quit();

    rig.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    let originals = rig.mail.wait_for(|t| !t.is_empty(), DELIVERY);
    assert_one_journal(&rig, "hostile", &[JOURNAL]);
    assert_eq!(
        originals[0].rcpts.len(),
        accepted.len(),
        "{}",
        rig.mail.dump()
    );

    // The gateway still works normally afterwards.
    rig.send_inbound(&["alice@example.com"], "after-hostile");
    rig.settled(2, 2);
    assert_one_journal(&rig, "hostile", &[JOURNAL]);
    assert_one_journal(&rig, "after-hostile", &[JOURNAL, ALICE_MANAGER]);
}

// ---------------------------------------------------------------------------
// 5. The cache
// ---------------------------------------------------------------------------

/// Sends `per_session` messages to `rcpt` over each of `sessions` parallel
/// sessions from outside.
fn send_parallel(gw: &Gateway, rcpt: &'static str, sessions: usize, per_session: usize) {
    let addr = gw.smtp_addr();
    let workers: Vec<_> = (0..sessions)
        .map(|s| {
            thread::spawn(move || {
                let mut c = SmtpClient::connect(addr);
                for m in 0..per_session {
                    let marker = format!("load-{s}-{m}");
                    let sent = message(
                        "sender@example.org",
                        rcpt,
                        &marker,
                        &format!("{marker}@x"),
                        "x",
                    );
                    let reply = c.send_message("sender@example.org", &[rcpt], &sent);
                    assert!(reply.starts_with("250"), "{marker}: {reply}");
                }
                c.quit();
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a sending session panicked");
    }
}

#[test]
fn cache_200_messages_cost_one_user_search() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    // The start-up hidden check of the global targets is over once the
    // gateway answers; let anything else settle before the baseline.
    thread::sleep(Duration::from_millis(300));
    let before = rig.slapd.completed_searches();

    let started = Instant::now();
    send_parallel(&rig.gw, "alice@example.com", 10, 20);
    let sending = started.elapsed();
    let txs = rig.journal.wait_for(|t| t.len() >= 200, DELIVERY);
    for tx in &txs {
        assert_eq!(
            rcpt_set(tx),
            vec![ALICE_MANAGER.to_string(), JOURNAL.to_string()]
        );
    }

    // One search for alice, and one more: the background hidden check of her
    // newly seen journal target alice-manager@ (looked up once per process).
    let searches = rig.slapd.searches_since(before);
    assert_eq!(
        searches,
        2,
        "200 messages to alice over 10 sessions (sent in {sending:?}): expected one user \
         search plus one hidden check of {ALICE_MANAGER}, slapd completed {searches}\n{}",
        rig.gw.log_tail(40)
    );
    rig.settled(200, 200);
}

#[test]
fn cache_entry_is_looked_up_again_after_cache_ttl() {
    let rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory().cache_ttl("1s"),
    );
    rig.send_inbound(&["alice@example.com"], "ttl-1");
    rig.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    // Past the TTL (and the background hidden check of her target done).
    thread::sleep(Duration::from_millis(1500));
    let before = rig.slapd.completed_searches();
    rig.send_inbound(&["alice@example.com"], "ttl-2");
    let searches = rig.slapd.searches_since(before);
    assert_eq!(
        searches,
        1,
        "alice looked up again after 1 s\n{}",
        rig.gw.log_tail(40)
    );
    rig.settled(2, 2);
    assert_one_journal(&rig, "ttl-2", &[JOURNAL, ALICE_MANAGER]);
}

// ---------------------------------------------------------------------------
// 6. slapd stops and comes back
// ---------------------------------------------------------------------------

#[test]
fn directory_outage_serves_stale_defers_cold_and_recovers() {
    let mut rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup {
            stale_ttl: "1h",
            ..DirectorySetup::active_directory().cache_ttl("1s")
        },
    );
    rig.send_inbound(&["alice@example.com"], "before-outage");
    rig.journal.wait_for(|t| !t.is_empty(), DELIVERY);

    rig.slapd.stop();
    thread::sleep(Duration::from_millis(1500));

    // Cached, expired, within stale_ttl: accepted and journaled as before.
    rig.send_inbound(&["alice@example.com"], "stale-serve");

    // Never looked up: 451 4.4.3 at RCPT, so the client retries.
    let mut c = SmtpClient::connect(rig.gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<sender@example.org>", "250");
    let started = Instant::now();
    c.expect("RCPT TO:<carol@example.com>", "451 4.4.3");
    let deferred_in = started.elapsed();
    assert!(
        deferred_in < Duration::from_secs(5),
        "451 took {deferred_in:?}"
    );
    // A transaction with only deferred recipients has nothing to send.
    c.expect("DATA", "5");
    c.quit();

    rig.slapd.restart();
    rig.send_inbound(&["carol@example.com"], "carol-after-restart");
    rig.send_inbound(&["alice@example.com"], "alice-after-restart");

    // Every accepted message reached both sinks, once.
    rig.settled(4, 4);
    assert_one_journal(&rig, "before-outage", &[JOURNAL, ALICE_MANAGER]);
    assert_one_journal(&rig, "stale-serve", &[JOURNAL, ALICE_MANAGER]);
    assert_one_journal(
        &rig,
        "carol-after-restart",
        &[JOURNAL, "compliance-journal@example.com"],
    );
    assert_one_journal(&rig, "alice-after-restart", &[JOURNAL, ALICE_MANAGER]);
}

/// Stale serving must cover what a cached user's journal targets need: a
/// DN, an `ldap:///` URL or a group (the journal target Exchange 5.5
/// recommends) are read from the directory when the targets are expanded,
/// so the expanded targets need a stale store of their own (this test found
/// that they had none).
#[test]
fn outage_stale_serve_covers_dn_ldap_url_and_group_targets() {
    let mut rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup {
            stale_ttl: "1h",
            ..DirectorySetup::active_directory().cache_ttl("1s")
        },
    );
    let users = [
        ("bob@example.com", vec![JOURNAL]),
        (
            "carol@example.com",
            vec![JOURNAL, "compliance-journal@example.com"],
        ),
        (
            "dave@example.com",
            vec![JOURNAL, "erin@example.com", "frank@example.com"],
        ),
    ];
    for (user, _) in &users {
        rig.send_inbound(&[user], &format!("warm-{user}"));
    }
    rig.journal.wait_for(|t| t.len() >= users.len(), DELIVERY);

    rig.slapd.stop();
    thread::sleep(Duration::from_millis(1500));
    for (user, _) in &users {
        let mut c = SmtpClient::connect(rig.gw.smtp_addr());
        c.ehlo();
        c.expect("MAIL FROM:<sender@example.org>", "250");
        let reply = c.cmd(&format!("RCPT TO:<{user}>"));
        assert_eq!(
            reply.code, 250,
            "{user} is cached and within stale_ttl, slapd is down: {reply}"
        );
        c.quit();
        rig.send_inbound(&[user], &format!("stale-{user}"));
    }
    rig.settled(2 * users.len(), 2 * users.len());
    for (user, targets) in &users {
        assert_one_journal(&rig, &format!("stale-{user}"), targets);
    }
}

/// C16: slapd closes the gateway's idle LDAP connection (olcIdleTimeout);
/// the next lookup reconnects instead of answering 451.
#[test]
fn c16_idle_connection_closed_by_slapd_is_replaced() {
    let slapd = Slapd::start_with(
        Fixture::ActiveDirectory,
        Options {
            idle_timeout: Some(2),
        },
    );
    let rig = Rig::start_with(
        slapd,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup::active_directory(),
    );
    rig.send_inbound(&["alice@example.com"], "before-idle");
    rig.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    // slapd checks idle connections every idle_timeout/2.
    thread::sleep(Duration::from_millis(3500));
    // Addresses not in the cache: they need the (closed) connection.
    rig.send_inbound(&["carol@example.com"], "after-idle-carol");
    rig.send_inbound(&["dave@example.com"], "after-idle-dave");
    rig.settled(3, 3);
    assert_one_journal(&rig, "before-idle", &[JOURNAL, ALICE_MANAGER]);
    assert_one_journal(
        &rig,
        "after-idle-carol",
        &[JOURNAL, "compliance-journal@example.com"],
    );
    assert_one_journal(
        &rig,
        "after-idle-dave",
        &[JOURNAL, "erin@example.com", "frank@example.com"],
    );
}

// ---------------------------------------------------------------------------
// 7. and 8. `check`, `serve` under strict, `lookup`
// ---------------------------------------------------------------------------

/// A configuration file in `dir` for the AD fixture of `slapd`.
fn write_cli_config(dir: &Path, slapd: &Slapd, inbound: &str, hidden_check: &str) -> PathBuf {
    let mut config = GatewayConfig::new(free_port());
    config.inbound = inbound.into();
    // The hidden check covers the NDR addresses too: use a hidden mailbox.
    config.inbound_ndr = "compliance-journal@example.com".into();
    config.outbound_ndr = "compliance-journal@example.com".into();
    let keys = format!(
        "inbound_recipient_attribute = \"extensionAttribute10\"\nhidden_check = {hidden_check:?}"
    );
    let toml = gateway_toml(&config, &keys, slapd, &DirectorySetup::active_directory())
        .replace("{listen}", &format!("127.0.0.1:{}", free_port()))
        .replace("{spool}", &dir.join("spool").display().to_string());
    let path = dir.join("mailjournal.toml");
    std::fs::write(&path, toml).expect("write the configuration");
    path
}

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"))
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_warns_about_a_visible_target_and_fails_under_strict() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let visible = "visible-journal@example.com";

    let warn = write_cli_config(dir.path(), &slapd, visible, "warn");
    let output = run(&["check"], &warn);
    let (stdout, stderr) = texts(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check under warn\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(visible) && l.contains("WARN")),
        "a WARN line for {visible}:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("compliance-journal@example.com") && l.contains("ok")),
        "the hidden NDR address passes:\n{stdout}"
    );

    let strict = write_cli_config(dir.path(), &slapd, visible, "strict");
    let output = run(&["check"], &strict);
    let (stdout, stderr) = texts(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "check under strict\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(visible),
        "the error names {visible}:\n{stderr}"
    );
}

#[test]
fn serve_refuses_to_start_under_strict_with_a_visible_target() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let visible = "visible-journal@example.com";
    let config = write_cli_config(dir.path(), &slapd, visible, "strict");

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailjournal serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for serve") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running under hidden_check = \"strict\" with {visible}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(visible) && last.contains("strict"),
        "the last line names the target and the rule:\n{stderr}"
    );
}

#[test]
fn check_passes_under_strict_with_the_hidden_journal_mailbox() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_cli_config(dir.path(), &slapd, JOURNAL, "strict");
    let output = run(&["check"], &config);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(JOURNAL) && l.contains("ok")),
        "{JOURNAL} passes:\n{stdout}"
    );
    assert!(!stdout.contains("WARN"), "{stdout}");
}

#[test]
fn lookup_shows_the_entry_and_its_targets() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_cli_config(dir.path(), &slapd, JOURNAL, "warn");

    let output = run(&["lookup", "alice.archer@EXAMPLE.com"], &config);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("cn=Alice Archer,ou=Users,dc=example,dc=com"),
        "alice's DN:\n{stdout}"
    );
    let inbound = stdout
        .split("inbound journal targets")
        .nth(1)
        .and_then(|rest| rest.split("outbound journal targets").next())
        .unwrap_or_else(|| panic!("an inbound targets section:\n{stdout}"));
    assert!(inbound.contains(ALICE_MANAGER), "{stdout}");

    let output = run(&["lookup", "dave@example.com"], &config);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for member in ["erin@example.com", "frank@example.com"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(member) && l.contains("legal-journal@example.com")),
            "{member} expanded from the group:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("erin@example.com").count(),
        1,
        "erin once despite the cycle:\n{stdout}"
    );
}

/// A stale answer serves only until `cache_ttl` + `stale_ttl` after the last
/// fresh one: serving it must not make it fresh again.
#[test]
fn stale_answers_stop_serving_after_stale_ttl() {
    let mut rig = Rig::start(
        Fixture::ActiveDirectory,
        &inbound_keys("extensionAttribute10"),
        DirectorySetup {
            stale_ttl: "2s",
            ..DirectorySetup::active_directory().cache_ttl("1s")
        },
    );
    let fresh = Instant::now();
    rig.send_inbound(&["alice@example.com"], "fresh");
    rig.journal.wait_for(|t| !t.is_empty(), DELIVERY);
    rig.slapd.stop();

    thread::sleep(Duration::from_millis(1500).saturating_sub(fresh.elapsed()));
    rig.send_inbound(&["alice@example.com"], "stale");

    thread::sleep(Duration::from_millis(4000).saturating_sub(fresh.elapsed()));
    let mut c = SmtpClient::connect(rig.gw.smtp_addr());
    c.ehlo();
    c.expect("MAIL FROM:<sender@example.org>", "250");
    c.expect("RCPT TO:<alice@example.com>", "451 4.4.3");
    c.quit();
}

#[test]
fn ldap_targets_are_checked_as_dns() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = "ldap:///cn=Journal Mailbox,ou=System Mailboxes,dc=example,dc=com";
    let config = write_cli_config(dir.path(), &slapd, target, "strict");
    let output = run(&["check"], &config);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(target) && l.contains("ok")),
        "{target} passes:\n{stdout}"
    );
}

#[test]
fn health_fails_when_base_dn_does_not_exist() {
    let slapd = Slapd::start(Fixture::ActiveDirectory);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_cli_config(dir.path(), &slapd, JOURNAL, "warn");
    let admin = free_port();
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(
            &format!("base_dn = {SUFFIX:?}"),
            "base_dn = \"dc=nonexist,dc=com\"",
        )
        .replacen(
            "max_connections",
            &format!("admin_listen = \"127.0.0.1:{admin}\"\nmax_connections"),
            1,
        );
    std::fs::write(&config, text).expect("write config");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    wait_until("the admin listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    let (status, body) = http_get(admin, "/healthz");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("directory: failed: base_dn"), "{body}");
}
