//! `/api/tokens` and `/api/tokens/{id}/permissions`.

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
use crate::domain::tokens::{AgentToken, AgentTokenRecord};
use crate::manage::{PermissionView, TokenChanges, parse_id};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[serde(default)]
    name: String,
    /// CIDRs or bare addresses; empty or absent = any address.
    allowed_ips: Option<Vec<String>>,
    /// Requests per minute (1 to 1 000 000); null or absent = unlimited.
    rate_limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchToken {
    name: Option<String>,
    allowed_ips: Option<Vec<String>>,
    /// Requests per minute (1 to 1 000 000); null removes the limit, absent keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    rate_limit: Option<Option<i64>>,
}

/// A field that is present, even as `null` (`Some(None)`), as opposed to absent (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPermission {
    /// When true only GET, HEAD and OPTIONS pass. Default false.
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    id: Uuid,
    name: String,
    allowed_ips: Vec<String>,
    /// Requests per minute; null = unlimited.
    rate_limit: Option<u32>,
    revoked: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

/// A token with its plaintext, returned only by create and regenerate.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenBody {
    #[serde(flatten)]
    record: TokenBody,
    /// The plaintext `sg_…` token, shown this once.
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionBody {
    id: Uuid,
    token_id: Uuid,
    target_id: Uuid,
    target_slug: String,
    target_name: String,
    read_only: bool,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionList {
    permissions: Vec<PermissionBody>,
}

impl From<AgentTokenRecord> for TokenBody {
    fn from(record: AgentTokenRecord) -> Self {
        Self {
            id: record.id,
            revoked: record.is_revoked(),
            name: record.name,
            allowed_ips: record.allowed_ips.to_strings(),
            rate_limit: record.rate_limit.map(|l| l.per_minute()),
            created_at: record.created_at,
            updated_at: record.updated_at,
            revoked_at: record.revoked_at,
            last_used_at: record.last_used_at,
        }
    }
}

fn with_plaintext((record, plaintext): (AgentTokenRecord, AgentToken)) -> NewTokenBody {
    NewTokenBody {
        record: record.into(),
        token: plaintext.expose().to_owned(),
    }
}

impl From<PermissionView> for PermissionBody {
    fn from(view: PermissionView) -> Self {
        Self {
            id: view.permission.id,
            token_id: view.permission.token_id,
            target_id: view.permission.target_id,
            target_slug: view.target.slug.as_str().to_owned(),
            target_name: view.target.name,
            read_only: view.permission.read_only,
            created_at: view.permission.created_at,
        }
    }
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody)))]
pub async fn list_tokens(
    _: Admin,
    State(state): State<Arc<AdminState>>,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.management.list_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(TokenBody::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = NewTokenBody), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<NewTokenBody>), ApiError> {
    let created = state
        .management
        .create_token(&body.name, body.allowed_ips.as_deref(), body.rate_limit)
        .await?;
    Ok((StatusCode::CREATED, Json(with_plaintext(created))))
}

#[utoipa::path(get, path = "/api/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 200, body = TokenBody), (status = 404, body = ErrorBody)))]
pub async fn get_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<TokenBody>, ApiError> {
    Ok(Json(
        state.management.token(parse_id("id", &id)?).await?.into(),
    ))
}

#[utoipa::path(patch, path = "/api/tokens/{id}", tag = "tokens", request_body = PatchToken,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TokenBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patch_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchToken>,
) -> Result<Json<TokenBody>, ApiError> {
    let record = state
        .management
        .update_token(
            parse_id("id", &id)?,
            TokenChanges {
                name: body.name.as_deref(),
                allowed_ips: body.allowed_ips.as_deref(),
                rate_limit: body.rate_limit,
            },
        )
        .await?;
    Ok(Json(record.into()))
}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.management.delete_token(parse_id("id", &id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/tokens/{id}/regenerate", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 200, body = NewTokenBody), (status = 404, body = ErrorBody)))]
pub async fn regenerate_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<NewTokenBody>, ApiError> {
    let regenerated = state
        .management
        .regenerate_token(parse_id("id", &id)?)
        .await?;
    Ok(Json(with_plaintext(regenerated)))
}

#[utoipa::path(post, path = "/api/tokens/{id}/revoke", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 200, body = TokenBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<TokenBody>, ApiError> {
    Ok(Json(
        state
            .management
            .revoke_token(parse_id("id", &id)?)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/api/tokens/{id}/permissions", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 200, body = PermissionList), (status = 404, body = ErrorBody)))]
pub async fn list_permissions(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<PermissionList>, ApiError> {
    let permissions = state.management.permissions(parse_id("id", &id)?).await?;
    Ok(Json(PermissionList {
        permissions: permissions.into_iter().map(PermissionBody::from).collect(),
    }))
}

#[utoipa::path(put, path = "/api/tokens/{id}/permissions/{target_id}", tag = "tokens",
    request_body(content = PutPermission, description = "optional"),
    params(("id" = Uuid, Path), ("target_id" = Uuid, Path)),
    responses((status = 201, body = PermissionBody), (status = 200, body = PermissionBody), (status = 404, body = ErrorBody)))]
pub async fn put_permission(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, target_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutPermission>,
) -> Result<(StatusCode, Json<PermissionBody>), ApiError> {
    let (view, created) = state
        .management
        .put_permission(
            parse_id("id", &id)?,
            parse_id("target_id", &target_id)?,
            body.read_only,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view.into())))
}

#[utoipa::path(delete, path = "/api/tokens/{id}/permissions/{target_id}", tag = "tokens",
    params(("id" = Uuid, Path), ("target_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_permission(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, target_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_permission(parse_id("id", &id)?, parse_id("target_id", &target_id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
