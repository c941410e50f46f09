//! `oauth_states` (one pending authorization-code flow each) and `connect_links` (one-time links
//! that start a flow without an admin session).

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
                    .table(OauthStates::Table)
                    .if_not_exists()
                    .col(pk_uuid(OauthStates::Id))
                    .col(string_uniq(OauthStates::StateHash))
                    .col(string(OauthStates::ProviderType))
                    .col(blob(OauthStates::CodeVerifier))
                    .col(string(OauthStates::BrowserBinding))
                    .col(timestamp_with_time_zone(OauthStates::CreatedAt))
                    .col(timestamp_with_time_zone(OauthStates::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConnectLinks::Table)
                    .if_not_exists()
                    .col(pk_uuid(ConnectLinks::Id))
                    .col(string_uniq(ConnectLinks::TokenHash))
                    .col(string(ConnectLinks::ProviderType))
                    .col(timestamp_with_time_zone(ConnectLinks::CreatedAt))
                    .col(timestamp_with_time_zone(ConnectLinks::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ConnectLinks::UsedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConnectLinks::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OauthStates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    Id,
    StateHash,
    ProviderType,
    CodeVerifier,
    BrowserBinding,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ConnectLinks {
    Table,
    Id,
    TokenHash,
    ProviderType,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}
