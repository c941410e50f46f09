//! `/ui/tokens`: create (plaintext shown once), rename, allowed IPs, rate limit, revoke,
//! regenerate, and permissions per target.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use maud::{Markup, html};
use uuid::Uuid;

use super::{Nav, Session, UiResult, layout, see_other, when};
use crate::admin::AdminState;
use crate::domain::tokens::{AgentToken, AgentTokenRecord};
use crate::domain::validation::ValidationError;
use crate::manage::{TokenChanges, parse_id};
use crate::mcp::setup;
use url::Url;

fn ip_list(text: &str) -> Vec<String> {
    text.split([',', '\n', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The rate-limit field: empty = unlimited; the range is checked by `Management`.
fn form_rate_limit(text: &str) -> Result<Option<i64>, ValidationError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ValidationError::new(
            "rate_limit",
            "must be a whole number of requests per minute, or empty for no limit",
        )
    })
}

fn rate_limit_text(token: &AgentTokenRecord) -> String {
    token
        .rate_limit
        .map(|l| l.per_minute().to_string())
        .unwrap_or_default()
}

/// The plaintext of a new or regenerated token, shown this once, with the set-up of an MCP
/// client that uses it.
fn plaintext_box(record: &AgentTokenRecord, plaintext: &AgentToken, proxy_url: &Url) -> Markup {
    html! {
        section.banner.ok.secret role="status" aria-labelledby="new-secret" {
            h2 #new-secret { "Token " (record.name) " — copy it now" }
            p { "This is the only time Gatehouse shows it." }
            div.copy {
                input #plaintext type="text" readonly value=(plaintext.expose()) aria-label="Token";
                button type="button" onclick="navigator.clipboard.writeText(document.getElementById('plaintext').value);this.textContent='Copied'" { "Copy" }
            }
            (agent_setup(proxy_url, plaintext.expose()))
        }
    }
}

/// Copy-ready MCP client set-up: the Claude Code command and the `mcpServers` JSON entry.
fn agent_setup(proxy_url: &Url, token: &str) -> Markup {
    html! {
        div.agent-setup #agent-setup {
            h3 { "Connect an agent" }
            p { "Claude Code:" }
            pre #setup-claude { code { (setup::claude_command(proxy_url, token)) } }
            p { "Other MCP clients (Cursor, Claude Desktop, agent frameworks) — add to the MCP configuration:" }
            pre #setup-json { code { (setup::mcp_servers_json(proxy_url, token)) } }
        }
    }
}

async fn list_page(session: &Session, state: &AdminState, created: Option<Markup>) -> UiResult {
    let tokens = state.management.list_tokens().await?;
    let content = html! {
        h1 { "Tokens" }
        @if let Some(created) = created { (created) }
        @if tokens.is_empty() {
            p.empty { "No token yet." }
        } @else {
            table {
                caption.sr-only { "Agent tokens" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Allowed IPs" }
                    th scope="col" { "Rate limit" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "State" }
                } }
                tbody {
                    @for token in &tokens {
                        tr {
                            th scope="row" { a href=(format!("/ui/tokens/{}", token.id)) { (token.name) } }
                            td { @let ips = token.allowed_ips.to_strings();
                                 @if ips.is_empty() { span.muted { "any" } } @else { (ips.join(", ")) } }
                            td { @match token.rate_limit { Some(limit) => { (limit.per_minute()) " / min" }, None => span.muted { "none" } } }
                            td { (when(&token.created_at)) }
                            td { @match &token.last_used_at { Some(at) => (when(at)), None => span.muted { "never" } } }
                            td { @if token.is_revoked() { span.badge.bad { "revoked" } } @else { span.badge.ok { "active" } } }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-token" {
            h2 #new-token { "Create a token" }
            form.grid method="post" action="/ui/tokens" {
                (session.csrf_field())
                label for="token-name" { "Name" }
                input #token-name type="text" name="name" required;
                label for="token-ips" { "Allowed IPs (optional)" }
                input #token-ips type="text" name="allowed_ips" placeholder="10.0.0.0/8, 192.0.2.7";
                label for="token-rate-limit" { "Rate limit, requests per minute (optional)" }
                input #token-rate-limit type="number" name="rate_limit" min="1" step="1" placeholder="no limit";
                div.span { button.primary type="submit" { "Create token" } }
            }
        }
    };
    Ok(layout(session, Nav::Tokens, "Tokens", content))
}

pub async fn list(session: Session, State(state): State<Arc<AdminState>>) -> UiResult {
    list_page(&session, &state, None).await
}

pub async fn create(
    session: Session,
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let ips = ip_list(form.get("allowed_ips").unwrap_or_default());
    let rate_limit = form_rate_limit(form.get("rate_limit").unwrap_or_default())?;
    let (record, plaintext) = state
        .management
        .create_token(form.get("name").unwrap_or_default(), Some(&ips), rate_limit)
        .await?;
    list_page(
        &session,
        &state,
        Some(plaintext_box(&record, &plaintext, &state.proxy_public_url)),
    )
    .await
}

async fn detail_page(
    session: &Session,
    state: &AdminState,
    id: Uuid,
    secret: Option<Markup>,
) -> UiResult {
    let token = state.management.token(id).await?;
    let targets = state.management.list_targets().await?;
    let permissions: HashMap<Uuid, bool> = state
        .management
        .permissions(id)
        .await?
        .into_iter()
        .map(|view| (view.target.id, view.permission.read_only))
        .collect();
    let content = html! {
        p.crumbs { a href="/ui/tokens" { "Tokens" } " / " (token.name) }
        h1 { (token.name) " "
            @if token.is_revoked() { span.badge.bad { "revoked" } } @else { span.badge.ok { "active" } }
        }
        @if let Some(secret) = secret { (secret) }
        dl.facts.card {
            dt { "Created" } dd { (when(&token.created_at)) }
            dt { "Last used" } dd { @match &token.last_used_at { Some(at) => (when(at)), None => "never" } }
            @if let Some(at) = &token.revoked_at { dt { "Revoked" } dd { (when(at)) } }
        }
        section.card aria-labelledby="settings" {
            h2 #settings { "Settings" }
            form.grid method="post" action=(format!("/ui/tokens/{id}/edit")) {
                (session.csrf_field())
                label for="token-name" { "Name" }
                input #token-name type="text" name="name" value=(token.name) required;
                label for="token-ips" { "Allowed IPs" }
                input #token-ips type="text" name="allowed_ips" value=(token.allowed_ips.to_strings().join(", "))
                    placeholder="any address";
                label for="token-rate-limit" { "Rate limit, requests per minute" }
                input #token-rate-limit type="number" name="rate_limit" min="1" step="1"
                    value=(rate_limit_text(&token)) placeholder="no limit";
                div.span { button.primary type="submit" { "Save" } }
            }
        }
        section aria-labelledby="permissions" {
            h2 #permissions { "Permissions" }
            @if targets.is_empty() {
                p.empty { "No target yet." }
            } @else {
                table.permissions {
                    thead { tr { th scope="col" { "Target" } th scope="col" { "Access" } } }
                    tbody {
                        @for summary in &targets {
                            @let target = &summary.target;
                            @let current = permissions.get(&target.id).copied();
                            tr {
                                th scope="row" {
                                    a href=(format!("/ui/targets/{}", target.id)) { (target.name) }
                                    " " code { (target.slug.as_str()) }
                                }
                                td {
                                    form.inline method="post" action=(format!("/ui/tokens/{id}/permissions/{}", target.id)) {
                                        (session.csrf_field())
                                        label {
                                            input type="checkbox" name="access" checked[current.is_some()];
                                            " Access"
                                        }
                                        label {
                                            input type="checkbox" name="read_only" checked[current == Some(true)];
                                            " Read-only"
                                        }
                                        button.small type="submit" { "Save" span.sr-only { " for " (target.name) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !token.is_revoked() {
            section.card aria-labelledby="agent-setup" {
                (agent_setup(&state.proxy_public_url, setup::TOKEN_PLACEHOLDER))
            }
            section.card.danger-zone aria-labelledby="danger" {
                h2 #danger { "Regenerate or revoke" }
                div.actions {
                    form method="post" action=(format!("/ui/tokens/{id}/regenerate")) {
                        (session.csrf_field())
                        button type="submit" { "Regenerate" }
                    }
                    form method="post" action=(format!("/ui/tokens/{id}/revoke")) {
                        (session.csrf_field())
                        button.danger type="submit" { "Revoke" }
                    }
                }
                p.hint { "Regenerating replaces the secret; the old one stops working at once. Revoking is permanent." }
            }
        }
    };
    Ok(layout(session, Nav::Tokens, &token.name, content))
}

pub async fn detail(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> UiResult {
    detail_page(&session, &state, parse_id("id", &id)?, None).await
}

pub async fn edit(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    let ips = ip_list(form.get("allowed_ips").unwrap_or_default());
    // Absent keeps the limit (an older form); present and empty removes it.
    let rate_limit = form.get("rate_limit").map(form_rate_limit).transpose()?;
    state
        .management
        .update_token(
            id,
            TokenChanges {
                name: form.get("name"),
                allowed_ips: Some(&ips),
                rate_limit,
            },
        )
        .await?;
    Ok(see_other(&format!("/ui/tokens/{id}")))
}

pub async fn revoke(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let id = parse_id("id", &id)?;
    state.management.revoke_token(id).await?;
    Ok(see_other(&format!("/ui/tokens/{id}")))
}

pub async fn regenerate(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let id = parse_id("id", &id)?;
    let (record, plaintext) = state.management.regenerate_token(id).await?;
    detail_page(
        &session,
        &state,
        id,
        Some(plaintext_box(&record, &plaintext, &state.proxy_public_url)),
    )
    .await
}

pub async fn permission(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path((id, target_id)): Path<(String, String)>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let (id, target_id) = (parse_id("id", &id)?, parse_id("target_id", &target_id)?);
    if form.checked("access") {
        state
            .management
            .put_permission(id, target_id, form.checked("read_only"))
            .await?;
    } else if state
        .management
        .permissions(id)
        .await?
        .iter()
        .any(|view| view.target.id == target_id)
    {
        state.management.delete_permission(id, target_id).await?;
    }
    Ok(see_other(&format!("/ui/tokens/{id}#permissions")))
}
