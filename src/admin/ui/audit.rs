//! `/ui/audit`: the audit log, newest first, with filters and a next-page link.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use maud::html;

use super::{Nav, Session, UiResult, layout, when};
use crate::admin::AdminState;
use crate::domain::audit::{AuditCursor, AuditQuery};
use crate::domain::validation::ValidationError;
use crate::manage::parse_id;

const PAGE_SIZE: u64 = 50;

#[derive(Default)]
struct Filters {
    token_id: String,
    target: String,
    status: String,
}

fn parse(raw: Option<&str>) -> Result<(AuditQuery, Filters), ValidationError> {
    let mut query = AuditQuery {
        limit: PAGE_SIZE,
        ..AuditQuery::default()
    };
    let mut filters = Filters::default();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_ref() {
            "token_id" => {
                query.token_id = Some(parse_id("token_id", value)?);
                value.clone_into(&mut filters.token_id);
            }
            "target" => {
                query.target_slug = Some(value.to_owned());
                value.clone_into(&mut filters.target);
            }
            "status" => {
                let status = value
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| ValidationError::new("status", "must be an HTTP status code"))?;
                query.status_code = Some(status);
                value.clone_into(&mut filters.status);
            }
            "before" => {
                query.before =
                    Some(AuditCursor::decode(value).ok_or_else(|| {
                        ValidationError::new("before", "must be a next-page cursor")
                    })?);
            }
            _ => {}
        }
    }
    Ok((query, filters))
}

pub async fn page(
    session: Session,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let (query, filters) = parse(raw.as_deref())?;
    let tokens = state.management.list_tokens().await?;
    let (entries, next) = state.management.audit_page(&query).await?;
    let next_link = next.map(|cursor| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("token_id", &filters.token_id),
            ("target", &filters.target),
            ("status", &filters.status),
        ] {
            if !value.is_empty() {
                url.append_pair(name, value);
            }
        }
        url.append_pair("before", &cursor.encode());
        format!("/ui/audit?{}", url.finish())
    });
    let content = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/ui/audit" aria-label="Filter the audit log" {
            div {
                label for="f-token" { "Token" }
                select #f-token name="token_id" {
                    option value="" { "Any token" }
                    @for token in &tokens {
                        @let id = token.id.to_string();
                        option value=(id) selected[id == filters.token_id] { (token.name) }
                    }
                }
            }
            div {
                label for="f-target" { "Target slug" }
                input #f-target type="text" name="target" value=(filters.target);
            }
            div {
                label for="f-status" { "Status" }
                input #f-status type="number" name="status" min="100" max="599" value=(filters.status);
            }
            div.filter-actions {
                button.primary type="submit" { "Filter" }
                a.button href="/ui/audit" { "Clear" }
            }
        }
        @if entries.is_empty() {
            p.empty { "No request matches." }
        } @else {
            table.audit {
                caption.sr-only { "Proxied requests, newest first" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Token" } th scope="col" { "Target" }
                    th scope="col" { "Via" } th scope="col" { "Request" } th scope="col" { "Status" } th scope="col" { "Duration" }
                    th scope="col" { "Client" } th scope="col" { "Error" }
                } }
                tbody {
                    @for entry in &entries {
                        tr {
                            td { (when(&entry.created_at)) }
                            td { (entry.token_name) }
                            td { code { (entry.target_slug) } }
                            td { (entry.interface.as_str()) }
                            td.url { (entry.method) " " (entry.path) }
                            td { span class=(if entry.status_code < 400 { "badge ok" } else { "badge bad" }) { (entry.status_code) } }
                            td { (entry.duration_ms) " ms" }
                            td { (entry.client_ip) }
                            td { @if let Some(error) = &entry.error { code { (error) } } }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next_link {
            nav.pager aria-label="Pages" { a.button href=(next) rel="next" { "Next page (older) →" } }
        }
    };
    Ok(layout(&session, Nav::Audit, "Audit log", content))
}
