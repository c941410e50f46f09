//! Connected accounts and the refresh lease of SPEC §7: a replica claims the right to refresh
//! with one conditional UPDATE on (id, token_version, lease free or expired), refreshes outside
//! any transaction, and writes the new tokens guarded by owner and version, bumping the version.
//! Works the same on SQLite and PostgreSQL (no `SELECT … FOR UPDATE`).

use sea_orm::sea_query::{Condition, Expr, ExprTrait as _, Func};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use uuid::Uuid;

use super::entities::connected_accounts::{self, Entity as Accounts};
use super::{Store, StoreError, classify, now};
use crate::domain::Timestamp;
use crate::domain::accounts::{AccountStatus, ConnectedAccount};
use crate::domain::targets::Target;
use crate::domain::webhooks::{EventType, WebhookEvent};
use crate::store::targets::NewTarget;

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
        insert_account(self.conn(), new).await
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

/// An account with its sealed tokens and lease, for the refresh machinery.
#[derive(Debug, Clone)]
pub struct AccountTokens {
    pub account: ConnectedAccount,
    pub sealed_access_token: Option<Vec<u8>>,
    pub sealed_refresh_token: Option<Vec<u8>>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
}

/// New tokens for an existing account (reconnect or refresh).
#[derive(Debug, Clone)]
pub struct FreshTokens {
    pub sealed_access_token: Vec<u8>,
    /// `None` keeps the stored refresh token (the provider did not rotate it).
    pub sealed_refresh_token: Option<Vec<u8>>,
    pub token_expires_at: Option<Timestamp>,
}

impl Store {
    pub async fn connected_account_by_email(
        &self,
        provider_type: &str,
        email: &str,
    ) -> Result<Option<ConnectedAccount>, StoreError> {
        Accounts::find()
            .filter(connected_accounts::Column::ProviderType.eq(provider_type))
            .filter(connected_accounts::Column::Email.eq(email))
            .one(self.conn())
            .await?
            .map(account_from)
            .transpose()
    }

    /// In one transaction: insert the account and its managed targets.
    pub async fn insert_account_with_targets(
        &self,
        new: NewConnectedAccount,
        targets: Vec<NewTarget>,
    ) -> Result<(ConnectedAccount, Vec<Target>), StoreError> {
        let txn = self.begin_write().await?;
        let account = insert_account(&txn, new).await?;
        let mut created = Vec::with_capacity(targets.len());
        for target in targets {
            created.push(super::targets::insert_target(&txn, target).await?);
        }
        txn.commit().await?;
        Ok((account, created))
    }

    /// Reconnect in place: new tokens, status connected, lease cleared, version bumped; targets
    /// and permissions are untouched. Queues `account.reconnected` (with the status before) in
    /// the same transaction.
    pub async fn reconnect_account(
        &self,
        id: Uuid,
        display_name: Option<String>,
        scopes: &str,
        tokens: FreshTokens,
    ) -> Result<ConnectedAccount, StoreError> {
        let txn = self.begin_write().await?;
        let before = Accounts::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(StoreError::not_found("connected account"))?;
        let mut update = write_fresh_tokens(tokens)
            .col_expr(connected_accounts::Column::Scopes, Expr::value(scopes))
            .col_expr(
                connected_accounts::Column::Status,
                Expr::value(AccountStatus::Connected.as_str()),
            )
            .col_expr(
                connected_accounts::Column::StatusMessage,
                Expr::value(Option::<String>::None),
            )
            .filter(connected_accounts::Column::Id.eq(id));
        if display_name.is_some() {
            update = update.col_expr(
                connected_accounts::Column::DisplayName,
                Expr::value(display_name),
            );
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(StoreError::not_found("connected account"));
        }
        let account = account_from(
            Accounts::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or(StoreError::not_found("connected account"))?,
        )?;
        let event = WebhookEvent::reconnected(&account, &before.status);
        let queued = super::webhooks::enqueue(&txn, &event, None).await?;
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(account)
    }

    pub async fn account_tokens(&self, id: Uuid) -> Result<AccountTokens, StoreError> {
        let model = Accounts::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found("connected account"))?;
        let sealed_access_token = model.access_token.clone();
        let sealed_refresh_token = model.refresh_token.clone();
        let lease_owner = model.refresh_lease_owner.clone();
        let lease_until = model.refresh_lease_until;
        Ok(AccountTokens {
            account: account_from(model)?,
            sealed_access_token,
            sealed_refresh_token,
            lease_owner,
            lease_until,
        })
    }

    /// Claim the right to refresh: one conditional UPDATE; `true` when this caller won.
    pub async fn claim_refresh_lease(
        &self,
        id: Uuid,
        version: i64,
        owner: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let at = now();
        let result = Accounts::update_many()
            .col_expr(
                connected_accounts::Column::RefreshLeaseOwner,
                Expr::value(owner),
            )
            .col_expr(
                connected_accounts::Column::RefreshLeaseUntil,
                Expr::value(until),
            )
            .filter(connected_accounts::Column::Id.eq(id))
            .filter(connected_accounts::Column::TokenVersion.eq(version))
            .filter(
                Condition::any()
                    .add(connected_accounts::Column::RefreshLeaseUntil.is_null())
                    .add(connected_accounts::Column::RefreshLeaseUntil.lt(at)),
            )
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Write refreshed tokens if this caller still holds the lease on this version; bumps the
    /// version and clears the lease. `false` when the lease was lost (nothing written).
    pub async fn save_refreshed_tokens(
        &self,
        id: Uuid,
        owner: &str,
        version: i64,
        tokens: FreshTokens,
    ) -> Result<bool, StoreError> {
        let result = write_fresh_tokens(tokens)
            .filter(connected_accounts::Column::Id.eq(id))
            .filter(connected_accounts::Column::TokenVersion.eq(version))
            .filter(connected_accounts::Column::RefreshLeaseOwner.eq(owner))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Record a failed refresh. A dead grant or misconfigured app changes the status (only if
    /// the version is still the one that failed) and queues `account.disconnected` or
    /// `account.error`; a transient failure only records the error and when the run of failures
    /// began — and once that run is `failing_after` old, the one caller whose conditional
    /// UPDATE marks it announced queues `account.refresh_failing` (once per run, across
    /// replicas). Either way the lease is released and the refresh token is kept; the events
    /// are written in the same transaction as the failure.
    pub async fn record_refresh_failure(
        &self,
        id: Uuid,
        owner: &str,
        version: i64,
        status: Option<(AccountStatus, String)>,
        error: &str,
        failing_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let at = now();
        let txn = self.begin_write().await?;
        let mut update = Accounts::update_many()
            .col_expr(
                connected_accounts::Column::RefreshLeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                connected_accounts::Column::RefreshLeaseUntil,
                Expr::value(Option::<Timestamp>::None),
            )
            .col_expr(
                connected_accounts::Column::LastRefreshError,
                Expr::value(Some(error.to_owned())),
            )
            .col_expr(connected_accounts::Column::UpdatedAt, Expr::value(at))
            .filter(connected_accounts::Column::Id.eq(id))
            .filter(connected_accounts::Column::TokenVersion.eq(version))
            .filter(connected_accounts::Column::RefreshLeaseOwner.eq(owner));
        let event_kind = match &status {
            Some((AccountStatus::Disconnected, _)) => Some(EventType::AccountDisconnected),
            Some((AccountStatus::Error, _)) => Some(EventType::AccountError),
            Some((AccountStatus::Connected, _)) | None => None,
        };
        let transition = status;
        if transition.is_none() {
            update = update.col_expr(
                connected_accounts::Column::RefreshFailingSince,
                Expr::from(Func::coalesce([
                    Expr::col(connected_accounts::Column::RefreshFailingSince),
                    Expr::value(at),
                ])),
            );
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            return Ok(false);
        }
        // The status changes only if it is not already the new one: two replicas can each see
        // the same dead grant one after the other (the lease was free again), and only the
        // first changes the status — and announces it.
        let mut changed = false;
        if let Some((status, message)) = transition {
            changed = Accounts::update_many()
                .col_expr(
                    connected_accounts::Column::Status,
                    Expr::value(status.as_str()),
                )
                .col_expr(
                    connected_accounts::Column::StatusMessage,
                    Expr::value(Some(message)),
                )
                .filter(connected_accounts::Column::Id.eq(id))
                .filter(connected_accounts::Column::Status.ne(status.as_str()))
                .exec(&txn)
                .await?
                .rows_affected
                == 1;
        }
        let event = match event_kind {
            // Already in that status: announced by whoever changed it.
            Some(_) if !changed => None,
            Some(kind) => {
                let account = account_from(
                    Accounts::find_by_id(id)
                        .one(&txn)
                        .await?
                        .ok_or(StoreError::not_found("connected account"))?,
                )?;
                Some(WebhookEvent::account(kind, &account))
            }
            None => announce_refresh_failing(&txn, id, at, failing_after).await?,
        };
        let mut queued = 0;
        if let Some(event) = event {
            queued = super::webhooks::enqueue(&txn, &event, None).await?;
        }
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(true)
    }

    /// Connected accounts (id, token expiry) whose token expires before `expiring_before` or
    /// that were last refreshed before `stale_before`.
    pub async fn accounts_due_for_refresh(
        &self,
        expiring_before: Timestamp,
        stale_before: Timestamp,
    ) -> Result<Vec<(Uuid, Option<Timestamp>)>, StoreError> {
        Ok(Accounts::find()
            .filter(connected_accounts::Column::Status.eq(AccountStatus::Connected.as_str()))
            .filter(
                Condition::any()
                    .add(connected_accounts::Column::TokenExpiresAt.lt(expiring_before))
                    .add(connected_accounts::Column::LastRefreshedAt.lt(stale_before))
                    .add(connected_accounts::Column::LastRefreshedAt.is_null()),
            )
            .all(self.conn())
            .await?
            .into_iter()
            .map(|m| (m.id, m.token_expires_at))
            .collect())
    }
}

/// Mark a run of transient failures that began `failing_after` ago as announced, and return its
/// event — `None` when the run is younger or was announced already (by this replica or any other:
/// the conditional UPDATE lets exactly one caller through).
async fn announce_refresh_failing(
    conn: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    at: Timestamp,
    failing_after: std::time::Duration,
) -> Result<Option<WebhookEvent>, StoreError> {
    let threshold = at - chrono::Duration::from_std(failing_after).unwrap_or(chrono::Duration::MAX);
    let won = Accounts::update_many()
        .col_expr(
            connected_accounts::Column::RefreshFailingNotifiedAt,
            Expr::value(Some(at)),
        )
        .filter(connected_accounts::Column::Id.eq(id))
        .filter(connected_accounts::Column::RefreshFailingSince.lte(threshold))
        .filter(connected_accounts::Column::RefreshFailingNotifiedAt.is_null())
        .exec(conn)
        .await?
        .rows_affected
        == 1;
    if !won {
        return Ok(None);
    }
    let model = Accounts::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(StoreError::not_found("connected account"))?;
    let since = model.refresh_failing_since.unwrap_or(at);
    Ok(Some(WebhookEvent::refresh_failing(
        &account_from(model)?,
        since,
    )))
}

/// The UPDATE that stores new tokens: version + 1, lease released, refresh recorded; the
/// refresh token only when the provider sent a new one. Callers add the row filters.
fn write_fresh_tokens(tokens: FreshTokens) -> sea_orm::UpdateMany<Accounts> {
    let at = now();
    let mut update = Accounts::update_many()
        .col_expr(
            connected_accounts::Column::AccessToken,
            Expr::value(Some(tokens.sealed_access_token)),
        )
        .col_expr(
            connected_accounts::Column::TokenExpiresAt,
            Expr::value(tokens.token_expires_at),
        )
        .col_expr(
            connected_accounts::Column::TokenVersion,
            Expr::col(connected_accounts::Column::TokenVersion).add(1),
        )
        .col_expr(
            connected_accounts::Column::RefreshLeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            connected_accounts::Column::RefreshLeaseUntil,
            Expr::value(Option::<Timestamp>::None),
        )
        .col_expr(
            connected_accounts::Column::LastRefreshedAt,
            Expr::value(Some(at)),
        )
        .col_expr(
            connected_accounts::Column::LastRefreshError,
            Expr::value(Option::<String>::None),
        )
        // A success ends the run of transient failures (and its announcement).
        .col_expr(
            connected_accounts::Column::RefreshFailingSince,
            Expr::value(Option::<Timestamp>::None),
        )
        .col_expr(
            connected_accounts::Column::RefreshFailingNotifiedAt,
            Expr::value(Option::<Timestamp>::None),
        )
        .col_expr(connected_accounts::Column::UpdatedAt, Expr::value(at));
    if let Some(sealed) = tokens.sealed_refresh_token {
        update = update.col_expr(
            connected_accounts::Column::RefreshToken,
            Expr::value(Some(sealed)),
        );
    }
    update
}

async fn insert_account(
    conn: &impl sea_orm::ConnectionTrait,
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
        refresh_failing_since: Set(None),
        refresh_failing_notified_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    };
    let model = model
        .insert(conn)
        .await
        .map_err(|e| classify(e, "connected_accounts.provider_type_email"))?;
    account_from(model)
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
