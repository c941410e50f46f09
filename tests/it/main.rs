//! The one integration-test binary (one link step instead of one per file).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Helpers are shared by every test file; not each file uses each helper.
#[allow(dead_code)]
mod support;

mod accounts_connect;
mod accounts_google;
mod accounts_refresh;
mod accounts_replicas;
mod admin_audit;
mod admin_auth;
mod admin_auth_methods;
mod admin_stats;
mod admin_targets;
mod admin_tokens;
mod cli;
mod connected_accounts;
mod guard;
mod guard_bypass;
mod guard_retention;
mod listeners;
mod mcp;
mod mcp_guard;
mod mcp_logs;
mod migrations;
mod module_tree;
mod oidc_harness;
mod ops_artefacts;
mod proxy_access;
mod proxy_audit_metrics;
mod proxy_client_timeouts;
mod proxy_discovery;
mod proxy_forwarding;
mod proxy_logs;
mod proxy_paths;
mod proxy_tls;
mod rate_limits;
mod replica_propagation;
mod secrets_at_rest;
mod store;
mod ui_approvals;
mod ui_browser;
mod ui_overview;
mod webhooks;
