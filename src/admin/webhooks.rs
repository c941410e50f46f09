//! `/api/webhooks`: endpoints, the test event and the delivery log (SPEC §5, §11).

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
use crate::domain::validation::ValidationError;
use crate::domain::webhooks::{Delivery, DeliveryAttempt, WebhookEndpoint, WebhookSecret};
use crate::manage::{WebhookPatchInput, parse_id};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[serde(default)]
    url: String,
    /// Event types: account.disconnected, account.error, account.reconnected,
    /// account.refresh_failing, token.revoked, token.rate_limited.
    #[serde(default)]
    events: Vec<String>,
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// An empty string clears it.
    description: Option<String>,
    /// A disabled endpoint gets no new events.
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    id: Uuid,
    url: String,
    events: Vec<&'static str>,
    description: Option<String>,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An endpoint with its signing secret, returned only by create.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewWebhookBody {
    #[serde(flatten)]
    endpoint: WebhookBody,
    /// `whsec_` + base64 of the key bytes, shown this once.
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestEventBody {
    /// The `webhook-id` the test delivery carries.
    event_id: Uuid,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    attempt: u32,
    /// The receiver's status, or null when there was no answer (then `error` says why).
    status_code: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
    attempted_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    /// `pending`, `delivered` or `failed`.
    status: &'static str,
    attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    last_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    attempt_log: Vec<AttemptBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryBody>,
}

impl From<WebhookEndpoint> for WebhookBody {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url.to_string(),
            events: endpoint.events.iter().map(|e| e.as_str()).collect(),
            description: endpoint.description,
            enabled: endpoint.enabled,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

impl From<(Delivery, Vec<DeliveryAttempt>)> for DeliveryBody {
    fn from((delivery, attempts): (Delivery, Vec<DeliveryAttempt>)) -> Self {
        let pending = delivery.status == crate::domain::webhooks::DeliveryStatus::Pending;
        Self {
            id: delivery.id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            status: delivery.status.as_str(),
            attempts: delivery.attempts,
            next_attempt_at: pending.then_some(delivery.next_attempt_at),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error,
            last_attempt_at: delivery.last_attempt_at,
            created_at: delivery.created_at,
            attempt_log: attempts
                .into_iter()
                .map(|a| AttemptBody {
                    attempt: a.attempt,
                    status_code: a.status_code,
                    error: a.error,
                    duration_ms: a.duration_ms,
                    attempted_at: a.attempted_at,
                })
                .collect(),
        }
    }
}

fn with_secret((endpoint, secret): (WebhookEndpoint, WebhookSecret)) -> NewWebhookBody {
    NewWebhookBody {
        endpoint: endpoint.into(),
        secret: secret.expose(),
    }
}

#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 401, body = ErrorBody)))]
pub async fn list_webhooks(
    _: Admin,
    State(state): State<Arc<AdminState>>,
) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = state.management.list_webhooks().await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.into_iter().map(WebhookBody::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = NewWebhookBody), (status = 400, body = ErrorBody)))]
pub async fn create_webhook(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<NewWebhookBody>), ApiError> {
    let created = state
        .management
        .create_webhook(&body.url, &body.events, body.description.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(with_secret(created))))
}

#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookBody), (status = 404, body = ErrorBody)))]
pub async fn get_webhook(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookBody>, ApiError> {
    Ok(Json(
        state.management.webhook(parse_id("id", &id)?).await?.into(),
    ))
}

#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", request_body = PatchWebhook,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patch_webhook(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchWebhook>,
) -> Result<Json<WebhookBody>, ApiError> {
    let endpoint = state
        .management
        .update_webhook(
            parse_id("id", &id)?,
            WebhookPatchInput {
                url: body.url,
                events: body.events,
                description: body.description,
                enabled: body.enabled,
            },
        )
        .await?;
    Ok(Json(endpoint.into()))
}

#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_webhook(parse_id("id", &id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 202, body = TestEventBody), (status = 404, body = ErrorBody)))]
pub async fn test_webhook(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TestEventBody>), ApiError> {
    let event = state
        .management
        .send_test_webhook(parse_id("id", &id)?)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestEventBody {
            event_id: event.id,
            kind: event.kind.as_str(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), ("limit" = Option<u64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    _: Admin,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = parse_id("id", &id)?;
    let mut limit = None;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| ValidationError::new("limit", "must be between 1 and 500"))?,
                );
            }
            other => {
                return Err(
                    ValidationError::new(other.to_owned(), "unknown query parameter").into(),
                );
            }
        }
    }
    let deliveries = state.management.webhook_deliveries(id, limit).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(DeliveryBody::from).collect(),
    }))
}
