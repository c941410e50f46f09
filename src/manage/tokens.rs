//! Agent tokens and their permissions.

use uuid::Uuid;

use super::{Management, valid_name};
use crate::api_error::ApiError;
use crate::change_feed::ChangeEvent;
use crate::domain::ip_allowlist::IpAllowlist;
use crate::domain::targets::{Permission, Target};
use crate::domain::tokens::{AgentToken, AgentTokenRecord, RateLimit};
use crate::domain::validation::ValidationError;
use crate::store::tokens::{AgentTokenPatch, NewAgentToken};

/// A permission with the target it is on.
#[derive(Debug, Clone)]
pub struct PermissionView {
    pub permission: Permission,
    pub target: Target,
}

fn allowlist(entries: &[String]) -> Result<IpAllowlist, ValidationError> {
    IpAllowlist::parse(entries).map_err(|e| ValidationError::new("allowed_ips", e.to_string()))
}

/// `rate_limit` from input: `None` = unlimited.
fn rate_limit(value: Option<i64>) -> Result<Option<RateLimit>, ValidationError> {
    value.map(|v| RateLimit::parse("rate_limit", v)).transpose()
}

/// Fields of a token an admin may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TokenChanges<'a> {
    pub name: Option<&'a str>,
    pub allowed_ips: Option<&'a [String]>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<i64>>,
}

impl Management {
    /// Create a token; the plaintext is returned this once and never stored.
    pub async fn create_token(
        &self,
        name: &str,
        allowed_ips: Option<&[String]>,
        rate_limit_per_minute: Option<i64>,
    ) -> Result<(AgentTokenRecord, AgentToken), ApiError> {
        let name = valid_name("name", name)?;
        let allowed_ips = allowlist(allowed_ips.unwrap_or_default())?;
        let rate_limit = rate_limit(rate_limit_per_minute)?;
        let plaintext = AgentToken::generate();
        let record = self
            .store
            .insert_agent_token(NewAgentToken {
                name,
                hash: plaintext.hash(),
                allowed_ips,
                rate_limit,
            })
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Token(record.id))
            .await;
        Ok((record, plaintext))
    }

    /// Create a token with permissions on the targets named by slug (the CLI's `token create`).
    /// Every slug is resolved before anything is written, so an unknown one leaves no row.
    pub async fn create_token_for_targets(
        &self,
        name: &str,
        slugs: &[String],
        read_only: bool,
        rate_limit_per_minute: Option<i64>,
    ) -> Result<(AgentTokenRecord, AgentToken), ApiError> {
        rate_limit(rate_limit_per_minute)?;
        let mut targets = Vec::with_capacity(slugs.len());
        for slug in slugs {
            match self.store.target_by_slug(slug).await {
                Ok(target) => targets.push(target.id),
                Err(crate::store::StoreError::NotFound { .. }) => {
                    return Err(ValidationError::new(
                        "target",
                        format!("no target with slug {slug:?}"),
                    )
                    .into());
                }
                Err(error) => return Err(error.into()),
            }
        }
        let (record, plaintext) = self.create_token(name, None, rate_limit_per_minute).await?;
        if !targets.is_empty() {
            if let Err(error) = self
                .store
                .upsert_permissions(record.id, &targets, read_only)
                .await
            {
                // Do not leave a token behind that the caller never saw.
                let _ = self.store.delete_agent_token(record.id).await;
                return Err(error.into());
            }
            self.changes
                .publish_and_wait(ChangeEvent::Permissions {
                    token_id: record.id,
                })
                .await;
        }
        Ok((record, plaintext))
    }

    pub async fn list_tokens(&self) -> Result<Vec<AgentTokenRecord>, ApiError> {
        Ok(self.store.list_agent_tokens().await?)
    }

    pub async fn token(&self, id: Uuid) -> Result<AgentTokenRecord, ApiError> {
        Ok(self.store.agent_token(id).await?)
    }

    pub async fn update_token(
        &self,
        id: Uuid,
        changes: TokenChanges<'_>,
    ) -> Result<AgentTokenRecord, ApiError> {
        let patch = AgentTokenPatch {
            name: changes.name.map(|n| valid_name("name", n)).transpose()?,
            allowed_ips: changes.allowed_ips.map(allowlist).transpose()?,
            rate_limit: changes.rate_limit.map(rate_limit).transpose()?,
        };
        let record = self.store.update_agent_token(id, patch).await?;
        self.changes.publish_and_wait(ChangeEvent::Token(id)).await;
        Ok(record)
    }

    /// A new plaintext for the same token id; the old one stops matching at once.
    pub async fn regenerate_token(
        &self,
        id: Uuid,
    ) -> Result<(AgentTokenRecord, AgentToken), ApiError> {
        let plaintext = AgentToken::generate();
        let record = self
            .store
            .replace_agent_token_hash(id, &plaintext.hash())
            .await?;
        self.changes.publish_and_wait(ChangeEvent::Token(id)).await;
        Ok((record, plaintext))
    }

    pub async fn revoke_token(&self, id: Uuid) -> Result<AgentTokenRecord, ApiError> {
        let record = self.store.revoke_agent_token(id).await?;
        self.changes.publish_and_wait(ChangeEvent::Token(id)).await;
        Ok(record)
    }

    pub async fn delete_token(&self, id: Uuid) -> Result<(), ApiError> {
        self.store.delete_agent_token_announced(id).await?;
        self.changes.publish_and_wait(ChangeEvent::Token(id)).await;
        Ok(())
    }

    pub async fn permissions(&self, token_id: Uuid) -> Result<Vec<PermissionView>, ApiError> {
        self.store.agent_token(token_id).await?;
        let permissions = self.store.permissions_of_token(token_id).await?;
        let mut views = Vec::with_capacity(permissions.len());
        for permission in permissions {
            let target = self.store.target(permission.target_id).await?;
            views.push(PermissionView { permission, target });
        }
        Ok(views)
    }

    /// Idempotent grant; `true` when it was created. Allowed on managed targets.
    pub async fn put_permission(
        &self,
        token_id: Uuid,
        target_id: Uuid,
        read_only: bool,
    ) -> Result<(PermissionView, bool), ApiError> {
        self.store.agent_token(token_id).await?;
        let target = self.store.target(target_id).await?;
        let (permission, created) = self
            .store
            .upsert_permission(token_id, target_id, read_only)
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Permissions { token_id })
            .await;
        Ok((PermissionView { permission, target }, created))
    }

    pub async fn delete_permission(&self, token_id: Uuid, target_id: Uuid) -> Result<(), ApiError> {
        if !self.store.delete_permission(token_id, target_id).await? {
            return Err(ApiError::NotFound("permission"));
        }
        self.changes
            .publish_and_wait(ChangeEvent::Permissions { token_id })
            .await;
        Ok(())
    }
}
