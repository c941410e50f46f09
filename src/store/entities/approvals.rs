use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "approvals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub token_id: Uuid,
    pub target_id: Uuid,
    pub method: String,
    #[sea_orm(column_type = "Text")]
    pub path: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub query: Option<String>,
    pub body_sha256: String,
    pub body_size: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub body_preview: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub status: String,
    pub elicited: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
