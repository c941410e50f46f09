use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connected_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub provider_type: String,
    pub email: String,
    pub display_name: Option<String>,
    /// Sealed by `SecretBox`.
    pub access_token: Option<Vec<u8>>,
    /// Sealed by `SecretBox`.
    pub refresh_token: Option<Vec<u8>>,
    pub token_expires_at: Option<DateTimeUtc>,
    pub token_version: i64,
    pub refresh_lease_owner: Option<String>,
    pub refresh_lease_until: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub scopes: String,
    pub status: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub status_message: Option<String>,
    pub last_refreshed_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_refresh_error: Option<String>,
    /// First transient refresh failure of the current run of failures (cleared on success).
    pub refresh_failing_since: Option<DateTimeUtc>,
    /// When `account.refresh_failing` was announced for that run (at most once per run).
    pub refresh_failing_notified_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
