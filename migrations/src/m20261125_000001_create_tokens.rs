//! `tokens` (agent tokens) and `admin_tokens`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .if_not_exists()
                    .col(pk_uuid(Tokens::Id))
                    .col(string(Tokens::Name))
                    .col(string_uniq(Tokens::TokenHash))
                    .col(json_binary(Tokens::AllowedIps))
                    .col(timestamp_with_time_zone(Tokens::CreatedAt))
                    .col(timestamp_with_time_zone(Tokens::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Tokens::RevokedAt))
                    .col(timestamp_with_time_zone_null(Tokens::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminTokens::Table)
                    .if_not_exists()
                    .col(pk_uuid(AdminTokens::Id))
                    .col(string(AdminTokens::Name))
                    .col(string_uniq(AdminTokens::TokenHash))
                    .col(timestamp_with_time_zone(AdminTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(AdminTokens::RevokedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AdminTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Tokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Tokens {
    Table,
    Id,
    Name,
    TokenHash,
    AllowedIps,
    CreatedAt,
    UpdatedAt,
    RevokedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum AdminTokens {
    Table,
    Id,
    Name,
    TokenHash,
    CreatedAt,
    RevokedAt,
}
