//! Guard rules and approvals (SPEC §12): `guard_rules` (per target, ordered, first match wins),
//! `targets.guard_defaults` (the built-in rules on or off), `approvals` (a person's decision
//! bound to one exact request, used once), and on `audit_logs` what the guard did and who
//! approved.

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
            .alter_table(
                Table::alter()
                    .table(Targets::Table)
                    .add_column(boolean(TargetsGuard::GuardDefaults).default(true))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GuardRules::Table)
                    .if_not_exists()
                    .col(pk_uuid(GuardRules::Id))
                    .col(uuid(GuardRules::TargetId))
                    .col(integer(GuardRules::Position))
                    // NULL: any method.
                    .col(string_null(GuardRules::Method))
                    .col(string(GuardRules::PathMatch))
                    .col(text(GuardRules::Path))
                    .col(string(GuardRules::Action))
                    .col(text(GuardRules::Reason))
                    .col(timestamp_with_time_zone(GuardRules::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_guard_rules_target")
                            .from(GuardRules::Table, GuardRules::TargetId)
                            .to(Targets::Table, Targets::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_guard_rules_target_position")
                    .table(GuardRules::Table)
                    .col(GuardRules::TargetId)
                    .col(GuardRules::Position)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Approvals::Table)
                    .if_not_exists()
                    .col(pk_uuid(Approvals::Id))
                    .col(uuid(Approvals::TokenId))
                    .col(uuid(Approvals::TargetId))
                    .col(string(Approvals::Method))
                    .col(text(Approvals::Path))
                    .col(text_null(Approvals::Query))
                    .col(string(Approvals::BodySha256))
                    .col(big_integer(Approvals::BodySize))
                    // What the person sees of the body: cut, secrets of the target masked.
                    .col(text_null(Approvals::BodyPreview))
                    .col(text(Approvals::Reason))
                    .col(string(Approvals::Status))
                    // An elicitation was sent for it: only then may an MCP client's answer decide.
                    .col(boolean(Approvals::Elicited).default(false))
                    .col(string_null(Approvals::DecidedBy))
                    .col(timestamp_with_time_zone_null(Approvals::DecidedAt))
                    .col(timestamp_with_time_zone(Approvals::ExpiresAt))
                    .col(timestamp_with_time_zone(Approvals::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_approvals_token")
                            .from(Approvals::Table, Approvals::TokenId)
                            .to(Tokens::Table, Tokens::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_approvals_target")
                            .from(Approvals::Table, Approvals::TargetId)
                            .to(Targets::Table, Targets::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The Approvals page and the expiry sweep: by status, newest first / by expiry.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_approvals_status_created")
                    .table(Approvals::Table)
                    .col(Approvals::Status)
                    .col(Approvals::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_approvals_expires")
                    .table(Approvals::Table)
                    .col(Approvals::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        // One column per ALTER, for SQLite.
        for column in [AuditGuard::GuardAction, AuditGuard::ApprovedBy] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditGuard::Table)
                        .add_column(string_null(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AuditGuard::ApprovedBy, AuditGuard::GuardAction] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditGuard::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Approvals::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(GuardRules::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Targets::Table)
                    .drop_column(TargetsGuard::GuardDefaults)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum TargetsGuard {
    GuardDefaults,
}

#[derive(DeriveIden)]
enum GuardRules {
    Table,
    Id,
    TargetId,
    Position,
    Method,
    PathMatch,
    Path,
    Action,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Approvals {
    Table,
    Id,
    TokenId,
    TargetId,
    Method,
    Path,
    Query,
    BodySha256,
    BodySize,
    BodyPreview,
    Reason,
    Status,
    Elicited,
    DecidedBy,
    DecidedAt,
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditGuard {
    #[sea_orm(iden = "audit_logs")]
    Table,
    GuardAction,
    ApprovedBy,
}
