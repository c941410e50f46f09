//! `/api/providers`: the provider registry and whether each one is configured.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Admin;
use super::{AdminState, ErrorBody};
use crate::api_error::ApiError;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderBody {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    /// What a connected account of this provider gives managed targets for.
    capabilities: Vec<String>,
    /// True when its client credentials are set in the environment.
    configured: bool,
    /// The environment variables that configure it.
    env_vars: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    providers: Vec<ProviderBody>,
}

#[utoipa::path(get, path = "/api/providers", tag = "accounts",
    responses((status = 200, body = ProviderList), (status = 401, body = ErrorBody)))]
pub async fn list_providers(
    _: Admin,
    State(state): State<Arc<AdminState>>,
) -> Result<Json<ProviderList>, ApiError> {
    let providers = state
        .providers
        .all()
        .iter()
        .map(|provider| ProviderBody {
            kind: provider.kind.to_owned(),
            name: provider.name.to_owned(),
            capabilities: provider
                .capabilities()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            configured: provider.is_configured(),
            env_vars: provider
                .env_vars()
                .iter()
                .map(|v| (*v).to_owned())
                .collect(),
        })
        .collect();
    Ok(Json(ProviderList { providers }))
}
