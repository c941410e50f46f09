//! Targets, their auth methods and token permissions.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use super::entities::target_auth_methods::{self, Entity as AuthMethods};
use super::entities::targets::{self, Entity as Targets};
use super::entities::token_permissions::{self, Entity as Permissions};
use super::{Store, StoreError, classify, now};
use crate::domain::targets::{
    AuthMethod, AuthMethodKind, Capability, Permission, Target, TargetSlug,
};

#[derive(Debug, Clone)]
pub struct NewTarget {
    pub name: String,
    pub slug: TargetSlug,
    pub base_url: url::Url,
    pub enabled: bool,
    pub connected_account_id: Option<Uuid>,
    pub capability: Option<Capability>,
}

#[derive(Debug, Clone, Default)]
pub struct TargetPatch {
    pub name: Option<String>,
    pub base_url: Option<url::Url>,
    pub enabled: Option<bool>,
    pub guard_defaults: Option<bool>,
}

/// An auth method to store. The id is chosen by the caller because the sealed credential is
/// bound to it (it is the associated data of the seal).
#[derive(Debug, Clone)]
pub struct NewAuthMethod {
    pub id: Uuid,
    pub target_id: Uuid,
    pub label: String,
    pub kind: AuthMethodKind,
    pub sealed_credential: Vec<u8>,
    pub credential_hint: String,
    pub is_default: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AuthMethodPatch {
    pub label: Option<String>,
    /// A new sealed credential and its hint, replacing both.
    pub credential: Option<(Vec<u8>, String)>,
    pub is_default: Option<bool>,
}

/// The credential to inject for a target, still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCredential {
    pub method_id: Uuid,
    pub target_id: Uuid,
    pub kind: AuthMethodKind,
    pub sealed: Vec<u8>,
}

impl Store {
    pub async fn insert_target(&self, new: NewTarget) -> Result<Target, StoreError> {
        insert_target(self.conn(), new).await
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        Targets::find()
            .order_by_asc(targets::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(target_from)
            .collect()
    }

    pub async fn target(&self, id: Uuid) -> Result<Target, StoreError> {
        let model = Targets::find_by_id(id).one(self.conn()).await?;
        target_from(model.ok_or(StoreError::not_found("target"))?)
    }

    pub async fn target_by_slug(&self, slug: &str) -> Result<Target, StoreError> {
        let model = Targets::find()
            .filter(targets::Column::Slug.eq(slug))
            .one(self.conn())
            .await?;
        target_from(model.ok_or(StoreError::not_found("target"))?)
    }

    pub async fn targets_of_account(&self, account_id: Uuid) -> Result<Vec<Target>, StoreError> {
        Targets::find()
            .filter(targets::Column::ConnectedAccountId.eq(account_id))
            .order_by_asc(targets::Column::Slug)
            .all(self.conn())
            .await?
            .into_iter()
            .map(target_from)
            .collect()
    }

    pub async fn update_target(&self, id: Uuid, patch: TargetPatch) -> Result<Target, StoreError> {
        let mut model: targets::ActiveModel = Targets::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found("target"))?
            .into();
        if let Some(name) = patch.name {
            model.name = Set(name);
        }
        if let Some(base_url) = patch.base_url {
            model.base_url = Set(base_url.to_string());
        }
        if let Some(enabled) = patch.enabled {
            model.enabled = Set(enabled);
        }
        if let Some(on) = patch.guard_defaults {
            model.guard_defaults = Set(on);
        }
        model.updated_at = Set(now());
        target_from(model.update(self.conn()).await?)
    }

    /// Delete a target; its auth methods and permissions go with it (FK cascade).
    pub async fn delete_target(&self, id: Uuid) -> Result<(), StoreError> {
        let result = Targets::delete_by_id(id).exec(self.conn()).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found("target"));
        }
        Ok(())
    }

    /// Number of auth methods per target id.
    pub async fn auth_method_counts(&self) -> Result<HashMap<Uuid, u64>, StoreError> {
        let rows: Vec<(Uuid, i64)> = AuthMethods::find()
            .select_only()
            .column(target_auth_methods::Column::TargetId)
            .column_as(target_auth_methods::Column::Id.count(), "n")
            .group_by(target_auth_methods::Column::TargetId)
            .into_tuple()
            .all(self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Insert an auth method; when it is the default, the target's other defaults are cleared
    /// in the same transaction.
    pub async fn insert_auth_method(&self, new: NewAuthMethod) -> Result<AuthMethod, StoreError> {
        let txn = self.begin_write().await?;
        if new.is_default {
            clear_defaults(&txn, new.target_id, None).await?;
        }
        let at = now();
        let model = target_auth_methods::ActiveModel {
            id: Set(new.id),
            target_id: Set(new.target_id),
            label: Set(new.label),
            kind: Set(new.kind.as_str().to_owned()),
            credential: Set(new.sealed_credential),
            credential_hint: Set(new.credential_hint),
            is_default: Set(new.is_default),
            created_at: Set(at),
            updated_at: Set(at),
        };
        let model = model
            .insert(&txn)
            .await
            .map_err(|e| classify(e, "target_auth_methods.is_default"))?;
        txn.commit().await?;
        auth_method_from(model)
    }

    pub async fn auth_methods(&self, target_id: Uuid) -> Result<Vec<AuthMethod>, StoreError> {
        AuthMethods::find()
            .filter(target_auth_methods::Column::TargetId.eq(target_id))
            .order_by_asc(target_auth_methods::Column::CreatedAt)
            .order_by_asc(target_auth_methods::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(auth_method_from)
            .collect()
    }

    pub async fn auth_method(
        &self,
        target_id: Uuid,
        method_id: Uuid,
    ) -> Result<AuthMethod, StoreError> {
        auth_method_from(find_auth_method(self.conn(), target_id, method_id).await?)
    }

    pub async fn update_auth_method(
        &self,
        target_id: Uuid,
        method_id: Uuid,
        patch: AuthMethodPatch,
    ) -> Result<AuthMethod, StoreError> {
        let txn = self.begin_write().await?;
        let mut model: target_auth_methods::ActiveModel =
            find_auth_method(&txn, target_id, method_id).await?.into();
        if patch.is_default == Some(true) {
            clear_defaults(&txn, target_id, Some(method_id)).await?;
        }
        if let Some(label) = patch.label {
            model.label = Set(label);
        }
        if let Some((sealed, hint)) = patch.credential {
            model.credential = Set(sealed);
            model.credential_hint = Set(hint);
        }
        if let Some(is_default) = patch.is_default {
            model.is_default = Set(is_default);
        }
        model.updated_at = Set(now());
        let model = model
            .update(&txn)
            .await
            .map_err(|e| classify(e, "target_auth_methods.is_default"))?;
        txn.commit().await?;
        auth_method_from(model)
    }

    pub async fn delete_auth_method(
        &self,
        target_id: Uuid,
        method_id: Uuid,
    ) -> Result<(), StoreError> {
        let result = AuthMethods::delete_many()
            .filter(target_auth_methods::Column::Id.eq(method_id))
            .filter(target_auth_methods::Column::TargetId.eq(target_id))
            .exec(self.conn())
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found("auth method"));
        }
        Ok(())
    }

    /// One auth method's sealed credential and the `updated_at` that versions it.
    pub async fn sealed_credential(
        &self,
        method_id: Uuid,
    ) -> Result<(SealedCredential, crate::domain::Timestamp), StoreError> {
        let model = AuthMethods::find_by_id(method_id)
            .one(self.conn())
            .await?
            .ok_or(StoreError::not_found("auth method"))?;
        let version = model.updated_at;
        Ok((sealed_from(model)?, version))
    }

    /// Replace a credential only if the row is still at `version` (compare and swap), so an
    /// older refresh token is never written over a newer one. `true` when written.
    pub async fn swap_credential(
        &self,
        method_id: Uuid,
        version: crate::domain::Timestamp,
        sealed: Vec<u8>,
        hint: String,
    ) -> Result<bool, StoreError> {
        let result = AuthMethods::update_many()
            .col_expr(target_auth_methods::Column::Credential, Expr::value(sealed))
            .col_expr(
                target_auth_methods::Column::CredentialHint,
                Expr::value(hint),
            )
            .col_expr(target_auth_methods::Column::UpdatedAt, Expr::value(now()))
            .filter(target_auth_methods::Column::Id.eq(method_id))
            .filter(target_auth_methods::Column::UpdatedAt.eq(version))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// The sealed credential of each target's default auth method.
    pub async fn default_credentials(&self) -> Result<Vec<SealedCredential>, StoreError> {
        AuthMethods::find()
            .filter(target_auth_methods::Column::IsDefault.eq(true))
            .all(self.conn())
            .await?
            .into_iter()
            .map(sealed_from)
            .collect()
    }

    /// Grant `token_id` access to `target_id`, or update the grant. `Ok((permission, true))`
    /// when it was created.
    pub async fn upsert_permission(
        &self,
        token_id: Uuid,
        target_id: Uuid,
        read_only: bool,
    ) -> Result<(Permission, bool), StoreError> {
        upsert_permission(self.conn(), token_id, target_id, read_only).await
    }

    /// Grant `token_id` every target in `target_ids` in one transaction.
    pub async fn upsert_permissions(
        &self,
        token_id: Uuid,
        target_ids: &[Uuid],
        read_only: bool,
    ) -> Result<Vec<Permission>, StoreError> {
        let txn = self.begin_write().await?;
        let mut granted = Vec::with_capacity(target_ids.len());
        for target_id in target_ids {
            granted.push(
                upsert_permission(&txn, token_id, *target_id, read_only)
                    .await?
                    .0,
            );
        }
        txn.commit().await?;
        Ok(granted)
    }

    /// `Ok(false)` when there was no such permission.
    pub async fn delete_permission(
        &self,
        token_id: Uuid,
        target_id: Uuid,
    ) -> Result<bool, StoreError> {
        let result = Permissions::delete_many()
            .filter(token_permissions::Column::TokenId.eq(token_id))
            .filter(token_permissions::Column::TargetId.eq(target_id))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// Remove `token_id`'s permissions on every target in `target_ids`; returns how many went.
    pub async fn delete_permissions(
        &self,
        token_id: Uuid,
        target_ids: &[Uuid],
    ) -> Result<u64, StoreError> {
        let result = Permissions::delete_many()
            .filter(token_permissions::Column::TokenId.eq(token_id))
            .filter(token_permissions::Column::TargetId.is_in(target_ids.iter().copied()))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected)
    }

    pub async fn permissions_of_token(
        &self,
        token_id: Uuid,
    ) -> Result<Vec<Permission>, StoreError> {
        Ok(Permissions::find()
            .filter(token_permissions::Column::TokenId.eq(token_id))
            .order_by_asc(token_permissions::Column::CreatedAt)
            .all(self.conn())
            .await?
            .into_iter()
            .map(permission_from)
            .collect())
    }

    pub async fn permissions_on_target(
        &self,
        target_id: Uuid,
    ) -> Result<Vec<Permission>, StoreError> {
        Ok(Permissions::find()
            .filter(token_permissions::Column::TargetId.eq(target_id))
            .order_by_asc(token_permissions::Column::CreatedAt)
            .all(self.conn())
            .await?
            .into_iter()
            .map(permission_from)
            .collect())
    }

    pub async fn all_permissions(&self) -> Result<Vec<Permission>, StoreError> {
        Ok(Permissions::find()
            .all(self.conn())
            .await?
            .into_iter()
            .map(permission_from)
            .collect())
    }
}

pub(super) async fn insert_target(
    conn: &impl ConnectionTrait,
    new: NewTarget,
) -> Result<Target, StoreError> {
    let at = now();
    let model = targets::ActiveModel {
        id: Set(Uuid::new_v4()),
        name: Set(new.name),
        slug: Set(new.slug.as_str().to_owned()),
        base_url: Set(new.base_url.to_string()),
        enabled: Set(new.enabled),
        connected_account_id: Set(new.connected_account_id),
        capability: Set(new.capability.map(|c| c.as_str().to_owned())),
        guard_defaults: Set(true),
        created_at: Set(at),
        updated_at: Set(at),
    };
    let model = model
        .insert(conn)
        .await
        .map_err(|e| classify(e, "targets.slug"))?;
    target_from(model)
}

async fn find_auth_method(
    conn: &impl ConnectionTrait,
    target_id: Uuid,
    method_id: Uuid,
) -> Result<target_auth_methods::Model, StoreError> {
    AuthMethods::find()
        .filter(target_auth_methods::Column::Id.eq(method_id))
        .filter(target_auth_methods::Column::TargetId.eq(target_id))
        .one(conn)
        .await?
        .ok_or(StoreError::not_found("auth method"))
}

async fn clear_defaults(
    conn: &impl ConnectionTrait,
    target_id: Uuid,
    except: Option<Uuid>,
) -> Result<(), StoreError> {
    let mut update = AuthMethods::update_many()
        .col_expr(target_auth_methods::Column::IsDefault, Expr::value(false))
        .filter(target_auth_methods::Column::TargetId.eq(target_id))
        .filter(target_auth_methods::Column::IsDefault.eq(true));
    if let Some(except) = except {
        update = update.filter(target_auth_methods::Column::Id.ne(except));
    }
    update.exec(conn).await?;
    Ok(())
}

async fn upsert_permission(
    conn: &impl ConnectionTrait,
    token_id: Uuid,
    target_id: Uuid,
    read_only: bool,
) -> Result<(Permission, bool), StoreError> {
    let existing = Permissions::find()
        .filter(token_permissions::Column::TokenId.eq(token_id))
        .filter(token_permissions::Column::TargetId.eq(target_id))
        .one(conn)
        .await?;
    if let Some(existing) = existing {
        if existing.read_only == read_only {
            return Ok((permission_from(existing), false));
        }
        let mut model: token_permissions::ActiveModel = existing.into();
        model.read_only = Set(read_only);
        return Ok((permission_from(model.update(conn).await?), false));
    }
    let model = token_permissions::ActiveModel {
        id: Set(Uuid::new_v4()),
        token_id: Set(token_id),
        target_id: Set(target_id),
        read_only: Set(read_only),
        created_at: Set(now()),
    };
    let model = model
        .insert(conn)
        .await
        .map_err(|e| classify(e, "token_permissions.token_id_target_id"))?;
    Ok((permission_from(model), true))
}

fn target_from(model: targets::Model) -> Result<Target, StoreError> {
    let corrupt = |problem: String| StoreError::corrupt("target", problem);
    Ok(Target {
        id: model.id,
        slug: TargetSlug::parse(&model.slug).map_err(|e| corrupt(format!("slug: {e}")))?,
        base_url: url::Url::parse(&model.base_url)
            .map_err(|e| corrupt(format!("base_url: {e}")))?,
        capability: match model.capability.as_deref() {
            None => None,
            Some(text) => Some(
                Capability::parse(text).ok_or_else(|| corrupt(format!("capability {text:?}")))?,
            ),
        },
        name: model.name,
        enabled: model.enabled,
        guard_defaults: model.guard_defaults,
        connected_account_id: model.connected_account_id,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn kind_from(text: &str) -> Result<AuthMethodKind, StoreError> {
    AuthMethodKind::parse(text)
        .ok_or_else(|| StoreError::corrupt("auth method", format!("type {text:?}")))
}

fn auth_method_from(model: target_auth_methods::Model) -> Result<AuthMethod, StoreError> {
    Ok(AuthMethod {
        id: model.id,
        target_id: model.target_id,
        label: model.label,
        kind: kind_from(&model.kind)?,
        credential_hint: model.credential_hint,
        is_default: model.is_default,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn sealed_from(model: target_auth_methods::Model) -> Result<SealedCredential, StoreError> {
    Ok(SealedCredential {
        method_id: model.id,
        target_id: model.target_id,
        kind: kind_from(&model.kind)?,
        sealed: model.credential,
    })
}

fn permission_from(model: token_permissions::Model) -> Permission {
    Permission {
        id: model.id,
        token_id: model.token_id,
        target_id: model.target_id,
        read_only: model.read_only,
        created_at: model.created_at,
    }
}
