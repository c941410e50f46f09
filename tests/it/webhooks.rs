//! Signed webhooks end to end (SPEC §11): the admin API, signatures checked by an independent
//! Python receiver, account and token events, retries with backoff, once-delivery across two
//! replicas, and a pending delivery surviving a restart. Both backends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, db_count, db_execute, gateway_get, managed_slug,
    set_token_expiry, setup_configured, wait_for_discovery,
};
use crate::support::agent::{metric, spawn_configured, until};
use crate::support::webhooks::{Receiver, subscribe, wait_for_deliveries};
use crate::support::{TestApp, TestDb};

const WAIT: Duration = Duration::from_secs(20);

fn of_type<'a>(received: &'a [Value], kind: &str) -> Vec<&'a Value> {
    received
        .iter()
        .filter(|r| r["body"]["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_are_validated_and_the_secret_is_shown_only_at_creation() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let created = api
        .post(
            "/api/webhooks",
            json!({"url": "https://hooks.example.com/in", "events": ["token.revoked", "account.error", "token.revoked"], "description": "ops"}),
        )
        .await;
    let body = created.expect(201).clone();
    let secret = body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(body["events"], json!(["token.revoked", "account.error"]));
    assert_eq!(body["enabled"], true);
    let id = body["id"].as_str().unwrap().to_owned();

    for reply in [
        api.get("/api/webhooks").await,
        api.get(&format!("/api/webhooks/{id}")).await,
    ] {
        reply.expect(200);
        assert!(
            !reply.text.contains(secret),
            "secret returned again: {}",
            reply.text
        );
        assert!(!reply.text.contains("secret"), "{}", reply.text);
    }

    let patched = api
        .patch(
            &format!("/api/webhooks/{id}"),
            json!({"events": ["account.disconnected"], "enabled": false, "description": ""}),
        )
        .await;
    let patched = patched.expect(200);
    assert_eq!(patched["events"], json!(["account.disconnected"]));
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["description"], Value::Null);

    // Every bad input names its field; nothing is stored.
    for (body, field) in [
        (
            json!({"url": "not a url", "events": ["token.revoked"]}),
            "url",
        ),
        (
            json!({"url": "ftp://x.example.com", "events": ["token.revoked"]}),
            "url",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["token.exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["webhook.test"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["token.revoked"], "secret": "x"}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["token.revoked"], "description": "x".repeat(501)}),
            "description",
        ),
    ] {
        api.post("/api/webhooks", body)
            .await
            .expect_field_error(400, field);
    }
    api.patch(
        &format!("/api/webhooks/{id}"),
        json!({"url": "mailto:x@example.com"}),
    )
    .await
    .expect_field_error(400, "url");
    api.get("/api/webhooks/nope")
        .await
        .expect_field_error(400, "id");
    api.get(&format!("/api/webhooks/{id}/deliveries?limit=0"))
        .await
        .expect_field_error(400, "limit");
    let listed = api.get("/api/webhooks").await;
    assert_eq!(listed.expect(200)["webhooks"].as_array().unwrap().len(), 1);

    api.delete(&format!("/api/webhooks/{id}")).await.expect(204);
    api.delete(&format!("/api/webhooks/{id}")).await.expect(404);
    api.post_empty(&format!("/api/webhooks/{id}/test"))
        .await
        .expect(404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_webhook_urls_are_refused_unless_allow_private() {
    let app = spawn_configured(|c| c.upstream.allow_private = false).await;
    for url in [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest",
        "https://10.1.2.3/x",
        "https://localhost/x",
        "https://[::ffff:127.0.0.1]/x",
        "http://hooks.example.com/plain-http",
    ] {
        app.api()
            .post(
                "/api/webhooks",
                json!({"url": url, "events": ["token.revoked"]}),
            )
            .await
            .expect_field_error(400, "url");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_event_is_signed_and_verified_by_an_independent_receiver() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let (id, _) = subscribe(&app, &receiver, "/test", &["token.revoked"]).await;
    let sent = app
        .api()
        .post_empty(&format!("/api/webhooks/{id}/test"))
        .await;
    let event_id = sent.expect(202)["event_id"].as_str().unwrap().to_owned();

    let received = receiver.wait_for("/test", WAIT, |r| !r.is_empty()).await;
    let hit = &received[0];
    assert_eq!(hit["verified"], true, "signature verified: {hit:#}");
    assert_eq!(hit["id"], event_id.as_str());
    assert_eq!(hit["content_type"], "application/json");
    assert!(hit["signature"].as_str().unwrap().starts_with("v1,"));
    assert_eq!(hit["body"]["type"], "webhook.test");
    assert_eq!(hit["body"]["data"]["endpoint_id"], id.to_string());
    assert!(hit["body"]["timestamp"].is_string());

    let deliveries = wait_for_deliveries(&app, id, WAIT, |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(deliveries[0]["attempts"], 1);
    assert_eq!(deliveries[0]["last_status_code"], 200);
    assert_eq!(deliveries[0]["attempt_log"][0]["status_code"], 200);
    let attempt = &deliveries[0]["attempt_log"][0];
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let took = i64::try_from(attempt["duration_ms"].as_u64().unwrap()).unwrap();
    println!(
        "webhooks: test event queued → attempt began {} ms later, took {took} ms",
        (time(&attempt["attempted_at"]) - time(&deliveries[0]["created_at"])).num_milliseconds()
            - took
    );
    let metrics = app
        .http
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "gatehouse_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Nothing else was sent: the endpoint subscribes to token.revoked only.
    assert_eq!(receiver.received().await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_or_deleting_a_token_sends_token_revoked_once() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    subscribe(&app, &receiver, "/tokens", &["token.revoked"]).await;
    let (_, revoked) = app.make_token("to-revoke", None).await;
    let (_, deleted) = app.make_token("to-delete", None).await;
    let (_, regenerated) = app.make_token("to-regenerate", None).await;

    app.api()
        .post_empty(&format!("/api/tokens/{revoked}/revoke"))
        .await
        .expect(200);
    app.api()
        .post_empty(&format!("/api/tokens/{revoked}/revoke"))
        .await
        .expect(200);
    app.api()
        .post_empty(&format!("/api/tokens/{regenerated}/regenerate"))
        .await
        .expect(200);
    app.api()
        .delete(&format!("/api/tokens/{deleted}"))
        .await
        .expect(204);
    // Deleting the already revoked token announces nothing new.
    app.api()
        .delete(&format!("/api/tokens/{revoked}"))
        .await
        .expect(204);

    let received = receiver.wait_for("/tokens", WAIT, |r| r.len() >= 2).await;
    // Sent in order of the changes; a third (wrong) one would have been written before the
    // last delete committed, so wait for the delivery log to settle before counting.
    let mut by_token = BTreeMap::new();
    for hit in &received {
        assert_eq!(hit["verified"], true, "{hit:#}");
        assert_eq!(hit["body"]["type"], "token.revoked");
        by_token.insert(
            hit["body"]["data"]["token"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            (
                hit["body"]["data"]["token"]["name"].clone(),
                hit["body"]["data"]["reason"].clone(),
            ),
        );
    }
    assert_eq!(
        by_token.len(),
        received.len(),
        "one event per token: {received:#?}"
    );
    assert_eq!(
        by_token[&revoked.to_string()],
        (json!("to-revoke"), json!("revoked"))
    );
    assert_eq!(
        by_token[&deleted.to_string()],
        (json!("to-delete"), json!("deleted"))
    );
    let written = db_count(&app.db.url, "webhook_deliveries", "", Vec::new()).await;
    assert_eq!(written, 2, "exactly two deliveries were written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_500_twice_gets_the_same_event_three_times_with_backoff() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let (id, _) = subscribe(&app, &receiver, "/flaky", &["token.revoked"]).await;
    receiver.fail_next("/flaky", 2, 500).await;
    let (_, token) = app.make_token("flaky", None).await;
    app.api()
        .post_empty(&format!("/api/tokens/{token}/revoke"))
        .await
        .expect(200);

    let received = receiver
        .wait_for("/flaky", WAIT, |r| r.iter().any(|h| h["answered"] == 200))
        .await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let answered: Vec<&Value> = received.iter().map(|r| &r["answered"]).collect();
    assert_eq!(answered, [&json!(500), &json!(500), &json!(200)]);
    for hit in &received {
        assert_eq!(
            hit["verified"], true,
            "every attempt is signed afresh: {hit:#}"
        );
        assert_eq!(
            hit["id"], received[0]["id"],
            "one webhook-id across retries"
        );
        assert_eq!(hit["raw"], received[0]["raw"], "the same body");
    }

    let deliveries = wait_for_deliveries(&app, id, WAIT, |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["attempts"], 3);
    let log = delivery["attempt_log"].as_array().unwrap();
    let codes: Vec<&Value> = log.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    // Backoff: the second wait (6 × retry_base = 600 ms) is longer than the first (100 ms).
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(log[i]["attempted_at"].as_str().unwrap()).unwrap()
    };
    let first_wait = at(1) - at(0);
    let second_wait = at(2) - at(1);
    assert!(
        first_wait >= chrono::Duration::milliseconds(100),
        "{first_wait}"
    );
    assert!(
        second_wait >= chrono::Duration::milliseconds(600),
        "{second_wait}"
    );

    let metrics = app
        .http
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome| {
        metric(
            &metrics,
            "gatehouse_webhook_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("retry"), Some(2.0), "{metrics}");
    assert_eq!(count("delivered"), Some(1.0), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let (id, _) = subscribe(&app, &receiver, "/moved", &["token.revoked"]).await;
    receiver.redirect("/moved", "/elsewhere").await;
    app.api()
        .post_empty(&format!("/api/webhooks/{id}/test"))
        .await
        .expect(202);
    let deliveries = wait_for_deliveries(&app, id, WAIT, |d| {
        d.first()
            .is_some_and(|d| d["attempts"].as_u64() >= Some(1) && d["status"] == "pending")
    })
    .await;
    assert_eq!(deliveries[0]["last_status_code"], 302);
    let codes = &deliveries[0]["attempt_log"];
    assert!(
        codes
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status_code"] == 302),
        "{codes}"
    );
    let paths: Vec<Value> = receiver
        .received()
        .await
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p == "/moved"),
        "the redirect target was never called: {paths:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_refused_at_delivery_time_is_never_contacted() {
    // Stored while loopback was allowed; delivered by an app on the same database that does
    // not allow it: the check at delivery refuses it.
    let receiver = Receiver::start().await;
    let first = TestApp::spawn().await;
    let (id, _) = subscribe(&first, &receiver, "/private", &["token.revoked"]).await;
    let db = stop_keeping_db(first).await;
    let strict = respawn(db, |c| c.upstream.allow_private = false).await;
    strict
        .app
        .api()
        .post_empty(&format!("/api/webhooks/{id}/test"))
        .await
        .expect(202);
    let deliveries = wait_for_deliveries(&strict.app, id, WAIT, |d| {
        d.first().is_some_and(|d| d["attempts"].as_u64() >= Some(1))
    })
    .await;
    let error = deliveries[0]["last_error"].as_str().unwrap();
    assert!(error.contains("egress policy"), "{error}");
    assert_eq!(deliveries[0]["last_status_code"], Value::Null);
    assert!(receiver.received().await.is_empty());
    strict.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_deliver_each_event_once() {
    const EVENTS: usize = 12;
    let receiver = Receiver::start().await;
    let first = TestApp::spawn().await;
    let second = replica_of(&first, |_| {}).await;
    let (id, _) = subscribe(&first, &receiver, "/replicas", &["token.revoked"]).await;
    // Every event's first attempt fails, so its retry is due while both replicas poll for it.
    receiver
        .fail_next("/replicas", u32::try_from(EVENTS).unwrap(), 503)
        .await;
    for i in 0..EVENTS {
        let app = if i % 2 == 0 { &first } else { &second };
        let (_, token) = app.make_token(&format!("replica-{i}"), None).await;
        app.api()
            .post_empty(&format!("/api/tokens/{token}/revoke"))
            .await
            .expect(200);
    }
    wait_for_deliveries(&first, id, Duration::from_secs(30), |d| {
        d.len() == EVENTS && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    // Delivered rows are never claimed again, so what the receiver has now is final.
    let received = receiver.received().await;
    let delivered: Vec<&Value> = received.iter().filter(|r| r["answered"] == 200).collect();
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        delivered.len(),
        EVENTS,
        "each event delivered once: {received:#?}"
    );
    assert_eq!(ids.len(), EVENTS);
    assert_eq!(
        received.len(),
        2 * EVENTS,
        "one failed and one good attempt each"
    );
    assert!(received.iter().all(|r| r["verified"] == true));
    let metrics = |app: &TestApp| {
        let url = app.metrics_url("/metrics");
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let per_replica: Vec<f64> = [metrics(&first).await, metrics(&second).await]
        .iter()
        .map(|m| {
            metric(
                m,
                "gatehouse_webhook_deliveries_total",
                &[("outcome", "delivered")],
            )
            .unwrap_or(0.0)
        })
        .collect();
    println!("webhooks: {EVENTS} events delivered by the two replicas: {per_replica:?}");
    let sent: f64 = per_replica.iter().sum();
    assert_eq!(
        sent, EVENTS as f64,
        "the replicas' delivered counts add up to the events"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_delivery_is_sent_by_the_next_app_after_a_restart() {
    let receiver = Receiver::start().await;
    let first = TestApp::spawn().await;
    let (id, _) = subscribe(&first, &receiver, "/restart", &["token.revoked"]).await;
    // The receiver is down (500 for everything) until the first app has stopped.
    receiver.fail_next("/restart", 1000, 500).await;
    let (_, token) = first.make_token("restart", None).await;
    first
        .api()
        .post_empty(&format!("/api/tokens/{token}/revoke"))
        .await
        .expect(200);
    wait_for_deliveries(&first, id, WAIT, |d| {
        d.first().is_some_and(|d| d["attempts"].as_u64() >= Some(1))
    })
    .await;
    let db = stop_keeping_db(first).await;
    let before_restart = receiver.received().await.len();
    assert!(before_restart >= 1);
    receiver.fail_next("/restart", 0, 500).await;

    let next = respawn(db, |_| {}).await;
    let received = receiver
        .wait_for("/restart", WAIT, |r| r.iter().any(|h| h["answered"] == 200))
        .await;
    assert_eq!(received.len(), before_restart + 1, "{received:#?}");
    let last = received.last().unwrap();
    assert!(
        received.iter().all(|r| r["id"] == last["id"]),
        "one event: {received:#?}"
    );
    assert_eq!(last["verified"], true);
    assert_eq!(last["body"]["data"]["token"]["name"], "restart");
    let deliveries = wait_for_deliveries(&next.app, id, WAIT, |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(deliveries[0]["attempts"], received.len());
    next.app.stop().await;
}

/// A connected `ada` with an agent granted her account and an endpoint for every account
/// event at `path` of `receiver`.
async fn account_with_webhook(
    receiver: &Receiver,
    path: &str,
    configure: &dyn Fn(&mut gatehouse::config::Config),
) -> (ConnectedSetup, Uuid, String, String) {
    let setup = setup_configured(3600, configure).await;
    subscribe(
        &setup.app,
        receiver,
        path,
        &[
            "account.disconnected",
            "account.error",
            "account.reconnected",
            "account.refresh_failing",
        ],
    )
    .await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_id: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let slug = managed_slug(&setup.app, &id, "mail").await;
    set_token_expiry(
        &setup.app.db.url,
        account_id,
        chrono::Utc::now() - chrono::Duration::seconds(5),
    )
    .await;
    wait_for_discovery(&setup.app, &agent, &slug).await;
    (setup, account_id, agent, slug)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_revoked_at_the_provider_sends_account_disconnected_then_reconnected() {
    let receiver = Receiver::start().await;
    let (setup, account_id, agent, slug) =
        account_with_webhook(&receiver, "/accounts", &|_| {}).await;
    assert!(setup.oidc.revoke_account("ada").await >= 1);
    let reply = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
    assert_eq!(reply.status, 503, "{}", reply.text);

    let received = receiver
        .wait_for("/accounts", WAIT, |r| {
            !of_type(r, "account.disconnected").is_empty()
        })
        .await;
    let event = of_type(&received, "account.disconnected")[0];
    assert_eq!(event["verified"], true, "{event:#}");
    let account = &event["body"]["data"]["account"];
    assert_eq!(account["id"], account_id.to_string());
    assert_eq!(account["provider"], "microsoft_365");
    assert_eq!(account["email"], "ada@example.com");
    assert_eq!(account["status"], "disconnected");
    assert!(
        account["status_message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_grant")),
        "{account}"
    );
    let keys: Vec<&String> = event["body"]["data"]["account"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        keys,
        ["email", "id", "provider", "status", "status_message"],
        "no token in the body"
    );
    let stored = crate::support::accounts::stored_refresh_token(&setup.app, account_id).await;
    if let Some(refresh_token) = stored {
        assert!(!event["raw"].as_str().unwrap().contains(&refresh_token));
    }

    // Re-consent: account.reconnected, with the status it came from.
    setup.connect("ada").await;
    let received = receiver
        .wait_for("/accounts", WAIT, |r| {
            !of_type(r, "account.reconnected").is_empty()
        })
        .await;
    let event = of_type(&received, "account.reconnected")[0];
    assert_eq!(event["verified"], true);
    assert_eq!(event["body"]["data"]["account"]["status"], "connected");
    assert_eq!(event["body"]["data"]["previous_status"], "disconnected");
    assert_eq!(
        of_type(&received, "account.disconnected").len(),
        1,
        "announced once"
    );
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_refresh_failures_past_the_threshold_send_refresh_failing_once() {
    let receiver = Receiver::start().await;
    // Threshold 0 s: the first transient failure already qualifies; later ones of the same run
    // must not announce it again.
    let (setup, account_id, agent, slug) = account_with_webhook(&receiver, "/failing", &|c| {
        c.webhooks.refresh_failing_after = Duration::ZERO;
    })
    .await;
    setup.oidc.fail_next(503, 100).await;
    // Three failures in a row (the client's backoff lets one through every 2–4 s at most; the
    // background refresher may add some): wait until the provider has seen at least three.
    let before = setup.oidc.stats().await.refresh_token;
    let (ok, _) = until(
        Duration::from_secs(30),
        || async {
            let _ = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
            setup.oidc.stats().await.refresh_token
        },
        |calls| *calls >= before + 3,
    )
    .await;
    assert!(ok, "three refresh attempts reached the provider");
    let received = receiver
        .wait_for("/failing", WAIT, |r| {
            !of_type(r, "account.refresh_failing").is_empty()
        })
        .await;
    let failing = of_type(&received, "account.refresh_failing");
    assert_eq!(failing.len(), 1, "{received:#?}");
    let data = &failing[0]["body"]["data"];
    assert_eq!(data["account"]["id"], account_id.to_string());
    assert_eq!(data["account"]["status"], "connected");
    assert!(data["failing_since"].is_string(), "{data}");
    assert!(data["last_error"].is_string(), "{data}");
    assert_eq!(failing[0]["verified"], true);
    setup.app.stop().await;
}

// --- helpers ---

/// An app's database, kept while the app stops (its key and admin token with it).
struct StoppedDb {
    db: TestDb,
    admin_token: gatehouse::domain::tokens::AdminToken,
    key: [u8; 32],
}

struct Respawned {
    app: TestApp,
}

async fn stop_keeping_db(mut app: TestApp) -> StoppedDb {
    app.running.take().unwrap().shutdown().await;
    StoppedDb {
        db: TestDb {
            url: app.db.url.clone(),
            dir: std::mem::replace(&mut app.db.dir, tempfile::tempdir().unwrap()),
        },
        admin_token: app.admin_token.clone(),
        key: app.encryption_key,
    }
}

async fn respawn(
    stopped: StoppedDb,
    change: impl FnOnce(&mut gatehouse::config::Config),
) -> Respawned {
    let mut config = TestApp::config(&stopped.db, &stopped.admin_token, stopped.key);
    change(&mut config);
    Respawned {
        app: TestApp::spawn_with(stopped.db, stopped.admin_token, stopped.key, config).await,
    }
}

/// A second app on the same database, key and admin token as `first`.
async fn replica_of(
    first: &TestApp,
    change: impl FnOnce(&mut gatehouse::config::Config),
) -> TestApp {
    let db = TestDb {
        url: first.db.url.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut config = TestApp::config(&db, &first.admin_token, first.encryption_key);
    change(&mut config);
    TestApp::spawn_with(db, first.admin_token.clone(), first.encryption_key, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_claimed_by_one_owner_and_recorded_only_under_its_lease() {
    use gatehouse::domain::webhooks::{AttemptOutcome, EventType, WebhookEvent};
    use gatehouse::store::webhooks::{AttemptRecord, NewWebhookEndpoint};

    let db = TestDb::new().await;
    let store = db.store().await;
    let endpoint = store
        .insert_webhook_endpoint(NewWebhookEndpoint {
            id: Uuid::new_v4(),
            url: url::Url::parse("https://hooks.example.com/x").unwrap(),
            events: vec![EventType::TokenRevoked],
            description: None,
            sealed_secret: vec![0; 16],
        })
        .await
        .unwrap();
    // Not subscribed: nothing is written. Subscribed: one row.
    let other = WebhookEvent::token_rate_limited(Uuid::new_v4(), "t", 10);
    assert_eq!(store.enqueue_webhook_event(&other).await.unwrap(), 0);
    store
        .enqueue_webhook_for(endpoint.id, &WebhookEvent::test(endpoint.id))
        .await
        .unwrap();
    let due = store.due_webhook_deliveries(10).await.unwrap();
    assert_eq!(due.len(), 1);
    let id = due[0];
    let soon = chrono::Utc::now() + chrono::Duration::seconds(60);

    let claimed = store.claim_webhook_delivery(id, "a", soon).await.unwrap();
    assert!(claimed.is_some_and(|c| c.attempts == 0 && c.endpoint_id == endpoint.id));
    assert!(
        store
            .claim_webhook_delivery(id, "b", soon)
            .await
            .unwrap()
            .is_none(),
        "leased"
    );
    assert!(
        store.due_webhook_deliveries(10).await.unwrap().is_empty(),
        "leased rows are not due"
    );
    let failed = |attempt, next| AttemptRecord {
        attempt,
        outcome: AttemptOutcome::Rejected { status: 500 },
        duration_ms: 3,
        next_attempt_at: next,
    };
    assert!(
        !store
            .record_webhook_attempt(id, "b", failed(1, None))
            .await
            .unwrap(),
        "not b's lease"
    );
    assert!(
        store
            .record_webhook_attempt(id, "a", failed(1, Some(soon)))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_webhook_delivery(id, "b", soon)
            .await
            .unwrap()
            .is_none(),
        "not due before its next attempt"
    );

    // A holder that died: its lease runs out and another owner takes over; the old holder can
    // no longer record anything.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    db_execute(
        &db.url,
        "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = $2",
        vec![past.into(), id.into()],
    )
    .await;
    assert!(
        store
            .claim_webhook_delivery(id, "a", past)
            .await
            .unwrap()
            .is_some()
    );
    let taken = store.claim_webhook_delivery(id, "b", soon).await.unwrap();
    assert!(
        taken.is_some_and(|c| c.attempts == 1),
        "expired lease taken over"
    );
    assert!(
        !store
            .record_webhook_attempt(id, "a", failed(2, None))
            .await
            .unwrap()
    );
    let delivered = AttemptRecord {
        attempt: 2,
        outcome: AttemptOutcome::Delivered { status: 204 },
        duration_ms: 3,
        next_attempt_at: None,
    };
    assert!(
        store
            .record_webhook_attempt(id, "b", delivered)
            .await
            .unwrap()
    );
    let log = store.webhook_deliveries(endpoint.id, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    let (delivery, attempts) = &log[0];
    assert_eq!(delivery.status.as_str(), "delivered");
    assert_eq!(delivery.attempts, 2);
    let codes: Vec<Option<u16>> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(204)]);
    assert!(
        store
            .claim_webhook_delivery(id, "c", soon)
            .await
            .unwrap()
            .is_none(),
        "delivered is final"
    );

    // Retention: nothing younger than the cut-offs goes; then the delivered row does.
    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(
        store
            .prune_webhook_deliveries(long_ago, long_ago)
            .await
            .unwrap(),
        0
    );
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .prune_webhook_deliveries(later, long_ago)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db_count(&db.url, "webhook_attempts", "", Vec::new()).await,
        0,
        "attempts cascade"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhooks_page_creates_tests_shows_the_log_and_deletes() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let http = &app.http;
    let login = http
        .post(app.admin_url("/ui/login"))
        .form(&[("token", app.admin_token.expose())])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = |path: String| {
        let request = http.get(app.admin_url(&path)).header("cookie", &cookie);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let request = http
            .post(app.admin_url(&path))
            .header("cookie", &cookie)
            .form(&fields);
        async move { request.send().await.unwrap() }
    };
    let list = page("/ui/webhooks".to_owned()).await;
    assert!(list.contains("No webhook yet"), "{list}");
    let csrf = {
        let marker = "name=\"csrf\" value=\"";
        let start = list.find(marker).unwrap() + marker.len();
        list[start..start + list[start..].find('"').unwrap()].to_owned()
    };

    // Without the CSRF token nothing is created.
    let refused = post(
        "/ui/webhooks".to_owned(),
        vec![("url", receiver.url("/ui"))],
    )
    .await;
    assert_eq!(refused.status(), 403);
    let created = post(
        "/ui/webhooks".to_owned(),
        vec![
            ("csrf", csrf.clone()),
            ("url", receiver.url("/ui")),
            ("description", "from the UI".to_owned()),
            ("events", "token.revoked".to_owned()),
            ("events", "account.error".to_owned()),
        ],
    )
    .await;
    assert_eq!(created.status(), 200);
    let created = created.text().await.unwrap();
    let start = created.find("whsec_").expect("the secret is shown once");
    let secret: String = created[start..].chars().take_while(|c| *c != '"').collect();
    receiver.set_secret("/ui", &secret).await;
    let endpoints = app.api().get("/api/webhooks").await;
    let endpoint = endpoints.expect(200)["webhooks"][0].clone();
    assert_eq!(
        endpoint["events"],
        json!(["token.revoked", "account.error"])
    );
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let list = page("/ui/webhooks".to_owned()).await;
    assert!(
        list.contains("from the UI") && !list.contains("whsec_"),
        "secret shown only once"
    );

    let tested = post(
        format!("/ui/webhooks/{id}/test"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(tested.status(), 200);
    let received = receiver.wait_for("/ui", WAIT, |r| !r.is_empty()).await;
    assert_eq!(received[0]["verified"], true);
    let (ok, detail) = until(
        WAIT,
        || page(format!("/ui/webhooks/{id}")),
        |html| html.contains("delivered"),
    )
    .await;
    assert!(ok, "the log shows the delivery: {detail}");
    assert!(
        detail.contains("webhook.test") && detail.contains("HTTP 200"),
        "{detail}"
    );
    assert!(!detail.contains("whsec_"));

    let deleted = post(format!("/ui/webhooks/{id}/delete"), vec![("csrf", csrf)]).await;
    assert_eq!(deleted.status(), 303);
    let endpoints = app.api().get("/api/webhooks").await;
    assert_eq!(endpoints.expect(200)["webhooks"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_receivers_get_a_bounded_number_of_sends_and_a_timeout() {
    let receiver = Receiver::start().await;
    let app = spawn_configured(|c| {
        c.webhooks.max_concurrent = 2;
        c.webhooks.timeout = Duration::from_secs(2);
    })
    .await;
    let (slow, _) = subscribe(&app, &receiver, "/slow", &["token.revoked"]).await;
    receiver.delay("/slow", 0.5).await;
    let (_, agent) = app.make_token("slow", None).await;
    for _ in 0..6 {
        app.api()
            .post_empty(&format!("/api/webhooks/{slow}/test"))
            .await
            .expect(202);
    }
    // The admin API and the proxy answer while the sends are under way.
    app.api()
        .post_empty(&format!("/api/tokens/{agent}/revoke"))
        .await
        .expect(200);
    let health = app.http.get(app.proxy_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    wait_for_deliveries(&app, slow, Duration::from_secs(30), |d| {
        d.len() == 7 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let most = receiver.max_in_flight("/slow").await;
    assert!(
        (1..=2).contains(&most),
        "at most max_concurrent at once, saw {most}"
    );

    // A receiver slower than the timeout: the attempt ends and is recorded as timed out.
    let (hung, _) = subscribe(&app, &receiver, "/hung", &["account.error"]).await;
    receiver.delay("/hung", 5.0).await;
    app.api()
        .post_empty(&format!("/api/webhooks/{hung}/test"))
        .await
        .expect(202);
    let deliveries = wait_for_deliveries(&app, hung, WAIT, |d| {
        d.first().is_some_and(|d| d["attempts"].as_u64() >= Some(1))
    })
    .await;
    let error = deliveries[0]["last_error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(deliveries[0]["status"], "pending", "retried later");
    receiver.delay("/hung", 0.0).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_enabled_endpoints_subscribed_to_the_type_get_an_event() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let (wanted, _) = subscribe(&app, &receiver, "/wanted", &["token.revoked"]).await;
    let (disabled, _) = subscribe(&app, &receiver, "/disabled", &["token.revoked"]).await;
    let (other, _) = subscribe(&app, &receiver, "/other", &["account.error"]).await;
    app.api()
        .patch(
            &format!("/api/webhooks/{disabled}"),
            json!({"enabled": false}),
        )
        .await
        .expect(200);
    let (_, token) = app.make_token("fan-out", None).await;
    app.api()
        .post_empty(&format!("/api/tokens/{token}/revoke"))
        .await
        .expect(200);
    receiver.wait_for("/wanted", WAIT, |r| r.len() == 1).await;
    for (endpoint, expected) in [(wanted, 1), (disabled, 0), (other, 0)] {
        let log = app
            .api()
            .get(&format!("/api/webhooks/{endpoint}/deliveries"))
            .await;
        assert_eq!(
            log.expect(200)["deliveries"].as_array().unwrap().len(),
            expected,
            "{endpoint}"
        );
    }
    // The rows were written with the revoke, so the receiver has everything it will get.
    let paths: Vec<Value> = receiver
        .received()
        .await
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(paths, [json!("/wanted")]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_that_fails_every_attempt_ends_failed_after_ten() {
    // retry_base 1 ms: the whole schedule (16 687 × base) takes about 17 s.
    let receiver = Receiver::start().await;
    let app = spawn_configured(|c| {
        c.webhooks.retry_base = Duration::from_millis(1);
        c.webhooks.poll_interval = Duration::from_millis(20);
    })
    .await;
    let (id, _) = subscribe(&app, &receiver, "/dead", &["token.revoked"]).await;
    receiver.fail_next("/dead", 1000, 500).await;
    app.api()
        .post_empty(&format!("/api/webhooks/{id}/test"))
        .await
        .expect(202);
    let deliveries = wait_for_deliveries(&app, id, Duration::from_secs(60), |d| {
        d.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(deliveries[0]["attempts"], 10);
    assert_eq!(deliveries[0]["next_attempt_at"], Value::Null);
    assert_eq!(deliveries[0]["attempt_log"].as_array().unwrap().len(), 10);
    assert_eq!(
        receiver.received().await.len(),
        10,
        "no attempt after the last"
    );
    let metrics = app
        .http
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome| {
        metric(
            &metrics,
            "gatehouse_webhook_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("retry"), Some(9.0), "{metrics}");
    assert_eq!(count("failed"), Some(1.0), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_grant_seen_by_two_replicas_is_announced_once() {
    let receiver = Receiver::start().await;
    let (setup, _, agent, slug) = account_with_webhook(&receiver, "/both", &|_| {}).await;
    // Revoked before the second replica starts: its first background refresh already meets
    // the dead grant, racing the requests below.
    assert!(setup.oidc.revoke_account("ada").await >= 1);
    let second = crate::support::accounts::spawn_replica(&setup).await;
    wait_for_discovery(&second, &agent, &slug).await;
    // Forty requests at once over both replicas, all needing the refresh that finds the grant dead.
    let results = crate::support::accounts::burst(&[&setup.app, &second], &agent, &slug, 40).await;
    assert!(results.iter().all(|r| r.0 == 503), "{results:?}");
    let received = receiver
        .wait_for("/both", WAIT, |r| {
            !of_type(r, "account.disconnected").is_empty()
        })
        .await;
    // The event row was written with the status change, and the status changes once; once
    // delivered, the log is final.
    let written = db_count(
        &setup.app.db.url,
        "webhook_deliveries",
        "event_type = 'account.disconnected'",
        Vec::new(),
    )
    .await;
    assert_eq!(written, 1, "one status change, one event");
    assert_eq!(
        of_type(&received, "account.disconnected").len(),
        1,
        "{received:#?}"
    );
    second.stop().await;
    setup.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_at_its_rate_limit_on_two_replicas_is_announced_once() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    subscribe(&app, &receiver, "/limits", &["token.rate_limited"]).await;
    let upstream = crate::support::upstream::FakeUpstream::start().await;
    let agent = app.agent_for("limited", &upstream.url(""), None).await;
    app.api()
        .patch(
            &format!("/api/tokens/{}", agent.token_id),
            json!({"rate_limit": 2}),
        )
        .await
        .expect(200);
    let second = app.spawn_replica().await;
    // Enough requests on both replicas that each refuses some, in whatever minute this is.
    let mut refused = 0;
    for i in 0..12 {
        let on = if i % 2 == 0 { &app } else { &second };
        if on.get("/gateway/limited/x", &agent.token).await.status == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "the limit of 2 per minute refused some of 12");
    let received = receiver
        .wait_for("/limits", WAIT, |r| {
            !of_type(r, "token.rate_limited").is_empty()
        })
        .await;
    let event = of_type(&received, "token.rate_limited")[0];
    assert_eq!(event["verified"], true, "{event:#}");
    assert_eq!(
        event["body"]["data"]["token"]["id"],
        agent.token_id.to_string()
    );
    assert_eq!(event["body"]["data"]["rate_limit"], 2);
    // More refusals within the hour announce nothing new, on either replica.
    for _ in 0..4 {
        second.get("/gateway/limited/x", &agent.token).await;
        app.get("/gateway/limited/x", &agent.token).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = db_count(
        &app.db.url,
        "webhook_deliveries",
        "event_type = 'token.rate_limited'",
        Vec::new(),
    )
    .await;
    assert_eq!(written, 1, "one announcement per token per hour");
    second.stop().await;
    app.stop().await;
}
