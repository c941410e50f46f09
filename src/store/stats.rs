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
    BatchRollup, Counter, LATENCY_BOUNDS_MS, LATENCY_BUCKETS, RollupCounts, TOP_TOKENS, TokenUsage,
    WindowRange, WindowSums, epoch_minute,
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

/// Add a batch's rollup in `txn` (the transaction that inserts the batch's rows).
pub(super) async fn add_rollup<C: ConnectionTrait>(
    txn: &C,
    rollup: &BatchRollup,
) -> Result<(), StoreError> {
    let requests: Vec<_> = rollup.requests.iter().collect();
    for chunk in requests.chunks(ROLLUP_ROWS_PER_STATEMENT) {
        let mut columns = vec![
            "minute".to_owned(),
            "target_slug".to_owned(),
            "interface".to_owned(),
            "status_class".to_owned(),
            "requests".to_owned(),
            "duration_ms_sum".to_owned(),
            "upstream_ms_sum".to_owned(),
        ];
        let summed: Vec<String> = columns[4..]
            .iter()
            .cloned()
            .chain(latency_columns())
            .collect();
        columns.extend(latency_columns());
        let mut insert = Query::insert();
        insert
            .into_table(iden(ROLLUPS))
            .columns(columns.iter().map(|c| iden(c)));
        for (key, counts) in chunk {
            let mut values: Vec<Expr> = vec![
                key.minute.into(),
                key.target_slug.as_str().into(),
                key.interface.into(),
                i16::from(key.status_class).into(),
                as_i64(counts.requests).into(),
                as_i64(counts.duration_ms_sum).into(),
                as_i64(counts.upstream_ms_sum).into(),
            ];
            values.extend(counts.latency.iter().map(|&n| as_i64(n).into()));
            insert
                .values(values)
                .map_err(|e| StoreError::Unavailable(format!("rollup insert: {e}")))?;
        }
        insert.on_conflict(
            OnConflict::columns(["minute", "target_slug", "interface", "status_class"].map(iden))
                .values(
                    summed
                        .iter()
                        .map(|column| (iden(column), add_excluded(ROLLUPS, column))),
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

        let mut series = Query::select();
        series
            .expr_as(
                Expr::col(iden("minute"))
                    .sub(range.start_minute)
                    .div(range.step_minutes),
                iden("bucket"),
            )
            .column(iden("status_class"))
            .expr_as(sum("requests"), iden("requests"))
            .from(iden(ROLLUPS))
            .add_group_by([Expr::col(iden("bucket")), Expr::col(iden("status_class"))]);
        in_range(&mut series, range);
        let series = conn
            .query_all(&series)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64>("", "bucket")?,
                    class_of(row)?,
                    get_u64(row, "requests")?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;

        let mut targets = Query::select();
        targets
            .columns(["target_slug", "interface", "status_class"].map(iden))
            .expr_as(sum("requests"), iden("requests"))
            .expr_as(sum("duration_ms_sum"), iden("duration_ms_sum"))
            .expr_as(sum("upstream_ms_sum"), iden("upstream_ms_sum"));
        for column in latency_columns() {
            targets.expr_as(sum(&column), iden(&column));
        }
        targets
            .from(iden(ROLLUPS))
            .add_group_by(["target_slug", "interface", "status_class"].map(|c| Expr::col(iden(c))));
        in_range(&mut targets, range);
        let targets = conn
            .query_all(&targets)
            .await?
            .iter()
            .map(|row| {
                let mut counts = RollupCounts {
                    requests: get_u64(row, "requests")?,
                    duration_ms_sum: get_u64(row, "duration_ms_sum")?,
                    upstream_ms_sum: get_u64(row, "upstream_ms_sum")?,
                    latency: [0; LATENCY_BUCKETS],
                };
                for (slot, column) in counts.latency.iter_mut().zip(latency_columns()) {
                    *slot = get_u64(row, &column)?;
                }
                Ok((
                    row.try_get::<String>("", "target_slug")?,
                    row.try_get::<String>("", "interface")?,
                    class_of(row)?,
                    counts,
                ))
            })
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

fn class_of(row: &QueryResult) -> Result<u8, StoreError> {
    let class: i16 = row.try_get("", "status_class")?;
    Ok(u8::try_from(class).unwrap_or(0))
}
