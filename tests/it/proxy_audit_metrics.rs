//! SPEC §4 step 9 and §8: one audit row per request that passed steps 1–2, written without
//! delaying the reply; metrics on the metrics listener; dropped audit events are counted.

use std::collections::HashSet;
use std::time::Duration;

use gatehouse::domain::audit::AuditEntry;
use gatehouse::domain::tokens::AgentToken;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::admin::{Reply, json_id};
use crate::support::agent::{
    Agent, PROPAGATION, is_probe, metric, raw_get, spawn_configured, until, within,
};
use crate::support::upstream::{FakeUpstream, closed_port};

const CREDENTIAL: &str = "audit-canary-credential-0001";
const QUERY_CANARY: &str = "query-canary-7f3a";

/// A target `api` with a bearer credential and an agent on it; `other` (no permission),
/// `reader` (read-only), a revoked token and a token allowed only from elsewhere. Waits until
/// the proxy has all of it.
struct World {
    app: TestApp,
    upstream: FakeUpstream,
    agent: Agent,
    other_id: Uuid,
    reader_id: Uuid,
    revoked: String,
    far: String,
    far_id: Uuid,
}

async fn world(app: TestApp) -> World {
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!(CREDENTIAL))),
        )
        .await;
    let other_id = json_id(&app.make_target("other", &upstream.url("/other")).await);
    let reader_id = json_id(&app.make_target("reader", &upstream.url("/reader")).await);
    app.grant(agent.token_id, reader_id, true).await;
    let (revoked, revoked_id) = app.make_token("revoked", None).await;
    app.grant(revoked_id, agent.target_id, false).await;
    app.api()
        .post_empty(&format!("/api/tokens/{revoked_id}/revoke"))
        .await
        .expect(200);
    let (far, far_id) = app.make_token("far", Some(&["198.51.100.0/24"])).await;
    app.grant(far_id, agent.target_id, false).await;
    let settled = within(PROPAGATION, || async {
        app.get("/gateway/reader/__ready//probe", &agent.token)
            .await
            .status
            == 400
            && app
                .get("/gateway/other/__ready//probe", &agent.token)
                .await
                .status
                == 403
            && app
                .get("/gateway/api/__ready//probe", &revoked)
                .await
                .status
                == 401
            && app.get("/gateway/api/__ready//probe", &far).await.status == 403
    })
    .await;
    assert!(settled, "setup not applied within 2 s");
    World {
        app,
        upstream,
        agent,
        other_id,
        reader_id,
        revoked,
        far,
        far_id,
    }
}

/// Wait until the audit table holds still (bounded), and return the ids in it.
async fn settled_audit_ids(app: &TestApp) -> HashSet<Uuid> {
    let mut previous = usize::MAX;
    for _ in 0..20 {
        let count = app.audit_rows().await.len();
        if count == previous {
            break;
        }
        previous = count;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.audit_rows().await.into_iter().map(|r| r.id).collect()
}

/// Rows not in `before` and not readiness probes, oldest first, once there are `count` of them
/// (at most 5 s), after a further pause for rows that should not come.
async fn new_rows(app: &TestApp, before: &HashSet<Uuid>, count: usize) -> Vec<AuditEntry> {
    let fresh = || async {
        let mut rows: Vec<AuditEntry> = app
            .audit_rows()
            .await
            .into_iter()
            .filter(|r| !before.contains(&r.id) && !is_probe(r))
            .collect();
        rows.reverse();
        rows
    };
    let (_, _) = until(Duration::from_secs(5), fresh, |rows| rows.len() >= count).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    fresh().await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_audit_row_per_request_past_steps_one_and_two() {
    let w = world(TestApp::spawn().await).await;
    let app = &w.app;
    let token = &w.agent.token;
    let before = settled_audit_ids(app).await;

    // Audited, in this order.
    app.get(
        &format!("/gateway/api/items/1?secret={QUERY_CANARY}"),
        token,
    )
    .await
    .expect(200);
    assert_eq!(app.get("/gateway/nope/x?q=1", token).await.status, 404);
    assert_eq!(app.get("/gateway/other/x", token).await.status, 403);
    assert_eq!(
        app.call(Method::DELETE, "/gateway/reader/x", Some(token))
            .await
            .status,
        403
    );
    let addr = app.running().proxy_addr;
    let raw = app
        .raw(&raw_get(addr, "/gateway/api/a/../b?x=1", token))
        .await;
    assert_eq!(raw.status, 400);
    let post = app
        .gateway(Method::POST, "/gateway/api/upload", Some(token))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 200);
    // Not audited: step 1 and step 2 refusals.
    let unknown = AgentToken::generate();
    assert_eq!(
        app.call(Method::GET, "/gateway/api/x", None).await.status,
        401
    );
    assert_eq!(app.get("/gateway/api/x", "not-a-token").await.status, 401);
    assert_eq!(
        app.get("/gateway/api/x", unknown.expose()).await.status,
        401
    );
    assert_eq!(app.get("/gateway/api/x", &w.revoked).await.status, 401);
    assert_eq!(app.get("/gateway/api/x", &w.far).await.status, 403);
    assert_eq!(app.get("/gateway/nope/x", &w.far).await.status, 403);

    let mut rows = new_rows(app, &before, 6).await;
    // created_at is stamped when a request ends, after its reply went out, so rows of
    // back-to-back requests need not be in request order: compare them sorted.
    rows.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.target_slug.as_str(),
                r.path.as_str(),
                r.status_code,
                r.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "GET",
                "api",
                "/gateway/api/a/../b",
                400,
                Some("invalid_path")
            ),
            ("GET", "api", "/gateway/api/items/1", 200, None),
            ("POST", "api", "/gateway/api/upload", 200, None),
            (
                "GET",
                "nope",
                "/gateway/nope/x",
                404,
                Some("target_not_found")
            ),
            ("GET", "other", "/gateway/other/x", 403, Some("forbidden")),
            (
                "DELETE",
                "reader",
                "/gateway/reader/x",
                403,
                Some("read_only")
            ),
        ],
        "{rows:#?}"
    );
    for row in &rows {
        assert_eq!(row.token_id, Some(w.agent.token_id), "{row:?}");
        assert_eq!(row.token_name, "api-agent", "{row:?}");
        assert_eq!(row.client_ip, "127.0.0.1", "{row:?}");
        assert!(!row.path.contains('?'), "{row:?}");
        let text = format!("{row:?}");
        for secret in [token.as_str(), CREDENTIAL, QUERY_CANARY] {
            assert!(!text.contains(secret), "a secret in an audit row: {text}");
        }
    }
    let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
    assert_eq!(
        row("/gateway/api/items/1").target_id,
        Some(w.agent.target_id)
    );
    assert_eq!(
        row("/gateway/nope/x").target_id,
        None,
        "unknown slug: no target id"
    );
    assert_eq!(row("/gateway/other/x").target_id, Some(w.other_id));
    assert_eq!(row("/gateway/reader/x").target_id, Some(w.reader_id));
    assert!(
        row("/gateway/api/items/1").upstream_ms.is_some(),
        "a forwarded request has upstream_ms"
    );
    assert!(
        row("/gateway/nope/x").upstream_ms.is_none(),
        "a refused one has none"
    );
    let upstream_targets: Vec<String> = w
        .upstream
        .received()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(
        upstream_targets,
        vec![
            format!("/base/items/1?secret={QUERY_CANARY}"),
            "/base/upload".to_owned()
        ]
    );

    // The admin API shows the same rows.
    let listed = app
        .api()
        .get(&format!(
            "/api/audit-logs?token_id={}&limit=500",
            w.agent.token_id
        ))
        .await;
    let entries = listed.expect(200)["entries"].as_array().unwrap().clone();
    for row in &rows {
        assert!(
            entries.iter().any(|e| e["id"] == row.id.to_string()),
            "{row:?} not listed by the API"
        );
    }

    // last_used_at: set for the audited token, never for the one refused at step 2.
    let token_path = format!("/api/tokens/{}", w.agent.token_id);
    let (used, reply) = until(
        Duration::from_secs(5),
        || async { app.api().get(&token_path).await },
        |r| r.json["last_used_at"].is_string(),
    )
    .await;
    assert!(used, "last_used_at not set: {}", reply.text);
    let far = app.api().get(&format!("/api/tokens/{}", w.far_id)).await;
    assert!(
        far.expect(200)["last_used_at"].is_null(),
        "a token refused at step 2 is not marked used: {}",
        far.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_and_auth_failures_without_secrets() {
    let w = world(TestApp::spawn().await).await;
    let app = &w.app;
    let token = &w.agent.token;
    let gone = closed_port();
    let gone_target = app.make_target("gone", &format!("http://{gone}/x")).await;
    app.grant(w.agent.token_id, json_id(&gone_target), false)
        .await;
    let (_, reply) = until(
        PROPAGATION,
        || app.get("/gateway/gone/a", token),
        |r| r.status != 404 && r.status != 403,
    )
    .await;
    assert_eq!(reply.status, 502);

    let before = app.settled_metrics_text().await;
    let value =
        |text: &str, name: &str, labels: &[(&str, &str)]| metric(text, name, labels).unwrap_or(0.0);

    for i in 0..3 {
        app.get(&format!("/gateway/api/n/{i}?secret={QUERY_CANARY}"), token)
            .await
            .expect(200);
    }
    assert_eq!(app.get("/gateway/nope/x", token).await.status, 404);
    assert_eq!(app.get("/gateway/other/x", token).await.status, 403);
    assert_eq!(app.get("/gateway/gone/a", token).await.status, 502);
    let unknown = AgentToken::generate();
    assert_eq!(
        app.call(Method::GET, "/gateway/api/x", None).await.status,
        401
    );
    assert_eq!(app.get("/gateway/api/x", "not-a-token").await.status, 401);
    assert_eq!(
        app.get("/gateway/api/x", unknown.expose()).await.status,
        401
    );
    assert_eq!(app.get("/gateway/api/x", &w.revoked).await.status, 401);
    assert_eq!(app.get("/gateway/api/x", &w.far).await.status, 403);

    let after = app.settled_metrics_text().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "gatehouse_requests_total";
    assert_eq!(
        delta(
            requests,
            &[
                ("target", "api"),
                ("status", "2xx"),
                ("interface", "gateway")
            ]
        ),
        3.0,
        "{after}"
    );
    assert_eq!(
        delta(requests, &[("target", "-"), ("status", "4xx")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(requests, &[("target", "other"), ("status", "4xx")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(requests, &[("target", "gone"), ("status", "5xx")]),
        1.0,
        "{after}"
    );
    assert!(
        metric(&after, requests, &[("target", "nope")]).is_none(),
        "an unknown slug is not a label value: {after}"
    );
    let failures = "gatehouse_auth_failures_total";
    for reason in [
        "missing",
        "malformed",
        "unknown",
        "revoked",
        "ip_not_allowed",
    ] {
        assert_eq!(
            delta(failures, &[("reason", reason)]),
            1.0,
            "{reason}: {after}"
        );
    }
    assert!(
        delta("gatehouse_request_duration_seconds_count", &[]) >= 6.0,
        "{after}"
    );
    assert!(
        delta("gatehouse_upstream_duration_seconds_count", &[]) >= 3.0,
        "{after}"
    );
    for family in [
        "# TYPE gatehouse_request_duration_seconds histogram",
        "# TYPE gatehouse_upstream_duration_seconds histogram",
        "# TYPE gatehouse_requests_total counter",
        "# TYPE gatehouse_auth_failures_total counter",
        "# TYPE gatehouse_audit_dropped_total counter",
    ] {
        assert!(after.contains(family), "{family} missing:\n{after}");
    }
    assert!(after.contains("gatehouse_request_duration_seconds_bucket{le="));
    for secret in [
        token.as_str(),
        w.revoked.as_str(),
        w.far.as_str(),
        unknown.expose(),
        CREDENTIAL,
        QUERY_CANARY,
        "not-a-token",
    ] {
        assert!(!after.contains(secret), "{secret} appears in /metrics");
    }
    // The metrics listener is not the proxy: /metrics there is a plain 404.
    let on_proxy = app.call(Method::GET, "/metrics", None).await;
    assert_eq!(on_proxy.status, 404);
}

/// A full audit queue drops events (and counts them) but never delays or fails a reply.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_audit_queue_drops_events_not_requests() {
    let app = spawn_configured(|config| {
        config.audit.queue_capacity = 1;
        config.audit.batch_size = 1;
        config.audit.flush_interval = Duration::from_secs(60);
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;

    let mut dropped = 0.0;
    let mut sent = 0usize;
    for _round in 0..5 {
        let mut calls = Vec::new();
        for i in 0..60 {
            let request = app
                .gateway(
                    Method::GET,
                    &format!("/gateway/api/burst/{i}"),
                    Some(&agent.token),
                )
                .send();
            calls.push(async move { Reply::read(request.await.unwrap()).await });
        }
        // All concurrently (join_all without the futures crate: spawn each).
        let handles: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
        for (i, handle) in handles.into_iter().enumerate() {
            let reply = handle.await.unwrap();
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
            assert_eq!(reply.json["target"], format!("/base/burst/{i}"));
            sent += 1;
        }
        dropped = metric(
            &app.metrics_text().await,
            "gatehouse_audit_dropped_total",
            &[],
        )
        .unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
    }
    assert!(
        dropped > 0.0,
        "no audit event dropped after {sent} requests"
    );
    assert!(upstream.count() >= sent);
    // What was not dropped is still written.
    let (written, rows) = until(
        Duration::from_secs(5),
        || app.audit_rows_without_probes(),
        |rows| !rows.is_empty(),
    )
    .await;
    assert!(written, "queued events are still written");
    assert!(rows.len() < sent, "{} rows for {sent} requests", rows.len());
}

/// Docs "audit.rs": the writer sleeps through its flush interval without polling the queue, and
/// a full batch wakes it early: with a 60 s interval, a full batch is still written at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_batch_is_written_before_the_flush_interval_ends() {
    const BATCH: usize = 8;
    let app = spawn_configured(|config| {
        config.audit.flush_interval = Duration::from_secs(60);
        config.audit.batch_size = BATCH;
        config.audit.queue_capacity = 1_000;
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("batch", &upstream.url("/base"), None).await;
    // Exactly one batch of this test's requests (set-up probes may sit in the queue too).
    for i in 0..BATCH {
        app.get(&format!("/gateway/batch/n/{i}"), &agent.token)
            .await
            .expect(200);
    }
    let written = within(Duration::from_secs(10), || async {
        !app.audit_rows_without_probes().await.is_empty()
    })
    .await;
    assert!(written, "no batch written within 10 s of a 60 s interval");
    let rows = app.wait_for_audit(1).await;
    assert!(
        rows.iter()
            .all(|row| row.path.starts_with("/gateway/batch/n/")),
        "{rows:?}"
    );
}
