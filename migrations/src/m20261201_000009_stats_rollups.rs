//! Per-minute rollups of the audit rows, which the dashboard and `GET /api/stats` read instead
//! of scanning `audit_logs` (1 000 000 rows took seconds on SQLite; a day of rollups is at most
//! 1 440 rows per target). The audit writer adds to them in the
//! transaction that inserts the rows. Also the counters that have no audit row (token
//! refreshes, audit events dropped) and the lease that lets one replica at a time prune.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Upper bounds (inclusive, milliseconds) of the latency histogram columns
/// `latency_le_{bound}`, then `latency_le_inf`. `domain::stats::LATENCY_BOUNDS_MS` must match;
/// a store test reads the columns back through it.
const LATENCY_BOUNDS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

fn latency_columns() -> Vec<String> {
    LATENCY_BOUNDS_MS
        .iter()
        .map(|bound| format!("latency_le_{bound}"))
        .chain(std::iter::once("latency_le_inf".to_owned()))
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut requests = Table::create();
        requests
            .table(AuditRollups::Table)
            .if_not_exists()
            // Minutes since the Unix epoch: integer bucketing, the same SQL on both backends.
            .col(big_integer(AuditRollups::Minute))
            .col(string(AuditRollups::TargetSlug));
        // Requests by status class, and how many of them came through MCP: columns, not key
        // parts, so a day is at most 1 440 rows per target.
        for column in [
            "requests_2xx",
            "requests_3xx",
            "requests_4xx",
            "requests_5xx",
            "requests_other",
            "requests_mcp",
            "duration_ms_sum",
            "upstream_ms_sum",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(latency_columns())
        {
            requests.col(big_integer(Alias::new(column)).default(0));
        }
        // The key leads with the minute: every stats query is a range over it.
        requests.primary_key(
            Index::create()
                .col(AuditRollups::Minute)
                .col(AuditRollups::TargetSlug),
        );
        manager.create_table(requests.to_owned()).await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditTokenRollups::Table)
                    .if_not_exists()
                    .col(big_integer(AuditTokenRollups::Minute))
                    // No foreign key: a deleted token's traffic still counted in its window.
                    .col(uuid(AuditTokenRollups::TokenId))
                    .col(string(AuditTokenRollups::TokenName))
                    .col(big_integer(AuditTokenRollups::Requests))
                    .primary_key(
                        Index::create()
                            .col(AuditTokenRollups::Minute)
                            .col(AuditTokenRollups::TokenId),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StatCounters::Table)
                    .if_not_exists()
                    .col(big_integer(StatCounters::Minute))
                    .col(string(StatCounters::Name))
                    .col(string(StatCounters::Label))
                    .col(big_integer(StatCounters::Value))
                    .primary_key(
                        Index::create()
                            .col(StatCounters::Minute)
                            .col(StatCounters::Name)
                            .col(StatCounters::Label),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MaintenanceLeases::Table)
                    .if_not_exists()
                    .col(string(MaintenanceLeases::Name).primary_key())
                    .col(string_null(MaintenanceLeases::Owner))
                    .col(timestamp_with_time_zone_null(MaintenanceLeases::Until))
                    .to_owned(),
            )
            .await?;
        let mut seed = Query::insert();
        seed.into_table(MaintenanceLeases::Table)
            .columns([MaintenanceLeases::Name])
            .values(["audit_retention".into()])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        manager.exec_stmt(seed).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditRollups::Table.into_iden(),
            AuditTokenRollups::Table.into_iden(),
            StatCounters::Table.into_iden(),
            MaintenanceLeases::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditRollups {
    Table,
    Minute,
    TargetSlug,
}

#[derive(DeriveIden)]
enum AuditTokenRollups {
    Table,
    Minute,
    TokenId,
    TokenName,
    Requests,
}

#[derive(DeriveIden)]
enum StatCounters {
    Table,
    Minute,
    Name,
    Label,
    Value,
}

#[derive(DeriveIden)]
enum MaintenanceLeases {
    Table,
    Name,
    Owner,
    Until,
}
