//! `Admin`: the extractor every management API route takes. Accepts `Authorization: Bearer
//! sga_…` when the token is the configured one or a stored, unrevoked admin token. The web UI has
//! its own way in (a session cookie from `/ui/login`, see `admin::ui`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::AdminState;
use crate::api_error::ApiError;
use crate::domain::tokens::AdminToken;

/// Proof that the caller is an admin, and which admin token it used.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The stored admin token's name, or `GATEHOUSE_ADMIN_TOKEN` for the configured one.
    pub name: String,
}

impl FromRequestParts<Arc<AdminState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        Self::from_headers(state, &parts.headers).await
    }
}

impl Admin {
    /// Check the `Authorization` header of a request.
    pub async fn from_headers(state: &AdminState, headers: &HeaderMap) -> Result<Self, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .and_then(|value| AdminToken::parse(value.trim()))
            .ok_or(ApiError::Unauthorized)?;
        let hash = token.hash();
        if state.configured_admin_token.as_ref() == Some(&hash) {
            return Ok(Admin {
                name: "GATEHOUSE_ADMIN_TOKEN".to_owned(),
            });
        }
        match state.management.store().active_admin_token(&hash).await {
            Ok(Some(record)) => Ok(Admin { name: record.name }),
            Ok(None) => Err(ApiError::Unauthorized),
            Err(error) => Err(error.into()),
        }
    }
}
