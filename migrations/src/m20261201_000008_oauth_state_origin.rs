//! `oauth_states.origin`: who started a pending connect flow (`admin` | `connect_link`), so
//! the callback knows where the person goes at the end. Pending flows from before this
//! migration were admin-started as far as anyone can tell; they expire within 10 minutes.

use sea_orm_migration::prelude::*;

use crate::columns::{add_text_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_text_column(manager, OauthStates::Table, OauthStates::Origin, "admin").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, OauthStates::Table, OauthStates::Origin).await
    }
}

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    Origin,
}
