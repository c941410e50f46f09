//! `targets`, `target_auth_methods` and `token_permissions`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261125_000001_create_tokens::Tokens;
use crate::m20261125_000002_create_connected_accounts::ConnectedAccounts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Targets::Table)
                    .if_not_exists()
                    .col(pk_uuid(Targets::Id))
                    .col(string(Targets::Name))
                    .col(string_uniq(Targets::Slug))
                    .col(text(Targets::BaseUrl))
                    .col(boolean(Targets::Enabled).default(true))
                    .col(uuid_null(Targets::ConnectedAccountId))
                    .col(string_null(Targets::Capability))
                    .col(timestamp_with_time_zone(Targets::CreatedAt))
                    .col(timestamp_with_time_zone(Targets::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_targets_connected_account")
                            .from(Targets::Table, Targets::ConnectedAccountId)
                            .to(ConnectedAccounts::Table, ConnectedAccounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_targets_connected_account")
                    .table(Targets::Table)
                    .col(Targets::ConnectedAccountId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TargetAuthMethods::Table)
                    .if_not_exists()
                    .col(pk_uuid(TargetAuthMethods::Id))
                    .col(uuid(TargetAuthMethods::TargetId))
                    .col(string(TargetAuthMethods::Label))
                    .col(string(TargetAuthMethods::Type))
                    .col(blob(TargetAuthMethods::Credential))
                    .col(string(TargetAuthMethods::CredentialHint))
                    .col(boolean(TargetAuthMethods::IsDefault).default(false))
                    .col(timestamp_with_time_zone(TargetAuthMethods::CreatedAt))
                    .col(timestamp_with_time_zone(TargetAuthMethods::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_auth_methods_target")
                            .from(TargetAuthMethods::Table, TargetAuthMethods::TargetId)
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
                    .name("ix_auth_methods_target")
                    .table(TargetAuthMethods::Table)
                    .col(TargetAuthMethods::TargetId)
                    .to_owned(),
            )
            .await?;
        // At most one default per target: a partial unique index, in SQL that SQLite and
        // PostgreSQL both accept.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_auth_methods_one_default \
                 ON target_auth_methods (target_id) WHERE is_default",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TokenPermissions::Table)
                    .if_not_exists()
                    .col(pk_uuid(TokenPermissions::Id))
                    .col(uuid(TokenPermissions::TokenId))
                    .col(uuid(TokenPermissions::TargetId))
                    .col(boolean(TokenPermissions::ReadOnly).default(false))
                    .col(timestamp_with_time_zone(TokenPermissions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_permissions_token")
                            .from(TokenPermissions::Table, TokenPermissions::TokenId)
                            .to(Tokens::Table, Tokens::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_permissions_target")
                            .from(TokenPermissions::Table, TokenPermissions::TargetId)
                            .to(Targets::Table, Targets::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .index(
                        Index::create()
                            .name("ux_permissions_token_target")
                            .col(TokenPermissions::TokenId)
                            .col(TokenPermissions::TargetId)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_permissions_target")
                    .table(TokenPermissions::Table)
                    .col(TokenPermissions::TargetId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TokenPermissions::Table.into_iden(),
            TargetAuthMethods::Table.into_iden(),
            Targets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
pub enum Targets {
    Table,
    Id,
    Name,
    Slug,
    BaseUrl,
    Enabled,
    ConnectedAccountId,
    Capability,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TargetAuthMethods {
    Table,
    Id,
    TargetId,
    Label,
    Type,
    Credential,
    CredentialHint,
    IsDefault,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TokenPermissions {
    Table,
    Id,
    TokenId,
    TargetId,
    ReadOnly,
    CreatedAt,
}
