//! Webhook endpoints: validation (URL through the egress policy of targets, known event types),
//! the signing secret (generated here, sealed, shown once), the test event and the delivery log.

use url::Url;
use uuid::Uuid;

use super::Management;
use crate::api_error::ApiError;
use crate::crypto::SecretSlot;
use crate::domain::validation::ValidationError;
use crate::domain::webhooks::{
    Delivery, DeliveryAttempt, EventType, WebhookEndpoint, WebhookEvent, WebhookSecret,
};
use crate::store::webhooks::{NewWebhookEndpoint, WebhookEndpointPatch};

const MAX_DESCRIPTION_CHARS: usize = 500;
const MAX_URL_CHARS: usize = 2000;
/// Deliveries shown by default and at most.
pub const DELIVERIES_DEFAULT: u64 = 50;
pub const DELIVERIES_MAX: u64 = 500;

/// Fields of a webhook change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatchInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some("")` clears the description.
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

impl Management {
    /// Create an endpoint; the secret is returned this once and stored only sealed.
    pub async fn create_webhook(
        &self,
        url: &str,
        events: &[String],
        description: Option<&str>,
    ) -> Result<(WebhookEndpoint, WebhookSecret), ApiError> {
        let url = self.webhook_url(url)?;
        let events = valid_events(events)?;
        let description = description.map(valid_description).transpose()?.flatten();
        let id = Uuid::new_v4();
        let secret = WebhookSecret::generate();
        let sealed_secret = self
            .secrets
            .seal(secret.bytes(), SecretSlot::webhook_secret(id));
        let endpoint = self
            .store
            .insert_webhook_endpoint(NewWebhookEndpoint {
                id,
                url,
                events,
                description,
                sealed_secret,
            })
            .await?;
        Ok((endpoint, secret))
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookEndpoint>, ApiError> {
        Ok(self.store.list_webhook_endpoints().await?)
    }

    pub async fn webhook(&self, id: Uuid) -> Result<WebhookEndpoint, ApiError> {
        Ok(self.store.webhook_endpoint(id).await?)
    }

    pub async fn update_webhook(
        &self,
        id: Uuid,
        input: WebhookPatchInput,
    ) -> Result<WebhookEndpoint, ApiError> {
        let patch = WebhookEndpointPatch {
            url: input
                .url
                .as_deref()
                .map(|u| self.webhook_url(u))
                .transpose()?,
            events: input.events.as_deref().map(valid_events).transpose()?,
            description: input
                .description
                .as_deref()
                .map(valid_description)
                .transpose()?,
            enabled: input.enabled,
        };
        Ok(self.store.update_webhook_endpoint(id, patch).await?)
    }

    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), ApiError> {
        Ok(self.store.delete_webhook_endpoint(id).await?)
    }

    /// Queue a `webhook.test` event for this endpoint (whatever it subscribes to); returns it.
    pub async fn send_test_webhook(&self, id: Uuid) -> Result<WebhookEvent, ApiError> {
        let event = WebhookEvent::test(id);
        self.store.enqueue_webhook_for(id, &event).await?;
        Ok(event)
    }

    /// The newest deliveries of an endpoint with their attempts.
    pub async fn webhook_deliveries(
        &self,
        id: Uuid,
        limit: Option<u64>,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, ApiError> {
        let limit = match limit {
            None => DELIVERIES_DEFAULT,
            Some(n) if (1..=DELIVERIES_MAX).contains(&n) => n,
            Some(_) => {
                return Err(ValidationError::new(
                    "limit",
                    format!("must be between 1 and {DELIVERIES_MAX}"),
                )
                .into());
            }
        };
        Ok(self.store.webhook_deliveries(id, limit).await?)
    }

    /// An absolute http(s) URL that the egress policy of targets accepts.
    fn webhook_url(&self, text: &str) -> Result<Url, ValidationError> {
        let text = text.trim();
        if text.chars().count() > MAX_URL_CHARS {
            return Err(ValidationError::new(
                "url",
                format!("must be at most {MAX_URL_CHARS} characters"),
            ));
        }
        let url = Url::parse(text)
            .map_err(|_| ValidationError::new("url", "must be an absolute http(s) URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::new(
                "url",
                "must be an absolute http(s) URL",
            ));
        }
        self.egress
            .check_url(&url)
            .map_err(|e| ValidationError::new("url", e.to_string()))?;
        Ok(url)
    }
}

/// At least one known, subscribable event type; duplicates are folded, order kept.
fn valid_events(names: &[String]) -> Result<Vec<EventType>, ValidationError> {
    if names.is_empty() {
        return Err(ValidationError::new(
            "events",
            "must name at least one event",
        ));
    }
    let mut events = Vec::with_capacity(names.len());
    for name in names {
        let kind = EventType::parse_subscribable(name.trim()).ok_or_else(|| {
            ValidationError::new(
                "events",
                format!(
                    "unknown event {name:?}; known: {}",
                    EventType::SUBSCRIBABLE.map(EventType::as_str).join(", ")
                ),
            )
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    Ok(events)
}

/// A description of at most `MAX_DESCRIPTION_CHARS`; blank means none.
fn valid_description(text: &str) -> Result<Option<String>, ValidationError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ValidationError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ValidationError::new(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(Some(text.to_owned()))
}
