//! Audit rows: one per proxied request that reached the target check (SPEC §4 step 9).

use uuid::Uuid;

use super::Timestamp;

/// What the proxy records about one request. Never holds a query string or a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub token_id: Option<Uuid>,
    pub token_name: String,
    pub target_id: Option<Uuid>,
    pub target_slug: String,
    pub method: String,
    pub path: String,
    pub status_code: u16,
    pub client_ip: String,
    pub duration_ms: u64,
    pub upstream_ms: Option<u64>,
    pub error: Option<String>,
    /// Which agent-facing interface carried the call.
    pub interface: Interface,
    /// What a guard rule did to the request (SPEC §12); `None` when no rule matched.
    pub guard_action: Option<crate::domain::guard::GuardOutcome>,
    /// Who approved it, when it passed on an approval.
    pub approved_by: Option<String>,
    pub created_at: Timestamp,
}

/// The agent-facing interface a request came through (SPEC §4a): raw HTTP on `/gateway`, or an
/// MCP `api_request` tool call on `/mcp`. Both run the one gateway pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interface {
    Gateway,
    Mcp,
}

impl Interface {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Mcp => "mcp",
        }
    }

    /// The stored text form; anything else is not an interface.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "gateway" => Some(Self::Gateway),
            "mcp" => Some(Self::Mcp),
            _ => None,
        }
    }
}

/// Filters for the newest-first audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub token_id: Option<Uuid>,
    pub target_slug: Option<String>,
    pub status_code: Option<u16>,
    /// Only rows strictly older than this cursor.
    pub before: Option<AuditCursor>,
    pub limit: u64,
}

/// Position in the newest-first order: `(created_at, id)` of the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub created_at: Timestamp,
    pub id: Uuid,
}

impl AuditCursor {
    /// Opaque text form: `{unix micros}_{uuid}`.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('_')?;
        let created_at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Self {
            created_at,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let cursor = AuditCursor {
            created_at: chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(AuditCursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "x_y", "123", "123_notauuid", "_"] {
            assert_eq!(AuditCursor::decode(bad), None, "{bad}");
        }
    }
}
