//! SPEC §4 steps 1–4 on the proxy listener, in order: token, client IP, target, permission;
//! changes made through the admin API take effect within 2 seconds; the hot path issues no SQL.

use std::time::Duration;

use gatehouse::domain::tokens::AgentToken;
use reqwest::Method;
use serde_json::json;

use crate::support::TestApp;
use crate::support::admin::Reply;
use crate::support::agent::{
    PROPAGATION, assert_bearer_401, assert_error, raw_get, spawn_configured, until, within,
};
use crate::support::upstream::FakeUpstream;

/// Assert the one 401 of step 1: status, `WWW-Authenticate: Bearer`, `{"error":"unauthorized"}`.
#[track_caller]
fn assert_unauthorized(reply: &Reply, case: &str) {
    assert_bearer_401(reply, case);
    assert_error(reply, 401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_failure_gets_the_same_401_and_reaches_nothing() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!("upstream-secret-0001"))),
        )
        .await;
    let (revoked, revoked_id) = app.make_token("soon revoked", None).await;
    app.grant(revoked_id, agent.target_id, false).await;
    app.api()
        .post_empty(&format!("/api/tokens/{revoked_id}/revoke"))
        .await
        .expect(200);
    // The revocation reaches the proxy within 2 s; start once it has.
    let (stopped, _) = until(
        PROPAGATION,
        || app.get("/gateway/api/things", &revoked),
        |r| r.status == 401,
    )
    .await;
    assert!(stopped, "a revoked token still works after 2 s");
    upstream.clear();
    let unknown = AgentToken::generate();
    let admin = app.admin_token.expose().to_owned();

    let path = "/gateway/api/things";
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("basic scheme", Some("Basic YWxpY2U6c2VjcmV0".to_owned())),
        (
            "other scheme, valid token",
            Some(format!("Token {}", agent.token)),
        ),
        ("bearer without a token", Some("Bearer".to_owned())),
        ("bearer and a space", Some("Bearer ".to_owned())),
        ("not an sg_ token", Some("Bearer not-a-token".to_owned())),
        (
            "sg_ prefix, wrong length",
            Some("Bearer sg_short".to_owned()),
        ),
        (
            "valid token with trailing junk",
            Some(format!("Bearer {} extra", agent.token)),
        ),
        ("an admin token", Some(format!("Bearer {admin}"))),
        ("unknown", Some(format!("Bearer {}", unknown.expose()))),
        ("revoked", Some(format!("Bearer {revoked}"))),
    ];
    let mut first_body: Option<String> = None;
    for (case, header) in cases {
        let mut request = app.gateway(Method::GET, path, None);
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        // The revoked token may need the change event to land: bounded wait for that case.
        let mut reply = Reply::read(request.send().await.unwrap()).await;
        if case == "revoked" && reply.status != 401 {
            reply = until(
                PROPAGATION,
                || app.call(Method::GET, path, Some(&revoked)),
                |r| r.status == 401,
            )
            .await
            .1;
        }
        assert_unauthorized(&reply, case);
        match &first_body {
            None => first_body = Some(reply.text.clone()),
            Some(first) => assert_eq!(&reply.text, first, "{case}: the same body for every case"),
        }
    }
    assert_eq!(upstream.count(), 0, "the upstream received nothing");

    // The valid token passes, for contrast.
    let ok = app.get(path, &agent.token).await;
    ok.expect(200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_is_checked_against_allowed_ips() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;

    let (elsewhere, elsewhere_id) = app.make_token("elsewhere", Some(&["10.0.0.0/8"])).await;
    app.grant(elsewhere_id, agent.target_id, false).await;
    let (local, local_id) = app.make_token("local", Some(&["127.0.0.1"])).await;
    app.grant(local_id, agent.target_id, false).await;
    let (mixed, mixed_id) = app
        .make_token("mixed", Some(&["10.0.0.0/8", "127.0.0.0/8", "::1"]))
        .await;
    app.grant(mixed_id, agent.target_id, false).await;

    // Tokens made through the API reach the proxy within 2 s.
    let (_, local_reply) = until(
        PROPAGATION,
        || app.get("/gateway/api/local", &local),
        |r| r.status == 200,
    )
    .await;
    local_reply.expect(200);
    let (_, mixed_reply) = until(
        PROPAGATION,
        || app.get("/gateway/api/mixed", &mixed),
        |r| r.status == 200,
    )
    .await;
    mixed_reply.expect(200);
    assert_eq!(upstream.count(), 2);

    let refused = app.get("/gateway/api/elsewhere", &elsewhere).await;
    assert_error(&refused, 403, "ip not allowed");
    assert_eq!(upstream.count(), 2, "a refused IP reaches nothing");

    // Changing allowed_ips takes effect within 2 s, both ways.
    app.api()
        .patch(
            &format!("/api/tokens/{local_id}"),
            json!({"allowed_ips": ["192.0.2.0/24"]}),
        )
        .await
        .expect(200);
    let (refused_in_time, last) = until(
        PROPAGATION,
        || app.get("/gateway/api/local", &local),
        |reply| reply.status == 403,
    )
    .await;
    assert!(refused_in_time, "allowed_ips change not applied within 2 s");
    assert_error(&last, 403, "ip not allowed");

    app.api()
        .patch(
            &format!("/api/tokens/{elsewhere_id}"),
            json!({"allowed_ips": []}),
        )
        .await
        .expect(200);
    let allowed_in_time = within(PROPAGATION, || async {
        app.get("/gateway/api/elsewhere", &elsewhere).await.status == 200
    })
    .await;
    assert!(
        allowed_in_time,
        "emptied allowed_ips (any) not applied within 2 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_disabled_targets_are_404() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;

    let unknown = app.get("/gateway/nope/x", &agent.token).await;
    assert_error(&unknown, 404, "target not found");
    let unknown_root = app.get("/gateway/nope", &agent.token).await;
    assert_error(&unknown_root, 404, "target not found");

    // Disabled from the start, with a permission.
    let created = app
        .api()
        .post(
            "/api/targets",
            json!({"name": "Off", "slug": "off", "base_url": upstream.url("/off"), "enabled": false}),
        )
        .await;
    let off_id = created.id();
    created.expect(201);
    app.grant(agent.token_id, off_id, false).await;
    // Give the change feed its 2 s, then it must still be 404.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let disabled = app.get("/gateway/off/x", &agent.token).await;
    assert_error(&disabled, 404, "target not found");
    assert_eq!(upstream.count(), 0, "the upstream received nothing");

    // Enabling it takes effect within 2 s.
    app.api()
        .patch(&format!("/api/targets/{off_id}"), json!({"enabled": true}))
        .await
        .expect(200);
    let enabled = within(PROPAGATION, || async {
        app.get("/gateway/off/x", &agent.token).await.status == 200
    })
    .await;
    assert!(enabled, "enabling a target not applied within 2 s");
    assert_eq!(upstream.last().target, "/off/x");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_without_permission_is_forbidden() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    let other = app.make_target("other", &upstream.url("/other")).await;
    let other_id = crate::support::admin::json_id(&other);

    // Wait until the new target is known (an unknown one is 404), then it must be 403.
    let (_, last) = until(
        PROPAGATION,
        || app.get("/gateway/other/x", &agent.token),
        |reply| reply.status != 404,
    )
    .await;
    assert_error(&last, 403, "forbidden");
    for method in [Method::POST, Method::DELETE, Method::HEAD] {
        let reply = app
            .call(method.clone(), "/gateway/other/x", Some(&agent.token))
            .await;
        assert_eq!(reply.status, 403, "{method}");
        if method != Method::HEAD {
            assert_error(&reply, 403, "forbidden");
        }
    }
    assert_eq!(upstream.count(), 0, "the upstream received nothing");

    // Granting it opens the door within 2 s.
    app.grant(agent.token_id, other_id, false).await;
    let opened = within(PROPAGATION, || async {
        app.get("/gateway/other/x", &agent.token).await.status == 200
    })
    .await;
    assert!(opened, "a new permission not applied within 2 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_permission_allows_only_get_head_options() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    app.grant(agent.token_id, agent.target_id, true).await;
    let applied = within(PROPAGATION, || async {
        app.call(Method::POST, "/gateway/api/x", Some(&agent.token))
            .await
            .status
            == 403
    })
    .await;
    assert!(applied, "read_only not applied within 2 s");
    upstream.clear();

    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let reply = app
            .call(method.clone(), "/gateway/api/read", Some(&agent.token))
            .await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text);
        assert_eq!(upstream.last().method, method.as_str());
    }
    assert_eq!(upstream.count(), 3);

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let reply = app
            .send_with_body(method.clone(), "/gateway/api/write", &agent.token)
            .await;
        assert_error(&reply, 403, "read-only access");
    }
    assert_eq!(upstream.count(), 3, "refused writes reach nothing");

    // Back to read-write: writes pass within 2 s.
    app.grant(agent.token_id, agent.target_id, false).await;
    let writable = within(PROPAGATION, || async {
        app.send_with_body(Method::POST, "/gateway/api/write", &agent.token)
            .await
            .status
            == 200
    })
    .await;
    assert!(writable, "read_only=false not applied within 2 s");
    assert_eq!(upstream.last().method, "POST");
}

impl TestApp {
    async fn send_with_body(&self, method: Method, path: &str, token: &str) -> Reply {
        Reply::read(
            self.gateway(method, path, Some(token))
                .header("content-type", "application/json")
                .body("{\"a\":1}")
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_run_in_the_order_of_the_spec() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    let other = app.make_target("other", &upstream.url("/other")).await;
    let reader = app.make_target("reader", &upstream.url("/reader")).await;
    app.grant(
        agent.token_id,
        crate::support::admin::json_id(&reader),
        true,
    )
    .await;
    let (revoked, revoked_id) = app.make_token("revoked", None).await;
    app.api()
        .post_empty(&format!("/api/tokens/{revoked_id}/revoke"))
        .await
        .expect(200);
    let (far, far_id) = app.make_token("far away", Some(&["198.51.100.0/24"])).await;
    app.grant(far_id, agent.target_id, false).await;
    let _ = other;
    // Let every change land.
    let settled = within(PROPAGATION, || async {
        app.get("/gateway/reader/x", &agent.token).await.status == 200
            && app.get("/gateway/other/x", &agent.token).await.status == 403
            && app.get("/gateway/api/x", &revoked).await.status == 401
            && app.get("/gateway/api/x", &far).await.status == 403
    })
    .await;
    assert!(settled, "setup not applied within 2 s");
    upstream.clear();

    // 1 before 3: a revoked token on an unknown slug.
    let reply = app.get("/gateway/nope/x", &revoked).await;
    assert_unauthorized(&reply, "revoked token, unknown slug");
    // 2 before 3 and 4: a bad IP on an unknown slug, on an existing one.
    assert_error(
        &app.get("/gateway/nope/x", &far).await,
        403,
        "ip not allowed",
    );
    assert_error(
        &app.get("/gateway/other/x", &far).await,
        403,
        "ip not allowed",
    );
    // 3 before 5: unknown slug and a bad path.
    let addr = app.running().proxy_addr;
    let raw = app
        .raw(&raw_get(addr, "/gateway/nope/a/../b", &agent.token))
        .await;
    raw.assert_error(404, "target not found");
    // 4 before 5: no permission and a bad path; read-only write and a bad path.
    let raw = app
        .raw(&raw_get(addr, "/gateway/other/a/../b", &agent.token))
        .await;
    raw.assert_error(403, "forbidden");
    let post = format!(
        "POST /gateway/reader/a/../b HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        agent.token
    );
    app.raw(post.as_bytes())
        .await
        .assert_error(403, "read-only access");
    // And a good token with permission and a bad path reaches step 5.
    let raw = app
        .raw(&raw_get(addr, "/gateway/api/a/../b", &agent.token))
        .await;
    raw.assert_error(400, "invalid path");
    assert_eq!(
        upstream.count(),
        0,
        "no refused request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_or_deleting_a_token_stops_it_within_two_seconds() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    let (second, second_id) = app.make_token("second", None).await;
    app.grant(second_id, agent.target_id, false).await;
    let ready = within(PROPAGATION, || async {
        app.get("/gateway/api/x", &second).await.status == 200
    })
    .await;
    assert!(ready);

    app.api()
        .post_empty(&format!("/api/tokens/{}/revoke", agent.token_id))
        .await
        .expect(200);
    let (stopped, last) = until(
        PROPAGATION,
        || app.get("/gateway/api/x", &agent.token),
        |reply| reply.status == 401,
    )
    .await;
    assert!(stopped, "a revoked token still works after 2 s");
    assert_unauthorized(&last, "revoked");

    app.api()
        .delete(&format!("/api/tokens/{second_id}"))
        .await
        .expect(204);
    let (stopped, last) = until(
        PROPAGATION,
        || app.get("/gateway/api/x", &second),
        |reply| reply.status == 401,
    )
    .await;
    assert!(stopped, "a deleted token still works after 2 s");
    assert_unauthorized(&last, "deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_permission_stops_access_within_two_seconds() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    app.get("/gateway/api/x", &agent.token).await.expect(200);

    app.api()
        .delete(&format!(
            "/api/tokens/{}/permissions/{}",
            agent.token_id, agent.target_id
        ))
        .await
        .expect(204);
    let (stopped, last) = until(
        PROPAGATION,
        || app.get("/gateway/api/x", &agent.token),
        |reply| reply.status == 403,
    )
    .await;
    assert!(stopped, "a deleted permission still works after 2 s");
    assert_error(&last, 403, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_or_deleting_a_target_stops_access_within_two_seconds() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    let (token2, token2_id) = app.make_token("second", None).await;
    let second = app.make_target("second", &upstream.url("/second")).await;
    let second_id = crate::support::admin::json_id(&second);
    app.grant(token2_id, second_id, false).await;
    let ready = within(PROPAGATION, || async {
        app.get("/gateway/second/x", &token2).await.status == 200
    })
    .await;
    assert!(ready);

    app.api()
        .patch(
            &format!("/api/targets/{}", agent.target_id),
            json!({"enabled": false}),
        )
        .await
        .expect(200);
    let (stopped, last) = until(
        PROPAGATION,
        || app.get("/gateway/api/x", &agent.token),
        |reply| reply.status == 404,
    )
    .await;
    assert!(stopped, "a disabled target still works after 2 s");
    assert_error(&last, 404, "target not found");

    app.api()
        .delete(&format!("/api/targets/{second_id}"))
        .await
        .expect(204);
    let (stopped, last) = until(
        PROPAGATION,
        || app.get("/gateway/second/x", &token2),
        |reply| reply.status == 404,
    )
    .await;
    assert!(stopped, "a deleted target still works after 2 s");
    assert_error(&last, 404, "target not found");
}

#[tokio::test(flavor = "multi_thread")]
async fn regenerating_a_token_replaces_it() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    app.get("/gateway/api/x", &agent.token).await.expect(200);

    let reply = app
        .api()
        .post_empty(&format!("/api/tokens/{}/regenerate", agent.token_id))
        .await;
    let body = reply.expect(200);
    let fresh = body["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, agent.token);

    let switched = within(PROPAGATION, || async {
        app.get("/gateway/api/x", &agent.token).await.status == 401
            && app.get("/gateway/api/x", &fresh).await.status == 200
    })
    .await;
    assert!(switched, "regenerate not applied within 2 s");
    assert_unauthorized(&app.get("/gateway/api/x", &agent.token).await, "old");
    let new = app.get("/gateway/api/y", &fresh).await;
    new.expect(200);
    assert_eq!(upstream.last().target, "/base/y");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_credential_is_injected_within_two_seconds() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!("first-secret-000001"))),
        )
        .await;
    app.get("/gateway/api/x", &agent.token).await.expect(200);
    assert_eq!(
        upstream.last().header("authorization").as_deref(),
        Some("Bearer first-secret-000001")
    );
    let methods = app
        .api()
        .get(&format!("/api/targets/{}/auth-methods", agent.target_id))
        .await;
    let method_id = crate::support::admin::json_id(&methods.expect(200)["auth_methods"][0]);
    app.api()
        .patch(
            &format!("/api/targets/{}/auth-methods/{method_id}", agent.target_id),
            json!({"credential": "second-secret-000002"}),
        )
        .await
        .expect(200);
    let changed = within(PROPAGATION, || async {
        app.get("/gateway/api/x", &agent.token).await.expect(200);
        upstream.last().header("authorization").as_deref() == Some("Bearer second-secret-000002")
    })
    .await;
    assert!(changed, "a changed credential not injected within 2 s");
}

/// Docs "Hot path": a steady-state request issues no SQL statement. Audit writes are kept out of
/// the window with a 60 s flush interval and a large batch.
#[tokio::test(flavor = "multi_thread")]
async fn steady_state_requests_issue_no_sql() {
    let app = spawn_configured(|config| {
        config.audit.flush_interval = Duration::from_secs(60);
        config.audit.batch_size = 10_000;
        config.audit.queue_capacity = 10_000;
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "hot",
            &upstream.url("/base"),
            Some(("bearer", json!("hot-secret-00000001"))),
        )
        .await;
    let _other = app.make_target("cold", &upstream.url("/cold")).await;
    let ready = within(PROPAGATION, || async {
        app.get("/gateway/cold/x", &agent.token).await.status == 403
    })
    .await;
    assert!(ready);
    app.get("/gateway/hot/warm-up", &agent.token)
        .await
        .expect(200);

    // Wait until background work from the setup (reloads after change events) is over: the
    // counter must hold still for a whole second (bounded).
    let store = app.running().store().clone();
    let mut before = store.statements_executed();
    let mut settled = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = store.statements_executed();
        if now == before {
            settled = true;
            break;
        }
        before = now;
    }
    assert!(settled, "SQL statements keep running with no traffic");

    let unknown = AgentToken::generate();
    for i in 0..50 {
        app.get(&format!("/gateway/hot/items/{i}?page=2"), &agent.token)
            .await
            .expect(200);
    }
    app.send_with_body(Method::POST, "/gateway/hot/items", &agent.token)
        .await
        .expect(200);
    assert_eq!(
        app.get("/gateway/hot/x", unknown.expose()).await.status,
        401
    );
    assert_eq!(
        app.call(Method::GET, "/gateway/hot/x", None).await.status,
        401
    );
    assert_eq!(app.get("/gateway/nope/x", &agent.token).await.status, 404);
    assert_eq!(app.get("/gateway/cold/x", &agent.token).await.status, 403);
    assert_eq!(app.get("/discovery", &agent.token).await.status, 200);
    let after = store.statements_executed();
    assert_eq!(
        after - before,
        0,
        "requests on the hot path executed {} SQL statements",
        after - before
    );
    assert_eq!(upstream.count(), 52);
    // The counter does count: an admin read is SQL.
    app.api().get("/api/targets").await.expect(200);
    assert!(
        store.statements_executed() > after,
        "the statement counter moves"
    );
}
