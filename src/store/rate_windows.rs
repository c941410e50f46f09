//! `token_rate_windows`: the shared counter per token and wall-clock minute that every replica
//! leases rate-limit budget from (`rate_limit`). One statement per lease, the same SQL on
//! SQLite and PostgreSQL, no row lock held across a round trip.

use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Query};
use sea_orm::{ColumnTrait as _, ConnectionTrait as _, EntityTrait as _, QueryFilter as _};
use uuid::Uuid;

use super::entities::token_rate_windows::{Column, Entity as Windows};
use super::{Store, StoreError};

impl Store {
    /// Take `amount` of `token_id`'s budget for `window_minute` if `used + amount <= limit`;
    /// `false` (nothing taken) otherwise. One `INSERT … ON CONFLICT DO UPDATE … WHERE`: the
    /// first lease of a window creates the row, later ones add to it only while it stays within
    /// the limit, atomically on both backends.
    pub async fn lease_rate_budget(
        &self,
        token_id: Uuid,
        window_minute: i64,
        amount: u32,
        limit: u32,
    ) -> Result<bool, StoreError> {
        if amount == 0 || amount > limit {
            return Ok(false);
        }
        let used = Expr::col((Windows, Column::Used));
        let mut insert = Query::insert();
        insert
            .into_table(Windows)
            .columns([Column::TokenId, Column::WindowMinute, Column::Used])
            .values([
                token_id.into(),
                window_minute.into(),
                i64::from(amount).into(),
            ])
            .map_err(|e| StoreError::corrupt("rate window", e.to_string()))?
            .on_conflict(
                OnConflict::columns([Column::TokenId, Column::WindowMinute])
                    .value(Column::Used, used.clone().add(i64::from(amount)))
                    .action_and_where(used.add(i64::from(amount)).lte(i64::from(limit)))
                    .to_owned(),
            );
        let result = self.conn().execute(&insert).await?;
        Ok(result.rows_affected() == 1)
    }

    /// Delete the counters of windows before `window_minute`; returns how many.
    pub async fn prune_rate_windows(&self, before_minute: i64) -> Result<u64, StoreError> {
        let result = Windows::delete_many()
            .filter(Column::WindowMinute.lt(before_minute))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected)
    }

    /// How much of a window's budget has been leased (tests and diagnostics).
    pub async fn rate_budget_used(
        &self,
        token_id: Uuid,
        window_minute: i64,
    ) -> Result<u64, StoreError> {
        let row = Windows::find_by_id((token_id, window_minute))
            .one(self.conn())
            .await?;
        Ok(row.map_or(0, |r| u64::try_from(r.used).unwrap_or(0)))
    }
}
