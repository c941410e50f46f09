//! `/api/targets` and `/api/targets/{id}/auth-methods`.

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
use crate::domain::accounts::ConnectedAccount;
use crate::domain::targets::AuthMethod;
use crate::manage::{NewTargetInput, TargetPatchInput, TargetSummary, parse_id};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    #[serde(default)]
    name: String,
    #[serde(default)]
    base_url: String,
    slug: Option<String>,
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTarget {
    name: Option<String>,
    base_url: Option<String>,
    enabled: Option<bool>,
    /// The built-in guard rules on or off (SPEC §12); also accepted on managed targets.
    guard_defaults: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetBody {
    id: Uuid,
    name: String,
    slug: String,
    base_url: String,
    enabled: bool,
    managed: bool,
    connected_account_id: Option<Uuid>,
    /// `mail` or `calendar` for managed targets.
    capability: Option<String>,
    auth_method_count: u64,
    /// Whether the built-in guard rules apply (SPEC §12).
    guard_defaults: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManagingAccount {
    id: Uuid,
    provider: String,
    email: String,
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetDetailBody {
    #[serde(flatten)]
    target: TargetBody,
    /// The connected account that manages this target, or null.
    account: Option<ManagingAccount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    targets: Vec<TargetBody>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAuthMethod {
    #[serde(default)]
    label: String,
    #[serde(rename = "type", default)]
    kind: String,
    /// A string, or for `custom_header` / `oauth2_refresh_token` a JSON value (or a string holding one).
    #[schema(value_type = Object)]
    #[serde(default)]
    credential: serde_json::Value,
    is_default: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchAuthMethod {
    label: Option<String>,
    #[schema(value_type = Option<Object>)]
    credential: Option<serde_json::Value>,
    is_default: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthMethodBody {
    id: Uuid,
    target_id: Uuid,
    label: String,
    #[serde(rename = "type")]
    kind: String,
    credential_hint: String,
    is_default: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthMethodList {
    auth_methods: Vec<AuthMethodBody>,
}

impl From<TargetSummary> for TargetBody {
    fn from(summary: TargetSummary) -> Self {
        let target = summary.target;
        Self {
            id: target.id,
            managed: target.is_managed(),
            name: target.name,
            slug: target.slug.as_str().to_owned(),
            base_url: target.base_url.to_string(),
            enabled: target.enabled,
            connected_account_id: target.connected_account_id,
            capability: target.capability.map(|c| c.as_str().to_owned()),
            auth_method_count: summary.auth_method_count,
            guard_defaults: target.guard_defaults,
            created_at: target.created_at,
            updated_at: target.updated_at,
        }
    }
}

impl From<ConnectedAccount> for ManagingAccount {
    fn from(account: ConnectedAccount) -> Self {
        Self {
            id: account.id,
            provider: account.provider_type,
            email: account.email,
            status: account.status.as_str().to_owned(),
        }
    }
}

impl From<AuthMethod> for AuthMethodBody {
    fn from(method: AuthMethod) -> Self {
        Self {
            id: method.id,
            target_id: method.target_id,
            label: method.label,
            kind: method.kind.as_str().to_owned(),
            credential_hint: method.credential_hint,
            is_default: method.is_default,
            created_at: method.created_at,
            updated_at: method.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/targets", tag = "targets",
    responses((status = 200, body = TargetList), (status = 401, body = ErrorBody)))]
pub async fn list_targets(
    _: Admin,
    State(state): State<Arc<AdminState>>,
) -> Result<Json<TargetList>, ApiError> {
    let targets = state.management.list_targets().await?;
    Ok(Json(TargetList {
        targets: targets.into_iter().map(TargetBody::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/targets", tag = "targets", request_body = CreateTarget,
    responses((status = 201, body = TargetBody), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_target(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateTarget>,
) -> Result<(StatusCode, Json<TargetBody>), ApiError> {
    let summary = state
        .management
        .create_target(NewTargetInput {
            name: body.name,
            base_url: body.base_url,
            slug: body.slug,
            enabled: body.enabled,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(summary.into())))
}

#[utoipa::path(get, path = "/api/targets/{id}", tag = "targets",
    params(("id" = String, Path, description = "target id or slug")),
    responses((status = 200, body = TargetDetailBody), (status = 404, body = ErrorBody)))]
pub async fn get_target(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(key): Path<String>,
) -> Result<Json<TargetDetailBody>, ApiError> {
    let detail = state.management.target(&key).await?;
    Ok(Json(TargetDetailBody {
        target: detail.summary.into(),
        account: detail.account.map(ManagingAccount::from),
    }))
}

#[utoipa::path(patch, path = "/api/targets/{id}", tag = "targets", request_body = PatchTarget,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TargetBody), (status = 409, body = ErrorBody)))]
pub async fn patch_target(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchTarget>,
) -> Result<Json<TargetBody>, ApiError> {
    let id = parse_id("id", &id)?;
    let summary = state
        .management
        .update_target(
            id,
            TargetPatchInput {
                name: body.name,
                base_url: body.base_url,
                enabled: body.enabled,
                guard_defaults: body.guard_defaults,
            },
        )
        .await?;
    Ok(Json(summary.into()))
}

#[utoipa::path(delete, path = "/api/targets/{id}", tag = "targets", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_target(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.management.delete_target(parse_id("id", &id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/targets/{id}/auth-methods", tag = "targets", params(("id" = Uuid, Path)),
    responses((status = 200, body = AuthMethodList), (status = 404, body = ErrorBody)))]
pub async fn list_auth_methods(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<AuthMethodList>, ApiError> {
    let methods = state.management.auth_methods(parse_id("id", &id)?).await?;
    Ok(Json(AuthMethodList {
        auth_methods: methods.into_iter().map(AuthMethodBody::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/targets/{id}/auth-methods", tag = "targets", request_body = CreateAuthMethod,
    params(("id" = Uuid, Path)),
    responses((status = 201, body = AuthMethodBody), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_auth_method(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateAuthMethod>,
) -> Result<(StatusCode, Json<AuthMethodBody>), ApiError> {
    let method = state
        .management
        .create_auth_method(
            parse_id("id", &id)?,
            &body.label,
            &body.kind,
            &body.credential,
            body.is_default,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(method.into())))
}

#[utoipa::path(patch, path = "/api/targets/{id}/auth-methods/{method_id}", tag = "targets",
    request_body = PatchAuthMethod, params(("id" = Uuid, Path), ("method_id" = Uuid, Path)),
    responses((status = 200, body = AuthMethodBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn patch_auth_method(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, method_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PatchAuthMethod>,
) -> Result<Json<AuthMethodBody>, ApiError> {
    let method = state
        .management
        .update_auth_method(
            parse_id("id", &id)?,
            parse_id("method_id", &method_id)?,
            body.label.as_deref(),
            body.credential.as_ref(),
            body.is_default,
        )
        .await?;
    Ok(Json(method.into()))
}

#[utoipa::path(delete, path = "/api/targets/{id}/auth-methods/{method_id}", tag = "targets",
    params(("id" = Uuid, Path), ("method_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_auth_method(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, method_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_auth_method(parse_id("id", &id)?, parse_id("method_id", &method_id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
