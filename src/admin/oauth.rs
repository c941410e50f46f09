//! `/oauth/authorize` and `/oauth/callback`: the browser side of the connect flow (SPEC §6).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AdminState;
use super::auth::Admin;
use crate::api_error::ApiError;
use crate::connect::{BINDING_COOKIE, ConnectError, FLOW_LIFETIME};

fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The value of the request cookie `name`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

pub(super) fn binding_cookie(state: &AdminState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{BINDING_COOKIE}={value}; Path=/oauth; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1><p>{message}</p></main></body></html>",
        title = html_escape(title),
        message = html_escape(message)
    );
    (status, Html(body)).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Start the flow: `?link=<connect link>` in any browser, or `?provider=<type>` as an admin.
pub async fn authorize(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let provider = match query_param(raw.as_deref(), "link") {
        Some(link) => match state.accounts.redeem_connect_link(&link).await {
            Ok(provider) => provider,
            Err(_) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Link expired",
                    "This connect link is invalid, already used, or expired. Ask your admin for a new one.",
                );
            }
        },
        None => {
            if let Err(error) = Admin::from_headers(&state, &headers).await {
                return error.into_response();
            }
            match query_param(raw.as_deref(), "provider") {
                Some(provider) => provider,
                None => {
                    return ApiError::from(crate::domain::validation::ValidationError::new(
                        "provider",
                        "is required",
                    ))
                    .into_response();
                }
            }
        }
    };
    match state.accounts.start(&provider).await {
        Ok(started) => {
            let mut response = (
                StatusCode::FOUND,
                [(header::LOCATION, started.authorize_url.to_string())],
            )
                .into_response();
            if let Some(cookie) =
                binding_cookie(&state, &started.cookie_value, FLOW_LIFETIME.as_secs())
            {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// The provider sends the browser back here.
pub async fn callback(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.as_deref();
    let state_param = query_param(raw, "state").unwrap_or_default();
    let outcome = if let Some(error) = query_param(raw, "error") {
        // The provider ended the flow (e.g. access_denied): nothing is stored.
        let _ = state.accounts.abandon(&state_param).await;
        Err(error)
    } else {
        let code = query_param(raw, "code").unwrap_or_default();
        match state
            .accounts
            .finish(
                &state_param,
                &code,
                cookie(&headers, BINDING_COOKIE).as_deref(),
            )
            .await
        {
            Ok(account) => Ok(account.id),
            Err(ConnectError::InvalidState) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in could not be completed",
                    "The sign-in request is invalid, expired or was already used. Start again from Gatehouse.",
                );
            }
            Err(error) => {
                tracing::warn!(%error, "connect flow failed");
                Err(error.code().to_owned())
            }
        }
    };
    let location = match outcome {
        Ok(id) => format!("/ui/integrations?connected={id}"),
        Err(code) => {
            let code: String = url::form_urlencoded::byte_serialize(code.as_bytes()).collect();
            format!("/ui/integrations?error={code}")
        }
    };
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(cookie) = binding_cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
