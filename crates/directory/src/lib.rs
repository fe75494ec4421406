//! Directory lookups of mailjournal: who is this address, and where do its
//! journal copies go.
//!
//! The relay asks this crate three questions: the directory entry of an
//! address ([`Directory::lookup`]), the journal targets named by an entry's
//! journal attribute or by an `ldap:///DN` ([`Directory::targets`],
//! [`Directory::resolve_dn`]), and whether a journal target is hidden and
//! unreachable from outside ([`Directory::hidden_status`]). It owns the
//! `[directory]` configuration section and the mapping files (product
//! contract §2); it does not decide what to do with the answers — the policy
//! crate and the relay do.
//!
//! Modules follow the path of a lookup: `config` and `mapping` describe the
//! directory, `filter` escapes addresses into search filters (RFC 4515),
//! `connection` keeps one LDAP connection (RFC 4511, RFC 4513 binds and
//! StartTLS) alive across server idle timeouts and restarts, `lookup` and
//! `cache` find and remember entries, `entry` turns search results into typed
//! entries, `targets` expands DNs and groups, `hidden` checks targets.
//! Every answer is typed: found, not found, or an error that says whether it
//! is temporary ([`DirectoryError::is_temporary`]).

mod cache;
mod config;
mod connection;
mod entry;
mod error;
mod filter;
mod hidden;
mod lookup;
mod mapping;
mod targets;

// Lets the unit tests share the integration tests' slapd helper, which
// names this crate `directory`.
#[cfg(test)]
extern crate self as directory;

pub use cache::DirectoryStats;
pub use config::{DirectoryConfig, Secret};
pub use connection::LATENCY_METRIC;
pub use entry::Entry;
pub use error::DirectoryError;
pub use filter::{escape_filter_value, user_filter};
pub use hidden::HiddenStatus;
pub use lookup::{Directory, Lookup};
pub use mapping::{Mapping, MappingError, ADDRESS_PLACEHOLDER};
pub use targets::{
    classify_value, next_range_request, parse_range, AttributeRange, Target, TargetValue,
    MAX_GROUP_DEPTH,
};
