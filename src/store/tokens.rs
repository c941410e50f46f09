//! Agent tokens (`tokens` table).

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _,
};
use uuid::Uuid;

use super::entities::tokens::{self, Entity as Tokens};
use super::{Store, StoreError, classify, now};
use crate::domain::Timestamp;
use crate::domain::ip_allowlist::IpAllowlist;
use crate::domain::tokens::{AgentTokenRecord, RateLimit, TokenHash};
use crate::domain::webhooks::{TokenRevocation, WebhookEvent};

const ENTITY: &str = "token";

/// A token to store: its plaintext has already been shown and dropped.
#[derive(Debug, Clone)]
pub struct NewAgentToken {
    pub name: String,
    pub hash: TokenHash,
    pub allowed_ips: IpAllowlist,
    pub rate_limit: Option<RateLimit>,
}

/// Fields an admin may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AgentTokenPatch {
    pub name: Option<String>,
    pub allowed_ips: Option<IpAllowlist>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<RateLimit>>,
}

impl Store {
    pub async fn insert_agent_token(
        &self,
        new: NewAgentToken,
    ) -> Result<AgentTokenRecord, StoreError> {
        let at = now();
        let model = tokens::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(new.name),
            token_hash: Set(new.hash.as_str().to_owned()),
            allowed_ips: Set(serde_json::json!(new.allowed_ips.to_strings())),
            rate_limit: Set(new.rate_limit.map(stored_limit)),
            rate_limited_notified_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
            revoked_at: Set(None),
            last_used_at: Set(None),
        };
        let model = model
            .insert(self.conn())
            .await
            .map_err(|e| classify(e, "tokens.token_hash"))?;
        to_record(model)
    }

    pub async fn list_agent_tokens(&self) -> Result<Vec<AgentTokenRecord>, StoreError> {
        Tokens::find()
            .order_by_asc(tokens::Column::CreatedAt)
            .order_by_asc(tokens::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    pub async fn agent_token(&self, id: Uuid) -> Result<AgentTokenRecord, StoreError> {
        let model = Tokens::find_by_id(id).one(self.conn()).await?;
        to_record(model.ok_or(StoreError::not_found(ENTITY))?)
    }

    pub async fn agent_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<AgentTokenRecord>, StoreError> {
        Tokens::find()
            .filter(tokens::Column::TokenHash.eq(hash.as_str()))
            .one(self.conn())
            .await?
            .map(to_record)
            .transpose()
    }

    pub async fn update_agent_token(
        &self,
        id: Uuid,
        patch: AgentTokenPatch,
    ) -> Result<AgentTokenRecord, StoreError> {
        let mut model: tokens::ActiveModel = Tokens::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found(ENTITY))?
            .into();
        if let Some(name) = patch.name {
            model.name = Set(name);
        }
        if let Some(allowed_ips) = patch.allowed_ips {
            model.allowed_ips = Set(serde_json::json!(allowed_ips.to_strings()));
        }
        if let Some(rate_limit) = patch.rate_limit {
            model.rate_limit = Set(rate_limit.map(stored_limit));
        }
        model.updated_at = Set(now());
        to_record(model.update(self.conn()).await?)
    }

    /// Swap in a new hash (regenerate): the old plaintext stops matching at once.
    pub async fn replace_agent_token_hash(
        &self,
        id: Uuid,
        hash: &TokenHash,
    ) -> Result<AgentTokenRecord, StoreError> {
        let result = Tokens::update_many()
            .col_expr(tokens::Column::TokenHash, Expr::value(hash.as_str()))
            .col_expr(tokens::Column::UpdatedAt, Expr::value(now()))
            .filter(tokens::Column::Id.eq(id))
            .exec(self.conn())
            .await
            .map_err(|e| classify(e, "tokens.token_hash"))?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY));
        }
        self.agent_token(id).await
    }

    /// Mark revoked (idempotent: a second revoke keeps the first time). The first revoke also
    /// queues `token.revoked`, in the same transaction.
    pub async fn revoke_agent_token(&self, id: Uuid) -> Result<AgentTokenRecord, StoreError> {
        let at = now();
        let txn = self.begin_write().await?;
        let changed = Tokens::update_many()
            .col_expr(tokens::Column::RevokedAt, Expr::value(at))
            .col_expr(tokens::Column::UpdatedAt, Expr::value(at))
            .filter(tokens::Column::Id.eq(id))
            .filter(tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        let model = Tokens::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(StoreError::not_found(ENTITY))?;
        let record = to_record(model)?;
        let mut queued = 0;
        if changed {
            let event = WebhookEvent::token_revoked(&record, TokenRevocation::Revoked);
            queued = super::webhooks::enqueue(&txn, &event, None).await?;
        }
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(record)
    }

    /// The token hit its rate limit: queue `token.rate_limited` unless it was announced less
    /// than `quiet` ago — one conditional UPDATE claims the announcement, so replicas that see
    /// the same token limited at once send one event. `true` when this call queued it.
    pub async fn announce_rate_limited(
        &self,
        id: Uuid,
        quiet: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let at = now();
        let since = chrono::Duration::from_std(quiet)
            .ok()
            .and_then(|quiet| at.checked_sub_signed(quiet))
            .unwrap_or(at);
        let txn = self.begin_write().await?;
        let claimed = Tokens::update_many()
            .col_expr(tokens::Column::RateLimitedNotifiedAt, Expr::value(at))
            .filter(tokens::Column::Id.eq(id))
            .filter(
                sea_orm::Condition::any()
                    .add(tokens::Column::RateLimitedNotifiedAt.is_null())
                    .add(tokens::Column::RateLimitedNotifiedAt.lt(since)),
            )
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if !claimed {
            return Ok(false);
        }
        let model = Tokens::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(StoreError::not_found(ENTITY))?;
        let limit = model
            .rate_limit
            .and_then(|limit| u32::try_from(limit).ok())
            .unwrap_or(0);
        let event = WebhookEvent::token_rate_limited(id, &model.name, limit);
        let queued = super::webhooks::enqueue(&txn, &event, None).await?;
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(true)
    }

    /// Delete a token without announcing it (undoing a creation the caller never saw).
    pub async fn delete_agent_token(&self, id: Uuid) -> Result<(), StoreError> {
        let result = Tokens::delete_by_id(id).exec(self.conn()).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENTITY));
        }
        Ok(())
    }

    /// Delete a token and, unless it was revoked already (then it had stopped working and was
    /// announced then), queue `token.revoked` (reason `deleted`) in the same transaction.
    pub async fn delete_agent_token_announced(&self, id: Uuid) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let model = Tokens::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(StoreError::not_found(ENTITY))?;
        let record = to_record(model)?;
        Tokens::delete_by_id(id).exec(&txn).await?;
        let mut queued = 0;
        if record.revoked_at.is_none() {
            let event = WebhookEvent::token_revoked(&record, TokenRevocation::Deleted);
            queued = super::webhooks::enqueue(&txn, &event, None).await?;
        }
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(())
    }

    /// Record when tokens were last used; batched by the caller, one statement per token.
    pub async fn touch_agent_tokens(&self, uses: &[(Uuid, Timestamp)]) -> Result<(), StoreError> {
        touch_tokens(self.conn(), uses).await
    }
}

/// `last_used_at` of each token, on `conn` (a transaction, when the audit writer calls it).
pub(super) async fn touch_tokens(
    conn: &impl ConnectionTrait,
    uses: &[(Uuid, Timestamp)],
) -> Result<(), StoreError> {
    for (id, at) in uses {
        Tokens::update_many()
            .col_expr(tokens::Column::LastUsedAt, Expr::value(*at))
            .filter(tokens::Column::Id.eq(*id))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// `RateLimit::MAX` fits an `i32` column with room to spare.
fn stored_limit(limit: RateLimit) -> i32 {
    i32::try_from(limit.per_minute()).unwrap_or(i32::MAX)
}

fn to_record(model: tokens::Model) -> Result<AgentTokenRecord, StoreError> {
    let rate_limit = model
        .rate_limit
        .map(|limit| {
            RateLimit::parse("rate_limit", i64::from(limit))
                .map_err(|e| StoreError::corrupt(ENTITY, e.to_string()))
        })
        .transpose()?;
    let entries: Vec<String> = serde_json::from_value(model.allowed_ips)
        .map_err(|e| StoreError::corrupt(ENTITY, format!("allowed_ips: {e}")))?;
    let allowed_ips = IpAllowlist::parse(&entries)
        .map_err(|e| StoreError::corrupt(ENTITY, format!("allowed_ips: {e}")))?;
    Ok(AgentTokenRecord {
        id: model.id,
        name: model.name,
        hash: TokenHash::from_stored(model.token_hash),
        allowed_ips,
        rate_limit,
        created_at: model.created_at,
        updated_at: model.updated_at,
        revoked_at: model.revoked_at,
        last_used_at: model.last_used_at,
    })
}
