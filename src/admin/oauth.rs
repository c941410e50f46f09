//! `/oauth/authorize` and `/oauth/callback`: the browser side of the connect flow (SPEC §6).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AdminState;
use super::auth::Admin;
use crate::api_error::ApiError;
use crate::connect::{BINDING_COOKIE, ConnectError, FLOW_LIFETIME};
use crate::domain::accounts::{ConnectedAccount, FlowOrigin};

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
    let (provider, origin) = match query_param(raw.as_deref(), "link") {
        Some(link) => match state.accounts.redeem_connect_link(&link).await {
            Ok(provider) => (provider, FlowOrigin::ConnectLink),
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
                Some(provider) => (provider, FlowOrigin::Admin),
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
    match state.accounts.start(&provider, origin).await {
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

/// The provider sends the browser back here. Admin-started flows return to the integrations
/// page; flows started from a connect link end on a public page of their own (SPEC §6): the
/// person who opened the link is not an admin.
pub async fn callback(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.as_deref();
    let state_param = query_param(raw, "state").unwrap_or_default();
    let (origin, outcome) = if let Some(error) = query_param(raw, "error") {
        // The provider ended the flow (e.g. access_denied): nothing is stored.
        (state.accounts.abandon(&state_param).await, Err(error))
    } else {
        let code = query_param(raw, "code").unwrap_or_default();
        let finished = state
            .accounts
            .finish(
                &state_param,
                &code,
                cookie(&headers, BINDING_COOKIE).as_deref(),
            )
            .await;
        let outcome = match finished.result {
            Ok(account) => Ok(account),
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
        };
        (finished.origin, outcome)
    };
    let mut response = match origin {
        Some(FlowOrigin::ConnectLink) => link_outcome_page(&outcome),
        Some(FlowOrigin::Admin) | None => {
            let location = match outcome {
                Ok(account) => format!("/ui/integrations?connected={}", account.id),
                Err(code) => {
                    let code: String =
                        url::form_urlencoded::byte_serialize(code.as_bytes()).collect();
                    format!("/ui/integrations?error={code}")
                }
            };
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
        }
    };
    if let Some(cookie) = binding_cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The end of a connect-link flow, in plain words: no admin data, no session needed.
fn link_outcome_page(outcome: &Result<ConnectedAccount, String>) -> Response {
    match outcome {
        Ok(account) => page(
            StatusCode::OK,
            "Account connected",
            &format!("Connected {} — you can close this window.", account.email),
        ),
        Err(code) => {
            let (status, message) = match code.as_str() {
                "access_denied" => (
                    StatusCode::BAD_REQUEST,
                    "You declined the access request, so nothing was connected. You can close \
                     this window, or ask your admin for a new link to try again.",
                ),
                "no_email" => (
                    StatusCode::BAD_REQUEST,
                    "This account has no email address, so it cannot be connected. Sign in with \
                     a mailbox account, using a new link from your admin.",
                ),
                "invalid_grant" => (
                    StatusCode::BAD_REQUEST,
                    "The provider did not accept the sign-in (it may have expired). Ask your \
                     admin for a new link and try again.",
                ),
                "provider_not_configured" | "unknown_provider" => (
                    StatusCode::CONFLICT,
                    "This kind of account cannot be connected yet: Gatehouse is not set up for \
                     it. Tell your admin.",
                ),
                "internal_error" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on Gatehouse's side, so nothing was connected. Tell \
                     your admin; a new link lets you try again.",
                ),
                _ => (
                    StatusCode::BAD_GATEWAY,
                    "The provider refused the connection, so nothing was connected. Tell your \
                     admin; a new link lets you try again.",
                ),
            };
            page(status, "Account not connected", message)
        }
    }
}
