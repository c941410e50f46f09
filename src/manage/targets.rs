//! Targets and their auth methods.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Management, valid_name};
use crate::api_error::ApiError;
use crate::change_feed::ChangeEvent;
use crate::crypto::SecretSlot;
use crate::domain::accounts::ConnectedAccount;
use crate::domain::credential::Credential;
use crate::domain::targets::{AuthMethod, AuthMethodKind, Target, TargetSlug};
use crate::domain::validation::ValidationError;
use crate::store::StoreError;
use crate::store::targets::{AuthMethodPatch, NewAuthMethod, NewTarget, TargetPatch};

#[derive(Debug, Clone)]
pub struct NewTargetInput {
    pub name: String,
    pub base_url: String,
    pub slug: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct TargetPatchInput {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub enabled: Option<bool>,
    /// The built-in guard rules on or off (SPEC §12); the one setting a managed target takes.
    pub guard_defaults: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct TargetSummary {
    pub target: Target,
    pub auth_method_count: u64,
}

#[derive(Debug, Clone)]
pub struct TargetDetail {
    pub summary: TargetSummary,
    pub account: Option<ConnectedAccount>,
}

impl Management {
    fn base_url(&self, field: &str, text: &str) -> Result<url::Url, ValidationError> {
        let url = url::Url::parse(text.trim())
            .map_err(|_| ValidationError::new(field, "must be an absolute URL"))?;
        self.egress
            .check_url(&url)
            .map_err(|rule| ValidationError::new(field, rule.to_string()))?;
        Ok(url)
    }

    /// A standard target, or `ApiError::ManagedTarget`.
    async fn standard_target(&self, id: Uuid) -> Result<Target, ApiError> {
        let target = self.store.target(id).await?;
        if target.is_managed() {
            return Err(ApiError::ManagedTarget);
        }
        Ok(target)
    }

    pub async fn create_target(&self, input: NewTargetInput) -> Result<TargetSummary, ApiError> {
        let name = valid_name("name", &input.name)?;
        let slug = match input.slug.as_deref() {
            Some(slug) => {
                TargetSlug::parse(slug).map_err(|e| ValidationError::new("slug", e.to_string()))?
            }
            None => TargetSlug::from_name(&name).map_err(|_| {
                ValidationError::new(
                    "name",
                    "needs at least one letter or digit to derive a slug",
                )
            })?,
        };
        let base_url = self.base_url("base_url", &input.base_url)?;
        let target = self
            .store
            .insert_target(NewTarget {
                name,
                slug,
                base_url,
                enabled: input.enabled.unwrap_or(true),
                connected_account_id: None,
                capability: None,
            })
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target.id))
            .await;
        Ok(TargetSummary {
            target,
            auth_method_count: 0,
        })
    }

    pub async fn list_targets(&self) -> Result<Vec<TargetSummary>, ApiError> {
        let counts = self.store.auth_method_counts().await?;
        let targets = self.store.list_targets().await?;
        Ok(targets
            .into_iter()
            .map(|target| summary(target, &counts))
            .collect())
    }

    /// By id when `key` is a UUID, else by slug.
    pub async fn target(&self, key: &str) -> Result<TargetDetail, ApiError> {
        let target = match Uuid::parse_str(key) {
            Ok(id) => self.store.target(id).await?,
            Err(_) => self.store.target_by_slug(key).await?,
        };
        let account = match target.connected_account_id {
            Some(account_id) => match self.store.connected_account(account_id).await {
                Ok(account) => Some(account),
                Err(StoreError::NotFound { .. }) => None,
                Err(error) => return Err(error.into()),
            },
            None => None,
        };
        let auth_method_count = self.store.auth_methods(target.id).await?.len() as u64;
        Ok(TargetDetail {
            summary: TargetSummary {
                target,
                auth_method_count,
            },
            account,
        })
    }

    pub async fn update_target(
        &self,
        id: Uuid,
        input: TargetPatchInput,
    ) -> Result<TargetSummary, ApiError> {
        let only_guard =
            input.name.is_none() && input.base_url.is_none() && input.enabled.is_none();
        if only_guard {
            self.store.target(id).await?;
        } else {
            self.standard_target(id).await?;
        }
        let patch = TargetPatch {
            name: input
                .name
                .as_deref()
                .map(|n| valid_name("name", n))
                .transpose()?,
            base_url: input
                .base_url
                .as_deref()
                .map(|u| self.base_url("base_url", u))
                .transpose()?,
            enabled: input.enabled,
            guard_defaults: input.guard_defaults,
        };
        let target = self.store.update_target(id, patch).await?;
        self.changes.publish_and_wait(ChangeEvent::Target(id)).await;
        let auth_method_count = self.store.auth_methods(id).await?.len() as u64;
        Ok(TargetSummary {
            target,
            auth_method_count,
        })
    }

    pub async fn delete_target(&self, id: Uuid) -> Result<(), ApiError> {
        self.standard_target(id).await?;
        self.store.delete_target(id).await?;
        self.changes.publish_and_wait(ChangeEvent::Target(id)).await;
        Ok(())
    }

    pub async fn auth_methods(&self, target_id: Uuid) -> Result<Vec<AuthMethod>, ApiError> {
        self.store.target(target_id).await?;
        Ok(self.store.auth_methods(target_id).await?)
    }

    /// Validate and seal a credential; the first method of a target becomes its default unless
    /// `is_default` says otherwise.
    pub async fn create_auth_method(
        &self,
        target_id: Uuid,
        label: &str,
        kind: &str,
        credential: &serde_json::Value,
        is_default: Option<bool>,
    ) -> Result<AuthMethod, ApiError> {
        let label = valid_name("label", label)?;
        let kind = AuthMethodKind::parse(kind).ok_or_else(|| {
            ValidationError::new(
                "type",
                "must be one of bearer, basic, custom_header, query_param, oauth2_refresh_token",
            )
        })?;
        let credential = self.credential(kind, credential)?;
        self.standard_target(target_id).await?;
        let is_default = match is_default {
            Some(is_default) => is_default,
            None => self.store.auth_methods(target_id).await?.is_empty(),
        };
        let id = Uuid::new_v4();
        let method = self
            .store
            .insert_auth_method(NewAuthMethod {
                id,
                target_id,
                label,
                kind,
                sealed_credential: self.secrets.seal_str(
                    &credential.to_stored(),
                    SecretSlot::auth_method_credential(id),
                ),
                credential_hint: credential.hint(),
                is_default,
            })
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(method)
    }

    pub async fn update_auth_method(
        &self,
        target_id: Uuid,
        method_id: Uuid,
        label: Option<&str>,
        credential: Option<&serde_json::Value>,
        is_default: Option<bool>,
    ) -> Result<AuthMethod, ApiError> {
        let label = label.map(|l| valid_name("label", l)).transpose()?;
        self.standard_target(target_id).await?;
        let existing = self.store.auth_method(target_id, method_id).await?;
        let credential = match credential {
            Some(input) => {
                let credential = self.credential(existing.kind, input)?;
                let sealed = self.secrets.seal_str(
                    &credential.to_stored(),
                    SecretSlot::auth_method_credential(method_id),
                );
                Some((sealed, credential.hint()))
            }
            None => None,
        };
        let method = self
            .store
            .update_auth_method(
                target_id,
                method_id,
                AuthMethodPatch {
                    label,
                    credential,
                    is_default,
                },
            )
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(method)
    }

    pub async fn delete_auth_method(
        &self,
        target_id: Uuid,
        method_id: Uuid,
    ) -> Result<(), ApiError> {
        self.standard_target(target_id).await?;
        self.store.delete_auth_method(target_id, method_id).await?;
        self.changes
            .publish_and_wait(ChangeEvent::Target(target_id))
            .await;
        Ok(())
    }

    fn credential(
        &self,
        kind: AuthMethodKind,
        input: &serde_json::Value,
    ) -> Result<Credential, ValidationError> {
        let credential = Credential::parse(kind, input)?;
        if let Credential::OAuth2RefreshToken(config) = &credential {
            self.egress
                .check_url(&config.token_url)
                .map_err(|rule| ValidationError::new("credential", format!("token_url {rule}")))?;
        }
        Ok(credential)
    }
}

fn summary(target: Target, counts: &HashMap<Uuid, u64>) -> TargetSummary {
    let auth_method_count = counts.get(&target.id).copied().unwrap_or(0);
    TargetSummary {
        target,
        auth_method_count,
    }
}
