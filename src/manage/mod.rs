//! Management services: the rules of SPEC §5 over the store, shared by the admin API, the CLI
//! and (later) the web UI, so each rule lives in one place. They take and return domain types;
//! every successful write publishes a `ChangeEvent`.

mod guard;
mod targets;
mod tokens;
mod webhooks;

pub use guard::{GuardRuleInput, GuardRulePatchInput};
pub use targets::{NewTargetInput, TargetDetail, TargetPatchInput, TargetSummary};
pub use tokens::{PermissionView, TokenChanges};
pub use webhooks::WebhookPatchInput;

use std::sync::Arc;

use uuid::Uuid;

use crate::api_error::ApiError;
use crate::change_feed::ChangeFeed;
use crate::crypto::SecretBox;
use crate::domain::audit::{AuditCursor, AuditEntry, AuditQuery};
use crate::domain::stats::{AccountSummary, Stats, StatsWindow};
use crate::domain::validation::ValidationError;
use crate::egress::EgressPolicy;
use crate::guard::Approvals;
use crate::store::Store;

/// Longest name accepted for targets, tokens and auth-method labels.
const MAX_NAME_CHARS: usize = 200;

#[derive(Clone)]
pub struct Management {
    store: Store,
    secrets: Arc<SecretBox>,
    egress: EgressPolicy,
    changes: ChangeFeed,
    approvals: Approvals,
}

impl Management {
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        egress: EgressPolicy,
        changes: ChangeFeed,
        approvals: Approvals,
    ) -> Self {
        Self {
            store,
            secrets,
            egress,
            changes,
            approvals,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Newest-first audit rows and the cursor of the next page.
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<AuditCursor>), ApiError> {
        Ok(self.store.audit_page(query).await?)
    }

    /// What the overview draws for `window`, from the shared database (the same numbers on
    /// every replica): the window's rollups and the accounts as they are now.
    pub async fn stats(&self, window: StatsWindow) -> Result<Stats, ApiError> {
        let range = window.range(chrono::Utc::now());
        let sums = self.store.window_sums(&range).await?;
        let accounts = self.store.list_connected_accounts().await?;
        Ok(Stats::assemble(
            window,
            range,
            sums,
            AccountSummary::of(&accounts),
        ))
    }
}

/// A trimmed, non-empty name of at most `MAX_NAME_CHARS` characters without control characters.
fn valid_name(field: &str, name: &str) -> Result<String, ValidationError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A path id that must be a UUID.
pub fn parse_id(field: &str, text: &str) -> Result<Uuid, ValidationError> {
    Uuid::parse_str(text).map_err(|_| ValidationError::new(field, "must be a UUID"))
}
