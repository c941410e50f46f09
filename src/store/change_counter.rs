//! The shared change counter (one row): bumped after a management write, polled by replicas.

use sea_orm::{ConnectionTrait as _, Statement};

use super::{Store, StoreError};

impl Store {
    pub async fn bump_change_counter(&self) -> Result<(), StoreError> {
        self.conn()
            .execute_raw(Statement::from_string(
                self.conn().get_database_backend(),
                "UPDATE change_counter SET value = value + 1 WHERE id = 1",
            ))
            .await?;
        Ok(())
    }

    pub async fn change_counter(&self) -> Result<i64, StoreError> {
        let row = self
            .conn()
            .query_one_raw(Statement::from_string(
                self.conn().get_database_backend(),
                "SELECT value FROM change_counter WHERE id = 1",
            ))
            .await?
            .ok_or(StoreError::not_found("change counter"))?;
        Ok(row.try_get::<i64>("", "value")?)
    }
}
