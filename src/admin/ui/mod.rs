//! The admin web UI under `/ui`: server-rendered pages (maud) and plain forms, on the same
//! services as the JSON API. Its own way in: an admin token exchanged for a session cookie
//! (`gatehouse_session`, in-memory sessions stored by hash), and a CSRF token per session in a
//! hidden field of every form.

mod approvals;
mod audit;
mod integrations;
mod overview;
mod targets;
mod tokens;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{DOCTYPE, Markup, html};
use parking_lot::Mutex;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::AdminState;
use super::auth::Admin;
use super::oauth::cookie;
use crate::api_error::ApiError;

/// The session cookie.
pub const SESSION_COOKIE: &str = "gatehouse_session";
/// How long a session lasts after login.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
const STYLESHEET: &str = include_str!("style.css");
/// Where a login lands: the overview of the last hour.
const HOME: &str = "/ui/overview";

/// The `/ui` routes, with their own session store.
pub fn router() -> Router<Arc<AdminState>> {
    let sessions = Arc::new(Sessions::default());
    Router::new()
        .route("/ui", get(|| async { see_other(HOME) }))
        .route("/ui/", get(|| async { see_other(HOME) }))
        .route("/ui/overview", get(overview::page))
        .route("/ui/style.css", get(stylesheet))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/integrations", get(integrations::page))
        .route("/ui/integrations/connect", post(integrations::connect))
        .route(
            "/ui/integrations/{id}/disconnect",
            get(integrations::confirm_disconnect).post(integrations::disconnect),
        )
        .route("/ui/integrations/{id}/access", post(integrations::access))
        .route("/ui/targets", get(targets::list).post(targets::create))
        .route("/ui/targets/{id}", get(targets::detail))
        .route("/ui/targets/{id}/edit", post(targets::edit))
        .route("/ui/targets/{id}/delete", post(targets::delete))
        .route(
            "/ui/targets/{id}/auth-methods",
            post(targets::create_auth_method),
        )
        .route(
            "/ui/targets/{id}/auth-methods/{method_id}/delete",
            post(targets::delete_auth_method),
        )
        .route("/ui/tokens", get(tokens::list).post(tokens::create))
        .route("/ui/tokens/{id}", get(tokens::detail))
        .route("/ui/tokens/{id}/edit", post(tokens::edit))
        .route("/ui/tokens/{id}/revoke", post(tokens::revoke))
        .route("/ui/tokens/{id}/regenerate", post(tokens::regenerate))
        .route(
            "/ui/tokens/{id}/permissions/{target_id}",
            post(tokens::permission),
        )
        .route("/ui/audit", get(audit::page))
        .route("/ui/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/ui/webhooks/{id}", get(webhooks::detail))
        .route("/ui/webhooks/{id}/test", post(webhooks::test))
        .route("/ui/webhooks/{id}/delete", post(webhooks::delete))
        .route("/ui/approvals", get(approvals::list))
        .route("/ui/approvals/{id}", get(approvals::detail))
        .route("/ui/approvals/{id}/approve", post(approvals::approve))
        .route("/ui/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/ui/targets/{id}/guard-rules",
            post(targets::create_guard_rule),
        )
        .route(
            "/ui/targets/{id}/guard-rules/{rule_id}/delete",
            post(targets::delete_guard_rule),
        )
        .route(
            "/ui/targets/{id}/guard-defaults",
            post(targets::guard_defaults),
        )
        .layer(Extension(sessions))
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

struct SessionEntry {
    csrf: String,
    /// The name of the admin token that logged in (recorded as who decided an approval).
    admin: String,
    expires: Instant,
}

/// Live sessions, keyed by the SHA-256 of the cookie value.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, SessionEntry>>);

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Sessions {
    /// A new session of `admin`: its cookie value and CSRF token.
    fn create(&self, admin: &str) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut map = self.0.lock();
        map.retain(|_, entry| entry.expires > now);
        map.insert(
            digest(&id),
            SessionEntry {
                csrf: csrf.clone(),
                admin: admin.to_owned(),
                expires: now + SESSION_LIFETIME,
            },
        );
        (id, csrf)
    }

    /// The CSRF token and admin name of a live session.
    fn lookup(&self, id: &str) -> Option<(String, String)> {
        let key = digest(id);
        let mut map = self.0.lock();
        match map.get(&key) {
            Some(entry) if entry.expires > Instant::now() => {
                Some((entry.csrf.clone(), entry.admin.clone()))
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.0.lock().remove(&digest(id));
    }
}

fn session_cookie(state: &AdminState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// A logged-in admin's session; every page but the login page takes one. Without a valid
/// session the browser is sent to `/ui/login`.
#[derive(Debug, Clone)]
pub struct Session {
    id: String,
    pub csrf: String,
    /// The admin token's name.
    pub admin: String,
}

impl FromRequestParts<Arc<AdminState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let sessions = parts
            .extensions
            .get::<Arc<Sessions>>()
            .cloned()
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        let to_login = || see_other(&login_location(parts));
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        let (csrf, admin) = sessions.lookup(&id).ok_or_else(to_login)?;
        Ok(Session { id, csrf, admin })
    }
}

/// The login page, with `next` = the page asked for when it was a GET (a form post cannot be
/// replayed by a redirect; its page is gone with the session anyway).
fn login_location(parts: &Parts) -> String {
    if parts.method != Method::GET {
        return "/ui/login".to_owned();
    }
    // The UI router is merged, not nested: the URI is the one the browser asked for.
    let uri = &parts.uri;
    let asked = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    match safe_next(asked) {
        Some(next) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish();
            format!("/ui/login?{query}")
        }
        None => "/ui/login".to_owned(),
    }
}

/// Longest `next` kept.
const MAX_NEXT_LEN: usize = 2_000;

/// `next` when it is a page of this UI: a path under `/ui/` on this origin. Anything else (an
/// absolute or scheme-relative URL, a backslash some browsers read as `/`, spaces, control or
/// non-ASCII characters, which a `Location` header cannot carry raw) is dropped, so the login
/// page cannot redirect off-site.
fn safe_next(next: &str) -> Option<&str> {
    let page = next.split(['?', '#']).next().unwrap_or_default();
    let ok = next.len() <= MAX_NEXT_LEN
        && next.starts_with("/ui/")
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !matches!(page, "/ui/login" | "/ui/logout");
    ok.then_some(next)
}

// ---------------------------------------------------------------------------------------------
// Forms and CSRF
// ---------------------------------------------------------------------------------------------

/// A parsed `application/x-www-form-urlencoded` body.
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value submitted under `name` (a group of checkboxes).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// True when a checkbox named `name` was submitted.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Session {
    /// Parse a form body and check its CSRF token; a missing or wrong one is refused with 403.
    pub fn form(&self, body: &Bytes) -> Result<FormData, UiError> {
        let form = FormData::parse(body);
        match form.get("csrf") {
            Some(token) if same(token, &self.csrf) => Ok(form),
            _ => Err(UiError(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from Gatehouse. Reload the page and try again."
                    .to_owned(),
            )),
        }
    }

    /// The hidden CSRF field every form carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses and layout
// ---------------------------------------------------------------------------------------------

pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

/// A UI error: a page with the message (and its status).
pub struct UiError(StatusCode, String);

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        let message = if status.is_server_error() {
            tracing::warn!(%error, "admin UI request failed");
            "Something went wrong on the server. Try again.".to_owned()
        } else {
            error.to_string()
        };
        Self(status, message)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<crate::connect::ConnectError> for UiError {
    fn from(error: crate::connect::ConnectError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<crate::domain::validation::ValidationError> for UiError {
    fn from(error: crate::domain::validation::ValidationError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        page_error(self.0, &self.1)
    }
}

pub type UiResult = Result<Response, UiError>;

fn page_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = bare_layout(
        title,
        html! {
            h1 { (title) }
            p.banner.error role="alert" { (message) }
            p { a href="/ui/integrations" { "Back to Gatehouse" } }
        },
    );
    (status, Html(body.into_string())).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Gatehouse" }
            link rel="stylesheet" href="/ui/style.css";
        }
    }
}

fn bare_layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { main.narrow { (content) } }
        }
    }
}

/// Which section of the navigation is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Integrations,
    Targets,
    Tokens,
    Audit,
    Webhooks,
    Approvals,
}

/// A full page: header with navigation and logout, then `content`.
pub fn layout(session: &Session, nav: Nav, title: &str, content: Markup) -> Response {
    let link = |target: Nav, href: &str, label: &str| {
        html! {
            li {
                @if target == nav {
                    a href=(href) aria-current="page" { (label) }
                } @else {
                    a href=(href) { (label) }
                }
            }
        }
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href=(HOME) { "Gatehouse" }
                    nav aria-label="Main" {
                        ul {
                            (link(Nav::Overview, HOME, "Overview"))
                            (link(Nav::Integrations, "/ui/integrations", "Integrations"))
                            (link(Nav::Targets, "/ui/targets", "Targets"))
                            (link(Nav::Tokens, "/ui/tokens", "Tokens"))
                            (link(Nav::Audit, "/ui/audit", "Audit log"))
                            (link(Nav::Webhooks, "/ui/webhooks", "Webhooks"))
                            (link(Nav::Approvals, "/ui/approvals", "Approvals"))
                        }
                    }
                    form.logout method="post" action="/ui/logout" {
                        (session.csrf_field())
                        button.link type="submit" { "Log out" }
                    }
                }
                main { (content) }
            }
        }
    };
    Html(body.into_string()).into_response()
}

/// A timestamp as admins read it.
pub fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

// ---------------------------------------------------------------------------------------------
// Login, logout, stylesheet
// ---------------------------------------------------------------------------------------------

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

fn login_form(error: Option<&str>, next: Option<&str>) -> Markup {
    bare_layout(
        "Log in",
        html! {
            h1 { "Gatehouse admin" }
            @if let Some(error) = error {
                p.banner.error role="alert" { (error) }
            }
            form.card method="post" action="/ui/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="sga_…";
                @if let Some(next) = next {
                    input type="hidden" name="next" value=(next);
                }
                p.hint { "The configured GATEHOUSE_ADMIN_TOKEN or a stored admin token." }
                button.primary type="submit" { "Log in" }
            }
        },
    )
}

async fn login_page(RawQuery(query): RawQuery) -> Response {
    let query = FormData::parse(query.unwrap_or_default().as_bytes());
    let next = query.get("next").and_then(safe_next);
    Html(login_form(None, next).into_string()).into_response()
}

async fn login(
    State(state): State<Arc<AdminState>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let token = form.get("token").unwrap_or_default().trim().to_owned();
    let next = form.get("next").and_then(safe_next);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    match Admin::from_headers(&state, &headers).await {
        Ok(admin) => {
            let (id, _csrf) = sessions.create(&admin.name);
            let mut response = see_other(next.unwrap_or(HOME));
            if let Some(cookie) = session_cookie(&state, &id, SESSION_LIFETIME.as_secs()) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(ApiError::Unauthorized) => (
            StatusCode::UNAUTHORIZED,
            Html(login_form(Some("That admin token is not valid."), next).into_string()),
        )
            .into_response(),
        Err(error) => UiError::from(error).into_response(),
    }
}

async fn logout(
    State(state): State<Arc<AdminState>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    session: Session,
    body: Bytes,
) -> Response {
    if let Err(refused) = session.form(&body) {
        return refused.into_response();
    }
    sessions.remove(&session.id);
    let mut response = see_other("/ui/login");
    if let Some(cookie) = session_cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
