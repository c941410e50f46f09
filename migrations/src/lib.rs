//! Schema history of Gatehouse. One source for SQLite and PostgreSQL: every statement is built
//! with sea-query (or, for the partial index, written in SQL both dialects accept). Migrations
//! never import the application's entities, so old migrations keep compiling as entities change.

pub use sea_orm_migration::prelude::*;

mod columns;

mod m20261125_000001_create_tokens;
mod m20261125_000002_create_connected_accounts;
mod m20261125_000003_create_targets;
mod m20261125_000004_create_audit_logs;
mod m20261125_000005_create_oauth_states;
mod m20261125_000006_create_change_counter;
mod m20261201_000007_audit_interface;
mod m20261201_000008_oauth_state_origin;
mod m20261201_000009_stats_rollups;
mod m20261201_000010_token_rate_limit;
mod m20261201_000011_webhooks;
mod m20261201_000012_guard_rules;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_tokens::Migration),
            Box::new(m20261125_000002_create_connected_accounts::Migration),
            Box::new(m20261125_000003_create_targets::Migration),
            Box::new(m20261125_000004_create_audit_logs::Migration),
            Box::new(m20261125_000005_create_oauth_states::Migration),
            Box::new(m20261125_000006_create_change_counter::Migration),
            Box::new(m20261201_000007_audit_interface::Migration),
            Box::new(m20261201_000008_oauth_state_origin::Migration),
            Box::new(m20261201_000009_stats_rollups::Migration),
            Box::new(m20261201_000010_token_rate_limit::Migration),
            Box::new(m20261201_000011_webhooks::Migration),
            Box::new(m20261201_000012_guard_rules::Migration),
        ]
    }
}
