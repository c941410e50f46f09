//! Plain types and their parse rules. No I/O, no framework types: once a value of one of these
//! types exists it is valid, and callers never re-check it.

pub mod accounts;
pub mod audit;
pub mod credential;
pub mod guard;
pub mod ip_allowlist;
pub mod stats;
pub mod targets;
pub mod tokens;
pub mod upstream_path;
pub mod validation;
pub mod webhooks;

/// Timestamps are UTC everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
