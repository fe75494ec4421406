//! Next hops as written in `[routing]` (product contract §2).
//!
//! `smtp://host:port` uses STARTTLS when the server offers it,
//! `?tls=required` refuses to send without it, `smtps://` speaks TLS from the
//! first byte (RFC 8314), and `maildir:///path` delivers into Maildirs on
//! this machine, one per recipient under the path.

use std::fmt;
use std::path::PathBuf;

/// How TLS is used towards an SMTP next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// STARTTLS when offered, plain text otherwise.
    Opportunistic,
    /// STARTTLS or no delivery.
    Required,
    /// TLS from the first byte.
    Implicit,
}

/// Where a delivery goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// An SMTP server.
    Smtp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
        /// TLS policy.
        tls: TlsMode,
    },
    /// A folder of Maildirs, one per recipient.
    Maildir {
        /// The folder.
        path: PathBuf,
    },
}

impl NextHop {
    /// Parses a next hop URL, with an error that says what is wrong.
    pub fn parse(text: &str) -> Result<NextHop, String> {
        if let Some(path) = text.strip_prefix("maildir://") {
            // maildir:///abs/path, or maildir://./rel/path from the working
            // directory (for a sample configuration that runs anywhere).
            if !path.starts_with('/') && !path.starts_with("./") {
                return Err(format!(
                    "{text:?}: a maildir next hop is maildir:///absolute/path \
                     or maildir://./path/from/working/directory"
                ));
            }
            return Ok(NextHop::Maildir {
                path: PathBuf::from(path),
            });
        }

        let (scheme, rest, default_port) = if let Some(rest) = text.strip_prefix("smtp://") {
            ("smtp", rest, 25)
        } else if let Some(rest) = text.strip_prefix("smtps://") {
            ("smtps", rest, 465)
        } else {
            return Err(format!(
                "{text:?}: a next hop is smtp://host:port, smtps://host:port or maildir:///path"
            ));
        };

        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{text:?}: expected host:port after {scheme}://"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{text:?}: {p:?} is not a port"))?,
            None => default_port,
        };

        let tls = match (scheme, query) {
            ("smtps", None) => TlsMode::Implicit,
            ("smtp", None) => TlsMode::Opportunistic,
            ("smtp", Some("tls=required")) => TlsMode::Required,
            (_, Some(query)) => {
                return Err(format!(
                    "{text:?}: unknown option {query:?} (only smtp://host:port?tls=required)"
                ))
            }
            _ => TlsMode::Opportunistic,
        };

        Ok(NextHop::Smtp {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Smtp { host, port, tls } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match tls {
                    TlsMode::Opportunistic => write!(f, "smtp://{host}:{port}"),
                    TlsMode::Required => write!(f, "smtp://{host}:{port}?tls=required"),
                    TlsMode::Implicit => write!(f, "smtps://{host}:{port}"),
                }
            }
            NextHop::Maildir { path } => write!(f, "maildir://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_contract_parses_and_prints_back() {
        for text in [
            "smtp://mail.example.internal:25",
            "smtp://mail.example.internal:587?tls=required",
            "smtps://mail.example.internal:465",
            "smtp://[::1]:2525",
            "maildir:///var/mail",
            "maildir://./var/mail",
        ] {
            let hop = NextHop::parse(text).expect(text);
            assert_eq!(hop.to_string(), text);
        }
    }

    #[test]
    fn ports_default_by_scheme() {
        assert_eq!(
            NextHop::parse("smtps://relay").expect("smtps"),
            NextHop::Smtp {
                host: "relay".into(),
                port: 465,
                tls: TlsMode::Implicit
            }
        );
    }

    #[test]
    fn bad_next_hops_say_what_is_wrong() {
        assert!(NextHop::parse("ftp://x")
            .unwrap_err()
            .contains("a next hop is"));
        assert!(NextHop::parse("smtp://x:0")
            .unwrap_err()
            .contains("not a port"));
        assert!(NextHop::parse("smtp://x:99999")
            .unwrap_err()
            .contains("not a port"));
        assert!(NextHop::parse("smtp://x:25?tls=maybe")
            .unwrap_err()
            .contains("unknown option"));
        assert!(NextHop::parse("maildir://var")
            .unwrap_err()
            .contains("absolute/path"));
        assert!(NextHop::parse("smtp://")
            .unwrap_err()
            .contains("expected host:port"));
    }
}
