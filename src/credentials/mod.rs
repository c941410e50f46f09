//! What to inject upstream for targets whose credential is an OAuth access token (SPEC §7):
//! managed targets of connected accounts.

pub mod access_tokens;

pub use access_tokens::{AccessTokens, AccountInfo, TokenError};
