//! Guard rules and approvals (SPEC §12). Deciding and redeeming an approval are conditional
//! UPDATEs on its status, so two replicas (or two people) cannot both win.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use super::entities::approvals::{self, Entity as Approvals};
use super::entities::guard_rules::{self, Entity as GuardRules};
use super::entities::targets::Entity as Targets;
use super::entities::tokens::Entity as Tokens;
use super::{Store, StoreError, now};
use crate::domain::Timestamp;
use crate::domain::guard::{
    Approval, ApprovalStatus, Decider, Decision, GuardRule, GuardedRequest, RuleAction, RuleMatch,
};
use crate::domain::webhooks::WebhookEvent;

const RULE: &str = "guard rule";
const APPROVAL: &str = "approval";

/// A rule to add; `position: None` appends it after the target's last rule.
#[derive(Debug, Clone)]
pub struct NewGuardRule {
    pub target_id: Uuid,
    pub position: Option<i32>,
    pub matcher: RuleMatch,
    pub action: RuleAction,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct GuardRulePatch {
    pub position: Option<i32>,
    pub matcher: Option<RuleMatch>,
    pub action: Option<RuleAction>,
    pub reason: Option<String>,
}

/// An approval to open for a request a rule held.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub request: GuardedRequest,
    pub body_preview: Option<String>,
    pub reason: String,
}

impl Store {
    /// Every rule of every target, in evaluation order (for the access snapshot).
    pub async fn all_guard_rules(&self) -> Result<Vec<GuardRule>, StoreError> {
        GuardRules::find()
            .order_by_asc(guard_rules::Column::TargetId)
            .order_by_asc(guard_rules::Column::Position)
            .order_by_asc(guard_rules::Column::CreatedAt)
            .all(self.conn())
            .await?
            .into_iter()
            .map(rule_from)
            .collect()
    }

    pub async fn guard_rules(&self, target_id: Uuid) -> Result<Vec<GuardRule>, StoreError> {
        GuardRules::find()
            .filter(guard_rules::Column::TargetId.eq(target_id))
            .order_by_asc(guard_rules::Column::Position)
            .order_by_asc(guard_rules::Column::CreatedAt)
            .all(self.conn())
            .await?
            .into_iter()
            .map(rule_from)
            .collect()
    }

    pub async fn insert_guard_rule(&self, new: NewGuardRule) -> Result<GuardRule, StoreError> {
        let txn = self.begin_write().await?;
        let position = match new.position {
            Some(position) => position,
            None => {
                let last: Option<Option<i32>> = GuardRules::find()
                    .select_only()
                    .column_as(guard_rules::Column::Position.max(), "max")
                    .filter(guard_rules::Column::TargetId.eq(new.target_id))
                    .into_tuple()
                    .one(&txn)
                    .await?;
                last.flatten().map_or(0, |p| p.saturating_add(1))
            }
        };
        let model = guard_rules::ActiveModel {
            id: Set(Uuid::new_v4()),
            target_id: Set(new.target_id),
            position: Set(position),
            method: Set(new.matcher.method.map(|m| m.as_str().to_owned())),
            path_match: Set(new.matcher.path_match.as_str().to_owned()),
            path: Set(new.matcher.path),
            action: Set(new.action.as_str().to_owned()),
            reason: Set(new.reason),
            created_at: Set(now()),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        rule_from(model)
    }

    pub async fn update_guard_rule(
        &self,
        target_id: Uuid,
        id: Uuid,
        patch: GuardRulePatch,
    ) -> Result<GuardRule, StoreError> {
        let mut model: guard_rules::ActiveModel = GuardRules::find_by_id(id)
            .filter(guard_rules::Column::TargetId.eq(target_id))
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found(RULE))?
            .into();
        if let Some(position) = patch.position {
            model.position = Set(position);
        }
        if let Some(matcher) = patch.matcher {
            model.method = Set(matcher.method.map(|m| m.as_str().to_owned()));
            model.path_match = Set(matcher.path_match.as_str().to_owned());
            model.path = Set(matcher.path);
        }
        if let Some(action) = patch.action {
            model.action = Set(action.as_str().to_owned());
        }
        if let Some(reason) = patch.reason {
            model.reason = Set(reason);
        }
        rule_from(model.update(self.conn()).await?)
    }

    pub async fn delete_guard_rule(&self, target_id: Uuid, id: Uuid) -> Result<(), StoreError> {
        let deleted = GuardRules::delete_many()
            .filter(guard_rules::Column::Id.eq(id))
            .filter(guard_rules::Column::TargetId.eq(target_id))
            .exec(self.conn())
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::not_found(RULE));
        }
        Ok(())
    }

    /// Open a pending approval and queue `approval.requested` in the same transaction.
    /// `event` builds the event from the stored approval (it needs the approval's URL).
    pub async fn insert_approval(
        &self,
        new: NewApproval,
        ttl: std::time::Duration,
        event: impl FnOnce(&Approval) -> WebhookEvent,
    ) -> Result<Approval, StoreError> {
        let at = now();
        let expires_at = at + chrono::Duration::from_std(ttl).unwrap_or_default();
        let txn = self.begin_write().await?;
        let model = approvals::ActiveModel {
            id: Set(Uuid::new_v4()),
            token_id: Set(new.request.token_id),
            target_id: Set(new.request.target_id),
            method: Set(new.request.method),
            path: Set(new.request.path),
            query: Set(new.request.query),
            body_sha256: Set(new.request.body_sha256),
            body_size: Set(i64::try_from(new.request.body_size).unwrap_or(i64::MAX)),
            body_preview: Set(new.body_preview),
            reason: Set(new.reason),
            status: Set(ApprovalStatus::Pending.as_str().to_owned()),
            elicited: Set(false),
            decided_by: Set(None),
            decided_at: Set(None),
            expires_at: Set(expires_at),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        let approval = with_names(&txn, model).await?;
        let queued = super::webhooks::enqueue(&txn, &event(&approval), None).await?;
        txn.commit().await?;
        self.outbox_written(queued);
        Ok(approval)
    }

    pub async fn approval(&self, id: Uuid) -> Result<Approval, StoreError> {
        let model = Approvals::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found(APPROVAL))?;
        with_names(self.conn(), model).await
    }

    /// The stored status and deadline of `id` alone (what a waiting elicitation polls).
    pub async fn approval_state(
        &self,
        id: Uuid,
    ) -> Result<(ApprovalStatus, Timestamp), StoreError> {
        let row: Option<(String, Timestamp)> = Approvals::find_by_id(id)
            .select_only()
            .column(approvals::Column::Status)
            .column(approvals::Column::ExpiresAt)
            .into_tuple()
            .one(self.conn())
            .await?;
        let (status, expires_at) = row.ok_or(StoreError::not_found(APPROVAL))?;
        let status = ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt(APPROVAL, format!("status {status:?}")))?;
        Ok((status, expires_at))
    }

    /// Approvals newest first; `status` filters on the effective status (pending ones past
    /// their deadline are `expired`).
    pub async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u64,
    ) -> Result<Vec<Approval>, StoreError> {
        let at = now();
        let mut query = Approvals::find().order_by_desc(approvals::Column::CreatedAt);
        query = match status {
            None => query,
            Some(ApprovalStatus::Expired) => query.filter(
                sea_orm::Condition::any()
                    .add(approvals::Column::Status.eq(ApprovalStatus::Expired.as_str()))
                    .add(
                        sea_orm::Condition::all()
                            .add(approvals::Column::Status.is_in([
                                ApprovalStatus::Pending.as_str(),
                                ApprovalStatus::Approved.as_str(),
                            ]))
                            .add(approvals::Column::ExpiresAt.lte(at)),
                    ),
            ),
            Some(live @ (ApprovalStatus::Pending | ApprovalStatus::Approved)) => query
                .filter(approvals::Column::Status.eq(live.as_str()))
                .filter(approvals::Column::ExpiresAt.gt(at)),
            Some(done) => query.filter(approvals::Column::Status.eq(done.as_str())),
        };
        let models = query.limit(limit).all(self.conn()).await?;
        let mut out = Vec::with_capacity(models.len());
        for model in models {
            out.push(with_names(self.conn(), model).await?);
        }
        Ok(out)
    }

    /// Record a person's decision on a pending, unexpired approval. `Ok(None)`: it was no
    /// longer pending (decided by someone else, or expired) — read it to say why.
    pub async fn decide_approval(
        &self,
        id: Uuid,
        decision: Decision,
        decided_by: &str,
        decider: Decider,
    ) -> Result<Option<Approval>, StoreError> {
        let at = now();
        let mut update = Approvals::update_many()
            .col_expr(
                approvals::Column::Status,
                Expr::value(decision.status().as_str()),
            )
            .col_expr(approvals::Column::DecidedBy, Expr::value(decided_by))
            .col_expr(approvals::Column::DecidedAt, Expr::value(at))
            .filter(approvals::Column::Id.eq(id))
            .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .filter(approvals::Column::ExpiresAt.gt(at));
        if let Decider::Elicitation { token_id } = decider {
            update = update
                .filter(approvals::Column::TokenId.eq(token_id))
                .filter(approvals::Column::Elicited.eq(true));
        }
        if update.exec(self.conn()).await?.rows_affected == 0 {
            return Ok(None);
        }
        self.approval(id).await.map(Some)
    }

    /// Note that the person is being asked about `id` through `token_id`'s MCP client, which
    /// lets that client's answer decide it. `false`: not this token's, or no longer pending.
    pub async fn mark_elicited(&self, id: Uuid, token_id: Uuid) -> Result<bool, StoreError> {
        let updated = Approvals::update_many()
            .col_expr(approvals::Column::Elicited, Expr::value(true))
            .filter(approvals::Column::Id.eq(id))
            .filter(approvals::Column::TokenId.eq(token_id))
            .filter(approvals::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .filter(approvals::Column::ExpiresAt.gt(now()))
            .exec(self.conn())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Use an approved approval once: `approved` → `used` if it has not expired. `false`:
    /// someone used it first, or it expired in between.
    pub async fn redeem_approval(&self, id: Uuid) -> Result<bool, StoreError> {
        let updated = Approvals::update_many()
            .col_expr(
                approvals::Column::Status,
                Expr::value(ApprovalStatus::Used.as_str()),
            )
            .filter(approvals::Column::Id.eq(id))
            .filter(approvals::Column::Status.eq(ApprovalStatus::Approved.as_str()))
            .filter(approvals::Column::ExpiresAt.gt(now()))
            .exec(self.conn())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Mark undecided or unused approvals past their deadline `expired`, and delete every
    /// approval that ended before `keep_until`. Returns (expired, deleted).
    pub async fn sweep_approvals(&self, keep_until: Timestamp) -> Result<(u64, u64), StoreError> {
        let expired = Approvals::update_many()
            .col_expr(
                approvals::Column::Status,
                Expr::value(ApprovalStatus::Expired.as_str()),
            )
            .filter(approvals::Column::Status.is_in([
                ApprovalStatus::Pending.as_str(),
                ApprovalStatus::Approved.as_str(),
            ]))
            .filter(approvals::Column::ExpiresAt.lte(now()))
            .exec(self.conn())
            .await?
            .rows_affected;
        let deleted = Approvals::delete_many()
            .filter(approvals::Column::ExpiresAt.lt(keep_until))
            .exec(self.conn())
            .await?
            .rows_affected;
        Ok((expired, deleted))
    }
}

/// The approval with its token's and target's names (empty when they are gone).
async fn with_names(
    conn: &impl sea_orm::ConnectionTrait,
    model: approvals::Model,
) -> Result<Approval, StoreError> {
    let token_name = Tokens::find_by_id(model.token_id)
        .one(conn)
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    let target_slug = Targets::find_by_id(model.target_id)
        .one(conn)
        .await?
        .map(|t| t.slug)
        .unwrap_or_default();
    approval_from(model, token_name, target_slug)
}

fn approval_from(
    model: approvals::Model,
    token_name: String,
    target_slug: String,
) -> Result<Approval, StoreError> {
    let status = ApprovalStatus::parse(&model.status)
        .ok_or_else(|| StoreError::corrupt(APPROVAL, format!("status {:?}", model.status)))?;
    Ok(Approval {
        id: model.id,
        request: GuardedRequest {
            token_id: model.token_id,
            target_id: model.target_id,
            method: model.method,
            path: model.path,
            query: model.query,
            body_sha256: model.body_sha256,
            body_size: u64::try_from(model.body_size).unwrap_or(0),
        },
        token_name,
        target_slug,
        body_preview: model.body_preview,
        reason: model.reason,
        status,
        elicited: model.elicited,
        decided_by: model.decided_by,
        decided_at: model.decided_at,
        expires_at: model.expires_at,
        created_at: model.created_at,
    })
}

fn rule_from(model: guard_rules::Model) -> Result<GuardRule, StoreError> {
    let corrupt = |problem: String| StoreError::corrupt(RULE, problem);
    let matcher = RuleMatch::parse(model.method.as_deref(), &model.path_match, &model.path)
        .map_err(|e| corrupt(e.to_string()))?;
    let action = RuleAction::parse(&model.action)
        .ok_or_else(|| corrupt(format!("action {:?}", model.action)))?;
    Ok(GuardRule {
        id: model.id,
        target_id: model.target_id,
        position: model.position,
        matcher,
        action,
        reason: model.reason,
        created_at: model.created_at,
    })
}
