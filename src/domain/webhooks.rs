//! Webhooks (SPEC §11): event types, the event body, signing secrets, the Standard Webhooks
//! signature and the retry schedule. Pure rules; the outbox lives in `store::webhooks`, the
//! sender in the top-level `webhooks` module.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;
use uuid::Uuid;

use super::Timestamp;
use super::accounts::ConnectedAccount;
use super::tokens::AgentTokenRecord;

/// What happened. `webhook.test` is sent only by `POST /api/webhooks/{id}/test` and cannot be
/// subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    AccountDisconnected,
    AccountError,
    AccountReconnected,
    AccountRefreshFailing,
    TokenRevoked,
    TokenRateLimited,
    ApprovalRequested,
    Test,
}

impl EventType {
    /// Every type an endpoint may subscribe to.
    pub const SUBSCRIBABLE: [Self; 7] = [
        Self::AccountDisconnected,
        Self::AccountError,
        Self::AccountReconnected,
        Self::AccountRefreshFailing,
        Self::TokenRevoked,
        Self::TokenRateLimited,
        Self::ApprovalRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountDisconnected => "account.disconnected",
            Self::AccountError => "account.error",
            Self::AccountReconnected => "account.reconnected",
            Self::AccountRefreshFailing => "account.refresh_failing",
            Self::TokenRevoked => "token.revoked",
            Self::TokenRateLimited => "token.rate_limited",
            Self::ApprovalRequested => "approval.requested",
            Self::Test => "webhook.test",
        }
    }

    /// A subscribable type by name (`webhook.test` is not one).
    pub fn parse_subscribable(text: &str) -> Option<Self> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == text)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_subscribable(text).or((text == "webhook.test").then_some(Self::Test))
    }
}

/// Why a token stopped working, in `token.revoked`'s `data.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRevocation {
    Revoked,
    Deleted,
}

impl TokenRevocation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Deleted => "deleted",
        }
    }
}

/// One event, fanned out to every enabled endpoint subscribed to its type. `id` is the
/// `webhook-id` of every delivery of it (receivers deduplicate on it).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: Uuid,
    pub kind: EventType,
    pub timestamp: Timestamp,
    /// Never holds a secret: ids, names, emails, statuses.
    pub data: Value,
}

impl WebhookEvent {
    fn new(kind: EventType, data: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            timestamp: chrono::Utc::now(),
            data,
        }
    }

    /// An `account.*` event with the account as it is now.
    pub fn account(kind: EventType, account: &ConnectedAccount) -> Self {
        Self::new(
            kind,
            json!({
                "account": {
                    "id": account.id,
                    "provider": account.provider_type,
                    "email": account.email,
                    "status": account.status.as_str(),
                    "status_message": account.status_message,
                }
            }),
        )
    }

    /// `account.reconnected`: the account after the connect flow, and its status before.
    pub fn reconnected(account: &ConnectedAccount, previous_status: &str) -> Self {
        let mut event = Self::account(EventType::AccountReconnected, account);
        event.data["previous_status"] = json!(previous_status);
        event
    }

    /// `account.refresh_failing`: the account is still `connected`; `since` is the first
    /// failure of the run and `last_error` the latest.
    pub fn refresh_failing(account: &ConnectedAccount, since: Timestamp) -> Self {
        let mut event = Self::account(EventType::AccountRefreshFailing, account);
        event.data["failing_since"] = json!(since);
        event.data["last_error"] = json!(account.last_refresh_error);
        event
    }

    pub fn token_revoked(token: &AgentTokenRecord, reason: TokenRevocation) -> Self {
        Self::new(
            EventType::TokenRevoked,
            json!({
                "token": { "id": token.id, "name": token.name },
                "reason": reason.as_str(),
            }),
        )
    }

    /// `token.rate_limited` (the rate limiter emits it at most once per token per hour).
    pub fn token_rate_limited(token_id: Uuid, token_name: &str, limit_per_minute: u32) -> Self {
        Self::new(
            EventType::TokenRateLimited,
            json!({
                "token": { "id": token_id, "name": token_name },
                "rate_limit": limit_per_minute,
            }),
        )
    }

    /// `approval.requested`: what is asked and where a person decides. The body preview is
    /// left out (it is the agent's data; the approval page shows it to an admin).
    pub fn approval_requested(approval: &crate::domain::guard::Approval, url: &str) -> Self {
        Self::new(
            EventType::ApprovalRequested,
            json!({
                "approval": {
                    "id": approval.id,
                    "url": url,
                    "expires_at": approval.expires_at,
                    "reason": approval.reason,
                    "method": approval.request.method,
                    "path": approval.request.path,
                },
                "token": { "id": approval.request.token_id, "name": approval.token_name },
                "target": { "id": approval.request.target_id, "slug": approval.target_slug },
            }),
        )
    }

    /// `webhook.test`, sent to one endpoint on request.
    pub fn test(endpoint_id: Uuid) -> Self {
        Self::new(EventType::Test, json!({ "endpoint_id": endpoint_id }))
    }

    /// The JSON body `{type, timestamp, data}`: the exact bytes signed and sent.
    pub fn body(&self) -> String {
        json!({
            "type": self.kind.as_str(),
            "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
        .to_string()
    }
}

/// A signing secret: random bytes, shown once as `whsec_` + base64 (Standard Webhooks).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_…`, for the one response that shows it.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.0))
    }

    /// `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn signature(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(format!("{message_id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A receiver of events.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub url: Url,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl WebhookEndpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.enabled && self.events.contains(&kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub attempted_at: Timestamp,
}

/// How an attempt ended, as the dispatcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Any other status.
    Rejected { status: u16 },
    /// No answer: refused address, connect error, timeout.
    Failed { error: String },
}

/// Waits between attempts, as multiples of `base` (5 s in production): 5 s, 30 s, 2 min,
/// 10 min, 1 h, 2 h, 4 h, 8 h, 8 h — ten attempts spread over 23.2 hours, then `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub base: Duration,
}

const RETRY_MULTIPLES: [u32; 9] = [1, 6, 24, 120, 720, 1440, 2880, 5760, 5760];

impl RetrySchedule {
    /// How many attempts a delivery gets in all.
    pub const ATTEMPTS: u32 = RETRY_MULTIPLES.len() as u32 + 1;

    /// The wait after the `attempt`-th failed attempt (1-based), or `None` when it was the last.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        RETRY_MULTIPLES
            .get(index)
            .map(|m| self.base.saturating_mul(*m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_matches_the_spec_and_ends_within_24_hours() {
        let schedule = RetrySchedule {
            base: Duration::from_secs(5),
        };
        let delays: Vec<u64> = (1..RetrySchedule::ATTEMPTS)
            .map(|n| schedule.delay_after(n).unwrap().as_secs())
            .collect();
        assert_eq!(&delays[..5], &[5, 30, 120, 600, 3600]);
        assert!(delays.iter().sum::<u64>() < 24 * 3600);
        assert_eq!(schedule.delay_after(RetrySchedule::ATTEMPTS), None);
        assert_eq!(schedule.delay_after(0), None);
    }

    #[test]
    fn signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret =
            WebhookSecret::from_bytes(STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(secret.expose().starts_with("whsec_"));
        assert!(!format!("{secret:?}").contains(&STANDARD.encode(secret.bytes())));
    }

    #[test]
    fn event_names_round_trip_and_test_is_not_subscribable() {
        for kind in EventType::SUBSCRIBABLE {
            assert_eq!(EventType::parse_subscribable(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse_subscribable("webhook.test"), None);
        assert_eq!(EventType::parse("webhook.test"), Some(EventType::Test));
    }
}
