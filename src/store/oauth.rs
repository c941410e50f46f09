//! Pending OAuth flows (`oauth_states`) and one-time connect links (`connect_links`). Both are
//! single use: taking one is a conditional write that only one caller can win.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use super::entities::connect_links::{self, Entity as ConnectLinks};
use super::entities::oauth_states::{self, Entity as OauthStates};
use super::{Store, StoreError, now};
use crate::domain::Timestamp;
use crate::domain::accounts::FlowOrigin;

/// A pending authorization-code flow.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub id: Uuid,
    pub state_hash: String,
    pub provider_type: String,
    pub sealed_verifier: Vec<u8>,
    pub browser_binding: String,
    pub origin: FlowOrigin,
    pub expires_at: Timestamp,
}

impl Store {
    pub async fn insert_oauth_state(&self, state: OAuthState) -> Result<(), StoreError> {
        // Expired, never-finished flows are removed as new ones start.
        OauthStates::delete_many()
            .filter(oauth_states::Column::ExpiresAt.lt(now()))
            .exec(self.conn())
            .await?;
        oauth_states::ActiveModel {
            id: Set(state.id),
            state_hash: Set(state.state_hash),
            provider_type: Set(state.provider_type),
            code_verifier: Set(state.sealed_verifier),
            browser_binding: Set(state.browser_binding),
            origin: Set(state.origin.as_str().to_owned()),
            created_at: Set(now()),
            expires_at: Set(state.expires_at),
        }
        .insert(self.conn())
        .await?;
        Ok(())
    }

    /// Remove and return the flow with this state hash. Only one caller gets it; an expired
    /// one is removed and reported as absent.
    pub async fn take_oauth_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<OAuthState>, StoreError> {
        let Some(model) = OauthStates::find()
            .filter(oauth_states::Column::StateHash.eq(state_hash))
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        let deleted = OauthStates::delete_by_id(model.id)
            .exec(self.conn())
            .await?;
        if deleted.rows_affected == 0 || model.expires_at <= now() {
            return Ok(None);
        }
        let origin = FlowOrigin::parse(&model.origin)
            .ok_or_else(|| StoreError::corrupt("oauth state", "unknown origin"))?;
        Ok(Some(OAuthState {
            id: model.id,
            state_hash: model.state_hash,
            provider_type: model.provider_type,
            sealed_verifier: model.code_verifier,
            browser_binding: model.browser_binding,
            origin,
            expires_at: model.expires_at,
        }))
    }

    pub async fn insert_connect_link(
        &self,
        token_hash: &str,
        provider_type: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        connect_links::ActiveModel {
            id: Set(Uuid::new_v4()),
            token_hash: Set(token_hash.to_owned()),
            provider_type: Set(provider_type.to_owned()),
            created_at: Set(now()),
            expires_at: Set(expires_at),
            used_at: Set(None),
        }
        .insert(self.conn())
        .await?;
        Ok(())
    }

    /// Mark an unexpired, unused link used and return its provider; `None` when it cannot be used.
    pub async fn use_connect_link(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let at = now();
        let updated = ConnectLinks::update_many()
            .col_expr(connect_links::Column::UsedAt, Expr::value(at))
            .filter(connect_links::Column::TokenHash.eq(token_hash))
            .filter(connect_links::Column::UsedAt.is_null())
            .filter(connect_links::Column::ExpiresAt.gt(at))
            .exec(self.conn())
            .await?;
        if updated.rows_affected == 0 {
            return Ok(None);
        }
        Ok(ConnectLinks::find()
            .filter(connect_links::Column::TokenHash.eq(token_hash))
            .one(self.conn())
            .await?
            .map(|link| link.provider_type))
    }
}
