//! Guard rules and approvals over HTTP (SPEC §12): `block` rules, the approval flow end to end
//! (a person approves through the admin API, the agent re-sends with `Gatehouse-Approval`),
//! binding to the exact request, single use (also under a race), expiry, deny, other tokens,
//! the built-in defaults and `guard_defaults`, the rule API's validation and ordering, and the
//! 64 KiB body bound. Every refused request is checked against a real loopback upstream that
//! records what it received: it must have seen nothing. Both backends.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::admin::{Reply, json_id};
use crate::support::agent::{Agent, spawn_configured, until};
use crate::support::upstream::{FakeUpstream, sha256_hex};
use crate::support::webhooks::{Receiver, subscribe};

/// A base path on purpose: the approval URL is `{admin.public_url}/ui/approvals/{id}`.
const ADMIN_PUBLIC_URL: &str = "https://admin.gatehouse.test/console";
/// `decided_by` for the configured admin token.
const DECIDED_BY: &str = "admin:GATEHOUSE_ADMIN_TOKEN";
/// The target's credential: it must never show in a preview or a webhook.
const CREDENTIAL: &str = "bearer-canary-guard-0123456789";
const WAIT: Duration = Duration::from_secs(10);
const PUBLISH: &str = "/releases/publish";
const PUBLISH_REASON: &str = "publishing a release needs a human";

struct Setup {
    app: TestApp,
    upstream: FakeUpstream,
    agent: Agent,
}

/// An app (approvals living `ttl`, default 15 min), an upstream, a target `slug` on it with a
/// bearer credential, and a token with read-write access.
async fn setup(slug: &str, ttl: Option<Duration>) -> Setup {
    let app = spawn_configured(|c| {
        c.admin.public_url = url::Url::parse(ADMIN_PUBLIC_URL).unwrap();
        if let Some(ttl) = ttl {
            c.guard.approval_ttl = ttl;
        }
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            slug,
            &upstream.url("/base"),
            Some(("bearer", json!(CREDENTIAL))),
        )
        .await;
    Setup {
        app,
        upstream,
        agent,
    }
}

/// `POST /api/targets/{id}/guard-rules` → 201; the rule.
async fn add_rule(app: &TestApp, target_id: Uuid, body: Value) -> Value {
    app.api()
        .post(&format!("/api/targets/{target_id}/guard-rules"), body)
        .await
        .expect(201)
        .clone()
}

/// The approval rule most tests use: `POST` on exactly [`PUBLISH`].
async fn publish_rule(setup: &Setup) -> Value {
    add_rule(
        &setup.app,
        setup.agent.target_id,
        json!({"method": "POST", "path_match": "equals", "path": PUBLISH,
               "action": "approval_required", "reason": PUBLISH_REASON}),
    )
    .await
}

/// `method` `/gateway/{slug}{path}` with `agent`'s token, a JSON `body` (none when empty) and
/// `Gatehouse-Approval: {approval}` when given.
async fn send_as(
    app: &TestApp,
    agent: &Agent,
    method: Method,
    path: &str,
    body: &str,
    approval: Option<&str>,
) -> Reply {
    let mut request = app.gateway(
        method,
        &format!("/gateway/{}{path}", agent.slug),
        Some(&agent.token),
    );
    if !body.is_empty() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    if let Some(id) = approval {
        request = request.header("Gatehouse-Approval", id);
    }
    Reply::read(request.send().await.unwrap()).await
}

async fn send(
    setup: &Setup,
    method: Method,
    path: &str,
    body: &str,
    approval: Option<&str>,
) -> Reply {
    send_as(&setup.app, &setup.agent, method, path, body, approval).await
}

/// Assert a 403 `approval required` with `reason`; the approval's id.
#[track_caller]
fn assert_held(reply: &Reply, reason: &str) -> String {
    reply.expect(403);
    let body = &reply.json;
    assert_eq!(body["error"], "approval required", "{}", reply.text);
    assert_eq!(body["reason"], reason, "{}", reply.text);
    let approval = body["approval"].as_object().expect("an approval object");
    let mut keys: Vec<&str> = approval.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "id", "url"], "{}", reply.text);
    let id = approval["id"].as_str().unwrap().to_owned();
    Uuid::parse_str(&id).expect("the approval id is a UUID");
    assert_eq!(
        approval["url"],
        format!("{ADMIN_PUBLIC_URL}/ui/approvals/{id}"),
        "{}",
        reply.text
    );
    id
}

/// Assert a guard refusal that carries only `{"error": message}` (plus nothing else).
#[track_caller]
fn assert_refused(reply: &Reply, message: &str) {
    assert_eq!(reply.status, 403, "{message}: {}", reply.text);
    assert!(
        reply.header("content-type").starts_with("application/json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.json, json!({"error": message}), "{}", reply.text);
}

async fn decide(app: &TestApp, id: &str, what: &str) -> Reply {
    app.api()
        .post_empty(&format!("/api/approvals/{id}/{what}"))
        .await
}

/// Approve `id` through the admin API → 200; the approval.
async fn approve(app: &TestApp, id: &str) -> Value {
    let reply = decide(app, id, "approve").await;
    let approval = reply.expect(200).clone();
    assert_eq!(approval["status"], "approved", "{approval}");
    assert_eq!(approval["decided_by"], DECIDED_BY, "{approval}");
    assert!(approval["decided_at"].is_string(), "{approval}");
    approval
}

async fn approval(app: &TestApp, id: &str) -> Value {
    app.api()
        .get(&format!("/api/approvals/{id}"))
        .await
        .expect(200)
        .clone()
}

/// `GET /api/approvals?status={status}` → the ids listed.
async fn listed(app: &TestApp, status: &str) -> Vec<String> {
    let reply = app
        .api()
        .get(&format!("/api/approvals?status={status}"))
        .await;
    reply.expect(200)["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Hold `method path body`, approve it; the approval id.
async fn approved(setup: &Setup, method: Method, path: &str, body: &str) -> String {
    let reply = send(setup, method, path, body, None).await;
    let id = assert_held(&reply, PUBLISH_REASON);
    approve(&setup.app, &id).await;
    id
}

/// Poll `GET /api/audit-logs?token_id=…` (the writer batches) until a row accepted by `which`
/// appears; that row.
async fn audit_row(app: &TestApp, token_id: Uuid, which: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/audit-logs?token_id={token_id}&limit=500");
    let (found, rows) = until(
        WAIT,
        || async {
            app.api().get(&path).await.expect(200)["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        },
        |rows| rows.iter().any(&which),
    )
    .await;
    assert!(found, "no such audit row: {rows:#?}");
    rows.into_iter().find(|r| which(r)).unwrap()
}

/// Every audit row of `token_id` with this `error` code, once `count` of them are there.
async fn audit_errors(app: &TestApp, token_id: Uuid, error: &str, count: usize) -> Vec<Value> {
    let path = format!("/api/audit-logs?token_id={token_id}&limit=500");
    let (found, rows) = until(
        WAIT,
        || async {
            let page = app.api().get(&path).await;
            page.expect(200)["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["error"] == error)
                .collect::<Vec<_>>()
        },
        |rows| rows.len() >= count,
    )
    .await;
    assert!(
        found,
        "expected {count} audit rows with error {error}: {rows:#?}"
    );
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_rule_refuses_with_its_reason_and_nothing_reaches_the_upstream() {
    let setup = setup("blocked", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    let rule = add_rule(
        app,
        agent.target_id,
        json!({"method": "post", "path_match": "prefix", "path": "/Repos/",
               "action": "block", "reason": "no writes to repositories"}),
    )
    .await;
    assert_eq!(rule["target_id"], agent.target_id.to_string(), "{rule}");
    assert_eq!(rule["method"], "POST", "{rule}");
    assert_eq!(rule["path_match"], "prefix");
    assert_eq!(rule["path"], "/Repos/");
    assert_eq!(rule["action"], "block");
    assert_eq!(rule["reason"], "no writes to repositories");
    assert_eq!(rule["position"], 0);
    assert!(rule["created_at"].is_string());
    let listed = app
        .api()
        .get(&format!("/api/targets/{}/guard-rules", agent.target_id))
        .await;
    assert_eq!(listed.expect(200)["guard_rules"], json!([rule]));

    // Matching is on the decoded, lower-cased path; the body does not matter.
    for path in ["/repos/gatehouse", "/REPOS/x/y", "/rep%6Fs/z"] {
        let reply = send(&setup, Method::POST, path, r#"{"name":"x"}"#, None).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.text);
        assert_eq!(
            reply.json,
            json!({"error": "blocked by guard rule", "reason": "no writes to repositories"}),
            "{path}"
        );
    }
    assert_eq!(
        setup.upstream.count(),
        0,
        "a blocked request reached the upstream"
    );

    // Another method on the same path, and another path, are not this rule's business.
    send(&setup, Method::GET, "/repos/gatehouse", "", None)
        .await
        .expect(200);
    send(&setup, Method::POST, "/issues", "{}", None)
        .await
        .expect(200);
    assert_eq!(setup.upstream.count(), 2);

    let row = audit_row(app, agent.token_id, |r| r["status_code"] == 403).await;
    assert_eq!(row["guard_action"], "block", "{row}");
    assert_eq!(row["error"], "guard_blocked", "{row}");
    assert_eq!(row["approved_by"], Value::Null, "{row}");
    audit_errors(app, agent.token_id, "guard_blocked", 3).await;
    let passed = audit_row(app, agent.token_id, |r| {
        r["status_code"] == 200 && r["path"] == "/gateway/blocked/issues"
    })
    .await;
    assert_eq!(
        passed["guard_action"],
        Value::Null,
        "no rule matched: {passed}"
    );
    // No approval is opened for a block.
    assert!(listed_all(app).await.is_empty());
    setup.app.stop().await;
}

async fn listed_all(app: &TestApp) -> Vec<Value> {
    app.api().get("/api/approvals").await.expect(200)["approvals"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_request_passes_once_with_exactly_its_body_and_without_the_header() {
    let receiver = Receiver::start().await;
    let setup = setup("releases", None).await;
    let (app, agent, upstream) = (&setup.app, &setup.agent, &setup.upstream);
    subscribe(app, &receiver, "/approvals", &["approval.requested"]).await;
    publish_rule(&setup).await;

    let marker = "release-notes-marker-5521";
    let body = json!({"tag": "v1.4.0", "notes": marker, "token": CREDENTIAL}).to_string();
    let path = format!("{PUBLISH}?dry_run=false&channel=stable");
    let held = send(&setup, Method::POST, &path, &body, None).await;
    let id = assert_held(&held, PUBLISH_REASON);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(held.json["approval"]["expires_at"].as_str().unwrap())
            .unwrap();
    let ttl = expires_at.signed_duration_since(chrono::Utc::now());
    assert!(
        ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15),
        "expires in 15 minutes: {ttl}"
    );
    assert_eq!(upstream.count(), 0, "a held request reached the upstream");

    // The pending list shows the person what was asked.
    let pending = app.api().get("/api/approvals?status=pending").await;
    let pending = pending.expect(200)["approvals"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let shown = &pending[0];
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["url"], held.json["approval"]["url"]);
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["method"], "POST");
    assert_eq!(shown["path"], PUBLISH);
    assert_eq!(shown["query"], "dry_run=false&channel=stable");
    assert_eq!(shown["body_sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(shown["body_size"], body.len());
    assert_eq!(shown["token_id"], agent.token_id.to_string());
    assert_eq!(shown["token_name"], agent.token_name.as_str());
    assert_eq!(shown["target_id"], agent.target_id.to_string());
    assert_eq!(shown["target_slug"], "releases");
    assert_eq!(shown["reason"], PUBLISH_REASON);
    assert_eq!(shown["decided_by"], Value::Null);
    assert_eq!(shown["expires_at"], held.json["approval"]["expires_at"]);
    let preview = shown["body_preview"].as_str().unwrap();
    assert!(preview.contains(marker), "{preview}");
    assert!(preview.contains("v1.4.0"), "{preview}");
    assert!(
        !preview.contains(CREDENTIAL),
        "the target's secret shows in the preview: {preview}"
    );
    assert!(preview.contains("[redacted]"), "{preview}");
    assert_eq!(&approval(app, &id).await, shown);
    for status in ["approved", "denied", "used", "expired"] {
        assert!(listed(app, status).await.is_empty(), "{status}");
    }

    // The webhook names the approval and where to decide it, not the body.
    let hits = receiver
        .wait_for("/approvals", WAIT, |r| !r.is_empty())
        .await;
    assert_eq!(hits.len(), 1, "{hits:#?}");
    let hit = &hits[0];
    assert_eq!(hit["verified"], true, "{hit:#}");
    let event = &hit["body"];
    assert_eq!(event["type"], "approval.requested", "{event:#}");
    let data = &event["data"];
    assert_eq!(data["approval"]["id"], id.as_str(), "{event:#}");
    assert_eq!(data["approval"]["url"], held.json["approval"]["url"]);
    assert_eq!(data["approval"]["method"], "POST");
    assert_eq!(data["approval"]["path"], PUBLISH);
    assert_eq!(data["approval"]["reason"], PUBLISH_REASON);
    assert_eq!(data["token"]["id"], agent.token_id.to_string());
    assert_eq!(data["target"]["slug"], "releases");
    let raw = hit["raw"].as_str().unwrap();
    for leak in [
        marker,
        CREDENTIAL,
        "body_preview",
        "v1.4.0",
        agent.token.as_str(),
    ] {
        assert!(!raw.contains(leak), "the webhook carries {leak:?}: {raw}");
    }

    // Not yet decided: still held, and a new approval is not opened by naming this one.
    let early = send(&setup, Method::POST, &path, &body, Some(&id)).await;
    assert_eq!(early.status, 403, "{}", early.text);
    assert_eq!(early.json["error"], "approval pending", "{}", early.text);
    assert_eq!(early.json["approval"]["id"], id.as_str());
    assert_eq!(listed_all(app).await.len(), 1);
    assert_eq!(upstream.count(), 0);

    let decided = approve(app, &id).await;
    assert_eq!(decided["id"], id.as_str());
    assert_eq!(listed(app, "approved").await, vec![id.clone()]);
    assert!(listed(app, "pending").await.is_empty());

    let passed = send(&setup, Method::POST, &path, &body, Some(&id)).await;
    let echo = passed.expect(200);
    assert_eq!(passed.header("x-upstream"), "fake", "the upstream's answer");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(upstream.count(), 1, "exactly one request went upstream");
    let got = upstream.last();
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, format!("/base{path}"));
    assert_eq!(got.body_text, body, "the approved body, byte for byte");
    assert_eq!(got.body_sha256, sha256_hex(body.as_bytes()));
    assert!(
        got.header("gatehouse-approval").is_none(),
        "the approval header went upstream: {:?}",
        got.headers
    );
    assert_eq!(
        got.header("authorization").as_deref(),
        Some(format!("Bearer {CREDENTIAL}").as_str())
    );
    assert_eq!(approval(app, &id).await["status"], "used");

    let held_row = audit_row(app, agent.token_id, |r| r["error"] == "approval_required").await;
    assert_eq!(held_row["guard_action"], "approval_required", "{held_row}");
    assert_eq!(held_row["status_code"], 403);
    assert_eq!(held_row["approved_by"], Value::Null);
    let row = audit_row(app, agent.token_id, |r| r["status_code"] == 200).await;
    assert_eq!(row["guard_action"], "approved", "{row}");
    assert_eq!(row["approved_by"], DECIDED_BY, "{row}");
    assert_eq!(row["error"], Value::Null, "{row}");
    assert_eq!(row["path"], format!("/gateway/releases{PUBLISH}"));
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_does_not_cover_another_body_query_method_or_path() {
    let setup = setup("bound", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    // Any method under /releases/ is held, so every variant below is guarded too.
    add_rule(
        app,
        agent.target_id,
        json!({"path_match": "prefix", "path": "/releases/", "action": "approval_required",
               "reason": PUBLISH_REASON}),
    )
    .await;
    let body = r#"{"tag":"v2.0.0"}"#;
    let path = format!("{PUBLISH}?channel=stable");
    let id = approved(&setup, Method::POST, &path, body).await;

    let variants: [(Method, String, &str); 7] = [
        (Method::POST, path.clone(), r#"{"tag":"v2.0.1"}"#),
        (Method::POST, path.clone(), r#"{"tag":"v2.0.0"} "#),
        (Method::POST, path.clone(), ""),
        (Method::POST, format!("{PUBLISH}?channel=beta"), body),
        (Method::POST, PUBLISH.to_owned(), body),
        (Method::PUT, path.clone(), body),
        (
            Method::POST,
            "/releases/unpublish?channel=stable".to_owned(),
            body,
        ),
    ];
    for (method, path, other_body) in &variants {
        let reply = send(&setup, method.clone(), path, other_body, Some(&id)).await;
        assert_refused(&reply, "approval does not match this request");
    }
    assert_eq!(
        setup.upstream.count(),
        0,
        "a mismatched request reached the upstream"
    );
    audit_errors(app, agent.token_id, "approval_mismatch", variants.len()).await;

    // Still approved, and still good for exactly the approved request.
    assert_eq!(approval(app, &id).await["status"], "approved");
    send(&setup, Method::POST, &path, body, Some(&id))
        .await
        .expect(200);
    assert_eq!(setup.upstream.count(), 1);
    assert_eq!(setup.upstream.last().body_text, body);
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_is_used_once_even_by_two_concurrent_requests() {
    let setup = setup("once", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    publish_rule(&setup).await;

    let body = r#"{"tag":"v3"}"#;
    let id = approved(&setup, Method::POST, PUBLISH, body).await;
    send(&setup, Method::POST, PUBLISH, body, Some(&id))
        .await
        .expect(200);
    let again = send(&setup, Method::POST, PUBLISH, body, Some(&id)).await;
    assert_refused(&again, "approval already used");
    assert_eq!(setup.upstream.count(), 1);
    assert_eq!(approval(app, &id).await["status"], "used");
    assert_eq!(listed(app, "used").await, vec![id.clone()]);
    audit_errors(app, agent.token_id, "approval_used", 1).await;

    // A race: both re-sends read the approval as approved; only one may win the update.
    for round in 0..3 {
        let body = format!(r#"{{"tag":"race-{round}"}}"#);
        let id = approved(&setup, Method::POST, PUBLISH, &body).await;
        let before = setup.upstream.count();
        let (first, second) = tokio::join!(
            send(&setup, Method::POST, PUBLISH, &body, Some(&id)),
            send(&setup, Method::POST, PUBLISH, &body, Some(&id)),
        );
        let mut statuses = [first.status, second.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 403],
            "round {round}: {} / {}",
            first.text,
            second.text
        );
        let loser = if first.status == 403 { &first } else { &second };
        assert_refused(loser, "approval already used");
        assert_eq!(
            setup.upstream.count(),
            before + 1,
            "round {round}: exactly one request went upstream"
        );
        assert_eq!(setup.upstream.last().body_text, body);
    }
    audit_errors(app, agent.token_id, "approval_used", 4).await;
    setup.app.stop().await;
}

/// Poll `GET /api/approvals/{id}` until its status is `expired` (the TTL is 2 s).
async fn wait_expired(app: &TestApp, id: &str) {
    let (expired, last) = until(
        Duration::from_secs(8),
        || approval(app, id),
        |a| a["status"] == "expired",
    )
    .await;
    assert!(expired, "the approval did not expire: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_expire_undecided_and_unused() {
    let setup = setup("expiring", Some(Duration::from_secs(2))).await;
    let (app, agent) = (&setup.app, &setup.agent);
    publish_rule(&setup).await;

    let pending_body = r#"{"tag":"never-decided"}"#;
    let held = send(&setup, Method::POST, PUBLISH, pending_body, None).await;
    let pending = assert_held(&held, PUBLISH_REASON);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(held.json["approval"]["expires_at"].as_str().unwrap())
            .unwrap();
    let ttl = expires_at.signed_duration_since(chrono::Utc::now());
    assert!(ttl <= chrono::Duration::seconds(2), "{ttl}");

    // Approved within the TTL, never used.
    let unused_body = r#"{"tag":"approved-unused"}"#;
    let unused = approved(&setup, Method::POST, PUBLISH, unused_body).await;

    wait_expired(app, &pending).await;
    let late = decide(app, &pending, "approve").await;
    assert_eq!(late.status, 409, "{}", late.text);
    assert_eq!(late.json["error"], "approval is expired", "{}", late.text);
    assert_eq!(
        decide(app, &pending, "deny").await.status,
        409,
        "a deny after expiry"
    );
    // The late decision changed nothing.
    let still = approval(app, &pending).await;
    assert_eq!(still["status"], "expired");
    assert_eq!(still["decided_by"], Value::Null, "{still}");

    wait_expired(app, &unused).await;
    let reply = send(&setup, Method::POST, PUBLISH, unused_body, Some(&unused)).await;
    assert_refused(&reply, "approval expired");
    let reply = send(&setup, Method::POST, PUBLISH, pending_body, Some(&pending)).await;
    assert_refused(&reply, "approval expired");
    assert_eq!(
        setup.upstream.count(),
        0,
        "an expired approval let a request through"
    );
    audit_errors(app, agent.token_id, "approval_expired", 2).await;

    let mut expired = listed(app, "expired").await;
    expired.sort();
    let mut expected = vec![pending.clone(), unused.clone()];
    expected.sort();
    assert_eq!(expired, expected);
    assert!(listed(app, "pending").await.is_empty());
    assert!(listed(app, "approved").await.is_empty());
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_approval_refuses_the_request_and_cannot_be_decided_again() {
    let setup = setup("denied", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    publish_rule(&setup).await;

    let body = r#"{"tag":"v9"}"#;
    let held = send(&setup, Method::POST, PUBLISH, body, None).await;
    let id = assert_held(&held, PUBLISH_REASON);
    let denied = decide(app, &id, "deny").await;
    let denied = denied.expect(200);
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["decided_by"], DECIDED_BY, "{denied}");
    assert!(denied["decided_at"].is_string());
    assert_eq!(listed(app, "denied").await, vec![id.clone()]);

    let reply = send(&setup, Method::POST, PUBLISH, body, Some(&id)).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"error": "approval denied", "reason": PUBLISH_REASON})
    );
    assert_eq!(
        setup.upstream.count(),
        0,
        "a denied request reached the upstream"
    );
    let row = audit_row(app, agent.token_id, |r| r["error"] == "approval_denied").await;
    assert_eq!(row["guard_action"], "denied", "{row}");
    assert_eq!(row["status_code"], 403);
    assert_eq!(row["approved_by"], Value::Null, "{row}");

    for what in ["deny", "approve"] {
        let again = decide(app, &id, what).await;
        assert_eq!(again.status, 409, "{what}: {}", again.text);
        assert_eq!(again.json["error"], "approval is denied", "{}", again.text);
    }
    assert_eq!(approval(app, &id).await["status"], "denied");
    // Unknown and malformed ids on the decision endpoints.
    assert_eq!(
        decide(app, &Uuid::new_v4().to_string(), "approve")
            .await
            .status,
        404
    );
    assert_eq!(decide(app, "not-an-id", "approve").await.status, 400);
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tokens_approval_and_made_up_ids_are_unknown() {
    let setup = setup("shared", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    publish_rule(&setup).await;
    let (other_token, other_id) = app.make_token("shared-other", None).await;
    app.grant(other_id, agent.target_id, false).await;
    let other = Agent {
        token: other_token,
        token_id: other_id,
        token_name: "shared-other".into(),
        ..agent.clone()
    };
    app.wait_until_admitted(&other).await;

    let body = r#"{"tag":"mine"}"#;
    let id = approved(&setup, Method::POST, PUBLISH, body).await;
    let stolen = send_as(app, &other, Method::POST, PUBLISH, body, Some(&id)).await;
    assert_refused(&stolen, "unknown approval");
    for made_up in [
        "garbage".to_owned(),
        String::new(),
        Uuid::new_v4().to_string(),
        format!("{id}x"),
    ] {
        let reply = send(&setup, Method::POST, PUBLISH, body, Some(&made_up)).await;
        assert_refused(&reply, "unknown approval");
    }
    assert_eq!(setup.upstream.count(), 0);
    audit_errors(app, other_id, "approval_unknown", 1).await;
    audit_errors(app, agent.token_id, "approval_unknown", 4).await;

    // The other token's attempt did not use it up.
    assert_eq!(approval(app, &id).await["status"], "approved");
    send(&setup, Method::POST, PUBLISH, body, Some(&id))
        .await
        .expect(200);
    assert_eq!(setup.upstream.count(), 1);
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_defaults_hold_destructive_requests_until_switched_off() {
    let setup = setup("defaults", None).await;
    let (app, agent, upstream) = (&setup.app, &setup.agent, &setup.upstream);
    let target_path = format!("/api/targets/{}", agent.target_id);
    assert_eq!(
        app.api().get(&target_path).await.expect(200)["guard_defaults"],
        true
    );

    let reply = send(&setup, Method::DELETE, "/items/1", "", None).await;
    let delete_id = assert_held(&reply, "DELETE needs a person's approval");
    let reply = send(&setup, Method::GET, "/x/purge-cache?all=1", "", None).await;
    let purge_id = assert_held(&reply, "a path containing /purge needs a person's approval");
    // Percent-encoding does not hide a word: `%74` is `t`.
    let reply = send(&setup, Method::POST, "/x/dele%74e", "{}", None).await;
    let encoded_id = assert_held(
        &reply,
        "a path containing /delete needs a person's approval",
    );
    let reply = send(&setup, Method::POST, "/x/RESTART", "{}", None).await;
    assert_held(
        &reply,
        "a path containing /restart needs a person's approval",
    );
    assert_eq!(upstream.count(), 0, "a held request reached the upstream");
    assert_eq!(approval(app, &delete_id).await["method"], "DELETE");
    let purge = approval(app, &purge_id).await;
    assert_eq!(purge["path"], "/x/purge-cache");
    assert_eq!(purge["query"], "all=1");
    assert_eq!(purge["body_preview"], Value::Null);
    assert_eq!(purge["body_sha256"], sha256_hex(b""));
    assert_eq!(approval(app, &encoded_id).await["path"], "/x/dele%74e");
    // Ordinary requests pass, with no guard action.
    send(&setup, Method::GET, "/items/1", "", None)
        .await
        .expect(200);
    assert_eq!(upstream.count(), 1);
    let row = audit_row(app, agent.token_id, |r| r["status_code"] == 200).await;
    assert_eq!(row["guard_action"], Value::Null, "{row}");

    // Switched off: the DELETE goes through.
    let patched = app
        .api()
        .patch(&target_path, json!({"guard_defaults": false}))
        .await;
    assert_eq!(patched.expect(200)["guard_defaults"], false);
    send(&setup, Method::DELETE, "/items/1", "", None)
        .await
        .expect(200);
    assert_eq!(upstream.last().method, "DELETE");
    assert_eq!(upstream.last().target, "/base/items/1");
    send(&setup, Method::GET, "/x/purge-cache?all=1", "", None)
        .await
        .expect(200);
    assert_eq!(upstream.count(), 3);

    // On again, with an `allow` rule ahead of the defaults: first match wins.
    app.api()
        .patch(&target_path, json!({"guard_defaults": true}))
        .await
        .expect(200);
    add_rule(
        app,
        agent.target_id,
        json!({"method": "DELETE", "path_match": "prefix", "path": "/tmp/", "action": "allow"}),
    )
    .await;
    send(&setup, Method::DELETE, "/tmp/scratch-1", "", None)
        .await
        .expect(200);
    assert_eq!(upstream.count(), 4);
    assert_eq!(upstream.last().target, "/base/tmp/scratch-1");
    let allowed = audit_row(app, agent.token_id, |r| {
        r["path"] == "/gateway/defaults/tmp/scratch-1"
    })
    .await;
    assert_eq!(allowed["guard_action"], "allow", "{allowed}");
    let reply = send(&setup, Method::DELETE, "/items/2", "", None).await;
    assert_held(&reply, "DELETE needs a person's approval");
    let reply = send(&setup, Method::DELETE, "/tmpfiles/1", "", None).await;
    assert_held(&reply, "DELETE needs a person's approval");
    assert_eq!(upstream.count(), 4, "a held DELETE reached the upstream");
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rule_api_validates_orders_updates_and_deletes_rules() {
    let setup = setup("rules", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    let api = app.api();
    let rules = format!("/api/targets/{}/guard-rules", agent.target_id);
    let good = json!({"path_match": "prefix", "path": "/a", "action": "block"});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("action", json!("explode")), "action"),
        (with("action", json!("")), "action"),
        (with("path_match", json!("regex")), "path_match"),
        (with("method", json!("GE T")), "method"),
        (with("path", json!("")), "path"),
        (with("reason", json!("   ")), "reason"),
    ] {
        api.post(&rules, body).await.expect_error(400, Some(field));
    }
    api.post(&rules, with("colour", json!("red")))
        .await
        .expect_field_error(400, "colour");
    api.post(
        &format!("/api/targets/{}/guard-rules", Uuid::new_v4()),
        good.clone(),
    )
    .await
    .expect(404);
    api.get(&format!("/api/targets/{}/guard-rules", Uuid::new_v4()))
        .await
        .expect(404);
    api.get("/api/targets/nope/guard-rules")
        .await
        .expect_error(400, Some("id"));
    assert_eq!(api.get(&rules).await.expect(200)["guard_rules"], json!([]));

    // Appended in order; an explicit position goes ahead.
    let first = add_rule(app, agent.target_id, good.clone()).await;
    assert_eq!(first["reason"], "this request is blocked on this target");
    assert_eq!(first["method"], Value::Null, "any method");
    let second = add_rule(
        app,
        agent.target_id,
        json!({"method": "*", "path_match": "contains", "path": "/b", "action": "approval_required"}),
    )
    .await;
    assert_eq!(second["position"], 1);
    assert_eq!(second["method"], Value::Null);
    let front = add_rule(
        app,
        agent.target_id,
        json!({"method": "GET", "path_match": "equals", "path": "/a/open",
               "action": "allow", "position": -1}),
    )
    .await;
    let order = |list: &Value| -> Vec<Value> {
        list["guard_rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    let ids = |rules: &[&Value]| -> Vec<Value> { rules.iter().map(|r| r["id"].clone()).collect() };
    let listed = api.get(&rules).await;
    assert_eq!(order(listed.expect(200)), ids(&[&front, &first, &second]));

    // First match wins: the allow at -1 lets GET /a/open through the block on /a.
    send(&setup, Method::GET, "/a/open", "", None)
        .await
        .expect(200);
    let blocked = send(&setup, Method::GET, "/a/closed", "", None).await;
    assert_eq!(
        blocked.json["error"], "blocked by guard rule",
        "{}",
        blocked.text
    );
    assert_eq!(setup.upstream.count(), 1);

    // PATCH: moving the block ahead of the allow shadows it.
    let rule_path = |rule: &Value| format!("{rules}/{}", json_id(rule));
    let moved = api
        .patch(
            &rule_path(&first),
            json!({"position": -5, "reason": "the a-side is closed"}),
        )
        .await;
    let moved = moved.expect(200).clone();
    assert_eq!(moved["position"], -5);
    assert_eq!(moved["reason"], "the a-side is closed");
    assert_eq!(moved["path"], "/a", "unchanged fields stay");
    assert_eq!(moved["action"], "block");
    assert_eq!(
        order(api.get(&rules).await.expect(200)),
        ids(&[&first, &front, &second])
    );
    let blocked = send(&setup, Method::GET, "/a/open", "", None).await;
    assert_eq!(
        blocked.json,
        json!({"error": "blocked by guard rule", "reason": "the a-side is closed"})
    );
    // Changing the match and action of a rule; `method: null` is any method.
    let changed = api
        .patch(
            &rule_path(&second),
            json!({"method": "POST", "path_match": "equals", "path": "/b/x", "action": "block"}),
        )
        .await;
    let changed = changed.expect(200).clone();
    assert_eq!(changed["method"], "POST");
    assert_eq!(changed["path_match"], "equals");
    assert_eq!(changed["action"], "block");
    let any = api
        .patch(&rule_path(&second), json!({"method": null}))
        .await;
    assert_eq!(any.expect(200)["method"], Value::Null);
    for (body, field) in [
        (json!({"action": "maybe"}), "action"),
        (json!({"path_match": "glob"}), "path_match"),
        (json!({"path": ""}), "path"),
        (json!({"method": "NOT A METHOD"}), "method"),
    ] {
        api.patch(&rule_path(&second), body)
            .await
            .expect_error(400, Some(field));
    }
    api.patch(
        &format!("{rules}/{}", Uuid::new_v4()),
        json!({"action": "allow"}),
    )
    .await
    .expect(404);
    // A rule is reached only through its own target.
    let elsewhere = app
        .make_target("rules-other", &setup.upstream.url(""))
        .await;
    api.patch(
        &format!(
            "/api/targets/{}/guard-rules/{}",
            json_id(&elsewhere),
            json_id(&first)
        ),
        json!({"action": "allow"}),
    )
    .await
    .expect(404);

    api.delete(&rule_path(&first)).await.expect(204);
    api.delete(&rule_path(&first)).await.expect(404);
    assert_eq!(
        order(api.get(&rules).await.expect(200)),
        ids(&[&front, &second])
    );
    // The block is gone from the proxy too.
    send(&setup, Method::GET, "/a/closed", "", None)
        .await
        .expect(200);
    // Deleting a target takes its rules.
    api.delete(&format!("/api/targets/{}", agent.target_id))
        .await
        .expect(204);
    api.get(&rules).await.expect(404);
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guarded_body_over_64_kib_is_refused_and_nothing_reaches_the_upstream() {
    let setup = setup("bulky", None).await;
    let (app, agent) = (&setup.app, &setup.agent);
    publish_rule(&setup).await;
    const MESSAGE: &str = "a request that needs approval may carry at most 64 KiB of body";

    let big = "x".repeat(64 * 1024 + 1);
    let reply = send(&setup, Method::POST, PUBLISH, &big, None).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.json, json!({"error": MESSAGE}));

    // Without a Content-Length the bound holds as the body streams in (chunked, raw bytes).
    let mut raw = format!(
        "POST /gateway/bulky{PUBLISH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.running().proxy_addr,
        agent.token
    )
    .into_bytes();
    for _ in 0..17 {
        raw.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        raw.extend_from_slice(&[b'y'; 4096]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    app.raw(&raw).await.assert_error(413, MESSAGE);

    assert_eq!(
        setup.upstream.count(),
        0,
        "an oversized body reached the upstream"
    );
    assert!(
        listed_all(app).await.is_empty(),
        "no approval for an oversized body"
    );
    audit_errors(app, agent.token_id, "payload_too_large", 2).await;

    // Exactly 64 KiB is held for approval as usual, and goes through once approved.
    let limit = "z".repeat(64 * 1024);
    let id = approved(&setup, Method::POST, PUBLISH, &limit).await;
    send(&setup, Method::POST, PUBLISH, &limit, Some(&id))
        .await
        .expect(200);
    assert_eq!(setup.upstream.count(), 1);
    assert_eq!(setup.upstream.last().body_len, limit.len());
    assert_eq!(
        setup.upstream.last().body_sha256,
        sha256_hex(limit.as_bytes())
    );
    setup.app.stop().await;
}
