//! Journaling policy of mailjournal: pure decisions, no I/O.
//!
//! This crate answers the questions the relay asks about one message: which
//! direction it travels (by the client's network, never by the sender's
//! domain), whether an outside client may name a recipient, which next hop a
//! recipient goes to, which journal targets get a copy and from which NDR
//! address, and what the journal copy looks like on the wire (§5 of the
//! product contract). The relay moves the bytes; the directory crate supplies
//! per-recipient targets; nothing here touches a socket or a file, so every
//! rule is tested with plain values.

pub mod address;
pub mod headers;
pub mod journal;
pub mod report;
pub mod routing;

pub use address::{Address, AddressError, ReversePath};
pub use journal::{Direction, DirectionRules, JournalPlan, JournalRules, RecipientTargets};
pub use report::{JournalFormat, ReportInput};
pub use routing::{Refusal, Route, Routing};
