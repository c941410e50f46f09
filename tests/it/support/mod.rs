//! Test harness: real databases, the real server in-process on loopback ephemeral ports.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod browser;
pub mod child;
pub mod db;
pub mod mcp;
pub mod node;
pub mod oidc;

pub use app::TestApp;
pub use db::TestDb;
pub mod agent;
pub mod tls_upstream;
pub mod upstream;
pub mod webhooks;
