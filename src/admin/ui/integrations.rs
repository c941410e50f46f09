//! `/ui/integrations`: providers, connected accounts, connect / disconnect, manage access.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use maud::{Markup, html};
use uuid::Uuid;

use super::{Nav, Session, UiError, UiResult, layout, see_other, when};
use crate::admin::AdminState;
use crate::connect::{AccountView, FLOW_LIFETIME};
use crate::domain::accounts::{AccountStatus, FlowOrigin};
use crate::domain::targets::Permission;
use crate::manage::parse_id;

fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn error_text(code: &str) -> String {
    match code {
        "access_denied" => "The sign-in was cancelled or consent was not given.".to_owned(),
        "no_email" => "The provider did not tell Gatehouse the account's email address.".to_owned(),
        "provider_error" => "The provider refused the sign-in. Try again.".to_owned(),
        other => format!("Connecting failed ({other})."),
    }
}

fn status_badge(status: AccountStatus) -> Markup {
    let class = match status {
        AccountStatus::Connected => "badge ok",
        AccountStatus::Disconnected => "badge warn",
        AccountStatus::Error => "badge bad",
    };
    html! { span class=(class) { (status.as_str()) } }
}

/// Access of one token to an account's managed targets: `None`, or `Some(read_only)`.
fn access_of(permissions: &[Permission], token_id: Uuid, targets: &[Uuid]) -> Option<bool> {
    let mine: Vec<&Permission> = permissions
        .iter()
        .filter(|p| p.token_id == token_id && targets.contains(&p.target_id))
        .collect();
    if mine.is_empty() {
        None
    } else {
        Some(mine.iter().all(|p| p.read_only))
    }
}

pub async fn page(
    session: Session,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let accounts = state.accounts.accounts().await?;
    let tokens: Vec<_> = state
        .management
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| !t.is_revoked())
        .collect();
    let permissions = state.management.store().all_permissions().await?;
    let connected = query_param(raw.as_deref(), "connected");
    let connected_email = connected.as_deref().and_then(|id| {
        accounts
            .iter()
            .find(|a| a.account.id.to_string() == id)
            .map(|a| a.account.email.clone())
    });
    let error = query_param(raw.as_deref(), "error");
    // Notices after the UI's own actions: built here from ids, never free text from the URL.
    let email_of = |id: &str| {
        accounts
            .iter()
            .find(|a| a.account.id.to_string() == id)
            .map(|a| a.account.email.clone())
    };
    let notice = if query_param(raw.as_deref(), "disconnected").is_some() {
        Some("Account disconnected; its managed targets were deleted.".to_owned())
    } else {
        query_param(raw.as_deref(), "access_saved")
            .and_then(|id| email_of(&id))
            .map(|email| format!("Access to {email} saved."))
    };
    let content = html! {
        h1 { "Integrations" }
        @if connected.is_some() {
            p.banner.ok role="status" {
                "Connected " (connected_email.as_deref().unwrap_or("the account")) "."
            }
        }
        @if let Some(code) = &error {
            p.banner.error role="alert" { (error_text(code)) }
        }
        @if let Some(notice) = &notice {
            p.banner.ok role="status" { (notice) }
        }
        section aria-labelledby="providers" {
            h2 #providers { "Providers" }
            ul.cards {
                @for provider in state.providers.all() {
                    li.card {
                        h3 { (provider.name) }
                        @if provider.is_configured() {
                            form method="post" action="/ui/integrations/connect" {
                                (session.csrf_field())
                                input type="hidden" name="provider" value=(provider.kind);
                                button.primary type="submit" { "Connect " (provider.name) }
                            }
                        } @else {
                            p.hint { "Not configured. Set these environment variables to enable it:" }
                            ul.env {
                                @for var in provider.env_vars() { li { code { (var) } } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="accounts" {
            h2 #accounts { "Connected accounts" }
            @if accounts.is_empty() {
                p.empty { "No account is connected yet." }
            }
            @for view in &accounts {
                (account_card(&session, view, &tokens, &permissions))
            }
        }
    };
    Ok(layout(&session, Nav::Integrations, "Integrations", content))
}

fn account_card(
    session: &Session,
    view: &AccountView,
    tokens: &[crate::domain::tokens::AgentTokenRecord],
    permissions: &[Permission],
) -> Markup {
    let account = &view.account;
    let target_ids: Vec<Uuid> = view.targets.iter().map(|t| t.id).collect();
    html! {
        article.card.account aria-labelledby=(format!("account-{}", account.id)) {
            header.card-head {
                div {
                    h3 id=(format!("account-{}", account.id)) { (account.email) }
                    p.muted {
                        (view.provider_name)
                        @if let Some(name) = &account.display_name { " · " (name) }
                    }
                }
                (status_badge(account.status))
            }
            @if let Some(message) = &account.status_message {
                p.status-message { (message) }
            }
            dl.facts {
                dt { "Last refresh" }
                dd {
                    @match &account.last_refreshed_at {
                        Some(at) => (when(at)),
                        None => "never",
                    }
                }
                @if let Some(error) = &account.last_refresh_error {
                    dt { "Last refresh error" }
                    dd { (error) }
                }
            }
            h4 { "Managed targets" }
            ul.targets {
                @for target in &view.targets {
                    li {
                        a href=(format!("/ui/targets/{}", target.id)) { (target.name) }
                        " "
                        code { (target.slug.as_str()) }
                    }
                }
            }
            div.actions {
                form method="post" action="/ui/integrations/connect" {
                    (session.csrf_field())
                    input type="hidden" name="provider" value=(account.provider_type);
                    button type="submit" { "Reconnect" }
                }
                a.button.danger href=(format!("/ui/integrations/{}/disconnect", account.id)) {
                    "Disconnect…"
                }
            }
            details.access {
                summary { "Manage access" }
                @if tokens.is_empty() {
                    p.empty { "No active token. " a href="/ui/tokens" { "Create one" } "." }
                } @else {
                    form method="post" action=(format!("/ui/integrations/{}/access", account.id)) {
                        (session.csrf_field())
                        table {
                            caption.sr-only { "Token access to " (account.email) }
                            thead { tr { th scope="col" { "Token" } th scope="col" { "Access" } th scope="col" { "Read-only" } } }
                            tbody {
                                @for token in tokens {
                                    @let access = access_of(permissions, token.id, &target_ids);
                                    tr {
                                        th scope="row" { (token.name) }
                                        td {
                                            label.switch {
                                                input type="checkbox" name=(format!("access_{}", token.id))
                                                    checked[access.is_some()];
                                                span.sr-only { "Access for " (token.name) }
                                            }
                                        }
                                        td {
                                            label.switch {
                                                input type="checkbox" name=(format!("ro_{}", token.id))
                                                    checked[access == Some(true)];
                                                span.sr-only { "Read-only for " (token.name) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        button.primary type="submit" { "Save access" }
                    }
                }
            }
        }
    }
}

/// Start the connect flow from the UI (Connect and Reconnect).
pub async fn connect(
    session: Session,
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let provider = form.get("provider").unwrap_or_default();
    let started = state.accounts.start(provider, FlowOrigin::Admin).await?;
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, started.authorize_url.to_string())],
    )
        .into_response();
    if let Some(cookie) =
        super::super::oauth::binding_cookie(&state, &started.cookie_value, FLOW_LIFETIME.as_secs())
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

pub async fn confirm_disconnect(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> UiResult {
    let view = state.accounts.account(parse_id("id", &id)?).await?;
    let account = &view.account;
    let content = html! {
        h1 { "Disconnect " (account.email) "?" }
        div.card {
            p { "Disconnecting revokes Gatehouse's grant at " (view.provider_name) " and deletes:" }
            ul {
                li { "the connected account " strong { (account.email) } }
                @for target in &view.targets {
                    li { "the managed target " strong { (target.name) } " (" code { (target.slug.as_str()) } ")" }
                }
                li { "every token permission on those targets" }
            }
            p { "Tokens keep working for their other targets." }
            div.actions {
                form method="post" action=(format!("/ui/integrations/{}/disconnect", account.id)) {
                    (session.csrf_field())
                    button.danger type="submit" { "Disconnect and delete" }
                }
                a.button href="/ui/integrations" { "Cancel" }
            }
        }
    };
    Ok(layout(&session, Nav::Integrations, "Disconnect", content))
}

pub async fn disconnect(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let id = parse_id("id", &id)?;
    state.accounts.disconnect(id).await?;
    Ok(see_other("/ui/integrations?disconnected=1"))
}

/// Apply the "Manage access" form: grant or revoke each active token whose switches changed.
pub async fn access(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    let view = state.accounts.account(id).await?;
    let target_ids: Vec<Uuid> = view.targets.iter().map(|t| t.id).collect();
    let permissions = state.management.store().all_permissions().await?;
    let mut changed = 0usize;
    let current: HashMap<Uuid, Option<bool>> = state
        .management
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| !t.is_revoked())
        .map(|t| (t.id, access_of(&permissions, t.id, &target_ids)))
        .collect();
    for (token_id, before) in current {
        let wanted = form
            .checked(&format!("access_{token_id}"))
            .then(|| form.checked(&format!("ro_{token_id}")));
        if wanted == before {
            continue;
        }
        changed += 1;
        match wanted {
            Some(read_only) => {
                state
                    .accounts
                    .grant_access(id, token_id, read_only)
                    .await
                    .map_err(UiError::from)?;
            }
            None => {
                state.accounts.revoke_access(id, token_id).await?;
            }
        }
    }
    tracing::debug!(account = %id, changed, "token access saved from the admin UI");
    Ok(see_other(&format!("/ui/integrations?access_saved={id}")))
}
