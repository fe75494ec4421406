//! The errors of the directory crate, and the one place where LDAP result
//! codes (RFC 4511 §4.1.9) and ldap3 failures become typed errors.
//!
//! The caller's question is always the same: retry later (`451 4.4.3`, the
//! message waits in the client's queue) or not. [`DirectoryError::is_temporary`]
//! answers it. Bad credentials are kept apart from an outage on purpose: an
//! operator must fix them, and no amount of retrying will.

use ldap3::LdapError;

/// LDAP result code: invalid credentials (RFC 4511 §4.1.9).
pub(crate) const RC_INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code: busy.
pub(crate) const RC_BUSY: u32 = 51;
/// LDAP result code: unavailable (also used by the Notice of Disconnection).
pub(crate) const RC_UNAVAILABLE: u32 = 52;
/// LDAP result code: no such object.
pub(crate) const RC_NO_SUCH_OBJECT: u32 = 32;
/// ldap3's own code for a search stream that ended without a result.
const RC_LDAP3_CANCELLED: u32 = 88;

/// What went wrong while talking to the directory or reading its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The server could not be reached, or the connection broke and a retry failed.
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    /// An operation did not complete within `directory.timeout`.
    #[error("directory operation timed out")]
    Timeout,
    /// The bind DN or password was refused (result code 49).
    #[error("directory refused the bind credentials")]
    BadCredentials,
    /// The server answered with a result code that is not success.
    #[error("directory error (result code {code}): {text}")]
    Protocol {
        /// The LDAP result code.
        code: u32,
        /// The server's diagnostic message, or a description of the failure.
        text: String,
    },
    /// A DN named as a journal target does not exist in the directory.
    #[error("no directory entry {0}")]
    NoSuchObject(String),
    /// A journal target entry has no mail address and is not a group.
    #[error("directory entry {0} has no mail address")]
    NoAddress(String),
    /// A journal attribute value is neither an address, a DN nor an `ldap:///` URL.
    #[error("attribute {attribute} holds {value:?}, which is no address, DN or ldap:/// URL")]
    InvalidValue {
        /// The attribute holding the value.
        attribute: String,
        /// The value as found in the directory.
        value: String,
    },
    /// The directory configuration or mapping cannot be used.
    #[error("directory configuration: {0}")]
    Config(String),
}

impl DirectoryError {
    /// True when the same lookup may succeed later without anyone acting:
    /// the server is down, slow, busy or unavailable. The relay answers
    /// `451 4.4.3` then (product contract §4).
    pub fn is_temporary(&self) -> bool {
        match self {
            DirectoryError::Unreachable(_) | DirectoryError::Timeout => true,
            DirectoryError::Protocol { code, .. } => *code == RC_BUSY || *code == RC_UNAVAILABLE,
            _ => false,
        }
    }

    /// True when the failure is not temporary.
    pub fn is_permanent(&self) -> bool {
        !self.is_temporary()
    }

    /// Builds a protocol error for a non-success result.
    pub(crate) fn from_result(code: u32, text: &str) -> DirectoryError {
        match code {
            RC_INVALID_CREDENTIALS => DirectoryError::BadCredentials,
            _ => DirectoryError::Protocol {
                code,
                text: if text.is_empty() {
                    "no diagnostic message".into()
                } else {
                    text.into()
                },
            },
        }
    }
}

/// How an ldap3 failure affects the shared connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection is gone; reconnecting may help.
    ConnectionLost,
    /// The connection is fine; the operation itself failed.
    Operation,
}

/// Turns an ldap3 error into a typed error and says whether the connection
/// that produced it is still usable.
pub(crate) fn classify(err: LdapError) -> (DirectoryError, Failure) {
    use Failure::{ConnectionLost, Operation};
    match err {
        LdapError::Timeout { .. } => (DirectoryError::Timeout, ConnectionLost),
        LdapError::LdapResult { result } => {
            // A Notice of Disconnection (RFC 4511 §4.4.1) or ldap3's synthetic
            // "cancelled" result both mean the connection ended under us.
            let lost = result.rc == RC_UNAVAILABLE || result.rc == RC_LDAP3_CANCELLED;
            let err = DirectoryError::from_result(result.rc, &result.text);
            (err, if lost { ConnectionLost } else { Operation })
        }
        LdapError::Io { source } => (
            DirectoryError::Unreachable(source.to_string()),
            ConnectionLost,
        ),
        LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::MiscSend { .. }
        | LdapError::EndOfStream => (
            DirectoryError::Unreachable("connection closed".into()),
            ConnectionLost,
        ),
        LdapError::Rustls { source } => (
            DirectoryError::Unreachable(format!("tls: {source}")),
            ConnectionLost,
        ),
        LdapError::UrlParsing { .. }
        | LdapError::UnknownScheme(_)
        | LdapError::DNSName { .. }
        | LdapError::EmptyUnixPath
        | LdapError::PortInUnixPath => (DirectoryError::Config(err.to_string()), Operation),
        other => (
            DirectoryError::Protocol {
                code: 0,
                text: other.to_string(),
            },
            Operation,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_permanent_kinds() {
        assert!(DirectoryError::Timeout.is_temporary());
        assert!(DirectoryError::Unreachable("refused".into()).is_temporary());
        assert!(DirectoryError::from_result(51, "busy").is_temporary());
        assert!(DirectoryError::from_result(52, "").is_temporary());
        assert!(DirectoryError::BadCredentials.is_permanent());
        assert_eq!(
            DirectoryError::from_result(49, "x"),
            DirectoryError::BadCredentials
        );
        assert!(DirectoryError::from_result(50, "insufficient access").is_permanent());
        assert!(DirectoryError::Config("x".into()).is_permanent());
    }
}
