//! `/ui/approvals`: requests a guard rule held for a person (SPEC §12), pending first, and the
//! page `/ui/approvals/{id}` — the approval URL the agent and the webhook carry — where an
//! admin approves or denies one. A decision is one-time: a decided approval shows its outcome.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use chrono::Utc;
use maud::{Markup, html};
use uuid::Uuid;

use super::{Nav, Session, UiResult, layout, see_other, when};
use crate::admin::AdminState;
use crate::admin::guard::decided_by;
use crate::api_error::ApiError;
use crate::domain::Timestamp;
use crate::domain::guard::{Approval, ApprovalStatus, Decision};
use crate::manage::parse_id;

/// Decided approvals the list shows below the pending ones.
const RECENT_DECIDED: usize = 50;

fn status_badge(status: ApprovalStatus) -> Markup {
    let class = match status {
        ApprovalStatus::Pending => "badge warn",
        ApprovalStatus::Approved | ApprovalStatus::Used => "badge ok",
        ApprovalStatus::Denied => "badge bad",
        ApprovalStatus::Expired => "badge",
    };
    html! { span class=(class) data-status=(status.as_str()) { (status.as_str()) } }
}

/// "in 14 min" / "in 40 s" / "expired", as an admin reads a deadline.
fn expires_in(expires_at: &Timestamp, now: Timestamp) -> String {
    let left = (*expires_at - now).num_seconds();
    match left {
        ..=0 => "expired".to_owned(),
        1..=119 => format!("in {left} s"),
        _ => format!("in {} min", left / 60),
    }
}

/// `DELETE /items/1?x=y`, as one piece of code.
fn request_line(approval: &Approval) -> Markup {
    let request = &approval.request;
    html! {
        code.request { (request.method) " " (request.path)
            @if let Some(query) = &request.query { "?" (query) } }
    }
}

/// Approve and Deny buttons for a pending approval; `from_list` brings the admin back to the list.
fn decision_forms(session: &Session, approval: &Approval, from_list: bool) -> Markup {
    let base = format!("/ui/approvals/{}", approval.id);
    html! {
        div.actions.decide {
            form method="post" action=(format!("{base}/approve")) {
                (session.csrf_field())
                @if from_list { input type="hidden" name="from" value="list"; }
                button.primary type="submit" data-action="approve" { "Approve" }
            }
            form method="post" action=(format!("{base}/deny")) {
                (session.csrf_field())
                @if from_list { input type="hidden" name="from" value="list"; }
                button.danger type="submit" data-action="deny" { "Deny" }
            }
        }
    }
}

pub async fn list(session: Session, State(state): State<Arc<AdminState>>) -> UiResult {
    let now = Utc::now();
    let approvals = state.management.approvals(None).await?;
    let (pending, decided): (Vec<&Approval>, Vec<&Approval>) = approvals
        .iter()
        .partition(|a| a.effective_status(now) == ApprovalStatus::Pending);
    // Soonest deadline first: the one most likely to lapse.
    let mut pending = pending;
    pending.sort_by_key(|a| a.expires_at);
    let content = html! {
        h1 { "Approvals" }
        p.hint { "Requests a guard rule held until a person decides. An approval lets the agent re-send exactly that request once." }
        section aria-labelledby="pending" {
            h2 #pending { "Pending" @if !pending.is_empty() { " " span.badge.warn { (pending.len()) } } }
            @if pending.is_empty() {
                p.empty { "Nothing waits for a decision." }
            } @else {
                div.table-scroll {
                    table.approvals {
                        caption.sr-only { "Pending approvals, the soonest to expire first" }
                        thead { tr {
                            th scope="col" { "Request" } th scope="col" { "Token" } th scope="col" { "Target" }
                            th scope="col" { "Reason" } th scope="col" { "Expires" } th scope="col" { span.sr-only { "Decide" } }
                        } }
                        tbody {
                            @for approval in &pending {
                                tr data-approval=(approval.id) {
                                    th scope="row" { a href=(format!("/ui/approvals/{}", approval.id)) { (request_line(approval)) } }
                                    td { (approval.token_name) }
                                    td { code { (approval.target_slug) } }
                                    td { (approval.reason) }
                                    td { (expires_in(&approval.expires_at, now)) }
                                    td { (decision_forms(&session, approval, true)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="decided" {
            h2 #decided { "Recently decided" }
            @if decided.is_empty() {
                p.empty { "No decision yet." }
            } @else {
                div.table-scroll {
                    table.approvals {
                        caption.sr-only { "Decided, used and expired approvals, newest first" }
                        thead { tr {
                            th scope="col" { "Request" } th scope="col" { "Token" } th scope="col" { "Target" }
                            th scope="col" { "Status" } th scope="col" { "Decided by" } th scope="col" { "Decided" }
                        } }
                        tbody {
                            @for approval in decided.iter().take(RECENT_DECIDED) {
                                tr data-approval=(approval.id) {
                                    th scope="row" { a href=(format!("/ui/approvals/{}", approval.id)) { (request_line(approval)) } }
                                    td { (approval.token_name) }
                                    td { code { (approval.target_slug) } }
                                    td { (status_badge(approval.effective_status(now))) }
                                    td { @match &approval.decided_by { Some(by) => (by), None => span.muted { "—" } } }
                                    td { @match &approval.decided_at { Some(at) => (when(at)), None => span.muted { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&session, Nav::Approvals, "Approvals", content))
}

/// The page of one approval, with `notice` (a banner) above it.
async fn detail_page(
    session: &Session,
    state: &AdminState,
    id: Uuid,
    notice: Option<Markup>,
) -> UiResult {
    let approval = state.management.approval(id).await?;
    let now = Utc::now();
    let status = approval.effective_status(now);
    let request = &approval.request;
    let content = html! {
        p.crumbs { a href="/ui/approvals" { "Approvals" } " / " (approval.id) }
        h1 {
            @if status == ApprovalStatus::Pending { "Approve this request?" } @else { "Approval" }
            " " (status_badge(status))
        }
        @if let Some(notice) = notice { (notice) }
        @match status {
            ApprovalStatus::Pending => p.banner.info role="note" {
                "Agent token " strong { (approval.token_name) } " asks to send this request to "
                strong { (approval.target_slug) } " — " (approval.reason) "."
            },
            ApprovalStatus::Approved => p.banner.ok role="status" #outcome {
                "Approved" @if let Some(by) = &approval.decided_by { " by " (by) }
                ". The agent may send exactly this request once, before it expires."
            },
            ApprovalStatus::Used => p.banner.ok role="status" #outcome {
                "Approved" @if let Some(by) = &approval.decided_by { " by " (by) }
                " and used: the request went through."
            },
            ApprovalStatus::Denied => p.banner.error role="status" #outcome {
                "Denied" @if let Some(by) = &approval.decided_by { " by " (by) }
                ". The agent cannot send this request with it."
            },
            ApprovalStatus::Expired => p.banner.error role="status" #outcome {
                "Expired: nobody decided in time, or the approval was not used in time. The agent has to ask again."
            },
        }
        dl.facts.card #request {
            dt { "Method" } dd data-field="method" { code { (request.method) } }
            dt { "Path" } dd data-field="path" { code { (request.path) } }
            dt { "Query" } dd data-field="query" {
                @match &request.query { Some(query) => code { (query) }, None => span.muted { "none" } }
            }
            dt { "Target" } dd data-field="target" {
                a href=(format!("/ui/targets/{}", request.target_id)) { code { (approval.target_slug) } }
            }
            dt { "Token" } dd data-field="token" {
                a href=(format!("/ui/tokens/{}", request.token_id)) { (approval.token_name) }
            }
            dt { "Reason" } dd data-field="reason" { (approval.reason) }
            dt { "Body" } dd data-field="body" {
                (request.body_size) " bytes"
                @if request.body_size > 0 { br; span.muted { "SHA-256 " } code.hash { (request.body_sha256) } }
            }
            dt { "Status" } dd data-field="status" { (status.as_str()) }
            dt { "Requested" } dd { (when(&approval.created_at)) }
            dt { "Expires" } dd data-field="expires" {
                (when(&approval.expires_at))
                @if status == ApprovalStatus::Pending || status == ApprovalStatus::Approved {
                    " (" (expires_in(&approval.expires_at, now)) ")"
                }
            }
            @if let Some(by) = &approval.decided_by {
                dt { "Decided by" } dd data-field="decided-by" { (by) }
            }
            @if let Some(at) = &approval.decided_at {
                dt { "Decided" } dd { (when(at)) }
            }
        }
        @if let Some(preview) = &approval.body_preview {
            section aria-labelledby="body-preview" {
                h2 #body-preview { "Body" }
                p.hint { "The start of the body; the target's secrets are masked." }
                pre.body-preview { (preview) }
            }
        }
        @if status == ApprovalStatus::Pending {
            (decision_forms(session, &approval, false))
            p.hint { "Approve lets the agent re-send exactly this request (same method, path, query and body) once. Deny refuses it." }
        }
    };
    Ok(layout(session, Nav::Approvals, "Approval", content))
}

pub async fn detail(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> UiResult {
    detail_page(&session, &state, parse_id("id", &id)?, None).await
}

async fn decide(
    session: Session,
    state: &AdminState,
    id: &str,
    body: &Bytes,
    decision: Decision,
) -> UiResult {
    let form = session.form(body)?;
    let id = parse_id("id", id)?;
    let result = state
        .management
        .decide_approval(id, decision, &decided_by(&session.admin))
        .await;
    match result {
        Ok(_) if form.get("from") == Some("list") => Ok(see_other("/ui/approvals")),
        Ok(_) => Ok(see_other(&format!("/ui/approvals/{id}"))),
        // Decided already (another admin, another tab) or expired: say so, do not crash.
        Err(error @ ApiError::ApprovalClosed(_)) => {
            let notice = html! {
                p.banner.error role="alert" #conflict {
                    "Not changed: " (error.to_string()) ". A decision is made once."
                }
            };
            let page = detail_page(&session, state, id, Some(notice)).await?;
            Ok((StatusCode::CONFLICT, page).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn approve(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    decide(session, &state, &id, &body, Decision::Approve).await
}

pub async fn deny(
    session: Session,
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> UiResult {
    decide(session, &state, &id, &body, Decision::Deny).await
}
