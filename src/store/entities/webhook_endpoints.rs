use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub url: String,
    /// JSON array of event type names.
    #[sea_orm(column_type = "JsonBinary")]
    pub events: Json,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// The signing secret's bytes, sealed by `SecretBox`.
    pub secret: Vec<u8>,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
