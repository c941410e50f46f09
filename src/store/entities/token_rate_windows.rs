use sea_orm::entity::prelude::*;

/// How much of one token's budget for one wall-clock minute the replicas have leased.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "token_rate_windows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_id: Uuid,
    /// Unix time in minutes (seconds / 60) of the window.
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_minute: i64,
    pub used: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
