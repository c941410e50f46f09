//! sea-orm entities, one file per table of SPEC §3. Private to `store`.

pub mod admin_tokens;
pub mod approvals;
pub mod audit_logs;
pub mod connect_links;
pub mod connected_accounts;
pub mod guard_rules;
pub mod oauth_states;
pub mod target_auth_methods;
pub mod targets;
pub mod token_permissions;
pub mod token_rate_windows;
pub mod tokens;
pub mod webhook_attempts;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
