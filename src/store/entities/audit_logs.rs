use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub token_id: Option<Uuid>,
    pub token_name: String,
    pub target_id: Option<Uuid>,
    pub target_slug: String,
    pub method: String,
    #[sea_orm(column_type = "Text")]
    pub path: String,
    pub status_code: i32,
    pub client_ip: String,
    pub duration_ms: i64,
    pub upstream_ms: Option<i64>,
    pub error: Option<String>,
    pub interface: String,
    /// What a guard rule did (SPEC §12); `None` when no rule matched.
    pub guard_action: Option<String>,
    /// Who approved the request, for `approved`.
    pub approved_by: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
