//! `ApiJson<T>`: the one JSON extractor of the admin API, and the renderer of `ApiError`.
//!
//! Malformed JSON, a wrong type or an unknown field → 400 naming the field; a body over
//! `admin.max_body_bytes` → 413; another content type → 415. Every error body is
//! `{"error": …}` (+ `"field"`), produced only by `impl IntoResponse for ApiError`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::AdminState;
use crate::api_error::ApiError;
use crate::domain::validation::ValidationError;

pub struct ApiJson<T>(pub T);

impl<T> FromRequest<Arc<AdminState>> for ApiJson<T>
where
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(
        request: Request,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let has_body_type = request.headers().get(header::CONTENT_TYPE).is_some();
        if has_body_type && !is_json(request.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::to_bytes(request.into_body(), state.max_body_bytes)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        // An empty body means "no fields" (e.g. PUT …/permissions/{id} without options).
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !has_body_type {
            return Err(ApiError::UnsupportedMediaType);
        }
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| json_error(&error))
    }
}

fn is_json(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Name the field serde stopped at; messages describe the rule, never echo a value.
fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    let path = error.path().to_string();
    let message = inner.to_string();
    let rule = message.split(" at line ").next().unwrap_or("invalid JSON");
    if let Some(field) = unknown_field(rule) {
        // The path already ends at the unknown key.
        let field = if path == "." || path.is_empty() {
            field
        } else {
            path
        };
        return ValidationError::new(field, "unknown field").into();
    }
    if let Some(field) = missing_field(rule) {
        return ValidationError::new(field, "is required").into();
    }
    if inner.is_syntax() || inner.is_eof() {
        return ValidationError::new("body", "is not valid JSON").into();
    }
    let field = if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path
    };
    // serde's type errors read "invalid type: string \"yes\", expected a boolean": keep the
    // expectation, drop the value (it might be a secret typed into the wrong field).
    let expectation = rule
        .rsplit_once(", ")
        .map_or("has the wrong type", |(_, expected)| expected);
    ValidationError::new(field, expectation.to_owned()).into()
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if self.is_server_error() {
            tracing::error!(error = %self, "admin request failed");
        }
        let mut body = serde_json::json!({"error": self.public_message()});
        if let Some(field) = self.field() {
            body["field"] = serde_json::Value::String(field.to_owned());
        }
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
