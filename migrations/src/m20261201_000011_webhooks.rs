//! Signed webhooks (SPEC §11): `webhook_endpoints` (URL, subscribed events, sealed signing
//! secret), `webhook_deliveries` (the outbox: one row per event and endpoint, claimed by a
//! lease like the refresh lease), `webhook_attempts` (one row per HTTP attempt), and on
//! `connected_accounts` the two columns that detect `account.refresh_failing` once across
//! replicas (since when transient failures last, and when that was announced).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261125_000002_create_connected_accounts::ConnectedAccounts;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .if_not_exists()
                    .col(pk_uuid(WebhookEndpoints::Id))
                    .col(text(WebhookEndpoints::Url))
                    .col(json_binary(WebhookEndpoints::Events))
                    .col(text_null(WebhookEndpoints::Description))
                    .col(blob(WebhookEndpoints::Secret))
                    .col(boolean(WebhookEndpoints::Enabled).default(true))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(pk_uuid(WebhookDeliveries::Id))
                    .col(uuid(WebhookDeliveries::EndpointId))
                    .col(uuid(WebhookDeliveries::EventId))
                    .col(string(WebhookDeliveries::EventType))
                    .col(text(WebhookDeliveries::Payload))
                    .col(string(WebhookDeliveries::Status))
                    .col(integer(WebhookDeliveries::Attempts).default(0))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    .col(string_null(WebhookDeliveries::LeaseOwner))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::LeaseUntil))
                    .col(integer_null(WebhookDeliveries::LastStatusCode))
                    .col(text_null(WebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::LastAttemptAt,
                    ))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_deliveries_endpoint")
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The dispatcher's scan: pending rows by due time.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        // The delivery log of one endpoint, newest first.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_webhook_deliveries_endpoint")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .if_not_exists()
                    .col(pk_uuid(WebhookAttempts::Id))
                    .col(uuid(WebhookAttempts::DeliveryId))
                    .col(integer(WebhookAttempts::Attempt))
                    .col(integer_null(WebhookAttempts::StatusCode))
                    .col(text_null(WebhookAttempts::Error))
                    .col(big_integer(WebhookAttempts::DurationMs))
                    .col(timestamp_with_time_zone(WebhookAttempts::AttemptedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_attempts_delivery")
                            .from(WebhookAttempts::Table, WebhookAttempts::DeliveryId)
                            .to(WebhookDeliveries::Table, WebhookDeliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_webhook_attempts_delivery")
                    .table(WebhookAttempts::Table)
                    .col(WebhookAttempts::DeliveryId)
                    .to_owned(),
            )
            .await?;
        for column in [
            AccountFailing::RefreshFailingSince,
            AccountFailing::RefreshFailingNotifiedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConnectedAccounts::Table)
                        .add_column(ColumnDef::new(column).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            AccountFailing::RefreshFailingSince,
            AccountFailing::RefreshFailingNotifiedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConnectedAccounts::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AccountFailing {
    RefreshFailingSince,
    RefreshFailingNotifiedAt,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Url,
    Events,
    Description,
    Secret,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventId,
    EventType,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    LastStatusCode,
    LastError,
    LastAttemptAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    Attempt,
    StatusCode,
    Error,
    DurationMs,
    AttemptedAt,
}
