//! `/discovery`, `/bootstrap`, `/health` and unknown routes on the proxy listener (SPEC §4,
//! docs/gateway.md "Routes").

use gatehouse::domain::tokens::AgentToken;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::admin::managed_target;
use crate::support::agent::{
    DiscoveryTargets, PROPAGATION, assert_bearer_401, assert_error, spawn_configured_on, until,
};
use crate::support::upstream::FakeUpstream;
use crate::support::{TestApp, TestDb};

#[tokio::test(flavor = "multi_thread")]
async fn health_needs_no_token() {
    let app = TestApp::spawn().await;
    let reply = app.call(Method::GET, "/health", None).await;
    assert_eq!(reply.expect(200), &json!({"status": "ok"}));
    let content_type = reply.header("content-type");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    // A bad token does not matter either.
    let reply = app.call(Method::GET, "/health", Some("sg_nonsense")).await;
    assert_eq!(reply.expect(200), &json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_are_404_not_found() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/api/targets",
        "/gatewayx/a",
        "/metrics",
        "/discovery/x",
    ] {
        let reply = app.call(Method::GET, path, None).await;
        assert_error(&reply, 404, "not found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_needs_a_valid_token() {
    let app = TestApp::spawn().await;
    let (token, token_id) = app.make_token("soon revoked", None).await;
    let unknown = AgentToken::generate();
    for path in ["/discovery", "/bootstrap"] {
        for header in [
            None,
            Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
            Some("Bearer not-a-token".to_owned()),
            Some(format!("Bearer {}", unknown.expose())),
        ] {
            let mut request = app.gateway(Method::GET, path, None);
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let reply = crate::support::admin::Reply::read(request.send().await.unwrap()).await;
            assert_error(&reply, 401, "unauthorized");
            assert_bearer_401(&reply, &format!("{path} {header:?}"));
        }
    }
    let (ok, _) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 200,
    )
    .await;
    assert!(ok);
    app.api()
        .post_empty(&format!("/api/tokens/{token_id}/revoke"))
        .await
        .expect(200);
    let (revoked, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 401,
    )
    .await;
    assert!(revoked, "a revoked token still discovers after 2 s");
    assert_error(&reply, 401, "unauthorized");

    // Step 2 applies as well.
    let (far, _) = app.make_token("far", Some(&["198.51.100.0/24"])).await;
    let (_, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &far),
        |r| r.status != 401,
    )
    .await;
    assert_error(&reply, 403, "ip not allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_exactly_the_usable_targets() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let DiscoveryTargets {
        token,
        other_token,
        github,
        linear,
        ..
    } = app.discovery_targets(&upstream).await;

    let expected_entry = |target: &Value| {
        let slug = target["slug"].as_str().unwrap();
        (
            slug.to_owned(),
            target["name"].clone(),
            format!("/gateway/{slug}"),
            target["base_url"].clone(),
        )
    };
    let expected = vec![expected_entry(&github), expected_entry(&linear)];
    let entries = |body: &Value| -> Vec<(String, Value, String, Value)> {
        let mut list: Vec<_> = body["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["slug"].as_str().unwrap_or_default().to_owned(),
                    t["name"].clone(),
                    t["proxy"].as_str().unwrap_or_default().to_owned(),
                    t["base_url"].clone(),
                )
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    };
    let (listed, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 200 && entries(&r.json) == expected,
    )
    .await;
    assert!(
        listed,
        "discovery should list github and linear only: {}",
        reply.text
    );
    let body = reply.expect(200);
    for target in body["targets"].as_array().unwrap() {
        assert_eq!(target["type"], "api", "{target}");
        assert!(
            target.get("integration").is_none_or(Value::is_null),
            "standard targets have no integration: {target}"
        );
    }

    let bootstrap = app.get("/bootstrap", &token).await;
    assert_eq!(
        bootstrap.expect(200),
        body,
        "/bootstrap answers like /discovery"
    );

    // Each listed proxy path works with this token.
    for (slug, _, proxy, _) in entries(body) {
        let reply = app.get(&format!("{proxy}/ping"), &token).await;
        assert_eq!(reply.status, 200, "{slug}: {}", reply.text);
    }

    let other = app.get("/discovery", &other_token).await;
    let other_slugs: Vec<String> = entries(other.expect(200))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(other_slugs, vec!["hidden"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_without_targets_tells_the_agent_to_ask_its_admin() {
    let app = TestApp::spawn().await;
    let (token, _) = app.make_token("lonely", None).await;
    let (_, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 200,
    )
    .await;
    let body = reply.expect(200);
    assert_eq!(body["targets"], json!([]), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a message for the agent: {body}");
    assert!(
        message.to_lowercase().contains("admin"),
        "the message points at the admin: {message}"
    );
    let bootstrap = app.get("/bootstrap", &token).await;
    assert_eq!(bootstrap.expect(200), body);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_describes_managed_targets() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let target = managed_target(&store, "ada-mail-abc123").await;
    drop(store);
    let app = spawn_configured_on(db, |_| {}).await;
    let (token, token_id) = app.make_token("mail agent", None).await;
    app.grant(token_id, target.id, false).await;
    let (listed, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.json["targets"].as_array().is_some_and(|t| t.len() == 1),
    )
    .await;
    assert!(listed, "{}", reply.text);
    let entry = &reply.json["targets"][0];
    assert_eq!(entry["slug"], "ada-mail-abc123");
    assert_eq!(entry["proxy"], "/gateway/ada-mail-abc123");
    assert_eq!(entry["type"], "api");
    assert_eq!(entry["integration"]["provider"], "microsoft_365", "{entry}");
    assert_eq!(entry["integration"]["email"], "ada-mail-abc123@example.com");
    assert_eq!(entry["integration"]["capability"], "mail");
    assert_eq!(entry["integration"]["status"], "connected");
}
