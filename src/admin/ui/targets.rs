//! `/ui/targets`: list, detail, and for standard targets create, edit and delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use maud::{Markup, html};
use uuid::Uuid;

use super::{Nav, Session, UiResult, layout, see_other, when};
use crate::admin::AdminState;
use crate::domain::guard::{
    DESTRUCTIVE_PATH_WORDS, DefaultRules, GuardRule, PathMatch, RuleAction,
};
use crate::domain::targets::Target;
use crate::manage::{GuardRuleInput, NewTargetInput, TargetPatchInput, parse_id};

/// The methods the add-a-rule form offers; "any" is the empty value.
const RULE_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// What the built-in rules hold for this kind of target.
fn built_in_text(target: &Target) -> Markup {
    match DefaultRules::for_target(target.capability) {
        DefaultRules::Standard => html! {
            "Every " code { "DELETE" } ", and any path containing "
            @for (i, word) in DESTRUCTIVE_PATH_WORDS.iter().enumerate() {
                @if i > 0 { ", " }
                code { (word) }
            }
            ", needs a person's approval."
        },
        DefaultRules::Mail => html! {
            "Sending mail (a " code { "POST" } " to a path containing " code { "/send" } ", "
            code { "/reply" } " or " code { "/forward" } ") needs a person's approval."
        },
        DefaultRules::None => html! {
            "None for this target: it only reads."
        },
    }
}

/// The "Guard rules" section: the target's rules in evaluation order, adding and deleting
/// them, and the built-in rules' switch. Also on managed targets.
fn guard_section(session: &Session, target: &Target, rules: &[GuardRule]) -> Markup {
    let base = format!("/ui/targets/{}", target.id);
    html! {
        section #guard aria-labelledby="guard-title" {
            h2 #guard-title { "Guard rules" }
            p.hint { "Checked on every request, first match wins; then the built-in rules, if on. "
                "Paths are below the target, compared case-insensitively. "
                a href="/ui/approvals" { "Approvals" } " lists the requests held for a person." }
            @if rules.is_empty() {
                p.empty { "No rule of its own." }
            } @else {
                table.rules {
                    caption.sr-only { "Guard rules in the order they are checked" }
                    thead { tr {
                        th scope="col" { "Position" } th scope="col" { "Method" } th scope="col" { "Match" }
                        th scope="col" { "Path" } th scope="col" { "Action" } th scope="col" { "Reason" }
                        th scope="col" { span.sr-only { "Actions" } }
                    } }
                    tbody {
                        @for rule in rules {
                            tr data-rule=(rule.id) {
                                td data-cell="position" { (rule.position) }
                                td data-cell="method" { @match &rule.matcher.method {
                                    Some(method) => code { (method.as_str()) },
                                    None => span.muted { "any" },
                                } }
                                td data-cell="match" { (rule.matcher.path_match.as_str()) }
                                th scope="row" data-cell="path" { code { (rule.matcher.path) } }
                                td data-cell="action" { (action_badge(rule.action)) }
                                td data-cell="reason" { (rule.reason) }
                                td {
                                    form method="post" action=(format!("{base}/guard-rules/{}/delete", rule.id)) {
                                        (session.csrf_field())
                                        button.small.danger type="submit" { "Delete" span.sr-only { " rule " (rule.matcher.path) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.two-columns {
                section.card aria-labelledby="new-rule" {
                    h3 #new-rule { "Add a rule" }
                    form.grid.compact method="post" action=(format!("{base}/guard-rules")) {
                        (session.csrf_field())
                        label for="rule-method" { "Method" }
                        select #rule-method name="method" {
                            option value="" { "any" }
                            @for method in RULE_METHODS { option value=(method) { (method) } }
                        }
                        label for="rule-match" { "Path match" }
                        select #rule-match name="path_match" {
                            @for m in [PathMatch::Prefix, PathMatch::Equals, PathMatch::Contains] {
                                option value=(m.as_str()) { (m.as_str()) }
                            }
                        }
                        label for="rule-path" { "Path" }
                        input #rule-path type="text" name="path" required placeholder="/repos/acme/prod";
                        label for="rule-action" { "Action" }
                        select #rule-action name="action" {
                            @for a in [RuleAction::ApprovalRequired, RuleAction::Block, RuleAction::Allow] {
                                option value=(a.as_str()) { (action_label(a)) }
                            }
                        }
                        label for="rule-reason" { "Reason (optional)" }
                        input #rule-reason type="text" name="reason" placeholder="shown to the agent";
                        div.span { button.primary type="submit" { "Add rule" } }
                    }
                    p.hint { "A new rule goes last. Use the management API to reorder." }
                }
                section.card aria-labelledby="built-in" {
                    h3 #built-in { "Built-in rules" }
                    p #built-in-text { (built_in_text(target)) }
                    form.inline method="post" action=(format!("{base}/guard-defaults")) {
                        (session.csrf_field())
                        label {
                            input #guard-defaults type="checkbox" name="guard_defaults" checked[target.guard_defaults];
                            " On for this target"
                        }
                        button type="submit" { "Save" }
                    }
                    p.hint { "Your own rules run first either way." }
                }
            }
        }
    }
}

fn action_label(action: RuleAction) -> &'static str {
    match action {
        RuleAction::Allow => "allow",
        RuleAction::Block => "block",
        RuleAction::ApprovalRequired => "needs approval",
    }
}

fn action_badge(action: RuleAction) -> Markup {
    let class = match action {
        RuleAction::Allow => "badge ok",
        RuleAction::Block => "badge bad",
        RuleAction::ApprovalRequired => "badge warn",
    };
    html! { span class=(class) data-action=(action.as_str()) { (action_label(action)) } }
}

pub async fn list(session: Session, State(state): State<Arc<AdminState>>) -> UiResult {
    let targets = state.management.list_targets().await?;
    let emails: HashMap<Uuid, String> = state
        .accounts
        .accounts()
        .await?
        .into_iter()
        .map(|view| (view.account.id, view.account.email))
        .collect();
    let content = html! {
        h1 { "Targets" }
        @if targets.is_empty() {
            p.empty { "No target yet." }
        } @else {
            table {
                caption.sr-only { "Targets" }
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Slug" }
                    th scope="col" { "Base URL" }
                    th scope="col" { "Auth methods" }
                    th scope="col" { "State" }
                } }
                tbody {
                    @for summary in &targets {
                        @let target = &summary.target;
                        tr {
                            th scope="row" {
                                a href=(format!("/ui/targets/{}", target.id)) { (target.name) }
                                @if let Some(account) = target.connected_account_id {
                                    " "
                                    span.badge.managed {
                                        "Managed by " (emails.get(&account).map_or("a connected account", String::as_str))
                                    }
                                }
                            }
                            td { code { (target.slug.as_str()) } }
                            td.url { (target.base_url.as_str()) }
                            td { (summary.auth_method_count) }
                            td {
                                @if target.enabled { span.badge.ok { "enabled" } }
                                @else { span.badge.warn { "disabled" } }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-target" {
            h2 #new-target { "Add a target" }
            form.grid method="post" action="/ui/targets" {
                (session.csrf_field())
                label for="target-name" { "Name" }
                input #target-name type="text" name="name" required;
                label for="target-url" { "Base URL" }
                input #target-url type="url" name="base_url" required placeholder="https://api.example.com";
                label for="target-slug" { "Slug (optional)" }
                input #target-slug type="text" name="slug";
                div.span { button.primary type="submit" { "Add target" } }
            }
            p.hint { "Add its credentials (auth methods) with the management API or the CLI." }
        }
    };
    Ok(layout(&session, Nav::Targets, "Targets", content))
}

pub async fn create(
    session: Session,
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let slug = form
        .get("slug")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let created = state
        .management
        .create_target(NewTargetInput {
            name: form.get("name").unwrap_or_default().to_owned(),
            base_url: form.get("base_url").unwrap_or_default().to_owned(),
            slug,
            enabled: None,
        })
        .await?;
    Ok(see_other(&format!("/ui/targets/{}", created.target.id)))
}

pub async fn detail(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> UiResult {
    let id = parse_id("id", &id)?;
    let detail = state.management.target(&id.to_string()).await?;
    let target = &detail.summary.target;
    let methods = state.management.auth_methods(target.id).await?;
    let rules = state.management.guard_rules(target.id).await?;
    let permissions = state
        .management
        .store()
        .permissions_on_target(target.id)
        .await?;
    let token_names: HashMap<Uuid, String> = state
        .management
        .list_tokens()
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    let managed = target.is_managed();
    let content = html! {
        p.crumbs { a href="/ui/targets" { "Targets" } " / " (target.name) }
        h1 { (target.name) }
        @if managed {
            p.banner.info role="note" {
                "Managed by "
                strong { (detail.account.as_ref().map_or("a connected account", |a| a.email.as_str())) }
                ". It changes only through its connected account: reconnect or disconnect it on "
                a href="/ui/integrations" { "Integrations" } ". Its guard rules are yours to set below."
            }
        }
        dl.facts.card {
            dt { "Slug" } dd { code { (target.slug.as_str()) } }
            dt { "Base URL" } dd { (target.base_url.as_str()) }
            dt { "State" } dd { @if target.enabled { "enabled" } @else { "disabled" } }
            @if let Some(capability) = target.capability {
                dt { "Capability" } dd { (capability.as_str()) }
            }
            dt { "Created" } dd { (when(&target.created_at)) }
        }
        section aria-labelledby="methods" {
            h2 #methods { "Auth methods" }
            @if methods.is_empty() {
                p.empty { "No auth method." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Label" } th scope="col" { "Type" }
                        th scope="col" { "Credential" } th scope="col" { "Default" }
                        @if !managed { th scope="col" { span.sr-only { "Actions" } } }
                    } }
                    tbody {
                        @for method in &methods {
                            tr {
                                th scope="row" { (method.label) }
                                td { (method.kind.as_str()) }
                                td { code { (method.credential_hint) } }
                                td { @if method.is_default { "yes" } }
                                @if !managed {
                                    td {
                                        form method="post" action=(format!("/ui/targets/{}/auth-methods/{}/delete", target.id, method.id)) {
                                            (session.csrf_field())
                                            button.small.danger type="submit" { "Remove" span.sr-only { " " (method.label) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="perms" {
            h2 #perms { "Permissions" }
            @if permissions.is_empty() {
                p.empty { "No token may use this target." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Token" } th scope="col" { "Access" } th scope="col" { "Since" } } }
                    tbody {
                        @for permission in &permissions {
                            tr {
                                th scope="row" {
                                    a href=(format!("/ui/tokens/{}", permission.token_id)) {
                                        (token_names.get(&permission.token_id).map_or("unknown token", String::as_str))
                                    }
                                }
                                td { @if permission.read_only { "read-only" } @else { "read and write" } }
                                td { (when(&permission.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        (guard_section(&session, target, &rules))
        @if !managed {
            section.card aria-labelledby="edit" {
                h2 #edit { "Edit target" }
                form.grid method="post" action=(format!("/ui/targets/{}/edit", target.id)) {
                    (session.csrf_field())
                    label for="edit-name" { "Name" }
                    input #edit-name type="text" name="name" value=(target.name) required;
                    label for="edit-url" { "Base URL" }
                    input #edit-url type="url" name="base_url" value=(target.base_url.as_str()) required;
                    label for="edit-enabled" { "Enabled" }
                    input #edit-enabled type="checkbox" name="enabled" checked[target.enabled];
                    div.span { button.primary type="submit" { "Save" } }
                }
            }
            section.card aria-labelledby="new-method" {
                h2 #new-method { "Add an auth method" }
                form.grid method="post" action=(format!("/ui/targets/{}/auth-methods", target.id)) {
                    (session.csrf_field())
                    label for="method-label" { "Label" }
                    input #method-label type="text" name="label" required;
                    label for="method-type" { "Type" }
                    select #method-type name="type" {
                        option value="bearer" { "Bearer token" }
                        option value="basic" { "Basic (user:password)" }
                    }
                    label for="method-credential" { "Credential" }
                    input #method-credential type="password" name="credential" autocomplete="off" required;
                    div.span { button.primary type="submit" { "Add auth method" } }
                }
                p.hint { "Only a hint of the credential is ever shown again. Other types: use the management API." }
            }
            section.card.danger-zone aria-labelledby="delete" {
                h2 #delete { "Delete target" }
                p { "Deletes the target, its auth methods and every permission on it." }
                form method="post" action=(format!("/ui/targets/{}/delete", target.id)) {
                    (session.csrf_field())
                    button.danger type="submit" { "Delete " (target.name) }
                }
            }
        }
    };
    Ok(layout(&session, Nav::Targets, &target.name, content))
}

pub async fn edit(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    state
        .management
        .update_target(
            id,
            TargetPatchInput {
                name: form.get("name").map(str::to_owned),
                base_url: form.get("base_url").map(str::to_owned),
                enabled: Some(form.checked("enabled")),
                guard_defaults: None,
            },
        )
        .await?;
    Ok(see_other(&format!("/ui/targets/{id}")))
}

pub async fn delete(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    state.management.delete_target(parse_id("id", &id)?).await?;
    Ok(see_other("/ui/targets"))
}

pub async fn create_auth_method(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    state
        .management
        .create_auth_method(
            id,
            form.get("label").unwrap_or_default(),
            form.get("type").unwrap_or_default(),
            &serde_json::Value::String(form.get("credential").unwrap_or_default().to_owned()),
            None,
        )
        .await?;
    Ok(see_other(&format!("/ui/targets/{id}#methods")))
}

pub async fn delete_auth_method(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path((id, method_id)): Path<(String, String)>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let (id, method_id) = (parse_id("id", &id)?, parse_id("method_id", &method_id)?);
    state.management.delete_auth_method(id, method_id).await?;
    Ok(see_other(&format!("/ui/targets/{id}#methods")))
}

pub async fn create_guard_rule(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    let text = |name: &str| {
        form.get(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    state
        .management
        .create_guard_rule(
            id,
            GuardRuleInput {
                method: text("method"),
                path_match: form.get("path_match").unwrap_or_default().to_owned(),
                path: form.get("path").unwrap_or_default().trim().to_owned(),
                action: form.get("action").unwrap_or_default().to_owned(),
                reason: text("reason"),
                position: None,
            },
        )
        .await?;
    Ok(see_other(&format!("/ui/targets/{id}#guard")))
}

pub async fn delete_guard_rule(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path((id, rule_id)): Path<(String, String)>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let (id, rule_id) = (parse_id("id", &id)?, parse_id("rule_id", &rule_id)?);
    state.management.delete_guard_rule(id, rule_id).await?;
    Ok(see_other(&format!("/ui/targets/{id}#guard")))
}

/// The built-in rules on or off (the one change a managed target takes here).
pub async fn guard_defaults(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    let form = session.form(&body)?;
    let id = parse_id("id", &id)?;
    state
        .management
        .update_target(
            id,
            TargetPatchInput {
                guard_defaults: Some(form.checked("guard_defaults")),
                ..TargetPatchInput::default()
            },
        )
        .await?;
    Ok(see_other(&format!("/ui/targets/{id}#guard")))
}
