//! The dashboard's data: per-minute rollups of the audit rows (added in the audit writer's
//! transaction), counters without an audit row, the sums of one window, audit retention in
//! bounded deletes, and the lease that lets one replica at a time do the pruning.
//!
//! Tables from migration `m20261201_000009_stats_rollups`; queries are built with sea-query
//! for the store's backend (no entities: nothing here is read back as a row model).

use sea_orm::sea_query::{
    Alias, Expr, ExprTrait as _, Func, OnConflict, Order, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, QueryResult, Value};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::domain::Timestamp;
use crate::domain::stats::{
    BatchRollup, Counter, LATENCY_BOUNDS_MS, LATENCY_BUCKETS, RollupCounts, StatusCounts,
    TOP_TOKENS, TokenUsage, WindowRange, WindowSums, epoch_minute,
};

const ROLLUPS: &str = "audit_rollups";
const TOKEN_ROLLUPS: &str = "audit_token_rollups";
const COUNTERS: &str = "stat_counters";
const LEASES: &str = "maintenance_leases";

/// Rows per rollup upsert statement: far below either backend's parameter limit.
const ROLLUP_ROWS_PER_STATEMENT: usize = 32;

fn iden(name: &str) -> Alias {
    Alias::new(name)
}

/// `latency_le_1` … `latency_le_60000`, `latency_le_inf`.
fn latency_columns() -> impl Iterator<Item = String> {
    LATENCY_BOUNDS_MS
        .iter()
        .map(|bound| format!("latency_le_{bound}"))
        .chain(std::iter::once("latency_le_inf".to_owned()))
}

/// `table.column + excluded.column`: an upsert that adds.
fn add_excluded(table: &str, column: &str) -> Expr {
    Expr::col((iden(table), iden(column))).add(Expr::col((iden("excluded"), iden(column))))
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `CAST(SUM(column) AS BIGINT)`: PostgreSQL sums BIGINT to NUMERIC otherwise.
fn sum(column: &str) -> Expr {
    Expr::col(iden(column)).sum().cast_as(iden("BIGINT"))
}

fn get_u64(row: &QueryResult, column: &str) -> Result<u64, StoreError> {
    let value: Option<i64> = row.try_get("", column)?;
    Ok(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// The summed columns of `audit_rollups`, in the order `counts_values` gives them.
fn summed_columns() -> impl Iterator<Item = String> {
    [
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
}

fn counts_values(counts: &RollupCounts) -> impl Iterator<Item = u64> + '_ {
    let s = &counts.status;
    [
        s.success,
        s.redirect,
        s.client_error,
        s.server_error,
        s.other,
        counts.mcp,
        counts.duration_ms_sum,
        counts.upstream_ms_sum,
    ]
    .into_iter()
    .chain(counts.latency.iter().copied())
}

fn counts_from(row: &QueryResult) -> Result<RollupCounts, StoreError> {
    let mut values = Vec::with_capacity(8 + LATENCY_BUCKETS);
    for column in summed_columns() {
        values.push(get_u64(row, &column)?);
    }
    let mut latency = [0; LATENCY_BUCKETS];
    latency.copy_from_slice(&values[8..]);
    Ok(RollupCounts {
        status: StatusCounts {
            success: values[0],
            redirect: values[1],
            client_error: values[2],
            server_error: values[3],
            other: values[4],
        },
        mcp: values[5],
        duration_ms_sum: values[6],
        upstream_ms_sum: values[7],
        latency,
    })
}

/// Add a batch's rollup in `txn` (the transaction that inserts the batch's rows).
pub(super) async fn add_rollup<C: ConnectionTrait>(
    txn: &C,
    rollup: &BatchRollup,
) -> Result<(), StoreError> {
    let requests: Vec<_> = rollup.requests.iter().collect();
    for chunk in requests.chunks(ROLLUP_ROWS_PER_STATEMENT) {
        let columns = ["minute".to_owned(), "target_slug".to_owned()]
            .into_iter()
            .chain(summed_columns());
        let mut insert = Query::insert();
        insert
            .into_table(iden(ROLLUPS))
            .columns(columns.map(|c| iden(&c)));
        for (key, counts) in chunk {
            let values: Vec<Expr> = [key.minute.into(), key.target_slug.as_str().into()]
                .into_iter()
                .chain(counts_values(counts).map(|n| as_i64(n).into()))
                .collect();
            insert
                .values(values)
                .map_err(|e| StoreError::Unavailable(format!("rollup insert: {e}")))?;
        }
        insert.on_conflict(
            OnConflict::columns(["minute", "target_slug"].map(iden))
                .values(
                    summed_columns().map(|column| (iden(&column), add_excluded(ROLLUPS, &column))),
                )
                .to_owned(),
        );
        txn.execute(&insert).await?;
    }

    let tokens: Vec<_> = rollup.tokens.iter().collect();
    for chunk in tokens.chunks(ROLLUP_ROWS_PER_STATEMENT) {
        let mut insert = Query::insert();
        insert
            .into_table(iden(TOKEN_ROLLUPS))
            .columns(["minute", "token_id", "token_name", "requests"].map(iden));
        for ((minute, token_id), (name, requests)) in chunk {
            insert
                .values([
                    (*minute).into(),
                    (*token_id).into(),
                    name.as_str().into(),
                    as_i64(*requests).into(),
                ])
                .map_err(|e| StoreError::Unavailable(format!("rollup insert: {e}")))?;
        }
        insert.on_conflict(
            OnConflict::columns(["minute", "token_id"].map(iden))
                .values([
                    (
                        iden("token_name"),
                        Expr::col((iden("excluded"), iden("token_name"))),
                    ),
                    (iden("requests"), add_excluded(TOKEN_ROLLUPS, "requests")),
                ])
                .to_owned(),
        );
        txn.execute(&insert).await?;
    }
    Ok(())
}

/// Add `value` to a counter's minute.
pub(super) async fn add_counter<C: ConnectionTrait>(
    conn: &C,
    counter: Counter,
    label: &str,
    at: Timestamp,
    value: u64,
) -> Result<(), StoreError> {
    let mut insert = Query::insert();
    insert
        .into_table(iden(COUNTERS))
        .columns(["minute", "name", "label", "value"].map(iden))
        .values([
            epoch_minute(at).into(),
            counter.as_str().into(),
            label.into(),
            as_i64(value).into(),
        ])
        .map_err(|e| StoreError::Unavailable(format!("counter insert: {e}")))?
        .on_conflict(
            OnConflict::columns(["minute", "name", "label"].map(iden))
                .value(iden("value"), add_excluded(COUNTERS, "value"))
                .to_owned(),
        );
    conn.execute(&insert).await?;
    Ok(())
}

fn in_range(select: &mut SelectStatement, range: &WindowRange) {
    select
        .and_where(Expr::col(iden("minute")).gte(range.start_minute))
        .and_where(Expr::col(iden("minute")).lt(range.end_minute));
}

impl Store {
    /// Count one occurrence of `counter` now (token refreshes; not on the request path).
    pub async fn count(&self, counter: Counter, label: &str, value: u64) -> Result<(), StoreError> {
        add_counter(self.conn(), counter, label, chrono::Utc::now(), value).await
    }

    /// The sums behind one window of the dashboard: four range reads over the rollups' keys.
    pub async fn window_sums(&self, range: &WindowRange) -> Result<WindowSums, StoreError> {
        let conn = self.conn();

        let statuses = [
            "requests_2xx",
            "requests_3xx",
            "requests_4xx",
            "requests_5xx",
            "requests_other",
        ];
        let mut series = Query::select();
        series.expr_as(
            Expr::col(iden("minute"))
                .sub(range.start_minute)
                .div(range.step_minutes),
            iden("bucket"),
        );
        for column in statuses {
            series.expr_as(sum(column), iden(column));
        }
        series
            .from(iden(ROLLUPS))
            .add_group_by([Expr::col(iden("bucket"))]);
        in_range(&mut series, range);
        let series = conn
            .query_all(&series)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64>("", "bucket")?,
                    StatusCounts {
                        success: get_u64(row, statuses[0])?,
                        redirect: get_u64(row, statuses[1])?,
                        client_error: get_u64(row, statuses[2])?,
                        server_error: get_u64(row, statuses[3])?,
                        other: get_u64(row, statuses[4])?,
                    },
                ))
            })
            .collect::<Result<_, StoreError>>()?;

        let mut targets = Query::select();
        targets.column(iden("target_slug"));
        for column in summed_columns() {
            targets.expr_as(sum(&column), iden(&column));
        }
        targets
            .from(iden(ROLLUPS))
            .group_by_col(iden("target_slug"));
        in_range(&mut targets, range);
        let targets = conn
            .query_all(&targets)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<String>("", "target_slug")?, counts_from(row)?)))
            .collect::<Result<_, StoreError>>()?;

        let mut tokens = Query::select();
        tokens
            .column(iden("token_id"))
            .expr_as(Func::max(Expr::col(iden("token_name"))), iden("token_name"))
            .expr_as(sum("requests"), iden("requests"))
            .from(iden(TOKEN_ROLLUPS))
            .group_by_col(iden("token_id"))
            .order_by(iden("requests"), Order::Desc)
            .order_by(iden("token_id"), Order::Asc)
            .limit(TOP_TOKENS);
        in_range(&mut tokens, range);
        let top_tokens = conn
            .query_all(&tokens)
            .await?
            .iter()
            .map(|row| {
                Ok(TokenUsage {
                    token_id: row.try_get::<Uuid>("", "token_id")?,
                    name: row.try_get::<String>("", "token_name")?,
                    requests: get_u64(row, "requests")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;

        let mut counters = Query::select();
        counters
            .columns(["name", "label"].map(iden))
            .expr_as(sum("value"), iden("value"))
            .from(iden(COUNTERS))
            .add_group_by([Expr::col(iden("name")), Expr::col(iden("label"))]);
        in_range(&mut counters, range);
        let counters = conn
            .query_all(&counters)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("", "name")?,
                    row.try_get::<String>("", "label")?,
                    get_u64(row, "value")?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;

        Ok(WindowSums {
            series,
            targets,
            top_tokens,
            counters,
        })
    }

    /// Claim (or renew) the maintenance lease `name` until `until`: one conditional UPDATE,
    /// `true` when this owner holds it now. A replica that loses simply skips the work.
    pub async fn claim_maintenance_lease(
        &self,
        name: &str,
        owner: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
        let mut update = Query::update();
        update
            .table(iden(LEASES))
            .value(iden("owner"), owner)
            .value(iden("until"), Value::ChronoDateTimeUtc(Some(until)))
            .and_where(Expr::col(iden("name")).eq(name))
            .and_where(
                Expr::col(iden("until"))
                    .is_null()
                    .or(Expr::col(iden("until")).lt(Value::ChronoDateTimeUtc(Some(now))))
                    .or(Expr::col(iden("owner")).eq(owner)),
            );
        Ok(self.conn().execute(&update).await?.rows_affected() == 1)
    }

    /// Delete up to `limit` audit rows older than `before`, oldest first; the count deleted.
    /// One short statement: the caller loops, so no lock is held for long.
    pub async fn prune_audit_rows(&self, before: Timestamp, limit: u64) -> Result<u64, StoreError> {
        let mut oldest = Query::select();
        oldest
            .column(iden("id"))
            .from(iden("audit_logs"))
            .and_where(Expr::col(iden("created_at")).lt(Value::ChronoDateTimeUtc(Some(before))))
            .order_by(iden("created_at"), Order::Asc)
            .limit(limit);
        let mut delete = Query::delete();
        delete
            .from_table(iden("audit_logs"))
            .and_where(Expr::col(iden("id")).in_subquery(oldest));
        Ok(self.conn().execute(&delete).await?.rows_affected())
    }

    /// Delete the rollups and counters of up to `minutes` minutes, oldest first, before
    /// `before`; the rows deleted.
    pub async fn prune_rollups(&self, before: Timestamp, minutes: i64) -> Result<u64, StoreError> {
        let conn = self.conn();
        let cutoff = epoch_minute(before);
        let mut oldest = Query::select();
        oldest
            .expr_as(Func::min(Expr::col(iden("minute"))), iden("minute"))
            .from(iden(ROLLUPS));
        let first = conn
            .query_all(&oldest)
            .await?
            .first()
            .and_then(|row| row.try_get::<Option<i64>>("", "minute").ok().flatten())
            .unwrap_or(cutoff);
        let upto = std::cmp::min(first.saturating_add(minutes), cutoff);
        let mut deleted = 0;
        for table in [ROLLUPS, TOKEN_ROLLUPS, COUNTERS] {
            let mut delete = Query::delete();
            delete
                .from_table(iden(table))
                .and_where(Expr::col(iden("minute")).lt(upto));
            deleted += conn.execute(&delete).await?.rows_affected();
        }
        Ok(deleted)
    }
}
