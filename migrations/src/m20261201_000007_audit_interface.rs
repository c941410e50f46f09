//! `audit_logs.interface`: which agent-facing interface carried the call (`gateway` | `mcp`).
//! Rows written before this migration came through `/gateway`, the only interface then.

use sea_orm_migration::prelude::*;

use crate::columns::{add_text_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_text_column(manager, AuditLogs::Table, AuditLogs::Interface, "gateway").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, AuditLogs::Table, AuditLogs::Interface).await
    }
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Interface,
}
