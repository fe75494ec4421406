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

use directory::DirectoryConfig;
use ipnet::IpNet;
use policy::{Address, JournalFormat, JournalRules};
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

mod rules;

use rules::{check_directory, check_journal, check_queue, check_routing, check_server, Problems};

#[cfg(test)]
mod tests;
