//! Audit rows: batched inserts and newest-first cursor pages.
//!
//! The writer's insert is the hottest statement Gatehouse runs (one row per proxied request),
//! so it skips the active-model path: the INSERT text for each row count is built once per
//! store (by sea-query, for the store's backend) and the values are bound straight from the
//! entries. Measured in `benches/audit_insert.rs` (docs/performance.md, "Audit insert").

use sea_orm::sea_query::{Condition, Query};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Statement, Value,
};

use chrono::SubsecRound as _;
use uuid::Uuid;

use super::entities::audit_logs::{self, Column, Entity as AuditLogs};
use super::{Store, StoreError};
use crate::domain::Timestamp;
use crate::domain::audit::{AuditCursor, AuditEntry, AuditQuery, Interface};
use crate::domain::guard::GuardOutcome;
use crate::domain::stats::{BatchRollup, Counter};

/// The columns of one row, in the order `push_row` binds them.
const COLUMNS: [Column; 16] = [
    Column::Id,
    Column::TokenId,
    Column::TokenName,
    Column::TargetId,
    Column::TargetSlug,
    Column::Method,
    Column::Path,
    Column::StatusCode,
    Column::ClientIp,
    Column::DurationMs,
    Column::UpstreamMs,
    Column::Error,
    Column::Interface,
    Column::GuardAction,
    Column::ApprovedBy,
    Column::CreatedAt,
];

/// Most rows in one INSERT. Row counts are powers of two, so a connection caches at most
/// seven audit statements (1, 2, 4, … 64 rows) and the store builds their text once.
const MAX_ROWS_PER_STATEMENT: usize = 64;
const STATEMENT_SIZES: usize = MAX_ROWS_PER_STATEMENT.trailing_zeros() as usize + 1;

/// Budget for one statement's parameters as PostgreSQL receives them: under one TLS record
/// (16 KiB). sqlx 0.9.0 leaves Nagle's algorithm on (sqlx issue 4335) and sends each TLS
/// record on its own, so a Bind message spanning two records waited for the server's delayed
/// ACK: 52–56 ms for a 256-row batch in one statement, 9–14 ms in four of 64 (loopback).
/// SQLite does not care: its cost per row was the same from 32 to 256 rows per statement.
const MAX_PARAM_BYTES_PER_STATEMENT: usize = 15_000;

/// The INSERT text for 1, 2, 4, … `MAX_ROWS_PER_STATEMENT` rows, in `backend`'s dialect.
pub(super) fn insert_statements(backend: DbBackend) -> Result<Vec<String>, StoreError> {
    (0..STATEMENT_SIZES)
        .map(|power| {
            let mut insert = Query::insert();
            insert.into_table(AuditLogs).columns(COLUMNS);
            for _ in 0..1usize << power {
                // Placeholders only: the statement's values are bound per batch.
                insert
                    .values(COLUMNS.map(|_| Value::Int(None).into()))
                    .map_err(|e| StoreError::Unavailable(format!("audit insert: {e}")))?;
            }
            Ok(backend.build(&insert).sql)
        })
        .collect()
}

/// Bytes an entry's values take in a PostgreSQL Bind message: a 4-byte length per value,
/// three 16-byte ids, three 8-byte and one 4-byte integer, and the text.
fn encoded_len(entry: &AuditEntry) -> usize {
    COLUMNS.len() * 4
        + 3 * 16
        + 3 * 8
        + 4
        + entry.token_name.len()
        + entry.target_slug.len()
        + entry.method.len()
        + entry.path.len()
        + entry.client_ip.len()
        + entry.error.as_ref().map_or(0, String::len)
        + entry.interface.as_str().len()
        + entry.guard_action.map_or(0, |g| g.as_str().len())
        + entry.approved_by.as_ref().map_or(0, String::len)
}

/// Rows in each statement of a batch: as many as fit the parameter budget (at least one),
/// capped, rounded down to a power of two.
fn statement_rows(entries: &[AuditEntry]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let mut bytes = 0;
        let fit = rest
            .iter()
            .take(MAX_ROWS_PER_STATEMENT)
            .take_while(|entry| {
                bytes += encoded_len(entry);
                bytes <= MAX_PARAM_BYTES_PER_STATEMENT
            })
            .count()
            .max(1);
        let rows = 1 << (usize::BITS - 1 - fit.leading_zeros());
        sizes.push(rows);
        rest = &rest[rows..];
    }
    sizes
}

fn push_row(values: &mut Vec<Value>, entry: AuditEntry) {
    values.extend([
        Value::Uuid(Some(entry.id)),
        Value::Uuid(entry.token_id),
        Value::String(Some(entry.token_name)),
        Value::Uuid(entry.target_id),
        Value::String(Some(entry.target_slug)),
        Value::String(Some(entry.method)),
        Value::String(Some(entry.path)),
        Value::Int(Some(i32::from(entry.status_code))),
        Value::String(Some(entry.client_ip)),
        Value::BigInt(Some(saturating_i64(entry.duration_ms))),
        Value::BigInt(entry.upstream_ms.map(saturating_i64)),
        Value::String(entry.error),
        Value::String(Some(entry.interface.as_str().to_owned())),
        Value::String(entry.guard_action.map(|g| g.as_str().to_owned())),
        Value::String(entry.approved_by),
        Value::ChronoDateTimeUtc(Some(entry.created_at.trunc_subsecs(6))),
    ]);
}

impl Store {
    /// Insert a batch in one transaction (a few multi-row statements, see above).
    pub async fn insert_audit_entries(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.write_audit_batch(entries, &[], 0).await
    }

    /// The audit writer's unit of work: the rows, their per-minute rollups, the events dropped
    /// since the last batch and the tokens' `last_used_at`, in one transaction (one commit, and
    /// one pooled connection, per batch).
    pub async fn write_audit_batch(
        &self,
        entries: Vec<AuditEntry>,
        token_uses: &[(Uuid, Timestamp)],
        dropped: u64,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && token_uses.is_empty() && dropped == 0 {
            return Ok(());
        }
        let backend = self.db.get_database_backend();
        let rollup = BatchRollup::of(&entries);
        let sizes = statement_rows(&entries);
        let mut rows = entries.into_iter();
        let txn = self.begin_write().await?;
        for size in sizes {
            let mut values = Vec::with_capacity(size * COLUMNS.len());
            rows.by_ref()
                .take(size)
                .for_each(|entry| push_row(&mut values, entry));
            let sql = self.audit_insert_sql(size)?;
            txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
        }
        super::stats::add_rollup(&txn, &rollup).await?;
        if dropped > 0 {
            super::stats::add_counter(&txn, Counter::AuditDropped, "", chrono::Utc::now(), dropped)
                .await?;
        }
        super::tokens::touch_tokens(&txn, token_uses).await?;
        txn.commit().await?;
        Ok(())
    }

    fn audit_insert_sql(&self, rows: usize) -> Result<String, StoreError> {
        self.audit_sql
            .get(rows.trailing_zeros() as usize)
            .filter(|_| rows.is_power_of_two())
            .cloned()
            .ok_or_else(|| StoreError::Unavailable(format!("no audit statement for {rows} rows")))
    }

    /// One page, newest first, and the cursor of the next page when there may be one.
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<AuditCursor>), StoreError> {
        let mut select = AuditLogs::find();
        if let Some(token_id) = query.token_id {
            select = select.filter(audit_logs::Column::TokenId.eq(token_id));
        }
        if let Some(slug) = &query.target_slug {
            select = select.filter(audit_logs::Column::TargetSlug.eq(slug.as_str()));
        }
        if let Some(status) = query.status_code {
            select = select.filter(audit_logs::Column::StatusCode.eq(i32::from(status)));
        }
        if let Some(cursor) = query.before {
            select = select.filter(
                Condition::any()
                    .add(audit_logs::Column::CreatedAt.lt(cursor.created_at))
                    .add(
                        Condition::all()
                            .add(audit_logs::Column::CreatedAt.eq(cursor.created_at))
                            .add(audit_logs::Column::Id.lt(cursor.id)),
                    ),
            );
        }
        let rows = select
            .order_by_desc(audit_logs::Column::CreatedAt)
            .order_by_desc(audit_logs::Column::Id)
            .limit(query.limit)
            .all(self.conn())
            .await?;
        let next = (rows.len() as u64 == query.limit && query.limit > 0)
            .then(|| {
                rows.last().map(|r| AuditCursor {
                    created_at: r.created_at,
                    id: r.id,
                })
            })
            .flatten();
        Ok((rows.into_iter().map(entry_from).collect(), next))
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn entry_from(model: audit_logs::Model) -> AuditEntry {
    AuditEntry {
        id: model.id,
        token_id: model.token_id,
        token_name: model.token_name,
        target_id: model.target_id,
        target_slug: model.target_slug,
        method: model.method,
        path: model.path,
        status_code: u16::try_from(model.status_code).unwrap_or(0),
        client_ip: model.client_ip,
        duration_ms: u64::try_from(model.duration_ms).unwrap_or(0),
        upstream_ms: model.upstream_ms.and_then(|v| u64::try_from(v).ok()),
        error: model.error,
        // Only this module writes the column; an unknown value would be a foreign writer's.
        interface: Interface::parse(&model.interface).unwrap_or(Interface::Gateway),
        guard_action: model.guard_action.as_deref().and_then(GuardOutcome::parse),
        approved_by: model.approved_by,
        created_at: model.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path_len: usize) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            token_id: Some(Uuid::now_v7()),
            token_name: "agent".into(),
            target_id: Some(Uuid::now_v7()),
            target_slug: "github".into(),
            method: "GET".into(),
            path: "p".repeat(path_len),
            status_code: 200,
            client_ip: "10.0.0.1".into(),
            duration_ms: 1,
            upstream_ms: Some(1),
            error: None,
            interface: Interface::Gateway,
            guard_action: None,
            approved_by: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn statements_take_power_of_two_row_counts_within_the_byte_budget() {
        assert!(statement_rows(&[]).is_empty());
        // Short rows: capped at 64; 300 = 4 × 64 + 32 + 8 + 4.
        let short: Vec<_> = (0..300).map(|_| entry(10)).collect();
        assert_eq!(statement_rows(&short), vec![64, 64, 64, 64, 32, 8, 4]);
        // ~560-byte rows: 26 fit the budget, so statements of 16.
        let long: Vec<_> = (0..40).map(|_| entry(400)).collect();
        assert_eq!(MAX_PARAM_BYTES_PER_STATEMENT / encoded_len(&long[0]), 26);
        assert_eq!(statement_rows(&long), vec![16, 16, 8]);
        // A row above the budget on its own still gets a statement.
        let huge = vec![entry(20_000), entry(10)];
        assert_eq!(statement_rows(&huge), vec![1, 1]);
    }

    #[test]
    fn one_statement_text_per_power_of_two() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let statements = insert_statements(backend).unwrap();
            assert_eq!(statements.len(), 7);
            for (power, sql) in statements.iter().enumerate() {
                let rows = 1 << power;
                assert_eq!(sql.matches('(').count(), rows + 1, "{sql}");
            }
        }
        let postgres = insert_statements(DbBackend::Postgres).unwrap();
        assert!(
            postgres[1].ends_with(
                "($17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)"
            ),
            "{}",
            postgres[1]
        );
    }
}
