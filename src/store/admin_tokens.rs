//! Admin tokens (`admin_tokens` table).

use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use super::entities::admin_tokens::{self, Entity as AdminTokens};
use super::{Store, StoreError, classify, now};
use crate::domain::tokens::{AdminTokenRecord, TokenHash};

impl Store {
    pub async fn insert_admin_token(
        &self,
        name: &str,
        hash: &TokenHash,
    ) -> Result<AdminTokenRecord, StoreError> {
        let model = admin_tokens::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(name.to_owned()),
            token_hash: Set(hash.as_str().to_owned()),
            created_at: Set(now()),
            revoked_at: Set(None),
        };
        let model = model
            .insert(self.conn())
            .await
            .map_err(|e| classify(e, "admin_tokens.token_hash"))?;
        Ok(to_record(model))
    }

    /// The unrevoked admin token with this hash, if any.
    pub async fn active_admin_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        Ok(AdminTokens::find()
            .filter(admin_tokens::Column::TokenHash.eq(hash.as_str()))
            .filter(admin_tokens::Column::RevokedAt.is_null())
            .one(self.conn())
            .await?
            .map(to_record))
    }

    pub async fn count_active_admin_tokens(&self) -> Result<u64, StoreError> {
        Ok(AdminTokens::find()
            .filter(admin_tokens::Column::RevokedAt.is_null())
            .count(self.conn())
            .await?)
    }
}

fn to_record(model: admin_tokens::Model) -> AdminTokenRecord {
    AdminTokenRecord {
        id: model.id,
        name: model.name,
        created_at: model.created_at,
        revoked_at: model.revoked_at,
    }
}
