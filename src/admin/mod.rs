//! The admin listener (axum): management API, health and readiness; and the metrics listener.
//! The only module that imports `axum`.

mod accounts;
mod audit_logs;
mod auth;
mod guard;
mod health;
mod json;
mod oauth;
mod providers;
mod stats;
mod targets;
mod tokens;
mod ui;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::tokens::TokenHash;
use crate::manage::Management;

/// What admin handlers share.
pub struct AdminState {
    pub management: Management,
    /// Hash of `GATEHOUSE_ADMIN_TOKEN`, accepted besides stored admin tokens.
    pub configured_admin_token: Option<TokenHash>,
    /// Largest accepted request body (`admin.max_body_bytes`).
    pub max_body_bytes: usize,
    pub providers: Arc<crate::oauth::providers::Providers>,
    /// Connected accounts and the connect flow.
    pub accounts: crate::connect::ConnectFlow,
    /// `admin.public_url`: the browser-facing base of this listener.
    pub public_url: url::Url,
    /// `proxy.public_url`: the agent-facing base, for MCP client set-up snippets.
    pub proxy_public_url: url::Url,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: String,
    /// The input field the error is about, when there is one.
    field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse admin API", description = "Management API of the Gatehouse credential gateway"),
    components(schemas(ErrorBody)),
    tags(
        (name = "targets", description = "Upstream APIs and their credentials"),
        (name = "tokens", description = "Agent tokens and their permissions"),
        (name = "audit", description = "One row per proxied request"),
        (name = "accounts", description = "OAuth providers and connected accounts"),
        (name = "webhooks", description = "Signed event notifications and their delivery log"),
        (name = "guard", description = "Guard rules per target and the approvals people decide"),
    )
)]
struct ApiDoc;

/// The management API routes and the OpenAPI document generated from the same handlers, so a
/// route cannot exist without being documented.
fn api() -> (Router<Arc<AdminState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(targets::list_targets, targets::create_target))
        .routes(routes!(
            targets::get_target,
            targets::patch_target,
            targets::delete_target
        ))
        .routes(routes!(
            targets::list_auth_methods,
            targets::create_auth_method
        ))
        .routes(routes!(
            targets::patch_auth_method,
            targets::delete_auth_method
        ))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(
            tokens::get_token,
            tokens::patch_token,
            tokens::delete_token
        ))
        .routes(routes!(tokens::regenerate_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::list_permissions))
        .routes(routes!(tokens::put_permission, tokens::delete_permission))
        .routes(routes!(audit_logs::list_audit_logs))
        .routes(routes!(stats::get_stats))
        .routes(routes!(providers::list_providers))
        .routes(routes!(accounts::list_accounts))
        .routes(routes!(accounts::get_account, accounts::delete_account))
        .routes(routes!(accounts::grant_access, accounts::revoke_access))
        .routes(routes!(accounts::create_connect_link))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::patch_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(guard::list_guard_rules, guard::create_guard_rule))
        .routes(routes!(guard::patch_guard_rule, guard::delete_guard_rule))
        .routes(routes!(guard::list_approvals))
        .routes(routes!(guard::get_approval))
        .routes(routes!(guard::approve))
        .routes(routes!(guard::deny))
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the management API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

pub fn router(state: AdminState) -> Router {
    let (api, document) = api();
    let document = Arc::new(document);
    api.route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/oauth/callback", get(oauth::callback))
        .merge(ui::router())
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { crate::api_error::ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { crate::api_error::ApiError::MethodNotAllowed })
        .with_state(Arc::new(state))
}

/// The metrics listener: `/metrics` in Prometheus text format.
pub fn metrics_router(metrics: Arc<crate::metrics::Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    )
}

/// Serve `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}
