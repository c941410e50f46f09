//! `/api/audit-logs`: newest first, filtered, cursor-paginated.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Admin;
use super::{AdminState, ErrorBody};
use crate::api_error::ApiError;
use crate::domain::audit::{AuditCursor, AuditEntry, AuditQuery};
use crate::domain::validation::ValidationError;
use crate::manage::parse_id;

const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryBody {
    id: Uuid,
    token_id: Option<Uuid>,
    token_name: String,
    target_id: Option<Uuid>,
    target_slug: String,
    method: String,
    /// The request path without its query string.
    path: String,
    status_code: u16,
    client_ip: String,
    duration_ms: u64,
    upstream_ms: Option<u64>,
    /// A short error code, or null.
    error: Option<String>,
    /// `gateway` (raw HTTP) or `mcp` (an `api_request` tool call).
    interface: &'static str,
    /// What a guard rule did (SPEC §12): `allow`, `block`, `approval_required`, `approved`,
    /// `denied`; null when no rule matched.
    guard_action: Option<&'static str>,
    /// Who approved the request, for `approved`.
    approved_by: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntryBody>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<String>,
}

impl From<AuditEntry> for AuditEntryBody {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            token_id: entry.token_id,
            token_name: entry.token_name,
            target_id: entry.target_id,
            target_slug: entry.target_slug,
            method: entry.method,
            path: entry.path,
            status_code: entry.status_code,
            client_ip: entry.client_ip,
            duration_ms: entry.duration_ms,
            upstream_ms: entry.upstream_ms,
            error: entry.error,
            interface: entry.interface.as_str(),
            guard_action: entry.guard_action.map(|g| g.as_str()),
            approved_by: entry.approved_by,
            created_at: entry.created_at,
        }
    }
}

/// Parse the query by hand so each bad parameter is named (and unknown ones refused).
fn audit_query(raw: Option<&str>) -> Result<AuditQuery, ValidationError> {
    let mut query = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.as_ref();
        match name.as_ref() {
            "token_id" => query.token_id = Some(parse_id("token_id", value)?),
            "target" => query.target_slug = Some(value.to_owned()),
            "status" => {
                let status = value
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s));
                query.status_code = Some(status.ok_or_else(|| {
                    ValidationError::new("status", "must be an HTTP status code")
                })?);
            }
            "before" => {
                let cursor = AuditCursor::decode(value);
                query.before = Some(cursor.ok_or_else(|| {
                    ValidationError::new("before", "must be a next_before cursor")
                })?);
            }
            "limit" => {
                let limit = value
                    .parse::<u64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l));
                query.limit = limit.ok_or_else(|| {
                    ValidationError::new("limit", format!("must be between 1 and {MAX_LIMIT}"))
                })?;
            }
            other => {
                return Err(ValidationError::new(
                    other.to_owned(),
                    "unknown query parameter",
                ));
            }
        }
    }
    Ok(query)
}

#[utoipa::path(get, path = "/api/audit-logs", tag = "audit",
    params(
        ("token_id" = Option<Uuid>, Query, description = "only this token"),
        ("target" = Option<String>, Query, description = "only this target slug"),
        ("status" = Option<u16>, Query, description = "only this status code"),
        ("before" = Option<String>, Query, description = "cursor from next_before"),
        ("limit" = Option<u64>, Query, description = "1 to 500, default 50"),
    ),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
pub async fn list_audit_logs(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let query = audit_query(raw.as_deref())?;
    let (entries, next) = state.management.audit_page(&query).await?;
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(AuditEntryBody::from).collect(),
        next_before: next.map(|cursor| cursor.encode()),
    }))
}
