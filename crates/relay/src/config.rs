//! The configuration file (product contract §2): reading, defaults, checks.
//!
//! One TOML file, read with the `config` crate, every key overridable by
//! `MAILJOURNAL__SECTION__KEY`. Reading happens in two steps: serde turns
//! the file into raw sections (refusing unknown keys), then [`Settings::check`]
//! applies the rules and collects every broken one, so an administrator sees
//! all problems in one run, each with its key and the file. Defaults live in
//! the `default_*` functions of this module and nowhere else.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use directory::{DirectoryConfig, Mapping};
use ipnet::IpNet;
use policy::{Address, DirectionRules, JournalFormat, JournalRules};
use serde::Deserialize;

use crate::next_hop::NextHop;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML of the right shape.
    #[error("{file}: {message}")]
    Unreadable {
        /// The configuration file.
        file: String,
        /// What the reader said.
        message: String,
    },
    /// One or more rules are broken; each problem names its key.
    #[error("{file}: {}", problems.join("; "))]
    Invalid {
        /// The configuration file.
        file: String,
        /// One sentence per broken rule, each starting with the key.
        problems: Vec<String>,
    },
}

/// The whole configuration, checked and typed.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file it was read from.
    pub file: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[routing]`.
    pub routing: Routing,
    /// `[journal]`.
    pub journal: Journal,
    /// `[directory]`, when present.
    pub directory: Option<DirectoryConfig>,
    /// `[queue]`.
    pub queue: Queue,
}

/// `[server]`: how the gateway listens and where it keeps its spool.
#[derive(Clone, Debug)]
pub struct Server {
    /// EHLO name, Received fields, DSNs, report Message-IDs.
    pub hostname: String,
    /// SMTP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Directory of the spool.
    pub spool_dir: PathBuf,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Largest number of SMTP sessions at once.
    pub max_connections: usize,
    /// Certificate chain and key (PEM) that enable STARTTLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where `/metrics` and `/healthz` listen.
    pub admin_listen: Option<SocketAddr>,
}

/// `[routing]`: directions and next hops.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Domains whose mail the gateway accepts from outside.
    pub local_domains: Vec<String>,
    /// Networks whose clients send outbound mail.
    pub internal_networks: Vec<IpNet>,
    /// Where inbound mail, and outbound mail to local domains, goes.
    pub inbound_next_hop: NextHop,
    /// Where outbound mail to other domains goes.
    pub outbound_next_hop: NextHop,
    /// Where journal copies and their DSNs go.
    pub journal_next_hop: NextHop,
}

/// `[journal]`: journal targets, NDR addresses and format.
#[derive(Clone, Debug)]
pub struct Journal {
    /// `envelope` or `copy`.
    pub format: JournalFormat,
    /// `From:` of envelope reports.
    pub report_sender: Option<Address>,
    /// Global targets and NDR addresses of both directions.
    pub rules: JournalRules,
    /// `ldap:///DN` targets of each direction, resolved through the directory.
    pub directory_targets: DirectoryTargets,
    /// Directory attribute holding per-recipient inbound targets.
    pub inbound_recipient_attribute: Option<String>,
    /// Directory attribute holding per-sender outbound targets.
    pub outbound_recipient_attribute: Option<String>,
    /// What a visible journal target does at start.
    pub hidden_check: HiddenCheck,
}

/// `ldap:///` targets named in `[journal]`.
#[derive(Clone, Debug, Default)]
pub struct DirectoryTargets {
    /// Inbound `ldap:///DN` targets.
    pub inbound: Vec<String>,
    /// Outbound `ldap:///DN` targets.
    pub outbound: Vec<String>,
}

/// `journal.hidden_check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenCheck {
    /// Log a visible target and go on.
    Warn,
    /// Refuse to start with a visible global target.
    Strict,
}

/// `[queue]`: retries and delivery time limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// First retry delay.
    #[serde(default = "default_retry_initial", with = "duration")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max", with = "duration")]
    pub retry_max: Duration,
    /// Age past which a delivery fails.
    #[serde(default = "default_max_age", with = "duration")]
    pub max_age: Duration,
    /// Bound on connecting to a next hop: TCP, greeting, EHLO, STARTTLS.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Bound on each later command and on the message transfer.
    #[serde(default = "default_command_timeout", with = "duration")]
    pub command_timeout: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_age: default_max_age(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:25".into()]
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/spool/mailjournal")
}
fn default_max_message_size() -> usize {
    36_700_160
}
fn default_max_connections() -> usize {
    1000
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_age() -> Duration {
    Duration::from_secs(5 * 86400)
}
/// RFC 5321 §4.5.3.2.1: five minutes for the greeting.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(300)
}
/// RFC 5321 §4.5.3.2.6: ten minutes for the reply to the final dot.
fn default_command_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_hidden_check() -> HiddenCheck {
    HiddenCheck::Warn
}

/// Durations written as `"30s"`, `"5m"`, `"2h"`, `"5d"`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration {text:?} ({e}); write it like \"30s\", \"5m\", \"2h\" or \"5d\""
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    routing: RawRouting,
    #[serde(default)]
    journal: RawJournal,
    directory: Option<DirectoryConfig>,
    #[serde(default)]
    queue: Queue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: String,
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default = "default_spool_dir")]
    spool_dir: PathBuf,
    #[serde(default = "default_max_message_size")]
    max_message_size: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    local_domains: Vec<String>,
    #[serde(default)]
    internal_networks: Vec<String>,
    inbound_next_hop: String,
    outbound_next_hop: String,
    journal_next_hop: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    #[serde(default)]
    format: JournalFormat,
    report_sender: Option<String>,
    inbound: Option<OneOrMany>,
    inbound_ndr: Option<String>,
    outbound: Option<OneOrMany>,
    outbound_ndr: Option<String>,
    inbound_recipient_attribute: Option<String>,
    outbound_recipient_attribute: Option<String>,
    #[serde(default = "default_hidden_check")]
    hidden_check: HiddenCheck,
}

impl Default for RawJournal {
    fn default() -> Self {
        RawJournal {
            format: JournalFormat::default(),
            report_sender: None,
            inbound: None,
            inbound_ndr: None,
            outbound: None,
            outbound_ndr: None,
            inbound_recipient_attribute: None,
            outbound_recipient_attribute: None,
            hidden_check: default_hidden_check(),
        }
    }
}

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "server.listen",
    "routing.local_domains",
    "routing.internal_networks",
];

impl Settings {
    /// Reads, overrides from the environment, and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let unreadable = |message: String| ConfigError::Unreadable {
            file: file.clone(),
            message,
        };
        if !path.is_file() {
            return Err(unreadable("no such file".into()));
        }

        let mut environment = config::Environment::with_prefix("MAILJOURNAL")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let raw: RawSettings = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| unreadable(with_overrides(e.to_string())))?;

        Settings::check(path, raw)
    }

    /// Applies every rule of §2 and collects the broken ones.
    fn check(path: &Path, raw: RawSettings) -> Result<Settings, ConfigError> {
        let mut problems = Problems::default();

        let server = check_server(raw.server, &mut problems);
        let routing = check_routing(raw.routing, &mut problems);
        if let Some(directory) = &raw.directory {
            check_directory(directory, &raw.journal, &mut problems);
        }
        let journal = check_journal(raw.journal, raw.directory.is_some(), &mut problems);
        check_queue(&raw.queue, &mut problems);

        match (server, routing, journal) {
            (Some(server), Some(routing), Some(journal)) if problems.0.is_empty() => Ok(Settings {
                file: path.to_path_buf(),
                server,
                routing,
                journal,
                directory: raw.directory,
                queue: raw.queue,
            }),
            _ => Err(ConfigError::Invalid {
                file: path.display().to_string(),
                problems: problems.0,
            }),
        }
    }

    /// The `[routing]` part as policy sees it, journal addresses protected.
    pub fn policy_routing(&self) -> policy::Routing {
        policy::Routing::new(
            self.routing.local_domains.clone(),
            self.routing.internal_networks.clone(),
            self.journal.rules.protected_addresses(),
        )
    }
}

/// Adds the names of the environment overrides in force to a reader error,
/// since a key that came from the environment is not in the file.
fn with_overrides(message: String) -> String {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| key.starts_with("MAILJOURNAL__"))
        .collect();
    if names.is_empty() {
        return message;
    }
    names.sort();
    format!(
        "{message} (environment overrides in force: {})",
        names.join(", ")
    )
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, message: impl fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }
}

fn check_server(raw: RawServer, problems: &mut Problems) -> Option<Server> {
    let mut ok = true;
    if raw.hostname.trim().is_empty() || raw.hostname.contains(char::is_whitespace) {
        problems.add(
            "server.hostname",
            "must be a host name such as \"gw.example.com\"",
        );
        ok = false;
    }

    let mut listen = Vec::new();
    for text in &raw.listen {
        match text.parse::<SocketAddr>() {
            Ok(address) => listen.push(address),
            Err(_) => {
                problems.add(
                    "server.listen",
                    format!("{text:?} is not an IP:port address"),
                );
                ok = false;
            }
        }
    }
    if raw.listen.is_empty() {
        problems.add("server.listen", "needs at least one address");
        ok = false;
    }

    if raw.max_message_size < 1024 {
        problems.add("server.max_message_size", "must be at least 1024 bytes");
        ok = false;
    }
    if raw.max_connections == 0 {
        problems.add("server.max_connections", "must be at least 1");
        ok = false;
    }

    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            problems.add("server.tls_key", "required when server.tls_cert is set");
            ok = false;
            None
        }
        (None, Some(_)) => {
            problems.add("server.tls_cert", "required when server.tls_key is set");
            ok = false;
            None
        }
    };

    let admin_listen = match raw.admin_listen.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(address)) => Some(address),
        Some(Err(_)) => {
            problems.add("server.admin_listen", "is not an IP:port address");
            ok = false;
            None
        }
    };

    ok.then_some(Server {
        hostname: raw.hostname,
        listen,
        spool_dir: raw.spool_dir,
        max_message_size: raw.max_message_size,
        max_connections: raw.max_connections,
        tls,
        admin_listen,
    })
}

fn check_routing(raw: RawRouting, problems: &mut Problems) -> Option<Routing> {
    let mut ok = true;
    if raw.local_domains.is_empty() {
        problems.add("routing.local_domains", "needs at least one domain");
        ok = false;
    }
    for domain in &raw.local_domains {
        let probe = format!("postmaster@{domain}");
        if Address::parse(&probe, false).is_err() {
            problems.add(
                "routing.local_domains",
                format!("{domain:?} is not a domain"),
            );
            ok = false;
        }
    }

    let mut internal_networks = Vec::new();
    for text in &raw.internal_networks {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => internal_networks.push(net),
            Err(_) => {
                problems.add(
                    "routing.internal_networks",
                    format!("{text:?} is not a network such as \"10.0.0.0/8\""),
                );
                ok = false;
            }
        }
    }

    let mut hop = |key: &str, text: &str| match NextHop::parse(text) {
        Ok(hop) => Some(hop),
        Err(e) => {
            problems.add(key, e);
            None
        }
    };
    let inbound = hop("routing.inbound_next_hop", &raw.inbound_next_hop);
    let outbound = hop("routing.outbound_next_hop", &raw.outbound_next_hop);
    let journal = match &raw.journal_next_hop {
        Some(text) => hop("routing.journal_next_hop", text),
        None => inbound.clone(),
    };

    match (inbound, outbound, journal) {
        (Some(inbound), Some(outbound), Some(journal)) if ok => Some(Routing {
            local_domains: raw
                .local_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            internal_networks,
            inbound_next_hop: inbound,
            outbound_next_hop: outbound,
            journal_next_hop: journal,
        }),
        _ => None,
    }
}

fn check_journal(raw: RawJournal, has_directory: bool, problems: &mut Problems) -> Option<Journal> {
    let mut ok = true;
    let mut directory_targets = DirectoryTargets::default();

    let address = |key: &str, text: &str, problems: &mut Problems| match Address::from_config(text)
    {
        Ok(address) => Some(address),
        Err(e) => {
            problems.add(key, format!("{text:?} is not an address ({e})"));
            None
        }
    };

    // Targets of one direction: addresses, or ldap:/// DNs for the directory.
    let targets = |key: &str, list: Option<OneOrMany>, dns: &mut Vec<String>, p: &mut Problems| {
        let mut found = Vec::new();
        let mut good = true;
        for text in list.map(OneOrMany::into_vec).unwrap_or_default() {
            if let Some(dn) = text.strip_prefix("ldap:///") {
                if dn.trim().is_empty() {
                    p.add(key, "an ldap:/// target needs a DN after the slashes");
                    good = false;
                } else {
                    dns.push(dn.to_owned());
                }
            } else {
                match address(key, &text, p) {
                    Some(a) => found.push(a),
                    None => good = false,
                }
            }
        }
        (found, good)
    };
    let (inbound_targets, good_in) = targets(
        "journal.inbound",
        raw.inbound,
        &mut directory_targets.inbound,
        problems,
    );
    let (outbound_targets, good_out) = targets(
        "journal.outbound",
        raw.outbound,
        &mut directory_targets.outbound,
        problems,
    );
    ok &= good_in && good_out;

    let address = |key: &str, text: &Option<String>, problems: &mut Problems| {
        text.as_deref().map(|t| match Address::from_config(t) {
            Ok(address) => Some(address),
            Err(e) => {
                problems.add(key, format!("{t:?} is not an address ({e})"));
                None
            }
        })
    };
    let inbound_ndr = address("journal.inbound_ndr", &raw.inbound_ndr, problems);
    let outbound_ndr = address("journal.outbound_ndr", &raw.outbound_ndr, problems);
    let report_sender = address("journal.report_sender", &raw.report_sender, problems);
    ok &= !matches!(inbound_ndr, Some(None))
        && !matches!(outbound_ndr, Some(None))
        && !matches!(report_sender, Some(None));

    // The original product required the NDR value whenever a direction was
    // journaled, globally or per recipient; so do we.
    let direction = |name: &str,
                     targets: Vec<Address>,
                     dns: &[String],
                     attribute: &Option<String>,
                     ndr: Option<Option<Address>>,
                     problems: &mut Problems| {
        let journaled = !targets.is_empty() || !dns.is_empty() || attribute.is_some();
        match (journaled, ndr) {
            (false, _) => None,
            (true, Some(Some(ndr))) => Some(DirectionRules { targets, ndr }),
            (true, Some(None)) => None,
            (true, None) => {
                problems.add(
                    &format!("journal.{name}_ndr"),
                    format!(
                        "required when journal.{name} or journal.{name}_recipient_attribute is set"
                    ),
                );
                None
            }
        }
    };
    let inbound = direction(
        "inbound",
        inbound_targets,
        &directory_targets.inbound,
        &raw.inbound_recipient_attribute,
        inbound_ndr,
        problems,
    );
    let outbound = direction(
        "outbound",
        outbound_targets,
        &directory_targets.outbound,
        &raw.outbound_recipient_attribute,
        outbound_ndr,
        problems,
    );

    for (key, attribute) in [
        (
            "journal.inbound_recipient_attribute",
            &raw.inbound_recipient_attribute,
        ),
        (
            "journal.outbound_recipient_attribute",
            &raw.outbound_recipient_attribute,
        ),
    ] {
        if attribute.is_some() && !has_directory {
            problems.add(key, "needs a [directory] section to look the attribute up");
            ok = false;
        }
        if attribute.as_deref().is_some_and(|a| a.trim().is_empty()) {
            problems.add(key, "must name an attribute");
            ok = false;
        }
    }
    let has_ldap_targets =
        !directory_targets.inbound.is_empty() || !directory_targets.outbound.is_empty();
    if has_ldap_targets && !has_directory {
        problems.add(
            "journal.inbound/outbound",
            "ldap:/// targets need a [directory] section",
        );
        ok = false;
    }

    let journaled = inbound.is_some() || outbound.is_some();
    let report_sender = report_sender.flatten();
    if journaled && raw.format == JournalFormat::Envelope && report_sender.is_none() {
        problems.add(
            "journal.report_sender",
            "required when journal.format is \"envelope\" (the From: of journal reports)",
        );
        ok = false;
    }

    ok.then_some(Journal {
        format: raw.format,
        report_sender,
        rules: JournalRules { inbound, outbound },
        directory_targets,
        inbound_recipient_attribute: raw.inbound_recipient_attribute,
        outbound_recipient_attribute: raw.outbound_recipient_attribute,
        hidden_check: raw.hidden_check,
    })
}

fn check_queue(queue: &Queue, problems: &mut Problems) {
    if queue.retry_initial.is_zero() {
        problems.add("queue.retry_initial", "must be longer than zero");
    }
    if queue.retry_max < queue.retry_initial {
        problems.add(
            "queue.retry_max",
            "must not be shorter than queue.retry_initial",
        );
    }
    if queue.max_age < queue.retry_initial {
        problems.add(
            "queue.max_age",
            "must not be shorter than queue.retry_initial",
        );
    }
    if queue.connect_timeout.is_zero() {
        problems.add("queue.connect_timeout", "must be longer than zero");
    }
    if queue.command_timeout.is_zero() {
        problems.add("queue.command_timeout", "must be longer than zero");
    }
}

fn check_directory(directory: &DirectoryConfig, journal: &RawJournal, problems: &mut Problems) {
    for (key, problem) in directory.check() {
        problems.add(&format!("directory.{key}"), problem);
    }

    // A legacy property value must translate through the mapping.
    let Ok(mapping) = Mapping::load(&directory.mapping) else {
        return;
    };
    for (key, attribute) in [
        (
            "journal.inbound_recipient_attribute",
            &journal.inbound_recipient_attribute,
        ),
        (
            "journal.outbound_recipient_attribute",
            &journal.outbound_recipient_attribute,
        ),
    ] {
        if let Some(attribute) = attribute {
            if let Err(e) = mapping.attribute_for(attribute) {
                problems.add(key, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
