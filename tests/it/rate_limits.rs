//! SPEC §11 rate limits per token (docs/gateway.md "Rate limits"): 429 with `Retry-After` once a
//! token's per-minute budget is used up, across replicas within 10 % of the limit, audited as
//! `rate_limited` and counted in `gatehouse_rate_limited_total{target}`; the API, UI and CLI
//! fields; MCP `api_request` counted once; the fallback when the counter is unreachable.
//!
//! The load test sends 2 000 requests of one token round-robin over two replicas and 2 000 of
//! another token skewed (a quarter to one replica, then the rest to the other); each must see
//! 540–660 admitted for a limit of 600.
//!
//! Windows are wall-clock minutes, so every test that counts waits (bounded, < 1 minute) for a
//! window with enough time left, and the load test checks afterwards that its requests stayed
//! in one window (and tries again, at most three times, with a new token when they did not).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse::domain::audit::{AuditCursor, AuditEntry, AuditQuery, Interface};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::json_id;
use crate::support::agent::{PROPAGATION, metric, until, within};
use crate::support::oidc::BrowserClient;
use crate::support::upstream::FakeUpstream;
use crate::support::{TestApp, TestDb};

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The limiter's window: unix minutes.
fn window() -> u64 {
    unix_secs() / 60
}

/// Wait until at least `left` of the current minute remains (sleeping into the next one if
/// needed: at most a minute), and return that window.
async fn window_with(left: Duration) -> u64 {
    let remaining = 60 - unix_secs() % 60;
    if remaining < left.as_secs() {
        tokio::time::sleep(Duration::from_secs(remaining) + Duration::from_millis(200)).await;
    }
    window()
}

/// `POST /api/tokens {name, rate_limit}` → 201; (plaintext, id).
async fn limited_token(app: &TestApp, name: &str, rate_limit: Value) -> (String, Uuid) {
    let reply = app
        .api()
        .post(
            "/api/tokens",
            json!({"name": name, "rate_limit": rate_limit}),
        )
        .await;
    let created = reply.expect(201);
    assert_eq!(created["rate_limit"], rate_limit, "{created}");
    (
        created["token"].as_str().unwrap().to_owned(),
        json_id(created),
    )
}

/// Poll `/discovery` on every app (not rate limited) until it lists `slug` for `token`.
async fn wait_for_grant(apps: &[&TestApp], token: &str, slug: &str) {
    for app in apps {
        let seen = within(PROPAGATION * 2, || async {
            let reply = app.get("/discovery", token).await;
            reply.status == 200 && reply.text.contains(&format!("\"slug\":\"{slug}\""))
        })
        .await;
        assert!(seen, "the grant did not reach every replica");
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

/// `total` GETs of `path`, round-robin over `apps`, by `workers` concurrent clients.
async fn fire(
    apps: &[&TestApp],
    path: &str,
    token: &str,
    total: usize,
    workers: usize,
) -> Vec<Answer> {
    let urls: Arc<Vec<String>> = Arc::new(apps.iter().map(|a| a.proxy_url(path)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (urls, next, token) = (urls.clone(), next.clone(), token.to_owned());
        let http = apps[0].http.clone();
        tasks.spawn(async move {
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return answers;
                }
                let response = http
                    .get(&urls[i % urls.len()])
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body = response.json().await.unwrap_or(Value::Null);
                answers.push(Answer {
                    status,
                    retry_after,
                    body,
                });
            }
        });
    }
    let mut answers = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        answers.extend(done.unwrap());
    }
    answers
}

#[track_caller]
fn assert_limited(answer: &Answer) {
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.body, json!({"error": "rate limit exceeded"}));
    let retry_after = answer.retry_after.expect("429 carries Retry-After");
    assert!((1..=60).contains(&retry_after), "{answer:?}");
}

/// Every audit row of `token_id` with `status`, across pages.
async fn audit_rows(app: &TestApp, token_id: Uuid, status: u16) -> Vec<AuditEntry> {
    let mut rows = Vec::new();
    let mut before: Option<AuditCursor> = None;
    for _ in 0..100 {
        let (page, next) = app
            .running()
            .store()
            .audit_page(&AuditQuery {
                token_id: Some(token_id),
                status_code: Some(status),
                before,
                limit: 500,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        rows.extend(page);
        match next {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    rows
}

/// Poll (at most 10 s) until `token_id` has `count` audit rows with `status`; those rows.
async fn wait_for_rows(
    app: &TestApp,
    token_id: Uuid,
    status: u16,
    count: usize,
) -> Vec<AuditEntry> {
    let (_, rows) = until(
        Duration::from_secs(10),
        || audit_rows(app, token_id, status),
        |rows| rows.len() >= count,
    )
    .await;
    assert_eq!(rows.len(), count, "audit rows with status {status}");
    rows
}

/// `gatehouse_rate_limited_total{target}` summed over `apps`.
async fn limited_metric(apps: &[&TestApp], target: &str) -> f64 {
    let mut sum = 0.0;
    for app in apps {
        let text = app.metrics_text().await;
        sum += metric(&text, "gatehouse_rate_limited_total", &[("target", target)]).unwrap_or(0.0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_hold_a_limit_of_600_within_ten_percent() {
    const LIMIT: u64 = 600;
    const REQUESTS: usize = 2000;
    let first = TestApp::spawn().await;
    let second = first.spawn_replica().await;
    let apps = [&first, &second];
    let upstream = FakeUpstream::start().await;
    let target = first.make_target("limited", &upstream.url("/base")).await;
    // A second token whose traffic is skewed: a quarter to one replica, then the rest to the
    // other (what the first replica leased and did not spend is lost to the second).
    let skewed_upstream = FakeUpstream::start().await;
    let skewed_target = first.make_target("skewed", &skewed_upstream.url("")).await;
    for attempt in 0..3 {
        let (token, token_id) =
            limited_token(&first, &format!("busy-{attempt}"), json!(LIMIT)).await;
        first.grant(token_id, json_id(&target), false).await;
        let (skewed, skewed_id) =
            limited_token(&first, &format!("skewed-{attempt}"), json!(LIMIT)).await;
        first.grant(skewed_id, json_id(&skewed_target), false).await;
        wait_for_grant(&apps, &token, "limited").await;
        wait_for_grant(&apps, &skewed, "skewed").await;
        let limited_before = limited_metric(&apps, "limited").await;
        upstream.clear();
        skewed_upstream.clear();

        let started_in = window_with(Duration::from_secs(40)).await;
        let answers = fire(&apps, "/gateway/limited/items", &token, REQUESTS, 16).await;
        let mut skewed_answers =
            fire(&[&first], "/gateway/skewed/x", &skewed, REQUESTS / 4, 16).await;
        skewed_answers.extend(
            fire(
                &[&second],
                "/gateway/skewed/x",
                &skewed,
                REQUESTS * 3 / 4,
                16,
            )
            .await,
        );
        if window() != started_in {
            eprintln!("attempt {attempt}: the requests crossed a minute boundary; again");
            continue;
        }

        let ok = answers.iter().filter(|a| a.status == 200).count();
        let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
        eprintln!(
            "rate limit {LIMIT}/min over 2 replicas: {ok} of {REQUESTS} admitted, {} refused",
            refused.len()
        );
        assert!(
            (540..=660).contains(&ok),
            "{ok} admitted for a limit of {LIMIT}"
        );
        for answer in &refused {
            assert_limited(answer);
        }
        assert_eq!(
            upstream.count(),
            ok,
            "only admitted requests reach the upstream"
        );
        let skewed_ok = skewed_answers.iter().filter(|a| a.status == 200).count();
        eprintln!(
            "rate limit {LIMIT}/min over 2 replicas, skewed: {skewed_ok} of {REQUESTS} admitted"
        );
        assert!(
            (540..=660).contains(&skewed_ok),
            "{skewed_ok} admitted for a limit of {LIMIT} with skewed traffic"
        );
        for answer in skewed_answers.iter().filter(|a| a.status != 200) {
            assert_limited(answer);
        }
        assert_eq!(skewed_upstream.count(), skewed_ok);
        // The shared counter never hands out more than the limit.
        let leased = first
            .running()
            .store()
            .rate_budget_used(token_id, i64::try_from(started_in).unwrap())
            .await
            .unwrap();
        assert!(leased <= LIMIT, "leased {leased}");

        // Audited (both replicas write to the one database) and counted by target.
        let rows = wait_for_rows(&first, token_id, 429, refused.len()).await;
        assert!(
            rows.iter()
                .all(|r| r.error.as_deref() == Some("rate_limited")
                    && r.target_slug == "limited"
                    && r.interface == Interface::Gateway),
            "{:?}",
            rows.first()
        );
        wait_for_rows(&first, token_id, 200, ok).await;
        let expected = limited_before + refused.len() as f64;
        let (counted, total) = until(
            Duration::from_secs(5),
            || limited_metric(&apps, "limited"),
            |total| *total >= expected,
        )
        .await;
        assert!(
            counted && total == expected,
            "metric {total}, expected {expected}"
        );
        second.stop().await;
        first.stop().await;
        return;
    }
    panic!("three attempts in a row crossed a minute boundary");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_without_a_limit_are_never_refused() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("free", &upstream.url(""), None).await;
    let answers = fire(&[&app], "/gateway/free/x", &agent.token, 300, 8).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(limited_metric(&[&app], "free").await, 0.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_validates_rate_limit_and_null_clears_it() {
    let app = TestApp::spawn().await;
    let api = app.api();
    for bad in [json!(0), json!(-1), json!(1_000_001), json!(i64::MAX)] {
        let reply = api
            .post("/api/tokens", json!({"name": "bad", "rate_limit": bad}))
            .await;
        reply.expect_error(400, Some("rate_limit"));
    }
    for bad in [json!(1.5), json!("60"), json!(true), json!([60])] {
        let reply = api
            .post("/api/tokens", json!({"name": "bad", "rate_limit": bad}))
            .await;
        reply.expect_field_error(400, "rate_limit");
    }
    assert!(
        app.running()
            .store()
            .list_agent_tokens()
            .await
            .unwrap()
            .is_empty(),
        "no token row from a refused create"
    );

    let (_, unlimited) = limited_token(&app, "unlimited", Value::Null).await;
    let created = api.post("/api/tokens", json!({"name": "plain"})).await;
    assert_eq!(created.expect(201)["rate_limit"], Value::Null);

    let (_, id) = limited_token(&app, "limited", json!(60)).await;
    let path = format!("/api/tokens/{id}");
    assert_eq!(api.get(&path).await.expect(200)["rate_limit"], json!(60));
    // Absent keeps it; a value changes it; a bad value is refused and changes nothing.
    let renamed = api.patch(&path, json!({"name": "renamed"})).await;
    assert_eq!(renamed.expect(200)["rate_limit"], json!(60));
    let raised = api.patch(&path, json!({"rate_limit": 1_000_000})).await;
    assert_eq!(raised.expect(200)["rate_limit"], json!(1_000_000));
    api.patch(&path, json!({"rate_limit": 0}))
        .await
        .expect_error(400, Some("rate_limit"));
    api.patch(&path, json!({"rate_limit": "x"}))
        .await
        .expect_field_error(400, "rate_limit");
    assert_eq!(
        api.get(&path).await.expect(200)["rate_limit"],
        json!(1_000_000)
    );
    // null removes the limit.
    let cleared = api.patch(&path, json!({"rate_limit": null})).await;
    assert_eq!(cleared.expect(200)["rate_limit"], Value::Null);
    let listed = api.get("/api/tokens").await;
    let tokens = listed.expect(200)["tokens"].as_array().unwrap().clone();
    assert!(
        tokens.iter().all(|t| t["rate_limit"].is_null()),
        "{tokens:?}"
    );
    assert_eq!(
        api.get(&format!("/api/tokens/{unlimited}"))
            .await
            .expect(200)["rate_limit"],
        Value::Null
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patched_limit_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let target = app.make_target("patched", &upstream.url("")).await;
    let (token, id) = limited_token(&app, "patched", json!(3)).await;
    app.grant(id, json_id(&target), false).await;
    wait_for_grant(&[&app], &token, "patched").await;
    window_with(Duration::from_secs(30)).await;

    let statuses = |answers: Vec<Answer>| answers.iter().map(|a| a.status).collect::<Vec<_>>();
    let answers = fire(&[&app], "/gateway/patched/x", &token, 4, 1).await;
    assert_limited(&answers[3]);
    assert_eq!(statuses(answers), [200, 200, 200, 429]);

    // Raised: three more in this window. Management answers once the change is live here.
    let path = format!("/api/tokens/{id}");
    app.api()
        .patch(&path, json!({"rate_limit": 6}))
        .await
        .expect(200);
    let answers = fire(&[&app], "/gateway/patched/x", &token, 4, 1).await;
    assert_eq!(statuses(answers), [200, 200, 200, 429]);

    // Removed: nothing is refused any more.
    app.api()
        .patch(&path, json!({"rate_limit": null}))
        .await
        .expect(200);
    let answers = fire(&[&app], "/gateway/patched/x", &token, 40, 4).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_limit_reaches_another_replica_within_two_seconds() {
    let first = TestApp::spawn().await;
    let second = first.spawn_replica().await;
    let upstream = FakeUpstream::start().await;
    let target = first.make_target("lowered", &upstream.url("")).await;
    let (token, id) = limited_token(&first, "lowered", json!(1000)).await;
    first.grant(id, json_id(&target), false).await;
    wait_for_grant(&[&first, &second], &token, "lowered").await;
    window_with(Duration::from_secs(30)).await;
    let answers = fire(&[&second], "/gateway/lowered/x", &token, 5, 1).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");

    // Lowered below what the second replica already admitted in this window: it refuses.
    first
        .api()
        .patch(&format!("/api/tokens/{id}"), json!({"rate_limit": 2}))
        .await
        .expect(200);
    let (refused, last) = until(
        PROPAGATION,
        || async { second.get("/gateway/lowered/x", &token).await.status },
        |status| *status == 429,
    )
    .await;
    assert!(refused, "still {last} after 2 s");
    second.stop().await;
    first.stop().await;
}

/// One JSON-RPC `tools/call` on `/mcp`, as it is (the endpoint is stateless and answers JSON).
async fn mcp_call(app: &TestApp, token: &str, name: &str, arguments: Value) -> Value {
    let call = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    });
    let response = app
        .http
        .post(app.proxy_url("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&call)
        .send()
        .await
        .unwrap();
    let reply = crate::support::admin::Reply::read(response).await;
    reply.expect(200)["result"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_api_request_is_counted_once_and_refused_as_a_tool_error() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let target = app.make_target("tooled", &upstream.url("")).await;
    let (token, id) = limited_token(&app, "tooled", json!(2)).await;
    app.grant(id, json_id(&target), false).await;
    wait_for_grant(&[&app], &token, "tooled").await;
    window_with(Duration::from_secs(30)).await;

    // `/mcp` requests themselves (here `discover`) are not counted…
    for _ in 0..3 {
        let result = mcp_call(&app, &token, "discover", json!({})).await;
        assert_eq!(result["isError"], json!(false), "{result}");
    }
    // …each api_request is, once: two pass, the third is refused by the gateway.
    let request = json!({"target": "tooled", "method": "GET", "path": "/x"});
    for _ in 0..2 {
        let result = mcp_call(&app, &token, "api_request", request.clone()).await;
        assert_eq!(result["isError"], json!(false), "{result}");
        assert_eq!(result["structuredContent"]["status"], json!(200));
    }
    let result = mcp_call(&app, &token, "api_request", request).await;
    assert_eq!(result["isError"], json!(true), "{result}");
    let output = &result["structuredContent"];
    assert_eq!(output["status"], json!(429), "{result}");
    assert_eq!(output["body"], json!({"error": "rate limit exceeded"}));
    let retry_after = output["headers"]["retry-after"]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("Retry-After in {output}"));
    assert!((1..=60).contains(&retry_after));
    // The same budget serves /gateway.
    let reply = app.get("/gateway/tooled/x", &token).await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(upstream.count(), 2);

    let rows = wait_for_rows(&app, id, 429, 2).await;
    let interfaces: Vec<Interface> = rows.iter().map(|r| r.interface).collect();
    assert!(interfaces.contains(&Interface::Mcp) && interfaces.contains(&Interface::Gateway));
    assert!(
        rows.iter()
            .all(|r| r.error.as_deref() == Some("rate_limited"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_counter_leaves_each_replica_to_enforce_the_limit_alone() {
    let first = TestApp::spawn().await;
    let second = first.spawn_replica().await;
    let upstream = FakeUpstream::start().await;
    let target = first.make_target("outage", &upstream.url("")).await;
    let (token, id) = limited_token(&first, "outage", json!(5)).await;
    first.grant(id, json_id(&target), false).await;
    wait_for_grant(&[&first, &second], &token, "outage").await;

    // The counter table disappears (an outage of the shared counter, with the rest of the
    // database still there so the apps keep running).
    let db = sea_orm::Database::connect(&first.db.url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &db,
        "ALTER TABLE token_rate_windows RENAME TO token_rate_windows_gone",
    )
    .await
    .unwrap();
    window_with(Duration::from_secs(30)).await;
    let answers = fire(&[&first, &second], "/gateway/outage/x", &token, 20, 2).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    // Fail open to the limit per replica: each admits 5 on its own, nothing waits or errors.
    assert_eq!(ok, 10, "{answers:?}");
    for answer in answers.iter().filter(|a| a.status != 200) {
        assert_limited(answer);
    }
    let _ = db.close().await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_counter_leases_only_within_the_limit_and_prunes_old_windows() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let token = Uuid::new_v4();
    assert!(store.lease_rate_budget(token, 100, 6, 10).await.unwrap());
    assert!(!store.lease_rate_budget(token, 100, 5, 10).await.unwrap());
    assert!(store.lease_rate_budget(token, 100, 4, 10).await.unwrap());
    assert!(!store.lease_rate_budget(token, 100, 1, 10).await.unwrap());
    assert_eq!(store.rate_budget_used(token, 100).await.unwrap(), 10);
    // A raised limit has room again; a lease larger than the limit never fits.
    assert!(store.lease_rate_budget(token, 100, 1, 11).await.unwrap());
    assert!(!store.lease_rate_budget(token, 101, 12, 11).await.unwrap());
    // Windows and tokens are counted apart.
    assert!(store.lease_rate_budget(token, 101, 11, 11).await.unwrap());
    assert!(
        store
            .lease_rate_budget(Uuid::new_v4(), 100, 3, 3)
            .await
            .unwrap()
    );

    assert_eq!(store.prune_rate_windows(101).await.unwrap(), 2);
    assert_eq!(store.rate_budget_used(token, 100).await.unwrap(), 0);
    assert_eq!(store.rate_budget_used(token, 101).await.unwrap(), 11);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_sets_changes_and_clears_the_rate_limit() {
    let app = TestApp::spawn().await;
    let base = app.admin_url("");
    let browser = BrowserClient::new();
    let login = browser
        .post_form(
            &format!("{base}/ui/login"),
            &[("token".to_owned(), app.admin_token.expose().to_owned())],
        )
        .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let csrf = |body: &str| {
        let marker = "name=\"csrf\" value=\"";
        let start = body.find(marker).expect("a csrf field") + marker.len();
        let end = body[start..].find('"').unwrap() + start;
        body[start..end].to_owned()
    };
    let page = browser.get(&format!("{base}/ui/tokens")).await;
    assert!(page.body.contains("name=\"rate_limit\""), "{}", page.body);
    let form = |token: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf".to_owned(), token.to_owned())];
        all.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        all
    };
    let created = browser
        .post_form(
            &format!("{base}/ui/tokens"),
            &form(
                &csrf(&page.body),
                &[
                    ("name", "ui agent"),
                    ("allowed_ips", ""),
                    ("rate_limit", "90"),
                ],
            ),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body.contains("90 / min"), "listed with its limit");
    let tokens = app.running().store().list_agent_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].rate_limit.map(|l| l.per_minute()), Some(90));
    let id = tokens[0].id;

    let detail = browser.get(&format!("{base}/ui/tokens/{id}")).await;
    assert!(detail.body.contains("value=\"90\""), "{}", detail.body);
    let edit = format!("{base}/ui/tokens/{id}/edit");
    let bad = browser
        .post_form(
            &edit,
            &form(
                &csrf(&detail.body),
                &[("name", "ui agent"), ("rate_limit", "ten")],
            ),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("rate_limit"), "{}", bad.body);
    let zero = browser
        .post_form(
            &edit,
            &form(
                &csrf(&detail.body),
                &[("name", "ui agent"), ("rate_limit", "0")],
            ),
        )
        .await;
    assert_eq!(zero.status, 400, "{}", zero.body);
    let cleared = browser
        .post_form(
            &edit,
            &form(
                &csrf(&detail.body),
                &[("name", "ui agent"), ("rate_limit", "")],
            ),
        )
        .await;
    assert_eq!(cleared.status, 303, "{}", cleared.body);
    let record = app.running().store().agent_token(id).await.unwrap();
    assert_eq!(record.rate_limit, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_token_create_takes_a_rate_limit() {
    use base64::Engine as _;
    let db = TestDb::new().await;
    let store = db.store().await;
    let cwd = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(crate::support::app::rand_key());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .current_dir(cwd.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("GATEHOUSE_ENCRYPTION_KEY", &key)
            .stdin(std::process::Stdio::null())
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&[
        "token",
        "create",
        "--name",
        "slow agent",
        "--rate-limit",
        "30",
    ]);
    assert!(output.status.success(), "{output:?}");
    let tokens = store.list_agent_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].rate_limit.map(|l| l.per_minute()), Some(30));

    for bad in ["0", "-3", "2000000"] {
        let output = run(&["token", "create", "--name", "bad", "--rate-limit", bad]);
        assert!(!output.status.success(), "--rate-limit {bad} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains("rate_limit"), "{stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("sg_"));
    }
    assert_eq!(store.list_agent_tokens().await.unwrap().len(), 1);
    store.close().await;
}
