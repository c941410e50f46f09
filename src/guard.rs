//! Approvals at run time (SPEC §12): opening one for a request a rule held, redeeming one a
//! person approved, and recording decisions. The rules themselves are `domain::guard`; the
//! proxy evaluates them on the snapshot. Any replica can complete any approval: the state is
//! the `approvals` row, changed only by conditional UPDATEs.

use uuid::Uuid;

use crate::domain::Timestamp;
use crate::domain::guard::{Approval, ApprovalStatus, Decider, Decision, GuardedRequest};
use crate::domain::webhooks::WebhookEvent;
use crate::store::guard::NewApproval;
use crate::store::{Store, StoreError};

/// The request header that names an approval on the re-sent request.
pub const APPROVAL_HEADER: &str = "gatehouse-approval";

/// What the agent is told about an approval it must wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalTicket {
    pub id: Uuid,
    /// The admin page where a person decides (login required: the agent has the URL too).
    pub url: String,
    pub expires_at: Timestamp,
}

impl ApprovalTicket {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"id": self.id, "url": self.url, "expires_at": self.expires_at})
    }
}

/// Why a guarded request did not pass.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("blocked by guard rule")]
    Blocked { reason: String },
    #[error("approval required")]
    ApprovalRequired {
        reason: String,
        ticket: ApprovalTicket,
    },
    #[error("approval pending")]
    Pending {
        reason: String,
        ticket: ApprovalTicket,
    },
    #[error("approval denied")]
    Denied { reason: String },
    #[error("approval does not match this request")]
    Mismatch,
    #[error("approval already used")]
    Used,
    #[error("approval expired")]
    Expired,
    #[error("unknown approval")]
    Unknown,
    #[error("a request that needs approval may carry at most 64 KiB of body")]
    BodyTooLarge,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GuardError {
    /// The rule's reason, shown to the agent.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Blocked { reason }
            | Self::ApprovalRequired { reason, .. }
            | Self::Pending { reason, .. }
            | Self::Denied { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn ticket(&self) -> Option<&ApprovalTicket> {
        match self {
            Self::ApprovalRequired { ticket, .. } | Self::Pending { ticket, .. } => Some(ticket),
            _ => None,
        }
    }
}

/// Opens and redeems approvals; shared by both proxy instances and the admin API.
#[derive(Clone)]
pub struct Approvals {
    store: Store,
    /// `{admin.public_url}/ui/approvals/`.
    page_base: url::Url,
    /// `guard.approval_ttl`.
    ttl: std::time::Duration,
}

impl Approvals {
    pub fn new(store: Store, admin_public_url: &url::Url, ttl: std::time::Duration) -> Self {
        let mut page_base = admin_public_url.clone();
        let path = format!(
            "{}/ui/approvals/",
            admin_public_url.path().trim_end_matches('/')
        );
        page_base.set_path(&path);
        Self {
            store,
            page_base,
            ttl,
        }
    }

    /// The page where a person decides `id`.
    pub fn url(&self, id: Uuid) -> String {
        format!("{}{id}", self.page_base)
    }

    fn ticket(&self, approval: &Approval) -> ApprovalTicket {
        ApprovalTicket {
            id: approval.id,
            url: self.url(approval.id),
            expires_at: approval.expires_at,
        }
    }

    /// Open a pending approval for `request` (and queue `approval.requested`).
    pub async fn open(
        &self,
        request: GuardedRequest,
        body_preview: Option<String>,
        reason: String,
    ) -> Result<ApprovalTicket, StoreError> {
        let new = NewApproval {
            request,
            body_preview,
            reason,
        };
        let approval = self
            .store
            .insert_approval(new, self.ttl, |approval| {
                WebhookEvent::approval_requested(approval, &self.url(approval.id))
            })
            .await?;
        Ok(self.ticket(&approval))
    }

    /// Use the approval named `id` for `request`: it passes once, only if a person approved
    /// exactly this request (token, target, method, path, query, body hash) and it has not
    /// expired. Returns who approved it.
    pub async fn redeem(&self, id: &str, request: &GuardedRequest) -> Result<String, GuardError> {
        let id = Uuid::parse_str(id.trim()).map_err(|_| GuardError::Unknown)?;
        let approval = match self.store.approval(id).await {
            Ok(approval) => approval,
            Err(StoreError::NotFound { .. }) => return Err(GuardError::Unknown),
            Err(error) => return Err(error.into()),
        };
        if approval.request.token_id != request.token_id {
            // Another token's approval: no more said than for an id that does not exist.
            return Err(GuardError::Unknown);
        }
        if &approval.request != request {
            return Err(GuardError::Mismatch);
        }
        match approval.effective_status(chrono::Utc::now()) {
            ApprovalStatus::Pending => Err(GuardError::Pending {
                ticket: self.ticket(&approval),
                reason: approval.reason,
            }),
            ApprovalStatus::Denied => Err(GuardError::Denied {
                reason: approval.reason,
            }),
            ApprovalStatus::Used => Err(GuardError::Used),
            ApprovalStatus::Expired => Err(GuardError::Expired),
            ApprovalStatus::Approved => {
                if self.store.redeem_approval(id).await? {
                    Ok(approval.decided_by.unwrap_or_default())
                } else {
                    // Used by a concurrent request, or expired in between.
                    Err(GuardError::Used)
                }
            }
        }
    }

    /// The current state of `id` (for an elicitation that waits on a decision).
    pub async fn status(&self, id: Uuid) -> Result<ApprovalStatus, StoreError> {
        let (status, expires_at) = self.store.approval_state(id).await?;
        Ok(status.at(expires_at, chrono::Utc::now()))
    }

    /// Record a decision on a pending approval. An MCP client may only decide what it was
    /// asked about (`mark_elicited`), for its own token. `Ok(None)`: nothing decided (no longer
    /// pending, or not this decider's to decide).
    pub async fn decide(
        &self,
        id: Uuid,
        decision: Decision,
        decided_by: &str,
        decider: Decider,
    ) -> Result<Option<Approval>, StoreError> {
        self.store
            .decide_approval(id, decision, decided_by, decider)
            .await
    }

    /// The person is about to be asked about `id` through `token_id`'s MCP client. `false`:
    /// not pending any more (or not this token's), so nothing should be asked.
    pub async fn mark_elicited(&self, id: Uuid, token_id: Uuid) -> Result<bool, StoreError> {
        self.store.mark_elicited(id, token_id).await
    }
}
