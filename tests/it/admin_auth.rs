//! Admin API authentication, the JSON extractor's error replies, and the OpenAPI document
//! (docs/admin-api.md "Auth", "Errors"; SPEC §5).

use std::collections::BTreeSet;

use gatehouse::domain::tokens::{AdminToken, AgentToken};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::Reply;
use crate::support::{TestApp, TestDb};

/// Routes to try without valid credentials: (method, path, body).
fn protected_routes() -> Vec<(Method, String, Option<Value>)> {
    let id = Uuid::new_v4();
    let other = Uuid::new_v4();
    vec![
        (Method::GET, "/api/targets".into(), None),
        (
            Method::POST,
            "/api/targets".into(),
            Some(json!({"name": "Sneaky", "base_url": "https://api.example.com"})),
        ),
        (Method::GET, format!("/api/targets/{id}"), None),
        (Method::DELETE, format!("/api/targets/{id}"), None),
        (Method::GET, format!("/api/targets/{id}/auth-methods"), None),
        (
            Method::POST,
            "/api/tokens".into(),
            Some(json!({"name": "sneaky"})),
        ),
        (Method::GET, "/api/tokens".into(), None),
        (Method::POST, format!("/api/tokens/{id}/regenerate"), None),
        (
            Method::PUT,
            format!("/api/tokens/{id}/permissions/{other}"),
            Some(json!({})),
        ),
        (Method::GET, "/api/audit-logs".into(), None),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_credential_gets_the_same_401() {
    let app = TestApp::spawn().await;
    let agent = AgentToken::generate();
    let unknown_admin = AdminToken::generate();
    let headers: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "basic scheme",
            Some(format!("Basic {}", "YWRtaW46cGFzc3dvcmQ=")),
        ),
        (
            "admin token under the basic scheme",
            Some(format!("Basic {}", app.admin_token.expose())),
        ),
        (
            "agent-shaped token",
            Some(format!("Bearer {}", agent.expose())),
        ),
        ("malformed admin token", Some("Bearer sga_x".into())),
        ("empty bearer", Some("Bearer ".into())),
        (
            "admin token without scheme",
            Some(app.admin_token.expose().to_owned()),
        ),
        (
            "unknown well-formed admin token",
            Some(format!("Bearer {}", unknown_admin.expose())),
        ),
    ];
    for (method, path, body) in protected_routes() {
        for (case, header) in &headers {
            let mut request = app.http.request(method.clone(), app.admin_url(&path));
            if let Some(header) = header {
                request = request.header(reqwest::header::AUTHORIZATION, header);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let reply = Reply::read(request.send().await.unwrap()).await;
            assert_eq!(
                reply.status, 401,
                "{case} on {method} {path}: {}",
                reply.text
            );
            assert_eq!(
                reply
                    .headers
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some("Bearer".to_owned()),
                "{case} on {method} {path}"
            );
            assert_eq!(
                reply.json,
                json!({"error": "unauthorized"}),
                "{case} on {method} {path}: {}",
                reply.text
            );
        }
    }
    // Nothing was written by the refused requests.
    let store = app.running().store();
    assert!(store.list_targets().await.unwrap().is_empty());
    assert!(store.list_agent_tokens().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configured_and_stored_admin_tokens_are_accepted() {
    let app = TestApp::spawn().await;
    // The configured one (GATEHOUSE_ADMIN_TOKEN).
    let reply = app.api().get("/api/targets").await;
    assert_eq!(reply.expect(200), &json!({"targets": []}));

    // One stored in admin_tokens.
    let stored = AdminToken::generate();
    app.running()
        .store()
        .insert_admin_token("ops", &stored.hash())
        .await
        .unwrap();
    for (method, path) in [
        (Method::GET, "/api/targets"),
        (Method::GET, "/api/tokens"),
        (Method::GET, "/api/audit-logs"),
    ] {
        let reply = Reply::read(
            app.http
                .request(method.clone(), app.admin_url(path))
                .bearer_auth(stored.expose())
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.expect(200);
    }
    let created = Reply::read(
        app.http
            .post(app.admin_url("/api/tokens"))
            .bearer_auth(stored.expose())
            .json(&json!({"name": "made by a stored admin token"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    created.expect(201);
    assert_eq!(
        app.running()
            .store()
            .list_agent_tokens()
            .await
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_body_errors_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let target = api
        .create_target("Existing", "https://api.example.com")
        .await;
    let target_id = crate::support::admin::json_id(&target);

    // Malformed JSON.
    let malformed = api
        .send(
            api.request(Method::POST, "/api/targets")
                .header("content-type", "application/json")
                .body(r#"{"name": "Broken", "base_url": "#),
        )
        .await;
    malformed.expect_error(400, None);

    // Not an object at all.
    let array = api.post("/api/targets", json!(["Broken"])).await;
    array.expect_error(400, None);

    // A wrong type names the field, on create and on patch.
    let wrong_type = api
        .post(
            "/api/targets",
            json!({"name": "Typed", "base_url": "https://api.example.com", "enabled": "yes"}),
        )
        .await;
    wrong_type.expect_field_error(400, "enabled");
    let wrong_type = api
        .patch(
            &format!("/api/targets/{target_id}"),
            json!({"enabled": "yes"}),
        )
        .await;
    wrong_type.expect_field_error(400, "enabled");
    let wrong_type = api
        .post("/api/tokens", json!({"name": "t", "allowed_ips": 5}))
        .await;
    wrong_type.expect_field_error(400, "allowed_ips");

    // An unknown field names it.
    let unknown = api
        .post(
            "/api/targets",
            json!({"name": "Colourful", "base_url": "https://api.example.com", "colour": "red"}),
        )
        .await;
    unknown.expect_field_error(400, "colour");
    let unknown = api
        .post("/api/tokens", json!({"name": "t", "admin": true}))
        .await;
    unknown.expect_field_error(400, "admin");

    // A missing required field is a 400 too.
    let missing = api.post("/api/targets", json!({"name": "No URL"})).await;
    missing.expect_field_error(400, "base_url");

    // A body that is not declared JSON.
    let text_plain = api
        .send(
            api.request(Method::POST, "/api/targets")
                .header("content-type", "text/plain")
                .body(r#"{"name": "Plain", "base_url": "https://api.example.com"}"#),
        )
        .await;
    text_plain.expect_error(415, None);
    let form = api
        .send(
            api.request(Method::POST, "/api/tokens")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("name=form"),
        )
        .await;
    form.expect_error(415, None);
    let undeclared = api
        .send(
            api.request(Method::POST, "/api/targets")
                .body(r#"{"name": "Undeclared", "base_url": "https://api.example.com"}"#),
        )
        .await;
    undeclared.expect_error(415, None);

    // Nothing was created by any of them, and the existing target is unchanged.
    let targets = store.list_targets().await.unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert!(targets[0].enabled);
    assert!(store.list_agent_tokens().await.unwrap().is_empty());

    // A media type parameter is still JSON.
    let charset = api
        .send(
            api.request(Method::POST, "/api/targets")
                .header("content-type", "application/json; charset=utf-8")
                .body(r#"{"name": "Charset", "base_url": "https://api.example.com"}"#),
        )
        .await;
    assert_eq!(charset.expect(201)["slug"], "charset");
    assert_eq!(store.list_targets().await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_413() {
    let db = TestDb::new().await;
    let token = AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &token, key);
    config.admin.max_body_bytes = 1024;
    let app = TestApp::spawn_with(db, token, key, config).await;
    let api = app.api();

    // Just under the limit works (the limit is on bytes, not on a field).
    let small = api
        .post(
            "/api/targets",
            json!({"name": "Small", "slug": "small", "base_url": format!("https://api.example.com/{}", "p".repeat(850))}),
        )
        .await;
    small.expect(201);

    let big = api
        .post(
            "/api/targets",
            json!({"name": "x".repeat(4096), "slug": "big", "base_url": "https://api.example.com"}),
        )
        .await;
    big.expect(413);
    assert_eq!(big.json, json!({"error": "request body too large"}));

    let big_token = api
        .post("/api/tokens", json!({"name": "y".repeat(64 * 1024)}))
        .await;
    big_token.expect(413);
    assert_eq!(big_token.json, json!({"error": "request body too large"}));

    let store = app.running().store();
    let slugs: Vec<String> = store
        .list_targets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug.as_str().to_owned())
        .collect();
    assert_eq!(slugs, vec!["small"]);
    assert!(store.list_agent_tokens().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_id_that_is_not_a_uuid_is_400() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let target = api.create_target("Real", "https://api.example.com").await;
    let target_id = crate::support::admin::json_id(&target);
    let token = api.create_token("real").await;
    let token_id = crate::support::admin::json_id(&token);

    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            "/api/targets/not-a-uuid".into(),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/api/targets/not-a-uuid".into(), None),
        (
            Method::GET,
            "/api/targets/not-a-uuid/auth-methods".into(),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/targets/{target_id}/auth-methods/nope"),
            Some(json!({"label": "x"})),
        ),
        (
            Method::DELETE,
            format!("/api/targets/{target_id}/auth-methods/nope"),
            None,
        ),
        (
            Method::PATCH,
            "/api/tokens/123".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/tokens/123".into(), None),
        (Method::POST, "/api/tokens/123/revoke".into(), None),
        (Method::POST, "/api/tokens/123/regenerate".into(), None),
        (Method::GET, "/api/tokens/123/permissions".into(), None),
        (
            Method::PUT,
            format!("/api/tokens/{token_id}/permissions/not-a-uuid"),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/api/tokens/{token_id}/permissions/not-a-uuid"),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let mut request = api.request(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = api.send(request).await;
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text);
        assert!(
            reply.json["error"].is_string(),
            "{method} {path}: {}",
            reply.text
        );
    }

    // GET /api/targets/{id-or-slug}: a non-UUID is a slug, so an unknown one is a 404.
    let by_slug = api.get("/api/targets/not-a-uuid").await;
    by_slug.expect(404);
    assert_eq!(by_slug.json, json!({"error": "target not found"}));

    // Nothing changed.
    let store = app.running().store();
    assert_eq!(store.list_targets().await.unwrap().len(), 1);
    let tokens = store.list_agent_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(!tokens[0].is_revoked());
    app.stop().await;
}

/// Replace every `{param}` of an OpenAPI path template with `{}`: parameter names are the
/// document's choice, the shape of the path is the contract.
fn normalise_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for ch in path.chars() {
        match ch {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(ch),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_lists_every_admin_route() {
    let app = TestApp::spawn().await;
    // No auth needed: it holds no data.
    let reply = Reply::read(
        app.http
            .get(app.admin_url("/api/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let doc = reply.expect(200);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version {version:?}");
    let paths = doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths in {}", reply.text));

    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        assert!(
            path.starts_with('/') && !path.contains(':'),
            "OpenAPI templates use {{id}} style: {path}"
        );
        for (method, _) in item.as_object().unwrap() {
            documented.insert((method.to_ascii_uppercase(), normalise_template(path)));
        }
    }
    let expected = [
        ("GET", "/api/targets"),
        ("POST", "/api/targets"),
        ("GET", "/api/targets/{}"),
        ("PATCH", "/api/targets/{}"),
        ("DELETE", "/api/targets/{}"),
        ("GET", "/api/targets/{}/auth-methods"),
        ("POST", "/api/targets/{}/auth-methods"),
        ("PATCH", "/api/targets/{}/auth-methods/{}"),
        ("DELETE", "/api/targets/{}/auth-methods/{}"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("PATCH", "/api/tokens/{}"),
        ("DELETE", "/api/tokens/{}"),
        ("POST", "/api/tokens/{}/regenerate"),
        ("POST", "/api/tokens/{}/revoke"),
        ("GET", "/api/tokens/{}/permissions"),
        ("PUT", "/api/tokens/{}/permissions/{}"),
        ("DELETE", "/api/tokens/{}/permissions/{}"),
        ("GET", "/api/audit-logs"),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|(m, p)| !documented.contains(&((*m).to_owned(), (*p).to_owned())))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}\ndocumented: {documented:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_errors_are_json_too() {
    let app = TestApp::spawn().await;
    let api = app.api();
    // "Every error is JSON: {"error": "<message>"}" — also the router's own 404 and 405.
    let unknown = api.get("/api/nothing-here").await;
    unknown.expect_error(404, None);
    let wrong_method = api
        .send(api.request(Method::PUT, "/api/targets").json(&json!({})))
        .await;
    wrong_method.expect_error(405, None);
    let wrong_method = api.delete("/api/tokens").await;
    wrong_method.expect_error(405, None);
    assert!(
        app.running()
            .store()
            .list_targets()
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}
