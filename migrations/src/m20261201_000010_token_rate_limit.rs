//! Per-token rate limits (SPEC §3 `tokens.rate_limit`, §11): the limit itself, and
//! `token_rate_windows`, the shared counter per token and minute that replicas lease budget
//! from. No foreign key to `tokens`: rows live for two minutes and are pruned, and a claim
//! racing a token's deletion must not fail on a constraint.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(integer_null(Tokens::RateLimit))
                    .to_owned(),
            )
            .await?;
        // When `token.rate_limited` was last announced (at most once per token per hour, across
        // replicas: claimed by a conditional UPDATE). One column per ALTER, for SQLite.
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(timestamp_with_time_zone_null(Tokens::RateLimitedNotifiedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TokenRateWindows::Table)
                    .if_not_exists()
                    .col(uuid(TokenRateWindows::TokenId))
                    .col(big_integer(TokenRateWindows::WindowMinute))
                    .col(big_integer(TokenRateWindows::Used))
                    .primary_key(
                        Index::create()
                            .col(TokenRateWindows::TokenId)
                            .col(TokenRateWindows::WindowMinute),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TokenRateWindows::Table).to_owned())
            .await?;
        for column in [Tokens::RateLimitedNotifiedAt, Tokens::RateLimit] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    RateLimit,
    RateLimitedNotifiedAt,
}

#[derive(DeriveIden)]
enum TokenRateWindows {
    Table,
    TokenId,
    WindowMinute,
    Used,
}
