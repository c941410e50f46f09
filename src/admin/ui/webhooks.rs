//! `/ui/webhooks`: endpoints (create with the secret shown once, delete), "send test event",
//! and the delivery log of each endpoint.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use maud::{Markup, html};
use uuid::Uuid;

use super::{Nav, Session, UiResult, layout, see_other, when};
use crate::admin::AdminState;
use crate::domain::webhooks::{DeliveryStatus, EventType, WebhookEndpoint, WebhookSecret};
use crate::manage::parse_id;

/// The signing secret of a new endpoint, shown this once.
fn secret_box(endpoint: &WebhookEndpoint, secret: &WebhookSecret) -> Markup {
    html! {
        section.banner.ok.secret role="status" aria-labelledby="new-secret" {
            h2 #new-secret { "Signing secret for " (endpoint.url.as_str()) " — copy it now" }
            p { "This is the only time Gatehouse shows it. Receivers verify the "
                code { "webhook-signature" } " header with it." }
            div.copy {
                input #plaintext type="text" readonly value=(secret.expose()) aria-label="Signing secret";
                button type="button" onclick="navigator.clipboard.writeText(document.getElementById('plaintext').value);this.textContent='Copied'" { "Copy" }
            }
        }
    }
}

fn status_badge(status: DeliveryStatus) -> Markup {
    match status {
        DeliveryStatus::Delivered => html! { span.badge.ok { "delivered" } },
        DeliveryStatus::Pending => html! { span.badge.warn { "pending" } },
        DeliveryStatus::Failed => html! { span.badge.bad { "failed" } },
    }
}

async fn list_page(session: &Session, state: &AdminState, created: Option<Markup>) -> UiResult {
    let endpoints = state.management.list_webhooks().await?;
    let content = html! {
        h1 { "Webhooks" }
        @if let Some(created) = created { (created) }
        p.hint { "Signed notifications (Standard Webhooks) when an account needs attention or a token stops working." }
        @if endpoints.is_empty() {
            p.empty { "No webhook yet." }
        } @else {
            table {
                caption.sr-only { "Webhook endpoints" }
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "Events" }
                    th scope="col" { "Created" } th scope="col" { "State" }
                } }
                tbody {
                    @for endpoint in &endpoints {
                        tr {
                            th scope="row" { a href=(format!("/ui/webhooks/{}", endpoint.id)) { (endpoint.url.as_str()) }
                                @if let Some(description) = &endpoint.description { br; span.muted { (description) } } }
                            td { (endpoint.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { (when(&endpoint.created_at)) }
                            td { @if endpoint.enabled { span.badge.ok { "enabled" } } @else { span.badge.warn { "disabled" } } }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-webhook" {
            h2 #new-webhook { "Add a webhook" }
            form.grid method="post" action="/ui/webhooks" {
                (session.csrf_field())
                label for="webhook-url" { "URL" }
                input #webhook-url type="url" name="url" required placeholder="https://hooks.example.com/gatehouse";
                label for="webhook-description" { "Description (optional)" }
                input #webhook-description type="text" name="description";
                fieldset.span {
                    legend { "Events" }
                    @for kind in EventType::SUBSCRIBABLE {
                        label {
                            input type="checkbox" name="events" value=(kind.as_str()) checked;
                            " " code { (kind.as_str()) }
                        }
                        " "
                    }
                }
                div.span { button.primary type="submit" { "Add webhook" } }
            }
        }
    };
    Ok(layout(session, Nav::Webhooks, "Webhooks", content))
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
    let events: Vec<String> = form.all("events").map(str::to_owned).collect();
    let (endpoint, secret) = state
        .management
        .create_webhook(
            form.get("url").unwrap_or_default(),
            &events,
            form.get("description"),
        )
        .await?;
    list_page(&session, &state, Some(secret_box(&endpoint, &secret))).await
}

async fn detail_page(
    session: &Session,
    state: &AdminState,
    id: Uuid,
    note: Option<&str>,
) -> UiResult {
    let endpoint = state.management.webhook(id).await?;
    let deliveries = state.management.webhook_deliveries(id, None).await?;
    let content = html! {
        p.crumbs { a href="/ui/webhooks" { "Webhooks" } " / " (endpoint.url.as_str()) }
        h1 { (endpoint.url.as_str()) " "
            @if endpoint.enabled { span.badge.ok { "enabled" } } @else { span.badge.warn { "disabled" } }
        }
        @if let Some(note) = note { p.banner.ok role="status" { (note) } }
        dl.facts.card {
            dt { "Events" } dd { (endpoint.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")) }
            @if let Some(description) = &endpoint.description { dt { "Description" } dd { (description) } }
            dt { "Created" } dd { (when(&endpoint.created_at)) }
        }
        div.actions {
            form method="post" action=(format!("/ui/webhooks/{id}/test")) {
                (session.csrf_field())
                button.primary type="submit" { "Send test event" }
            }
        }
        section aria-labelledby="deliveries" {
            h2 #deliveries { "Deliveries" }
            @if deliveries.is_empty() {
                p.empty { "Nothing sent yet." }
            } @else {
                table {
                    caption.sr-only { "Latest deliveries, newest first" }
                    thead { tr {
                        th scope="col" { "Event" } th scope="col" { "Status" } th scope="col" { "Attempts" }
                        th scope="col" { "Last answer" } th scope="col" { "Created" } th scope="col" { "Next attempt" }
                    } }
                    tbody {
                        @for (delivery, _) in &deliveries {
                            tr {
                                th scope="row" { code { (delivery.event_type) } br; span.muted { (delivery.event_id) } }
                                td { (status_badge(delivery.status)) }
                                td { (delivery.attempts) }
                                td {
                                    @if let Some(code) = delivery.last_status_code { "HTTP " (code) }
                                    @else if let Some(error) = &delivery.last_error { (error) }
                                    @else { span.muted { "—" } }
                                }
                                td { (when(&delivery.created_at)) }
                                td { @if delivery.status == DeliveryStatus::Pending { (when(&delivery.next_attempt_at)) } @else { span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
        }
        section.card.danger-zone aria-labelledby="danger" {
            h2 #danger { "Delete" }
            form method="post" action=(format!("/ui/webhooks/{id}/delete")) {
                (session.csrf_field())
                button.danger type="submit" { "Delete webhook" }
            }
            p.hint { "Deleting removes the endpoint and its delivery log; pending deliveries are dropped." }
        }
    };
    Ok(layout(session, Nav::Webhooks, "Webhook", content))
}

pub async fn detail(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> UiResult {
    detail_page(&session, &state, parse_id("id", &id)?, None).await
}

pub async fn test(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    let id = parse_id("id", &id)?;
    let event = state.management.send_test_webhook(id).await?;
    detail_page(
        &session,
        &state,
        id,
        Some(&format!("Test event {} queued.", event.id)),
    )
    .await
}

pub async fn delete(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    session.form(&body)?;
    state
        .management
        .delete_webhook(parse_id("id", &id)?)
        .await?;
    Ok(see_other("/ui/webhooks"))
}
