//! `/api/connected-accounts` and `/api/connect-links`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Admin;
use super::json::ApiJson;
use super::{AdminState, ErrorBody};
use crate::api_error::ApiError;
use crate::connect::AccountView;
use crate::domain::validation::ValidationError;
use crate::manage::parse_id;

#[derive(Debug, Serialize, ToSchema)]
pub struct ManagedTargetBody {
    id: Uuid,
    slug: String,
    name: String,
    capability: Option<String>,
    base_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    id: Uuid,
    provider: String,
    provider_name: String,
    email: String,
    display_name: Option<String>,
    /// `connected`, `disconnected` (re-consent needed) or `error` (the app is misconfigured).
    status: String,
    status_message: Option<String>,
    token_expires_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    last_refresh_error: Option<String>,
    created_at: DateTime<Utc>,
    managed_targets: Vec<ManagedTargetBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    connected_accounts: Vec<AccountBody>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantAccess {
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessBody {
    account_id: Uuid,
    token_id: Uuid,
    /// How many managed targets the grant covers (or how many permissions were removed).
    targets: u64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnectLink {
    #[serde(default)]
    provider: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectLinkBody {
    /// Open in any browser to connect an account; works once.
    url: String,
    expires_at: DateTime<Utc>,
}

impl From<AccountView> for AccountBody {
    fn from(view: AccountView) -> Self {
        let account = view.account;
        Self {
            id: account.id,
            provider: account.provider_type,
            provider_name: view.provider_name,
            email: account.email,
            display_name: account.display_name,
            status: account.status.as_str().to_owned(),
            status_message: account.status_message,
            token_expires_at: account.token_expires_at,
            last_refreshed_at: account.last_refreshed_at,
            last_refresh_error: account.last_refresh_error,
            created_at: account.created_at,
            managed_targets: view
                .targets
                .into_iter()
                .map(|t| ManagedTargetBody {
                    id: t.id,
                    slug: t.slug.as_str().to_owned(),
                    name: t.name,
                    capability: t.capability.map(|c| c.as_str().to_owned()),
                    base_url: t.base_url.to_string(),
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/connected-accounts", tag = "accounts",
    responses((status = 200, body = AccountList), (status = 401, body = ErrorBody)))]
pub async fn list_accounts(
    _: Admin,
    State(state): State<Arc<AdminState>>,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = state.accounts.accounts().await?;
    Ok(Json(AccountList {
        connected_accounts: accounts.into_iter().map(AccountBody::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/connected-accounts/{id}", tag = "accounts", params(("id" = Uuid, Path)),
    responses((status = 200, body = AccountBody), (status = 404, body = ErrorBody)))]
pub async fn get_account(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<AccountBody>, ApiError> {
    Ok(Json(
        state.accounts.account(parse_id("id", &id)?).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/api/connected-accounts/{id}", tag = "accounts", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_account(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.accounts.disconnect(parse_id("id", &id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/connected-accounts/{id}/access/{token_id}", tag = "accounts",
    request_body(content = GrantAccess, description = "optional"),
    params(("id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 200, body = AccessBody), (status = 404, body = ErrorBody)))]
pub async fn grant_access(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, token_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<GrantAccess>,
) -> Result<Json<AccessBody>, ApiError> {
    let (account_id, token_id) = (parse_id("id", &id)?, parse_id("token_id", &token_id)?);
    let targets = state
        .accounts
        .grant_access(account_id, token_id, body.read_only)
        .await?;
    Ok(Json(AccessBody {
        account_id,
        token_id,
        targets: targets as u64,
    }))
}

#[utoipa::path(delete, path = "/api/connected-accounts/{id}/access/{token_id}", tag = "accounts",
    params(("id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 200, body = AccessBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_access(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<Json<AccessBody>, ApiError> {
    let (account_id, token_id) = (parse_id("id", &id)?, parse_id("token_id", &token_id)?);
    let removed = state.accounts.revoke_access(account_id, token_id).await?;
    Ok(Json(AccessBody {
        account_id,
        token_id,
        targets: removed,
    }))
}

#[utoipa::path(post, path = "/api/connect-links", tag = "accounts", request_body = CreateConnectLink,
    responses((status = 201, body = ConnectLinkBody), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_connect_link(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateConnectLink>,
) -> Result<(StatusCode, Json<ConnectLinkBody>), ApiError> {
    if body.provider.is_empty() {
        return Err(ValidationError::new("provider", "is required").into());
    }
    let (url, expires_at) = state
        .accounts
        .create_connect_link(&body.provider, &state.public_url)
        .await
        .map_err(|error| match error {
            crate::connect::ConnectError::UnknownProvider => {
                ApiError::from(ValidationError::new("provider", "unknown provider"))
            }
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(ConnectLinkBody {
            url: url.to_string(),
            expires_at,
        }),
    ))
}
