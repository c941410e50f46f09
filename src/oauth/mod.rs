//! Talking to OAuth providers. Knows no HTTP server types.

pub mod client;
pub mod providers;
