//! `/api/targets/{id}/guard-rules` and `/api/approvals` (SPEC §12).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Admin;
use super::json::ApiJson;
use super::{AdminState, ErrorBody};
use crate::api_error::ApiError;
use crate::domain::guard::{Approval, Decision, GuardRule};
use crate::domain::validation::ValidationError;
use crate::manage::{GuardRuleInput, GuardRulePatchInput, parse_id};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGuardRule {
    /// An HTTP method, or null / `*` / `ANY` for every method.
    method: Option<String>,
    /// `equals`, `prefix` or `contains`, on the path below the target (percent-decoded,
    /// case-insensitive).
    #[serde(default)]
    path_match: String,
    #[serde(default)]
    path: String,
    /// `allow`, `block` or `approval_required`.
    #[serde(default)]
    action: String,
    /// Shown to the agent; a default per action when absent.
    reason: Option<String>,
    /// Rules run in ascending position, first match wins; absent appends.
    position: Option<i32>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchGuardRule {
    /// Present and null: every method.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    method: Option<Option<String>>,
    path_match: Option<String>,
    path: Option<String>,
    action: Option<String>,
    reason: Option<String>,
    position: Option<i32>,
}

/// `Some(None)` for an explicit null, so "any method" can be set.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GuardRuleBody {
    id: Uuid,
    target_id: Uuid,
    position: i32,
    /// Null: every method.
    method: Option<String>,
    path_match: &'static str,
    path: String,
    action: &'static str,
    reason: String,
    created_at: DateTime<Utc>,
}

impl From<GuardRule> for GuardRuleBody {
    fn from(rule: GuardRule) -> Self {
        Self {
            id: rule.id,
            target_id: rule.target_id,
            position: rule.position,
            method: rule.matcher.method.map(|m| m.as_str().to_owned()),
            path_match: rule.matcher.path_match.as_str(),
            path: rule.matcher.path,
            action: rule.action.as_str(),
            reason: rule.reason,
            created_at: rule.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GuardRuleList {
    /// In evaluation order; the built-in rules (if `guard_defaults`) run after these.
    guard_rules: Vec<GuardRuleBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalBody {
    id: Uuid,
    /// The page where a person decides (admin login required).
    url: String,
    token_id: Uuid,
    token_name: String,
    target_id: Uuid,
    target_slug: String,
    method: String,
    /// The path below the target.
    path: String,
    query: Option<String>,
    body_sha256: String,
    body_size: u64,
    /// The start of a textual body, the target's secrets masked; null for none or binary.
    body_preview: Option<String>,
    reason: String,
    /// `pending`, `approved`, `denied`, `used` or `expired`.
    status: &'static str,
    /// The person was asked through the agent's MCP client (elicitation).
    elicited: bool,
    decided_by: Option<String>,
    decided_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl ApprovalBody {
    fn new(approval: Approval, url: String) -> Self {
        let status = approval.effective_status(Utc::now()).as_str();
        Self {
            id: approval.id,
            url,
            token_id: approval.request.token_id,
            token_name: approval.token_name,
            target_id: approval.request.target_id,
            target_slug: approval.target_slug,
            method: approval.request.method,
            path: approval.request.path,
            query: approval.request.query,
            body_sha256: approval.request.body_sha256,
            body_size: approval.request.body_size,
            body_preview: approval.body_preview,
            reason: approval.reason,
            status,
            elicited: approval.elicited,
            decided_by: approval.decided_by,
            decided_at: approval.decided_at,
            expires_at: approval.expires_at,
            created_at: approval.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    approvals: Vec<ApprovalBody>,
}

#[utoipa::path(get, path = "/api/targets/{id}/guard-rules", tag = "guard",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = GuardRuleList), (status = 404, body = ErrorBody)))]
pub async fn list_guard_rules(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<GuardRuleList>, ApiError> {
    let rules = state.management.guard_rules(parse_id("id", &id)?).await?;
    Ok(Json(GuardRuleList {
        guard_rules: rules.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(post, path = "/api/targets/{id}/guard-rules", tag = "guard",
    params(("id" = Uuid, Path)), request_body = CreateGuardRule,
    responses((status = 201, body = GuardRuleBody), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn create_guard_rule(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateGuardRule>,
) -> Result<(StatusCode, Json<GuardRuleBody>), ApiError> {
    let input = GuardRuleInput {
        method: body.method,
        path_match: body.path_match,
        path: body.path,
        action: body.action,
        reason: body.reason,
        position: body.position,
    };
    let rule = state
        .management
        .create_guard_rule(parse_id("id", &id)?, input)
        .await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

#[utoipa::path(patch, path = "/api/targets/{id}/guard-rules/{rule_id}", tag = "guard",
    params(("id" = Uuid, Path), ("rule_id" = Uuid, Path)), request_body = PatchGuardRule,
    responses((status = 200, body = GuardRuleBody), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn patch_guard_rule(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, rule_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PatchGuardRule>,
) -> Result<Json<GuardRuleBody>, ApiError> {
    let input = GuardRulePatchInput {
        method: body.method,
        path_match: body.path_match,
        path: body.path,
        action: body.action,
        reason: body.reason,
        position: body.position,
    };
    let rule = state
        .management
        .update_guard_rule(parse_id("id", &id)?, parse_id("rule_id", &rule_id)?, input)
        .await?;
    Ok(Json(rule.into()))
}

#[utoipa::path(delete, path = "/api/targets/{id}/guard-rules/{rule_id}", tag = "guard",
    params(("id" = Uuid, Path), ("rule_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_guard_rule(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_guard_rule(parse_id("id", &id)?, parse_id("rule_id", &rule_id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/approvals", tag = "guard",
    params(("status" = Option<String>, Query,
        description = "pending, approved, denied, used or expired; all when absent")),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorBody)))]
pub async fn list_approvals(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ApprovalList>, ApiError> {
    let mut status = None;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "status" => status = Some(value.into_owned()),
            other => {
                return Err(
                    ValidationError::new(other.to_owned(), "unknown query parameter").into(),
                );
            }
        }
    }
    let approvals = state.management.approvals(status.as_deref()).await?;
    Ok(Json(ApprovalList {
        approvals: approvals
            .into_iter()
            .map(|a| {
                let url = state.management.approval_url(a.id);
                ApprovalBody::new(a, url)
            })
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/approvals/{id}", tag = "guard", params(("id" = Uuid, Path)),
    responses((status = 200, body = ApprovalBody), (status = 404, body = ErrorBody)))]
pub async fn get_approval(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    let approval = state.management.approval(parse_id("id", &id)?).await?;
    let url = state.management.approval_url(approval.id);
    Ok(Json(ApprovalBody::new(approval, url)))
}

async fn decide(
    admin: Admin,
    state: &AdminState,
    id: &str,
    decision: Decision,
) -> Result<Json<ApprovalBody>, ApiError> {
    let approval = state
        .management
        .decide_approval(parse_id("id", id)?, decision, &decided_by(&admin.name))
        .await?;
    let url = state.management.approval_url(approval.id);
    Ok(Json(ApprovalBody::new(approval, url)))
}

/// How an admin's decision is recorded in `decided_by` and the audit row's `approved_by`.
pub fn decided_by(admin_name: &str) -> String {
    format!("admin:{admin_name}")
}

#[utoipa::path(post, path = "/api/approvals/{id}/approve", tag = "guard",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ApprovalBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no longer pending")))]
pub async fn approve(
    admin: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    decide(admin, &state, &id, Decision::Approve).await
}

#[utoipa::path(post, path = "/api/approvals/{id}/deny", tag = "guard",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ApprovalBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no longer pending")))]
pub async fn deny(
    admin: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalBody>, ApiError> {
    decide(admin, &state, &id, Decision::Deny).await
}
