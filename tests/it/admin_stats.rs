//! `GET /api/stats` (docs/operations.md "Overview and stats"): counts from the per-minute
//! rollups the audit writer keeps, their histogram columns, counters, and audit retention
//! across two replicas.

use std::time::Duration;

use gatehouse::domain::audit::{AuditEntry, Interface};
use gatehouse::domain::stats::{Counter, LATENCY_BOUNDS_MS, StatsWindow};
use gatehouse::retention::Retention;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::agent::{is_probe, within};
use crate::support::db::TestDb;
use crate::support::upstream::FakeUpstream;

fn entry(
    slug: &str,
    token: Uuid,
    status: u16,
    ms: u64,
    at: chrono::DateTime<chrono::Utc>,
) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        token_id: Some(token),
        token_name: format!("token-{}", &token.simple().to_string()[..4]),
        target_id: None,
        target_slug: slug.into(),
        method: "GET".into(),
        path: "/x".into(),
        status_code: status,
        client_ip: "127.0.0.1".into(),
        duration_ms: ms,
        upstream_ms: Some(ms / 2),
        error: None,
        interface: Interface::Gateway,
        guard_action: None,
        approved_by: None,
        created_at: at,
    }
}

/// A token row, so audit rows may reference it.
async fn stored_token(store: &gatehouse::store::Store) -> Uuid {
    store
        .insert_agent_token(gatehouse::store::tokens::NewAgentToken {
            name: "agent".into(),
            hash: gatehouse::domain::tokens::AgentToken::generate().hash(),
            allowed_ips: gatehouse::domain::ip_allowlist::IpAllowlist::default(),
            rate_limit: None,
        })
        .await
        .unwrap()
        .id
}

async fn stats(app: &TestApp, window: &str) -> Value {
    app.api()
        .send(
            app.api()
                .request(Method::GET, &format!("/api/stats?window={window}")),
        )
        .await
        .expect(200)
        .clone()
}

fn target<'a>(stats: &'a Value, slug: &str) -> &'a Value {
    stats["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == slug)
        .unwrap_or_else(|| panic!("no target {slug} in {stats:#}"))
}

#[tokio::test]
async fn stats_count_proxied_traffic_per_target_status_class_and_token() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let good = app.agent_for("good", &upstream.url(""), None).await;
    let bad = app.agent_for("bad", &upstream.url(""), None).await;
    for i in 0..6 {
        app.get(&format!("/gateway/good/item/{i}"), &good.token)
            .await;
    }
    for _ in 0..3 {
        app.get("/gateway/bad/status/500", &bad.token).await;
    }
    app.get("/gateway/bad/status/404", &bad.token).await;
    // Every request above (and the readiness probes) written by the audit writer.
    app.wait_for_audit(10).await;

    let body = stats(&app, "1h").await;
    let good_stats = target(&body, "good");
    let bad_stats = target(&body, "bad");
    assert_eq!(
        good_stats["requests"].as_u64().unwrap() as usize,
        6 + probes_of(&app, "good").await,
        "{body:#}"
    );
    assert_eq!(bad_stats["status"]["5xx"], 3, "{body:#}");
    assert_eq!(good_stats["status"]["5xx"], 0);
    let bad_requests = bad_stats["requests"].as_f64().unwrap();
    assert!((bad_stats["error_ratio"].as_f64().unwrap() - 3.0 / bad_requests).abs() < 1e-9);
    assert_eq!(good_stats["interfaces"]["gateway"], good_stats["requests"]);
    assert!(good_stats["p95_ms"].as_f64().is_some());

    // The series covers the hour in minutes and adds up to the totals.
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 60);
    assert_eq!(body["bucket_seconds"], 60);
    let in_series: u64 = series
        .iter()
        .map(|p| {
            ["2xx", "3xx", "4xx", "5xx", "other"]
                .iter()
                .map(|c| p["status"][c].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(in_series, body["totals"]["requests"].as_u64().unwrap());

    // Both tokens are among the top tokens, with their requests.
    let top = body["top_tokens"].as_array().unwrap();
    let good_top = top
        .iter()
        .find(|t| t["token_id"] == good.token_id.to_string())
        .unwrap();
    assert_eq!(good_top["requests"], good_stats["requests"]);
    assert_eq!(good_top["name"], good.token_name.as_str());
    assert_eq!(body["audit_dropped"], 0);
    assert_eq!(body["accounts"]["connected"], 0);

    // The longer windows hold the same traffic.
    for window in ["24h", "7d"] {
        let longer = stats(&app, window).await;
        assert_eq!(
            longer["totals"]["requests"], body["totals"]["requests"],
            "{window}"
        );
    }
}

async fn probes_of(app: &TestApp, slug: &str) -> usize {
    app.audit_rows()
        .await
        .iter()
        .filter(|r| is_probe(r) && r.target_slug == slug)
        .count()
}

#[tokio::test]
async fn stats_refuse_an_unknown_window_or_parameter() {
    let app = TestApp::spawn().await;
    for query in ["window=2d", "window=", "since=1h"] {
        let reply = app
            .api()
            .send(
                app.api()
                    .request(Method::GET, &format!("/api/stats?{query}")),
            )
            .await;
        let field = if query.starts_with("since") {
            "since"
        } else {
            "window"
        };
        reply.expect_field_error(400, field);
    }
    let unauthenticated = reqwest::get(app.admin_url("/api/stats")).await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
}

#[tokio::test]
async fn rollups_add_up_across_batches_and_keep_every_latency_bucket() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let token = stored_token(&store).await;
    let now = chrono::Utc::now();
    // One request at each bucket's upper bound, and one past the last: 16 buckets.
    let mut durations: Vec<u64> = LATENCY_BOUNDS_MS.to_vec();
    durations.push(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] + 1);
    let first: Vec<_> = durations
        .iter()
        .map(|&ms| entry("t", token, 200, ms, now))
        .collect();
    store.write_audit_batch(first, &[], 0).await.unwrap();
    // A second batch (as another replica's writer would) adds to the same keys.
    let second: Vec<_> = durations
        .iter()
        .map(|&ms| entry("t", token, 200, ms, now))
        .collect();
    store.write_audit_batch(second, &[], 3).await.unwrap();
    store
        .count(Counter::TokenRefresh, "microsoft_365:success", 2)
        .await
        .unwrap();

    let range = StatsWindow::Hour.range(chrono::Utc::now());
    let sums = store.window_sums(&range).await.unwrap();
    assert_eq!(sums.targets.len(), 1, "{sums:?}");
    let (slug, counts) = &sums.targets[0];
    assert_eq!(slug, "t");
    assert_eq!(counts.requests(), 32);
    assert_eq!(counts.status.success, 32);
    assert_eq!(counts.mcp, 0);
    // Each column holds exactly its two requests: the schema's and the domain's bounds agree.
    assert_eq!(counts.latency, [2; 16]);
    let expected_sum: u64 = durations.iter().sum::<u64>() * 2;
    assert_eq!(counts.duration_ms_sum, expected_sum);
    assert_eq!(sums.top_tokens.len(), 1);
    assert_eq!(sums.top_tokens[0].requests, 32);
    let mut counters = sums.counters.clone();
    counters.sort();
    assert_eq!(
        counters,
        vec![
            ("audit_dropped".to_owned(), String::new(), 3),
            (
                "token_refresh".to_owned(),
                "microsoft_365:success".to_owned(),
                2
            ),
        ]
    );
}

#[tokio::test]
async fn retention_prunes_old_rows_in_batches_on_one_replica_only() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let token = stored_token(&store).await;
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    let recent = chrono::Utc::now() - chrono::Duration::days(1);
    // 2 500 old rows (three delete statements of 1 000), 5 recent ones.
    for chunk in 0..5 {
        let batch: Vec<_> = (0..500)
            .map(|i| {
                entry(
                    "t",
                    token,
                    200,
                    5,
                    old + chrono::Duration::seconds(chunk * 500 + i),
                )
            })
            .collect();
        store.write_audit_batch(batch, &[], 0).await.unwrap();
    }
    let fresh: Vec<_> = (0..5).map(|_| entry("t", token, 200, 5, recent)).collect();
    store.write_audit_batch(fresh, &[], 0).await.unwrap();

    let (_, never) = tokio::sync::watch::channel(false);
    let replica = |owner: &str| Retention {
        store: store.clone(),
        keep: Duration::from_secs(30 * 24 * 3600),
        every: Duration::from_secs(600),
        owner: owner.to_owned(),
    };
    let (a, b) = (replica("replica-a"), replica("replica-b"));
    let (deleted_a, deleted_b) = tokio::join!(a.round(&never), b.round(&never));
    let (deleted_a, deleted_b) = (deleted_a.unwrap(), deleted_b.unwrap());
    // One replica held the lease and did all the work; the other skipped the round.
    assert!(
        (deleted_a == 0) != (deleted_b == 0),
        "exactly one replica prunes: {deleted_a} / {deleted_b}"
    );
    assert!(deleted_a + deleted_b >= 2_500);

    let remaining = store
        .audit_page(&gatehouse::domain::audit::AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .0;
    assert_eq!(remaining.len(), 5);
    assert!(
        remaining
            .iter()
            .all(|r| r.created_at > old + chrono::Duration::days(1))
    );
    // The old minutes' rollups went too; the recent day's stayed.
    let week = store
        .window_sums(&StatsWindow::Week.range(chrono::Utc::now()))
        .await
        .unwrap();
    assert_eq!(week.targets[0].1.requests(), 5);

    // The lease lasts the interval: new old rows wait for the holder, the other replica skips.
    let (holder, other) = if deleted_a > 0 { (&a, &b) } else { (&b, &a) };
    let late: Vec<_> = (0..3).map(|_| entry("t", token, 200, 5, old)).collect();
    store.write_audit_batch(late, &[], 0).await.unwrap();
    assert_eq!(other.round(&never).await.unwrap(), 0);
    assert!(holder.round(&never).await.unwrap() >= 3);
}

#[tokio::test]
async fn stats_show_audit_events_dropped_by_a_full_queue() {
    // A one-slot queue that fills while the writer sleeps its flush interval.
    let app = crate::support::agent::spawn_configured(|config| {
        config.audit.queue_capacity = 1;
        config.audit.batch_size = 1;
        config.audit.flush_interval = Duration::from_millis(400);
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("busy", &upstream.url(""), None).await;
    let calls = (0..20).map(|i| {
        let path = format!("/gateway/busy/item/{i}");
        let token = agent.token.clone();
        let app = &app;
        async move { app.get(&path, &token).await }
    });
    futures_util::future::join_all(calls).await;
    // The proxy audits after the answer went out, so poll until the metric and the stats agree.
    let dropped = || async {
        crate::support::agent::metric(
            &app.metrics_text().await,
            "gatehouse_audit_dropped_total",
            &[],
        )
        .unwrap_or(0.0) as u64
    };
    let counted = within(Duration::from_secs(5), || async {
        let in_metric = dropped().await;
        in_metric > 0 && stats(&app, "1h").await["audit_dropped"].as_u64() == Some(in_metric)
    })
    .await;
    let (metric, shown) = (
        dropped().await,
        stats(&app, "1h").await["audit_dropped"].clone(),
    );
    assert!(
        counted,
        "the stats report the dropped events: metric {metric}, stats {shown}"
    );
}
