//! Talking to OAuth providers. Knows no HTTP server types.

pub mod providers;
