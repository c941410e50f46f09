//! May this caller use this target? SPEC §4 steps 1–4, in that order, answered from an
//! in-memory snapshot (no database read on the hot path).

pub mod discovery;
pub mod reload;
mod snapshot;

pub use snapshot::{AccountRef, Injection, Snapshot, SnapshotSource, TargetEntry, TokenEntry};

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::domain::tokens::AgentToken;

/// Why access was refused. Variants name the condition; `api_error` maps them to statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("missing token")]
    MissingToken,
    #[error("malformed token")]
    MalformedToken,
    #[error("unknown token")]
    UnknownToken,
    #[error("revoked token")]
    RevokedToken,
    #[error("ip not allowed")]
    IpNotAllowed,
    #[error("target not found")]
    TargetNotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("read-only access")]
    ReadOnly,
}

impl AccessError {
    /// Label for `gatehouse_auth_failures_total{reason}` (steps 1–2 only).
    pub fn auth_failure_reason(self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some("missing"),
            Self::MalformedToken => Some("malformed"),
            Self::UnknownToken => Some("unknown"),
            Self::RevokedToken => Some("revoked"),
            Self::IpNotAllowed => Some("ip_not_allowed"),
            Self::TargetNotFound | Self::Forbidden | Self::ReadOnly => None,
        }
    }

    /// Short code for the audit row's `error` column.
    pub fn audit_code(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::UnknownToken => "unknown_token",
            Self::RevokedToken => "revoked_token",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::TargetNotFound => "target_not_found",
            Self::Forbidden => "forbidden",
            Self::ReadOnly => "read_only",
        }
    }
}

/// A token that passed steps 1–2, with the snapshot it was checked against (steps 3–4 use the
/// same one: one consistent view, one lock per request).
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Arc<TokenEntry>,
    snapshot: Arc<Snapshot>,
}

/// A caller allowed on a target (steps 1–4 passed).
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: Arc<TokenEntry>,
    pub target: Arc<TargetEntry>,
}

/// The current snapshot behind a lock held only long enough to clone an `Arc`.
pub struct AccessControl {
    current: RwLock<Arc<Snapshot>>,
}

impl AccessControl {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self.current.write() = Arc::new(snapshot);
    }

    /// Steps 1–2: the bearer token from an `Authorization` header value, and the client IP.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        client_ip: IpAddr,
    ) -> Result<Caller, AccessError> {
        let snapshot = self.snapshot();
        let value = authorization.ok_or(AccessError::MissingToken)?;
        let value = std::str::from_utf8(value).map_err(|_| AccessError::MalformedToken)?;
        let (scheme, credentials) = value
            .trim()
            .split_once(' ')
            .ok_or(AccessError::MalformedToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AccessError::MalformedToken);
        }
        let token = AgentToken::parse(credentials.trim()).ok_or(AccessError::MalformedToken)?;
        let entry = snapshot
            .token(&token.hash())
            .ok_or(AccessError::UnknownToken)?;
        if entry.revoked {
            return Err(AccessError::RevokedToken);
        }
        if !entry.allowed_ips.allows(client_ip) {
            return Err(AccessError::IpNotAllowed);
        }
        Ok(Caller {
            token: entry,
            snapshot,
        })
    }

    /// Steps 3–4 for an authenticated caller.
    pub fn authorize(
        &self,
        caller: &Caller,
        slug: &str,
        method: &http::Method,
    ) -> Result<Grant, AccessError> {
        let snapshot = &caller.snapshot;
        let target = snapshot
            .target(slug)
            .filter(|t| t.target.enabled)
            .ok_or(AccessError::TargetNotFound)?;
        let read_only = snapshot
            .permission(caller.token.id, target.target.id)
            .ok_or(AccessError::Forbidden)?;
        if read_only
            && !matches!(
                *method,
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            )
        {
            return Err(AccessError::ReadOnly);
        }
        Ok(Grant {
            token: caller.token.clone(),
            target,
        })
    }

    /// The enabled targets a caller may use, for `/discovery`.
    pub fn visible_targets(&self, caller: &Caller) -> Vec<Arc<TargetEntry>> {
        caller.snapshot.targets_of(caller.token.id)
    }
}
