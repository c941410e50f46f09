//! Audit rows: batched inserts and newest-first cursor pages.

use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};

use chrono::SubsecRound as _;

use super::entities::audit_logs::{self, Entity as AuditLogs};
use super::{Store, StoreError};
use crate::domain::audit::{AuditCursor, AuditEntry, AuditQuery, Interface};

/// Most rows in one INSERT statement (14 bind parameters each).
const MAX_ROWS_PER_STATEMENT: usize = 256;

/// Rows for the next statement: the largest power of two that fits, capped. Each distinct row
/// count is a distinct prepared statement, cached per connection (a 256-row one compiles to
/// about half a megabyte in SQLite); powers of two bound them to nine, where arbitrary batch
/// sizes filled the statement caches with tens of megabytes and re-prepared on every new size.
fn rows_for_next_statement(remaining: usize) -> usize {
    let capped = remaining.min(MAX_ROWS_PER_STATEMENT);
    if capped == 0 {
        return 0;
    }
    1 << (usize::BITS - 1 - capped.leading_zeros())
}

impl Store {
    /// Insert a batch in one transaction (a few multi-row statements, see above).
    pub async fn insert_audit_entries(
        &self,
        mut entries: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write().await?;
        while !entries.is_empty() {
            let rest = entries.split_off(rows_for_next_statement(entries.len()));
            let chunk = std::mem::replace(&mut entries, rest);
            AuditLogs::insert_many(chunk.into_iter().map(active_model))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
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

fn active_model(entry: AuditEntry) -> audit_logs::ActiveModel {
    audit_logs::ActiveModel {
        id: Set(entry.id),
        token_id: Set(entry.token_id),
        token_name: Set(entry.token_name),
        target_id: Set(entry.target_id),
        target_slug: Set(entry.target_slug),
        method: Set(entry.method),
        path: Set(entry.path),
        status_code: Set(i32::from(entry.status_code)),
        client_ip: Set(entry.client_ip),
        duration_ms: Set(saturating_i64(entry.duration_ms)),
        upstream_ms: Set(entry.upstream_ms.map(saturating_i64)),
        error: Set(entry.error),
        interface: Set(entry.interface.as_str().to_owned()),
        created_at: Set(entry.created_at.trunc_subsecs(6)),
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
        created_at: model.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::rows_for_next_statement;

    #[test]
    fn statements_take_power_of_two_row_counts() {
        assert_eq!(rows_for_next_statement(0), 0);
        assert_eq!(rows_for_next_statement(1), 1);
        assert_eq!(rows_for_next_statement(3), 2);
        assert_eq!(rows_for_next_statement(255), 128);
        assert_eq!(rows_for_next_statement(256), 256);
        assert_eq!(rows_for_next_statement(10_000), 256);
        // A batch of 300 rows: 256 + 32 + 8 + 4 = 300, four statements.
        let mut left = 300;
        let mut sizes = Vec::new();
        while left > 0 {
            let n = rows_for_next_statement(left);
            sizes.push(n);
            left -= n;
        }
        assert_eq!(sizes, vec![256, 32, 8, 4]);
    }
}
