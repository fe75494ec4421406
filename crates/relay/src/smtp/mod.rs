//! The SMTP server side (RFC 5321), laid out by phase.

pub mod command;
pub mod data;
pub mod session;
