use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oauth_states")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// SHA-256 of the `state` parameter; the state itself is never stored.
    #[sea_orm(unique)]
    pub state_hash: String,
    pub provider_type: String,
    /// The PKCE verifier, sealed by `SecretBox`.
    pub code_verifier: Vec<u8>,
    /// SHA-256 of the nonce in the browser's signed cookie.
    pub browser_binding: String,
    /// `admin` or `connect_link` (`FlowOrigin`).
    pub origin: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
