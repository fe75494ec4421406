//! The gateway itself: SMTP in, spool, delivery out, DSNs.
//!
//! `smtp` takes mail from clients and asks `policy` what each message owes;
//! `intake` writes the message and its deliveries to the `spool` before the
//! client hears 250; `queue` runs the deliveries through `deliver` until each
//! is paid, and has `dsn` write the reports for those that cannot be. The
//! `server` module ties them together for `mailjournal serve`; `control`
//! lets `mailjournal queue` inspect a running or stopped gateway.

pub mod admin;
pub mod config;
pub mod control;
pub mod deliver;
pub mod dsn;
pub mod intake;
pub mod metrics;
pub mod next_hop;
pub mod queue;
pub mod resolver;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod tls;

pub use config::{ConfigError, Settings};
