//! `/ui/overview`: the UI's home — what the gateway did in the last hour, day or week, from
//! the same `Stats` as `GET /api/stats`. Charts are SVG drawn here on the server: no script,
//! no chart library, nothing fetched from elsewhere.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use maud::{Markup, html};

use super::{Nav, Session, UiResult, layout};
use crate::admin::AdminState;
use crate::admin::stats::parse_window;
use crate::domain::accounts::AccountStatus;
use crate::domain::stats::{SeriesPoint, Stats, StatsWindow, StatusCounts, TrafficStats};

/// The chart's drawing box (SVG user units); it scales to the page width.
const CHART_WIDTH: f64 = 960.0;
const CHART_HEIGHT: f64 = 180.0;

/// A status class in the chart: its legend name, CSS class, and its count in a bucket.
type ClassBar = (&'static str, &'static str, fn(&StatusCounts) -> u64);

/// Stacked from the bottom: successes first, server errors on top.
const CLASSES: [ClassBar; 4] = [
    ("2xx", "ok", |s| s.success),
    ("3xx", "redirect", |s| s.redirect),
    ("4xx", "client", |s| s.client_error + s.other),
    ("5xx", "server", |s| s.server_error),
];

pub async fn page(
    session: Session,
    State(state): State<Arc<AdminState>>,
    RawQuery(raw): RawQuery,
) -> UiResult {
    let window = parse_window(raw.as_deref())?;
    let stats = state.management.stats(window).await?;
    let content = html! {
        div.page-head {
            h1 { "Overview" }
            nav.windows aria-label="Time window" {
                @for option in StatsWindow::ALL {
                    @let href = format!("/ui/overview?window={}", option.as_str());
                    @if option == window {
                        a href=(href) aria-current="page" { (label(option)) }
                    } @else {
                        a href=(href) { (label(option)) }
                    }
                }
            }
        }
        (attention(&stats))
        (tiles(&stats))
        section.card aria-labelledby="chart-title" {
            h2 #chart-title { "Requests per " (bucket_label(&stats)) " by status" }
            (chart(&stats))
        }
        section aria-labelledby="targets-title" {
            h2 #targets-title { "Targets" }
            (targets_table(&stats.targets))
        }
        div.two-columns {
            section aria-labelledby="tokens-title" {
                h2 #tokens-title { "Top tokens" }
                (top_tokens(&stats))
            }
            section aria-labelledby="refresh-title" {
                h2 #refresh-title { "Token refreshes" }
                (refreshes(&stats))
            }
        }
    };
    Ok(layout(&session, Nav::Overview, "Overview", content))
}

fn label(window: StatsWindow) -> &'static str {
    match window {
        StatsWindow::Hour => "Last hour",
        StatsWindow::Day => "Last 24 hours",
        StatsWindow::Week => "Last 7 days",
    }
}

fn bucket_label(stats: &Stats) -> String {
    match stats.bucket_seconds {
        60 => "minute".to_owned(),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

fn ms(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn percent(value: f64) -> String {
    if value > 0.0 && value < 0.001 {
        "<0.1 %".to_owned()
    } else {
        format!("{:.1} %", value * 100.0)
    }
}

/// Accounts a person must act on, above everything else.
fn attention(stats: &Stats) -> Markup {
    let accounts = &stats.accounts.needs_attention;
    html! {
        @if !accounts.is_empty() {
            section.banner.error #attention role="alert" aria-labelledby="attention-title" {
                h2 #attention-title { (accounts.len()) " connected account(s) need a person" }
                ul {
                    @for account in accounts {
                        li data-account=(account.id) {
                            strong { (account.email) } " (" (account.provider) ") — "
                            (match account.status {
                                AccountStatus::Disconnected => "disconnected: reconnect it",
                                AccountStatus::Error => "error: the provider app needs fixing",
                                AccountStatus::Connected => "refreshes are failing",
                            })
                            @if let Some(problem) = &account.problem { span.muted { " · " (problem) } }
                        }
                    }
                }
                p { a href="/ui/integrations" { "Open Integrations" } }
            }
        }
    }
}

fn tiles(stats: &Stats) -> Markup {
    let totals = &stats.totals;
    let accounts = &stats.accounts;
    html! {
        dl.tiles {
            div.tile data-tile="requests" {
                dt { "Requests" } dd { (totals.requests) }
                dd.hint { (totals.interfaces.gateway) " gateway · " (totals.interfaces.mcp) " MCP" }
            }
            div.tile.(if totals.status.server_error > 0 { "bad" } else { "" }) data-tile="errors" {
                dt { "Server errors (5xx)" } dd { (percent(totals.error_ratio)) }
                dd.hint { (totals.status.server_error) " of " (totals.requests) " · 4xx " (totals.status.client_error) }
            }
            div.tile data-tile="latency" {
                dt { "Latency p50 / p95" } dd { (ms(totals.p50_ms)) " / " (ms(totals.p95_ms)) }
                dd.hint { "upstream share " (totals.upstream_share.map_or("–".to_owned(), percent)) }
            }
            div.tile.(if accounts.needs_attention.is_empty() { "" } else { "bad" }) data-tile="accounts" {
                dt { "Connected accounts" } dd { (accounts.connected) " connected" }
                dd.hint { (accounts.disconnected) " disconnected · " (accounts.error) " in error" }
            }
            div.tile.(if stats.audit_dropped > 0 { "bad" } else { "" }) data-tile="dropped" {
                dt { "Audit events dropped" } dd { (stats.audit_dropped) }
                dd.hint { "queue full; see docs/operations.md" }
            }
        }
    }
}

/// A stacked bar per time bucket, with a tooltip (`<title>`) per bar and the scale in text.
fn chart(stats: &Stats) -> Markup {
    let peak = stats
        .series
        .iter()
        .map(|p| p.status.total())
        .max()
        .unwrap_or(0);
    let count = stats.series.len().max(1);
    let slot = CHART_WIDTH / count as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = if peak == 0 {
        0.0
    } else {
        CHART_HEIGHT / peak as f64
    };
    let first = stats.series.first().map(|p| p.start);
    let middle = stats.series.get(count / 2).map(|p| p.start);
    let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or(String::new(), |at| match stats.window {
            StatsWindow::Week => at.format("%a %d %b %H:%M").to_string(),
            _ => at.format("%H:%M").to_string(),
        })
    };
    html! {
        div.chart {
            div.scale aria-hidden="true" { span { (peak) } span { "0" } }
            svg.bars viewBox=(format!("0 0 {CHART_WIDTH} {CHART_HEIGHT}")) preserveAspectRatio="none"
                role="img" aria-label=(format!("{} requests in the window, at most {peak} per bucket", stats.totals.requests)) {
                line.axis x1="0" y1=(CHART_HEIGHT) x2=(CHART_WIDTH) y2=(CHART_HEIGHT) {}
                @for (i, point) in stats.series.iter().enumerate() {
                    (bar_stack(point, i as f64 * slot + (slot - bar) / 2.0, bar, scale))
                }
            }
        }
        div.chart-axis aria-hidden="true" {
            span { (time(first)) } span { (time(middle)) } span { "now" }
        }
        ul.legend {
            @for (name, class, _) in CLASSES {
                li { span.(format!("swatch {class}")) {} (name) }
            }
        }
    }
}

fn bar_stack(point: &SeriesPoint, x: f64, width: f64, scale: f64) -> Markup {
    let total = point.status.total();
    let mut y = CHART_HEIGHT;
    let tooltip = format!(
        "{}: {} requests — 2xx {}, 3xx {}, 4xx {}, 5xx {}",
        point.start.format("%Y-%m-%d %H:%M UTC"),
        total,
        point.status.success,
        point.status.redirect,
        point.status.client_error + point.status.other,
        point.status.server_error
    );
    html! {
        @if total > 0 {
            g data-start=(point.start.to_rfc3339()) data-total=(total) {
                title { (tooltip) }
                @for (_, class, count) in CLASSES {
                    @let n = count(&point.status);
                    @if n > 0 {
                        @let height = n as f64 * scale;
                        @let top = { y -= height; y };
                        rect.(class) x=(format!("{x:.2}")) y=(format!("{top:.2}"))
                            width=(format!("{width:.2}")) height=(format!("{height:.2}")) {}
                    }
                }
            }
        }
    }
}

fn targets_table(targets: &[TrafficStats]) -> Markup {
    html! {
        @if targets.is_empty() {
            p.empty { "No requests in this window." }
        } @else {
            div.table-scroll {
                table.stats {
                    caption.sr-only { "Requests per target, most first" }
                    thead { tr {
                        th scope="col" { "Target" } th scope="col" { "Requests" }
                        th scope="col" { "2xx" } th scope="col" { "4xx" } th scope="col" { "5xx" }
                        th scope="col" { "Error ratio" } th scope="col" { "p50" } th scope="col" { "p95" }
                        th scope="col" { "Upstream share" } th scope="col" { "MCP" }
                    } }
                    tbody {
                        @for t in targets {
                            tr data-target=(t.target_slug) {
                                th scope="row" { code { (t.target_slug) } }
                                td data-cell="requests" { (t.requests) }
                                td data-cell="2xx" { (t.status.success + t.status.redirect) }
                                td data-cell="4xx" { (t.status.client_error + t.status.other) }
                                td data-cell="5xx" { (t.status.server_error) }
                                td data-cell="error-ratio" {
                                    span.(if t.status.server_error > 0 { "badge bad" } else { "badge ok" }) { (percent(t.error_ratio)) }
                                }
                                td data-cell="p50" { (ms(t.p50_ms)) }
                                td data-cell="p95" { (ms(t.p95_ms)) }
                                td data-cell="upstream-share" { (t.upstream_share.map_or("–".to_owned(), percent)) }
                                td data-cell="mcp" { (t.interfaces.mcp) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn top_tokens(stats: &Stats) -> Markup {
    let most = stats.top_tokens.first().map_or(1, |t| t.requests.max(1));
    html! {
        @if stats.top_tokens.is_empty() {
            p.empty { "No token made a request in this window." }
        } @else {
            table.stats.tokens {
                caption.sr-only { "Tokens with the most requests" }
                thead { tr { th scope="col" { "Token" } th scope="col" { "Requests" } th scope="col" { span.sr-only { "Share" } } } }
                tbody {
                    @for token in &stats.top_tokens {
                        tr data-token=(token.token_id) {
                            th scope="row" { a href=(format!("/ui/tokens/{}", token.token_id)) { (token.name) } }
                            td data-cell="requests" { (token.requests) }
                            td.meter {
                                svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true" {
                                    rect.ok x="0" y="0" height="8"
                                        width=(format!("{:.1}", token.requests as f64 * 100.0 / most as f64)) {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn refreshes(stats: &Stats) -> Markup {
    html! {
        @if stats.token_refresh.is_empty() {
            p.empty { "No token refresh in this window." }
        } @else {
            table.stats {
                caption.sr-only { "Token refreshes by provider and outcome" }
                thead { tr { th scope="col" { "Provider" } th scope="col" { "Outcome" } th scope="col" { "Count" } } }
                tbody {
                    @for r in &stats.token_refresh {
                        tr data-refresh=(format!("{}:{}", r.provider, r.outcome)) {
                            th scope="row" { (r.provider) }
                            td { span.(if r.outcome == "success" { "badge ok" } else { "badge bad" }) { (r.outcome) } }
                            td data-cell="count" { (r.count) }
                        }
                    }
                }
            }
        }
    }
}
