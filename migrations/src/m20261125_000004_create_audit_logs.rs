//! `audit_logs`: one row per proxied request that reached the target check.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261125_000001_create_tokens::Tokens;
use crate::m20261125_000003_create_targets::Targets;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLogs::Table)
                    .if_not_exists()
                    .col(pk_uuid(AuditLogs::Id))
                    .col(uuid_null(AuditLogs::TokenId))
                    .col(string(AuditLogs::TokenName))
                    .col(uuid_null(AuditLogs::TargetId))
                    .col(string(AuditLogs::TargetSlug))
                    .col(string(AuditLogs::Method))
                    .col(text(AuditLogs::Path))
                    .col(integer(AuditLogs::StatusCode))
                    .col(string(AuditLogs::ClientIp))
                    .col(big_integer(AuditLogs::DurationMs))
                    .col(big_integer_null(AuditLogs::UpstreamMs))
                    .col(string_null(AuditLogs::Error))
                    .col(timestamp_with_time_zone(AuditLogs::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_token")
                            .from(AuditLogs::Table, AuditLogs::TokenId)
                            .to(Tokens::Table, Tokens::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_target")
                            .from(AuditLogs::Table, AuditLogs::TargetId)
                            .to(Targets::Table, Targets::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // Newest-first pages walk (created_at, id) backwards from a cursor.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_audit_logs_created")
                    .table(AuditLogs::Table)
                    .col(AuditLogs::CreatedAt)
                    .col(AuditLogs::Id)
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("ix_audit_logs_token", AuditLogs::TokenId),
            ("ix_audit_logs_target", AuditLogs::TargetId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(AuditLogs::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLogs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Id,
    TokenId,
    TokenName,
    TargetId,
    TargetSlug,
    Method,
    Path,
    StatusCode,
    ClientIp,
    DurationMs,
    UpstreamMs,
    Error,
    CreatedAt,
}
