//! `connected_accounts`: OAuth grants, their encrypted tokens and the refresh lease (SPEC §7).

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
                    .table(ConnectedAccounts::Table)
                    .if_not_exists()
                    .col(pk_uuid(ConnectedAccounts::Id))
                    .col(string(ConnectedAccounts::ProviderType))
                    .col(string(ConnectedAccounts::Email))
                    .col(string_null(ConnectedAccounts::DisplayName))
                    .col(blob_null(ConnectedAccounts::AccessToken))
                    .col(blob_null(ConnectedAccounts::RefreshToken))
                    .col(timestamp_with_time_zone_null(
                        ConnectedAccounts::TokenExpiresAt,
                    ))
                    .col(big_integer(ConnectedAccounts::TokenVersion).default(0))
                    .col(string_null(ConnectedAccounts::RefreshLeaseOwner))
                    .col(timestamp_with_time_zone_null(
                        ConnectedAccounts::RefreshLeaseUntil,
                    ))
                    .col(text(ConnectedAccounts::Scopes))
                    .col(string(ConnectedAccounts::Status))
                    .col(text_null(ConnectedAccounts::StatusMessage))
                    .col(timestamp_with_time_zone_null(
                        ConnectedAccounts::LastRefreshedAt,
                    ))
                    .col(text_null(ConnectedAccounts::LastRefreshError))
                    .col(timestamp_with_time_zone(ConnectedAccounts::CreatedAt))
                    .col(timestamp_with_time_zone(ConnectedAccounts::UpdatedAt))
                    .index(
                        Index::create()
                            .name("ux_connected_accounts_provider_email")
                            .col(ConnectedAccounts::ProviderType)
                            .col(ConnectedAccounts::Email)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConnectedAccounts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum ConnectedAccounts {
    Table,
    Id,
    ProviderType,
    Email,
    DisplayName,
    AccessToken,
    RefreshToken,
    TokenExpiresAt,
    TokenVersion,
    RefreshLeaseOwner,
    RefreshLeaseUntil,
    Scopes,
    Status,
    StatusMessage,
    LastRefreshedAt,
    LastRefreshError,
    CreatedAt,
    UpdatedAt,
}
