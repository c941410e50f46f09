//! Connected accounts at OAuth providers (SPEC §3, §7).

use uuid::Uuid;

use super::Timestamp;

/// Who started a connect flow: an admin (who returns to the integrations page) or a person
/// holding a connect link (who is not an admin and ends on a public page of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOrigin {
    Admin,
    ConnectLink,
}

impl FlowOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ConnectLink => "connect_link",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "connect_link" => Some(Self::ConnectLink),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// Tokens work (or a transient refresh failure is being retried).
    Connected,
    /// The grant is dead; a human must re-consent.
    Disconnected,
    /// The provider app itself is misconfigured (e.g. `invalid_client`).
    Error,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "connected" => Some(Self::Connected),
            "disconnected" => Some(Self::Disconnected),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// An account as shown to admins and caches; its tokens stay sealed in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedAccount {
    pub id: Uuid,
    pub provider_type: String,
    pub email: String,
    pub display_name: Option<String>,
    pub token_expires_at: Option<Timestamp>,
    pub token_version: i64,
    pub scopes: String,
    pub status: AccountStatus,
    pub status_message: Option<String>,
    pub last_refreshed_at: Option<Timestamp>,
    pub last_refresh_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
