//! Guard rules per target and the approvals people decide (SPEC §12).

use uuid::Uuid;

use super::Management;
use crate::api_error::ApiError;
use crate::change_feed::ChangeEvent;
use crate::domain::guard::{
    Approval, ApprovalStatus, Decider, Decision, GuardRule, RuleAction, RuleMatch, parse_reason,
};
use crate::domain::validation::ValidationError;
use crate::store::guard::{GuardRulePatch, NewGuardRule};

/// Most approvals one listing returns.
const MAX_APPROVALS_LISTED: u64 = 200;

#[derive(Debug, Clone, Default)]
pub struct GuardRuleInput {
    /// `None`, `"*"` or `"ANY"`: any method.
    pub method: Option<String>,
    pub path_match: String,
    pub path: String,
    pub action: String,
    /// Shown to the agent; a default per action when absent.
    pub reason: Option<String>,
    pub position: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct GuardRulePatchInput {
    /// `Some(None)` sets "any method".
    pub method: Option<Option<String>>,
    pub path_match: Option<String>,
    pub path: Option<String>,
    pub action: Option<String>,
    pub reason: Option<String>,
    pub position: Option<i32>,
}

fn action(text: &str) -> Result<RuleAction, ValidationError> {
    RuleAction::parse(text)
        .ok_or_else(|| ValidationError::new("action", "must be allow, block or approval_required"))
}

fn default_reason(action: RuleAction) -> &'static str {
    match action {
        RuleAction::Allow => "allowed by a guard rule",
        RuleAction::Block => "this request is blocked on this target",
        RuleAction::ApprovalRequired => "this request needs a person's approval",
    }
}

impl Management {
    pub async fn guard_rules(&self, target_id: Uuid) -> Result<Vec<GuardRule>, ApiError> {
        self.store.target(target_id).await?;
        Ok(self.store.guard_rules(target_id).await?)
    }

    pub async fn create_guard_rule(
        &self,
        target_id: Uuid,
        input: GuardRuleInput,
    ) -> Result<GuardRule, ApiError> {
        let matcher = RuleMatch::parse(input.method.as_deref(), &input.path_match, &input.path)?;
        let action = action(&input.action)?;
        let reason = parse_reason(input.reason.as_deref().unwrap_or(default_reason(action)))?;
        self.store.target(target_id).await?;
        let rule = self
            .store
            .insert_guard_rule(NewGuardRule {
                target_id,
                position: input.position,
                matcher,
                action,
                reason,
            })
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(rule)
    }

    pub async fn update_guard_rule(
        &self,
        target_id: Uuid,
        rule_id: Uuid,
        input: GuardRulePatchInput,
    ) -> Result<GuardRule, ApiError> {
        let current = self
            .store
            .guard_rules(target_id)
            .await?
            .into_iter()
            .find(|r| r.id == rule_id)
            .ok_or(ApiError::NotFound("guard rule"))?;
        let matcher =
            if input.method.is_some() || input.path_match.is_some() || input.path.is_some() {
                let method = match input.method {
                    Some(method) => method,
                    None => current.matcher.method.map(|m| m.as_str().to_owned()),
                };
                let path_match = input
                    .path_match
                    .unwrap_or_else(|| current.matcher.path_match.as_str().to_owned());
                let path = input.path.unwrap_or(current.matcher.path);
                Some(RuleMatch::parse(method.as_deref(), &path_match, &path)?)
            } else {
                None
            };
        let patch = GuardRulePatch {
            position: input.position,
            matcher,
            action: input.action.as_deref().map(action).transpose()?,
            reason: input.reason.as_deref().map(parse_reason).transpose()?,
        };
        let rule = self
            .store
            .update_guard_rule(target_id, rule_id, patch)
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(rule)
    }

    pub async fn delete_guard_rule(&self, target_id: Uuid, rule_id: Uuid) -> Result<(), ApiError> {
        self.store.delete_guard_rule(target_id, rule_id).await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(())
    }

    /// Approvals newest first, optionally of one status (`pending`, `approved`, …).
    pub async fn approvals(&self, status: Option<&str>) -> Result<Vec<Approval>, ApiError> {
        let status = status
            .map(|text| {
                ApprovalStatus::parse(text).ok_or_else(|| {
                    ValidationError::new(
                        "status",
                        "must be pending, approved, denied, used or expired",
                    )
                })
            })
            .transpose()?;
        Ok(self
            .store
            .list_approvals(status, MAX_APPROVALS_LISTED)
            .await?)
    }

    pub async fn approval(&self, id: Uuid) -> Result<Approval, ApiError> {
        Ok(self.store.approval(id).await?)
    }

    /// The page where a person decides `id`.
    pub fn approval_url(&self, id: Uuid) -> String {
        self.approvals.url(id)
    }

    /// A person's decision. An approval that is no longer pending is a 409 naming its state.
    pub async fn decide_approval(
        &self,
        id: Uuid,
        decision: Decision,
        decided_by: &str,
    ) -> Result<Approval, ApiError> {
        match self
            .approvals
            .decide(id, decision, decided_by, Decider::Admin)
            .await?
        {
            Some(approval) => Ok(approval),
            None => {
                let approval = self.store.approval(id).await?;
                Err(ApiError::ApprovalClosed(
                    approval.effective_status(chrono::Utc::now()).as_str(),
                ))
            }
        }
    }
}
