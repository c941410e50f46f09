//! Connected accounts. The refresh lease of SPEC §7 lands here with issue "Connected accounts";
//! for now: insert, read and list, so the schema is exercised on both backends.

use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _, QueryOrder as _};
use uuid::Uuid;

use super::entities::connected_accounts::{self, Entity as Accounts};
use super::{Store, StoreError, classify, now};
use crate::domain::accounts::{AccountStatus, ConnectedAccount};

/// A freshly connected account with its tokens already sealed by the caller (the seal is bound
/// to `id`, hence the caller picks it).
#[derive(Debug, Clone)]
pub struct NewConnectedAccount {
    pub id: Uuid,
    pub provider_type: String,
    pub email: String,
    pub display_name: Option<String>,
    pub sealed_access_token: Vec<u8>,
    pub sealed_refresh_token: Option<Vec<u8>>,
    pub token_expires_at: Option<crate::domain::Timestamp>,
    pub scopes: String,
}

impl Store {
    pub async fn insert_connected_account(
        &self,
        new: NewConnectedAccount,
    ) -> Result<ConnectedAccount, StoreError> {
        let at = now();
        let model = connected_accounts::ActiveModel {
            id: Set(new.id),
            provider_type: Set(new.provider_type),
            email: Set(new.email),
            display_name: Set(new.display_name),
            access_token: Set(Some(new.sealed_access_token)),
            refresh_token: Set(new.sealed_refresh_token),
            token_expires_at: Set(new.token_expires_at),
            token_version: Set(0),
            refresh_lease_owner: Set(None),
            refresh_lease_until: Set(None),
            scopes: Set(new.scopes),
            status: Set(AccountStatus::Connected.as_str().to_owned()),
            status_message: Set(None),
            last_refreshed_at: Set(Some(at)),
            last_refresh_error: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        };
        let model = model
            .insert(self.conn())
            .await
            .map_err(|e| classify(e, "connected_accounts.provider_type_email"))?;
        account_from(model)
    }

    pub async fn connected_account(&self, id: Uuid) -> Result<ConnectedAccount, StoreError> {
        let model = Accounts::find_by_id(id).one(self.conn()).await?;
        account_from(model.ok_or(StoreError::not_found("connected account"))?)
    }

    pub async fn list_connected_accounts(&self) -> Result<Vec<ConnectedAccount>, StoreError> {
        Accounts::find()
            .order_by_asc(connected_accounts::Column::CreatedAt)
            .all(self.conn())
            .await?
            .into_iter()
            .map(account_from)
            .collect()
    }

    /// Delete an account; its managed targets and their permissions go with it (FK cascade).
    pub async fn delete_connected_account(&self, id: Uuid) -> Result<(), StoreError> {
        let result = Accounts::delete_by_id(id).exec(self.conn()).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found("connected account"));
        }
        Ok(())
    }
}

fn account_from(model: connected_accounts::Model) -> Result<ConnectedAccount, StoreError> {
    let status = AccountStatus::parse(&model.status).ok_or_else(|| {
        StoreError::corrupt("connected account", format!("status {:?}", model.status))
    })?;
    Ok(ConnectedAccount {
        id: model.id,
        provider_type: model.provider_type,
        email: model.email,
        display_name: model.display_name,
        token_expires_at: model.token_expires_at,
        token_version: model.token_version,
        scopes: model.scopes,
        status,
        status_message: model.status_message,
        last_refreshed_at: model.last_refreshed_at,
        last_refresh_error: model.last_refresh_error,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
