//! The `[directory]` section of the configuration (product contract §2).
//!
//! The relay's configuration loader embeds [`DirectoryConfig`] as its
//! `[directory]` table, so the keys, their defaults and their rules live here,
//! in one place. [`DirectoryConfig::check`] reports every broken rule at once,
//! each with its key, so the loader can print them all with the file name.
//! Nothing here opens a connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::mapping::Mapping;

/// A secret string (the bind password) whose `Debug` and `Display` never
/// show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Defaults of the optional keys, in one place.
mod defaults {
    use std::time::Duration;

    pub fn mapping() -> String {
        "active-directory".into()
    }
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn negative_cache_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn stale_ttl() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub fn cache_capacity() -> u64 {
        100_000
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
}

/// The `[directory]` section: where the directory is, how to bind, how to
/// read it and how long to trust its answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (RFC 4513 §3).
    #[serde(default)]
    pub starttls: bool,
    /// DN for a simple bind; anonymous when absent.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding the bind password (trailing newline ignored).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// The bind password itself, best given by the environment.
    #[serde(default)]
    pub bind_password: Option<Secret>,
    /// Base of every subtree search.
    pub base_dn: String,
    /// Mapping preset name (`active-directory`, `openldap`) or a mapping file path.
    #[serde(default = "defaults::mapping")]
    pub mapping: String,
    /// How long a found entry is trusted.
    #[serde(default = "defaults::cache_ttl", deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// How long "not found" is trusted.
    #[serde(
        default = "defaults::negative_cache_ttl",
        deserialize_with = "duration"
    )]
    pub negative_cache_ttl: Duration,
    /// How long past its TTL an entry may still serve while the directory is down.
    #[serde(default = "defaults::stale_ttl", deserialize_with = "duration")]
    pub stale_ttl: Duration,
    /// Most addresses held in the cache.
    #[serde(default = "defaults::cache_capacity")]
    pub cache_capacity: u64,
    /// Bound on connecting, binding and every single operation.
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// Reads a duration written as `"30s"`, `"5m"`, `"2h"`, `"5d"`.
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(text.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

impl DirectoryConfig {
    /// A configuration with the given URL and base DN and every other key at
    /// its default.
    pub fn new(url: impl Into<String>, base_dn: impl Into<String>) -> DirectoryConfig {
        DirectoryConfig {
            url: url.into(),
            starttls: false,
            bind_dn: None,
            bind_password_file: None,
            bind_password: None,
            base_dn: base_dn.into(),
            mapping: defaults::mapping(),
            cache_ttl: defaults::cache_ttl(),
            negative_cache_ttl: defaults::negative_cache_ttl(),
            stale_ttl: defaults::stale_ttl(),
            cache_capacity: defaults::cache_capacity(),
            timeout: defaults::timeout(),
        }
    }

    /// Checks the rules of the section; returns every problem found as
    /// `(key, problem)`, empty when the section is usable. Reads the mapping
    /// and the password file, opens no connection.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut report = |key: &str, problem: String| problems.push((key.to_string(), problem));

        match url_scheme(&self.url) {
            Err(problem) => report("url", problem),
            Ok(Scheme::Ldaps) if self.starttls => report(
                "starttls",
                "starttls = true needs an ldap:// url; ldaps:// is TLS from the first byte".into(),
            ),
            Ok(_) => {}
        }
        if self.bind_password.is_some() && self.bind_password_file.is_some() {
            report(
                "bind_password",
                "set either bind_password or bind_password_file, not both".into(),
            );
        }
        let has_password = self.bind_password.is_some() || self.bind_password_file.is_some();
        match &self.bind_dn {
            Some(dn) if dn.trim().is_empty() => report("bind_dn", "must not be empty".into()),
            Some(_) if !has_password => report(
                "bind_dn",
                "needs bind_password or bind_password_file (an empty password is an \
                 unauthenticated bind, RFC 4513 §5.1.2)"
                    .into(),
            ),
            None if has_password => {
                report("bind_dn", "a bind password is set but no bind_dn".into())
            }
            _ => {}
        }
        if let Some(path) = &self.bind_password_file {
            if let Err(problem) = read_password_file(path) {
                report("bind_password_file", problem);
            }
        }
        if self.base_dn.trim().is_empty() {
            report("base_dn", "must not be empty".into());
        }
        if self.timeout.is_zero() {
            report("timeout", "must be greater than zero".into());
        }
        if let Err(e) = Mapping::load(&self.mapping) {
            report("mapping", e.to_string());
        }
        problems
    }

    /// The bind password from `bind_password` or `bind_password_file`.
    pub(crate) fn password(&self) -> Result<Option<Secret>, String> {
        match (&self.bind_password, &self.bind_password_file) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => read_password_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// The two URL schemes the directory speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Ldap,
    Ldaps,
}

/// Checks the shape of `url` (RFC 4516 without DN or query) and returns its scheme.
pub(crate) fn url_scheme(url: &str) -> Result<Scheme, String> {
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("ldaps://") {
        (Scheme::Ldaps, rest)
    } else if let Some(rest) = lower.strip_prefix("ldap://") {
        (Scheme::Ldap, rest)
    } else {
        return Err(format!("{url:?} must start with ldap:// or ldaps://"));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} names no host"));
    }
    if host.contains('/') || host.contains('?') {
        return Err(format!(
            "{url:?} must name only host and port; set base_dn apart"
        ));
    }
    Ok(scheme)
}

/// Reads a password file; one trailing line ending is not part of the password.
fn read_password_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DirectoryConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_and_durations() {
        let c = parse("url = \"ldap://dc1:389\"\nbase_dn = \"dc=x\"\ncache_ttl = \"2h\"\n")
            .expect("minimal section parses");
        assert_eq!(c.cache_ttl, Duration::from_secs(7200));
        assert_eq!(c.negative_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.stale_ttl, Duration::from_secs(3600));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.cache_capacity, 100_000);
        assert_eq!(c.mapping, "active-directory");
        assert!(!c.starttls);
        assert!(c.check().is_empty(), "{:?}", c.check());
        let c = parse("url = \"ldap://x\"\nbase_dn = \"dc=x\"\nstale_ttl = \"5d\"\n")
            .expect("days parse");
        assert_eq!(c.stale_ttl, Duration::from_secs(5 * 86400));
    }

    #[test]
    fn unknown_key_and_bad_duration_are_refused() {
        let err = parse("url = \"ldap://x\"\nbase_dn = \"dc=x\"\nbind_pw = \"a\"\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("bind_pw"), "{err}");
        let err = parse("url = \"ldap://x\"\nbase_dn = \"dc=x\"\ntimeout = \"soon\"\n")
            .expect_err("bad duration");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn password_is_redacted() {
        let c = parse(
            "url = \"ldap://x\"\nbase_dn = \"dc=x\"\n\
             bind_dn = \"cn=a\"\nbind_password = \"hunter2\"\n",
        )
        .expect("parses");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(
            c.bind_password.as_ref().map(|s| s.to_string()).as_deref(),
            Some("<redacted>")
        );
    }

    #[test]
    fn rules_name_their_keys() {
        let mut c = DirectoryConfig::new("ldaps://dc1:636", "");
        c.starttls = true;
        c.bind_dn = Some("cn=svc".into());
        c.bind_password = Some(Secret::new("x"));
        c.bind_password_file = Some("/nonexistent/password".into());
        c.timeout = Duration::ZERO;
        c.mapping = "/nonexistent/mapping.toml".into();
        let keys: Vec<String> = c.check().into_iter().map(|(k, _)| k).collect();
        for key in [
            "starttls",
            "bind_password",
            "bind_password_file",
            "base_dn",
            "timeout",
            "mapping",
        ] {
            assert!(
                keys.contains(&key.to_string()),
                "{key} missing from {keys:?}"
            );
        }
        let c = DirectoryConfig::new("http://dc1", "dc=x");
        assert_eq!(c.check()[0].0, "url");
        let mut c = DirectoryConfig::new("ldap://dc1", "dc=x");
        c.bind_dn = Some("cn=svc".into());
        assert_eq!(c.check()[0].0, "bind_dn");
    }

    #[test]
    fn password_file_loses_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let mut c = DirectoryConfig::new("ldap://x", "dc=x");
        c.bind_dn = Some("cn=svc".into());
        c.bind_password_file = Some(path);
        let pw = c.password().expect("readable").expect("present");
        assert_eq!(pw.expose(), "s3cret");
    }
}
