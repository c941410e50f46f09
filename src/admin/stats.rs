//! `GET /api/stats?window=1h|24h|7d`: what the overview page draws, as JSON.

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
use crate::domain::stats::{
    AccountSummary, InterfaceCounts, Stats, StatsWindow, StatusCounts, TrafficStats,
};
use crate::domain::validation::ValidationError;

/// Requests by status class.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    #[serde(rename = "2xx")]
    success: u64,
    #[serde(rename = "3xx")]
    redirect: u64,
    #[serde(rename = "4xx")]
    client_error: u64,
    #[serde(rename = "5xx")]
    server_error: u64,
    /// Anything outside 2xx–5xx.
    other: u64,
}

impl From<StatusCounts> for StatusBody {
    fn from(s: StatusCounts) -> Self {
        Self {
            success: s.success,
            redirect: s.redirect,
            client_error: s.client_error,
            server_error: s.server_error,
            other: s.other,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InterfacesBody {
    gateway: u64,
    mcp: u64,
}

impl From<InterfaceCounts> for InterfacesBody {
    fn from(i: InterfaceCounts) -> Self {
        Self {
            gateway: i.gateway,
            mcp: i.mcp,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPointBody {
    /// Start of the bucket; it lasts `bucket_seconds`.
    start: DateTime<Utc>,
    status: StatusBody,
}

/// Traffic of one target, or of all of them (`totals`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficBody {
    /// The target's slug (`*` in `totals`).
    target: String,
    requests: u64,
    status: StatusBody,
    /// 5xx answers over all answers.
    error_ratio: f64,
    /// Estimated from a latency histogram (bucket edges 1, 2, 5, 10, 25 … 60 000 ms).
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    /// Upstream time over the whole request time, 0–1.
    upstream_share: Option<f64>,
    interfaces: InterfacesBody,
}

impl From<TrafficStats> for TrafficBody {
    fn from(t: TrafficStats) -> Self {
        Self {
            target: t.target_slug,
            requests: t.requests,
            status: t.status.into(),
            error_ratio: t.error_ratio,
            p50_ms: t.p50_ms,
            p95_ms: t.p95_ms,
            upstream_share: t.upstream_share,
            interfaces: t.interfaces.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenUsageBody {
    token_id: Uuid,
    name: String,
    requests: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshBody {
    provider: String,
    /// `success`, `invalid_grant` or `transient` (as the metric's label).
    outcome: String,
    count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttentionBody {
    id: Uuid,
    provider: String,
    email: String,
    status: &'static str,
    /// The status message, or a still-connected account's last refresh error.
    problem: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountsBody {
    connected: u64,
    disconnected: u64,
    error: u64,
    /// Accounts a person must look at: disconnected or in error first, then connected ones
    /// whose last refresh failed.
    needs_attention: Vec<AttentionBody>,
}

impl From<AccountSummary> for AccountsBody {
    fn from(a: AccountSummary) -> Self {
        Self {
            connected: a.connected,
            disconnected: a.disconnected,
            error: a.error,
            needs_attention: a
                .needs_attention
                .into_iter()
                .map(|n| AttentionBody {
                    id: n.id,
                    provider: n.provider,
                    email: n.email,
                    status: n.status.as_str(),
                    problem: n.problem,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    /// `1h`, `24h` or `7d`.
    window: &'static str,
    /// The window is `[from, to)`; its last bucket holds the current time.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    /// Requests per time bucket by status class, oldest first.
    series: Vec<SeriesPointBody>,
    totals: TrafficBody,
    /// Per target, most requests first.
    targets: Vec<TrafficBody>,
    /// The ten tokens with the most requests.
    top_tokens: Vec<TokenUsageBody>,
    /// Refreshes of connected-account and OAuth auth-method tokens in the window.
    token_refresh: Vec<RefreshBody>,
    /// Accounts by status now (not over the window).
    accounts: AccountsBody,
    /// Audit events dropped in the window (queue full), summed over all replicas.
    audit_dropped: u64,
}

impl From<Stats> for StatsBody {
    fn from(s: Stats) -> Self {
        Self {
            window: s.window.as_str(),
            from: s.from,
            to: s.to,
            bucket_seconds: s.bucket_seconds,
            series: s
                .series
                .into_iter()
                .map(|p| SeriesPointBody {
                    start: p.start,
                    status: p.status.into(),
                })
                .collect(),
            totals: s.totals.into(),
            targets: s.targets.into_iter().map(TrafficBody::from).collect(),
            top_tokens: s
                .top_tokens
                .into_iter()
                .map(|t| TokenUsageBody {
                    token_id: t.token_id,
                    name: t.name,
                    requests: t.requests,
                })
                .collect(),
            token_refresh: s
                .token_refresh
                .into_iter()
                .map(|r| RefreshBody {
                    provider: r.provider,
                    outcome: r.outcome,
                    count: r.count,
                })
                .collect(),
            accounts: s.accounts.into(),
            audit_dropped: s.audit_dropped,
        }
    }
}

/// `window` (default `1h`); anything else is refused by name.
pub fn parse_window(raw: Option<&str>) -> Result<StatsWindow, ValidationError> {
    let mut window = StatsWindow::Hour;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "window" => {
                window = StatsWindow::parse(&value)
                    .ok_or_else(|| ValidationError::new("window", "must be one of 1h, 24h, 7d"))?;
            }
            other => {
                return Err(ValidationError::new(
                    other.to_owned(),
                    "unknown query parameter",
                ));
            }
        }
    }
    Ok(window)
}

#[utoipa::path(get, path = "/api/stats", tag = "audit",
    params(("window" = Option<String>, Query, description = "1h (default), 24h or 7d")),
    responses((status = 200, body = StatsBody), (status = 400, body = ErrorBody)))]
pub async fn get_stats(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<StatsBody>, ApiError> {
    let window = parse_window(raw.as_deref())?;
    Ok(Json(state.management.stats(window).await?.into()))
}
