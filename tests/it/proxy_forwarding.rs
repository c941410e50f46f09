//! SPEC §4 steps 6–8: credential injection, header rules, responses as they are, upstream
//! failures, streaming, egress at connect time, and a graceful shutdown.

use std::time::Duration;

use base64::Engine as _;
use gatehouse::domain::targets::TargetSlug;
use gatehouse::store::targets::NewTarget;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::{Reply, json_id, managed_target};
use crate::support::agent::{
    PROPAGATION, RawConnection, assert_error, spawn_configured, spawn_configured_on, until,
};
use crate::support::upstream::{
    DOWNLOAD_LEN, FakeUpstream, OAUTH_ACCESS_TOKEN, closed_port, download_sha256, pattern,
    sha256_hex, start_chunked_download_server,
};
use crate::support::{TestApp, TestDb};

/// `(slug, base_url, default auth method as (type, credential))`.
type TargetSpec<'a> = (&'a str, String, Option<(&'a str, Value)>);

/// One token with a read-write permission on several targets made through the API, each with
/// an optional default auth method. Waits until the proxy knows them all.
async fn token_for_targets(app: &TestApp, targets: &[TargetSpec<'_>]) -> (String, Uuid) {
    let (token, token_id) = app.make_token("forwarder", None).await;
    for (slug, base_url, credential) in targets {
        let target = app.make_target(slug, base_url).await;
        let target_id = json_id(&target);
        if let Some((kind, credential)) = credential {
            app.make_auth_method(target_id, kind, credential.clone())
                .await;
        }
        app.grant(token_id, target_id, false).await;
    }
    for (slug, _, _) in targets {
        let path = format!("/gateway/{slug}/__ready//probe");
        let (ready, last) = until(
            PROPAGATION,
            || app.get(&path, &token),
            |r| !matches!(r.status, 401 | 403 | 404),
        )
        .await;
        assert!(ready, "{slug} not admitted within 2 s: {}", last.text);
    }
    (token, token_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_credential_type_is_injected() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let (token, _) = token_for_targets(
        &app,
        &[
            (
                "bearer",
                upstream.url("/b"),
                Some(("bearer", json!("bearer-canary-0123456789"))),
            ),
            (
                "basic",
                upstream.url("/u"),
                Some(("basic", json!("alice:s3cr3t:with-colon"))),
            ),
            (
                "headers",
                upstream.url("/h"),
                Some((
                    "custom_header",
                    json!([{"name": "X-Api-Key", "value": "key-canary-1"}, {"name": "X-Team", "value": "blue"}]),
                )),
            ),
            (
                "query",
                upstream.url("/q"),
                Some(("query_param", json!("api_key:qp-canary-1"))),
            ),
            ("plain", upstream.url("/p"), None),
        ],
    )
    .await;

    let no_agent_secret = |case: &str| {
        let received = upstream.last();
        for (name, value) in &received.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(&token),
                "{case}: the agent token reached the upstream in {name}"
            );
        }
        assert!(!received.target.contains(&token), "{case}");
    };

    app.get("/gateway/bearer/me", &token).await.expect(200);
    let received = upstream.last();
    assert_eq!(received.target, "/b/me");
    assert_eq!(
        received.header_values("authorization"),
        vec!["Bearer bearer-canary-0123456789"]
    );
    no_agent_secret("bearer");

    app.get("/gateway/basic/me", &token).await.expect(200);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t:with-colon")
    );
    assert_eq!(
        upstream.last().header_values("authorization"),
        vec![expected]
    );
    no_agent_secret("basic");

    app.get("/gateway/headers/me", &token).await.expect(200);
    let received = upstream.last();
    assert_eq!(received.header_values("x-api-key"), vec!["key-canary-1"]);
    assert_eq!(received.header_values("x-team"), vec!["blue"]);
    assert_eq!(
        received.header("authorization"),
        None,
        "the agent's Authorization is not forwarded"
    );
    no_agent_secret("custom_header");

    app.get("/gateway/query/items?page=2&sort=a%20b", &token)
        .await
        .expect(200);
    let received = upstream.last();
    assert_eq!(
        received.target, "/q/items?page=2&sort=a%20b&api_key=qp-canary-1",
        "the original query is kept and the credential appended"
    );
    assert_eq!(received.header("authorization"), None);
    app.get("/gateway/query/items", &token).await.expect(200);
    assert_eq!(upstream.last().target, "/q/items?api_key=qp-canary-1");
    no_agent_secret("query_param");

    app.get("/gateway/plain/me", &token).await.expect(200);
    let received = upstream.last();
    assert_eq!(received.target, "/p/me");
    assert_eq!(
        received.header("authorization"),
        None,
        "no auth method: no Authorization at all"
    );
    no_agent_secret("none");
}

/// Agent headers that must not reach the upstream, sent raw so the client adds or drops nothing.
#[tokio::test(flavor = "multi_thread")]
async fn agent_headers_are_cleaned_before_forwarding() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let (token, _) = token_for_targets(
        &app,
        &[
            (
                "bearer",
                upstream.url("/b"),
                Some(("bearer", json!("bearer-canary-0123456789"))),
            ),
            ("plain", upstream.url("/p"), None),
        ],
    )
    .await;
    let addr = app.running().proxy_addr;
    for (slug, authorization) in [
        ("bearer", Some("Bearer bearer-canary-0123456789")),
        ("plain", None),
    ] {
        upstream.clear();
        let request = format!(
            "GET /gateway/{slug}/headers HTTP/1.1\r\n\
             Host: {addr}\r\n\
             Authorization: Bearer {token}\r\n\
             Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
             X-Forwarded-For: 203.0.113.9\r\n\
             X-Forwarded-Host: evil.example\r\n\
             X-Forwarded-Proto: https\r\n\
             Forwarded: for=203.0.113.9;host=evil.example\r\n\
             X-Real-IP: 203.0.113.9\r\n\
             Connection: close, X-Drop-Me\r\n\
             X-Drop-Me: 1\r\n\
             Keep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\n\
             X-Custom: stays\r\n\
             User-Agent: agent/1.0\r\n\
             Accept: application/json\r\n\
             Cookie: session=abc\r\n\
             \r\n"
        );
        let reply = app.raw(request.as_bytes()).await;
        assert_eq!(reply.status, 200, "{slug}: {}", reply.head);
        let received = upstream.last();
        assert_eq!(
            received.header_values("authorization"),
            authorization
                .map(str::to_owned)
                .into_iter()
                .collect::<Vec<_>>(),
            "{slug}: Authorization"
        );
        for removed in [
            "proxy-authorization",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "x-real-ip",
            "x-drop-me",
            "keep-alive",
            "proxy-connection",
        ] {
            assert_eq!(
                received.header_values(removed),
                Vec::<String>::new(),
                "{slug}: {removed} must not reach the upstream"
            );
        }
        assert_eq!(
            received.header_values("host"),
            vec![upstream.host()],
            "{slug}: Host is the upstream's"
        );
        assert_eq!(received.header_values("x-custom"), vec!["stays"], "{slug}");
        assert_eq!(
            received.header_values("user-agent"),
            vec!["agent/1.0"],
            "{slug}"
        );
        assert_eq!(
            received.header_values("accept"),
            vec!["application/json"],
            "{slug}"
        );
        assert_eq!(
            received.header_values("cookie"),
            vec!["session=abc"],
            "{slug}: Cookie passes for standard targets"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_statuses_and_redirects_come_back_as_they_are() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!("bearer-canary-0123456789"))),
        )
        .await;

    for status in [429u16, 503, 500, 404, 401] {
        upstream.clear();
        let reply = app
            .get(&format!("/gateway/api/status/{status}"), &agent.token)
            .await;
        assert_eq!(reply.status, status, "{}", reply.text);
        assert_eq!(
            reply.text,
            format!("{{\"upstream_status\":{status}}}"),
            "the upstream body comes back unchanged"
        );
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("retry-after").as_deref(), Some("7"), "{status}");
        assert_eq!(header("x-upstream-extra").as_deref(), Some("1"), "{status}");
        assert_eq!(
            upstream.count(),
            1,
            "{status}: the gateway never retries a request that reached the upstream"
        );
    }

    upstream.clear();
    let reply = app.get("/gateway/api/redirect", &agent.token).await;
    assert_eq!(reply.status, 302, "{}", reply.text);
    assert_eq!(
        reply.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(upstream.url("/landing").as_str()),
        "Location passes unchanged"
    );
    assert_eq!(reply.text, "moved");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream.count(),
        1,
        "the redirect was not followed: {:?}",
        upstream.received()
    );
}

/// docs/gateway.md "Headers": hop-by-hop headers of the upstream response (and those its
/// `Connection` names) do not reach the agent; end-to-end ones do.
#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_response_headers_are_removed() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    // Precondition: the upstream really sends them.
    let direct = crate::support::agent::raw_http(
        upstream.addr,
        format!(
            "GET /base/hop HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            upstream.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(direct.head.contains("timeout=99"), "{}", direct.head);
    assert_eq!(
        direct.header("x-hop-named").as_deref(),
        Some("1"),
        "{}",
        direct.head
    );
    assert!(
        direct.header("proxy-connection").is_some(),
        "{}",
        direct.head
    );
    upstream.clear();

    let addr = app.running().proxy_addr;
    let request = format!(
        "GET /gateway/api/hop HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token
    );
    let reply = app.raw(request.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(
        reply.header("x-kept").as_deref(),
        Some("1"),
        "{}",
        reply.head
    );
    assert_eq!(reply.json, json!({"hop": true}));
    assert_eq!(reply.header("x-hop-named"), None, "{}", reply.head);
    assert_eq!(reply.header("proxy-connection"), None, "{}", reply.head);
    assert!(
        !reply.head.contains("timeout=99"),
        "the upstream's Keep-Alive leaked: {}",
        reply.head
    );
    assert!(
        !reply.head.to_ascii_lowercase().contains("x-hop-named"),
        "the upstream's Connection leaked: {}",
        reply.head
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn response_headers_revealing_the_credential_are_removed() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let (token, _) = token_for_targets(
        &app,
        &[
            (
                "bearer",
                upstream.url("/b"),
                Some(("bearer", json!("bearer-canary-0123456789"))),
            ),
            (
                "headers",
                upstream.url("/h"),
                Some((
                    "custom_header",
                    json!([{"name": "X-Api-Key", "value": "key-canary-0123456789"}]),
                )),
            ),
        ],
    )
    .await;
    for slug in ["bearer", "headers"] {
        let reply = app.get(&format!("/gateway/{slug}/echo-auth"), &token).await;
        reply.expect(200);
        for echoed in ["x-echo-authorization", "x-echo-api-key"] {
            assert!(
                reply.headers.get(echoed).is_none(),
                "{slug}: {echoed} carries the credential and must be removed: {:?}",
                reply.headers
            );
        }
        assert_eq!(
            reply.headers.get("x-plain").and_then(|v| v.to_str().ok()),
            Some("kept"),
            "{slug}: other headers stay"
        );
        assert_eq!(reply.text, "{\"echoed\":true}");
        let all: String = reply
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        assert!(!all.contains("canary"), "{slug}: {all}");
    }
}

/// The injected value of a basic credential is `Basic base64(user:pass)`; an upstream echoing
/// it back must not reveal it to the agent either.
#[tokio::test(flavor = "multi_thread")]
async fn response_header_echoing_a_basic_credential_is_removed() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "basic",
            &upstream.url("/u"),
            Some(("basic", json!("alice:s3cr3t-canary"))),
        )
        .await;
    let reply = app.get("/gateway/basic/echo-auth", &agent.token).await;
    reply.expect(200);
    assert!(
        reply.headers.get("x-echo-authorization").is_none(),
        "the echoed Basic credential must be removed: {:?}",
        reply.headers
    );
    assert_eq!(
        reply.headers.get("x-plain").and_then(|v| v.to_str().ok()),
        Some("kept")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_502() {
    let app = TestApp::spawn().await;
    let closed = closed_port();
    let agent = app
        .agent_for(
            "gone",
            &format!("http://{closed}/base"),
            Some(("bearer", json!("gone-canary-0123456789"))),
        )
        .await;
    let reply = app.get("/gateway/gone/x?secret=1", &agent.token).await;
    assert_error(&reply, 502, "upstream request failed");
    assert!(!reply.text.contains(&closed.to_string()), "{}", reply.text);
    // A fresh client: connection reuse after an error reply is
    // `error_replies_keep_the_connection_usable_or_say_close`.
    let post = reqwest::Client::new()
        .post(app.proxy_url("/gateway/gone/x"))
        .bearer_auth(&agent.token)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_error(&Reply::read(post).await, 502, "upstream request failed");

    let rows = app.wait_for_audit(2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in rows {
        assert_eq!(row.status_code, 502);
        assert_eq!(
            row.error.as_deref(),
            Some("upstream_unreachable"),
            "{row:?}"
        );
        assert_eq!(row.path, "/gateway/gone/x");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_is_504_after_the_read_timeout() {
    let app = spawn_configured(|config| {
        config.upstream.read_timeout = Duration::from_secs(1);
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("slow", &upstream.url("/base"), None).await;

    let reply = app.get("/gateway/slow/slow/4000", &agent.token).await;
    assert_error(&reply, 504, "upstream timed out");
    assert_eq!(
        upstream.count(),
        1,
        "the request reached the upstream once, no retry"
    );
    // A quick one still works (on a fresh client: connection reuse after an error reply is
    // `error_replies_keep_the_connection_usable_or_say_close`).
    let again = reqwest::Client::new()
        .get(app.proxy_url("/gateway/slow/slow/10"))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);

    let rows = app.wait_for_audit(2).await;
    let timed_out: Vec<_> = rows.iter().filter(|r| r.status_code == 504).collect();
    assert_eq!(timed_out.len(), 1, "{rows:#?}");
    assert_eq!(timed_out[0].error.as_deref(), Some("upstream_timeout"));
    assert_eq!(timed_out[0].path, "/gateway/slow/slow/4000");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "big",
            &upstream.url("/base"),
            Some(("bearer", json!("big-canary-0123456789"))),
        )
        .await;

    let upload = pattern(32 * 1024 * 1024, 42);
    let upload_sha = sha256_hex(&upload);
    let response = app
        .gateway(Method::POST, "/gateway/big/upload", Some(&agent.token))
        .header("content-type", "application/octet-stream")
        .body(upload)
        .send()
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    reply.expect(200);
    let received = upstream.last();
    assert_eq!(received.body_len, 32 * 1024 * 1024);
    assert_eq!(received.body_sha256, upload_sha);
    assert_eq!(reply.json["body_sha256"], upload_sha);

    let (length, sha) = download(&app, "/gateway/big/download", &agent.token).await;
    assert_eq!(length, DOWNLOAD_LEN);
    assert_eq!(sha, download_sha256());

    // The same bytes from an upstream that sends them chunked.
    let chunked = start_chunked_download_server().await;
    let (token, _) = token_for_targets(
        &app,
        &[("chunked", format!("http://{chunked}/files"), None)],
    )
    .await;
    let (length, sha) = download(&app, "/gateway/chunked/download", &token).await;
    assert_eq!(
        length, DOWNLOAD_LEN,
        "a chunked upstream body arrives whole"
    );
    assert_eq!(sha, download_sha256());
}

/// GET `path` through the proxy, reading the body chunk by chunk: (length, SHA-256 hex).
async fn download(app: &TestApp, path: &str, token: &str) -> (usize, String) {
    let mut response = app
        .gateway(Method::GET, path, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut length = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        length += chunk.len();
        sha2::Digest::update(&mut hasher, &chunk);
    }
    (length, hex::encode(sha2::Digest::finalize(hasher)))
}

/// SPEC §3: an `oauth2_refresh_token` method is refreshed at its token_url and cached; the
/// access token is injected as `Authorization: Bearer …` and never shown to the agent.
#[tokio::test(flavor = "multi_thread")]
async fn an_oauth2_refresh_token_method_injects_a_cached_access_token() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let issuer = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "oauth",
            &upstream.url("/base"),
            Some((
                "oauth2_refresh_token",
                json!({
                    "client_id": "cid",
                    "client_secret": "client-secret-canary",
                    "refresh_token": "refresh-canary",
                    "token_url": issuer.url("/oauth/token"),
                }),
            )),
        )
        .await;
    for path in ["/gateway/oauth/me", "/gateway/oauth/echo-auth"] {
        let reply = app.get(path, &agent.token).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(
            upstream.last().header_values("authorization"),
            vec![format!("Bearer {OAUTH_ACCESS_TOKEN}")],
            "{path}"
        );
        let headers = format!("{:?}", reply.headers);
        assert!(!headers.contains(OAUTH_ACCESS_TOKEN), "{path}: {headers}");
        assert!(!reply.text.contains(OAUTH_ACCESS_TOKEN), "{path}");
    }
    assert_eq!(
        issuer.count(),
        1,
        "the access token is cached, not refreshed per request"
    );
    let refresh = issuer.last();
    assert_eq!(refresh.method, "POST");
    assert!(
        refresh.body_text.contains("grant_type=refresh_token"),
        "{}",
        refresh.body_text
    );
    assert!(
        refresh.body_text.contains("refresh_token=refresh-canary"),
        "{}",
        refresh.body_text
    );
}

/// A token endpoint that fails transiently: 503 with `Retry-After` (SPEC §7), nothing is
/// forwarded, no secret in the body, and the row is audited.
#[tokio::test(flavor = "multi_thread")]
async fn an_oauth2_refresh_token_method_with_a_failing_token_endpoint_is_503() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let issuer = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "oauth",
            &upstream.url("/base"),
            Some((
                "oauth2_refresh_token",
                json!({
                    "client_id": "cid",
                    "client_secret": "client-secret-canary",
                    "refresh_token": "refresh-canary",
                    "token_url": issuer.url("/status/500"),
                }),
            )),
        )
        .await;
    let reply = app.get("/gateway/oauth/me", &agent.token).await;
    let message = reply.expect_error(503, None);
    assert!(message.ends_with("retry later"), "{message}");
    assert!(
        reply.headers.get("retry-after").is_some(),
        "a transient refresh failure says when to retry: {:?}",
        reply.headers
    );
    assert!(!reply.text.contains("canary"), "{}", reply.text);
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    assert!(issuer.count() >= 1, "the token endpoint was tried");
    let rows = app.wait_for_audit(1).await;
    let row = rows
        .iter()
        .find(|r| r.path == "/gateway/oauth/me")
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(row.status_code, 503);
    assert_eq!(
        row.error.as_deref(),
        Some("token_refresh_failed"),
        "{row:?}"
    );
}

/// A token endpoint that refuses the grant (`invalid_grant`): 503 naming the refusal, audited
/// as `credential_refused` (docs/gateway.md step 6), nothing forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn an_oauth2_refresh_token_method_refused_by_its_token_endpoint_is_503() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let issuer = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "oauth",
            &upstream.url("/base"),
            Some((
                "oauth2_refresh_token",
                json!({
                    "client_id": "cid",
                    "client_secret": "client-secret-canary",
                    "refresh_token": "refresh-canary",
                    "token_url": issuer.url("/oauth-error/invalid_grant"),
                }),
            )),
        )
        .await;
    let reply = app.get("/gateway/oauth/me", &agent.token).await;
    let message = reply.expect_error(503, None);
    assert!(
        message.starts_with("the target's OAuth credential was refused: "),
        "{message}"
    );
    assert!(!reply.text.contains("canary"), "{}", reply.text);
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    let rows = app.wait_for_audit(1).await;
    let row = rows
        .iter()
        .find(|r| r.path == "/gateway/oauth/me")
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(row.status_code, 503);
    assert_eq!(row.error.as_deref(), Some("credential_refused"), "{row:?}");
}

/// A managed target whose account cannot give an access token (here: its provider has no
/// client credentials configured) is 503 in the shape of SPEC §7: `error`, `account`
/// `{provider, email, status}` and `action`; nothing is forwarded and the row is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_managed_target_without_a_usable_account_is_503() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let target = managed_target(&store, "ada-mail-abc123").await;
    drop(store);
    let app = spawn_configured_on(db, |_| {}).await;
    let (token, token_id) = app.make_token("mail agent", None).await;
    app.grant(token_id, target.id, false).await;
    let (_, reply) = until(
        PROPAGATION,
        || app.get("/gateway/ada-mail-abc123/me/messages", &token),
        |r| !matches!(r.status, 401 | 403 | 404),
    )
    .await;
    reply.expect_error(503, None);
    let body = &reply.json;
    assert_eq!(body["account"]["provider"], "microsoft_365", "{body}");
    assert_eq!(
        body["account"]["email"], "ada-mail-abc123@example.com",
        "{body}"
    );
    assert!(body["account"]["status"].is_string(), "{body}");
    assert!(
        body["action"].as_str().is_some_and(|a| !a.is_empty()),
        "{body}"
    );
    let rows = app.wait_for_audit(1).await;
    let row = rows
        .iter()
        .find(|r| r.status_code == 503)
        .unwrap_or_else(|| panic!("no 503 audit row: {rows:#?}"));
    assert_eq!(row.error.as_deref(), Some("account_unavailable"), "{row:?}");
    assert_eq!(row.target_id, Some(target.id));
}

/// Docs step 7: with `allow_private = false`, a target that resolves to loopback is refused at
/// connect time (the API refuses to create one, so it is written to the store directly).
#[tokio::test(flavor = "multi_thread")]
async fn a_private_upstream_is_refused_at_connect_time() {
    let upstream = FakeUpstream::start().await;
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut ids = Vec::new();
    for (slug, base) in [
        ("literal", format!("http://{}/base", upstream.addr)),
        (
            "named",
            format!("http://localhost:{}/base", upstream.addr.port()),
        ),
    ] {
        let target = store
            .insert_target(NewTarget {
                name: format!("Private {slug}"),
                slug: TargetSlug::parse(slug).unwrap(),
                base_url: url::Url::parse(&base).unwrap(),
                enabled: true,
                connected_account_id: None,
                capability: None,
            })
            .await
            .unwrap();
        ids.push(target.id);
    }
    drop(store);
    let app = spawn_configured_on(db, |config| {
        config.upstream.allow_private = false;
    })
    .await;
    // The API itself refuses such a target.
    let refused = app
        .api()
        .post(
            "/api/targets",
            json!({"name": "nope", "base_url": upstream.url("/base")}),
        )
        .await;
    refused.expect_error(400, Some("base_url"));

    let (token, token_id) = app.make_token("egress", None).await;
    for id in &ids {
        app.grant(token_id, *id, false).await;
    }
    for slug in ["literal", "named"] {
        let path = format!("/gateway/{slug}/x");
        let (_, reply) = until(
            PROPAGATION,
            || app.get(&path, &token),
            |r| !matches!(r.status, 401 | 403 | 404),
        )
        .await;
        assert_error(&reply, 502, "upstream request failed");
    }
    assert_eq!(upstream.count(), 0, "the private upstream received nothing");
    let rows = app.wait_for_audit(2).await;
    let denied: Vec<_> = rows.iter().filter(|r| r.status_code == 502).collect();
    assert!(denied.len() >= 2, "{rows:#?}");
    for row in denied {
        assert_eq!(row.error.as_deref(), Some("egress_denied"), "{row:?}");
    }
}

/// An error reply that does not say `Connection: close` leaves the connection usable: the next
/// request on it is answered (HTTP/1.1 persistence). Covers refusals and upstream failures.
#[tokio::test(flavor = "multi_thread")]
async fn error_replies_keep_the_connection_usable_or_say_close() {
    let app = spawn_configured(|config| {
        config.upstream.read_timeout = Duration::from_secs(1);
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let closed = closed_port();
    let (token, _) = token_for_targets(
        &app,
        &[
            ("api", upstream.url("/base"), None),
            ("gone", format!("http://{closed}/x"), None),
        ],
    )
    .await;
    let addr = app.running().proxy_addr;
    let request = |target: &str, bearer: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\r\n")
            .into_bytes()
    };
    let cases: [(&str, &str, u16); 6] = [
        ("/gateway/api/ok", token.as_str(), 200),
        ("/gateway/api/x", "sg_unknown", 401),
        ("/gateway/nope/x", token.as_str(), 404),
        ("/gateway/api/a%2fb", token.as_str(), 400),
        ("/gateway/gone/x", token.as_str(), 502),
        ("/gateway/api/slow/3000", token.as_str(), 504),
    ];
    let mut broken = Vec::new();
    for (target, bearer, status) in cases {
        let mut connection = RawConnection::open(addr).await;
        let first = connection.exchange(&request(target, bearer)).await.unwrap();
        assert_eq!(first.status, status, "{target}: {}", first.head);
        let says_close = first
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if says_close {
            continue;
        }
        match connection
            .exchange(&request("/gateway/api/next", &token))
            .await
        {
            Ok(next) if next.status == 200 => {}
            Ok(next) => broken.push(format!("{target} ({status}): next got {}", next.head)),
            Err(error) => broken.push(format!(
                "{target} ({status}) answered with `Connection: {}` but the next request on the \
                 connection failed: {error}",
                first.header("connection").unwrap_or_default()
            )),
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// `stop()` while a request is in flight: it still completes, then the listener is closed.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/base"), None).await;
    let proxy_addr = app.running().proxy_addr;
    let client = reqwest::Client::new();
    let url = app.proxy_url("/gateway/api/slow/1000");

    let in_flight = async {
        let response = client
            .get(&url)
            .bearer_auth(&agent.token)
            .send()
            .await
            .expect("the in-flight request completes");
        Reply::read(response).await
    };
    let stopping = async {
        assert!(
            upstream.wait_for(1, Duration::from_secs(5)).await,
            "the slow request reached the upstream"
        );
        tokio::time::timeout(Duration::from_secs(20), app.stop())
            .await
            .expect("stop() returns");
    };
    let (reply, ()) = tokio::join!(in_flight, stopping);
    let body = reply.expect(200);
    assert_eq!(body["target"], "/base/slow/1000");

    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(proxy_addr),
    )
    .await
    .expect("connect returns");
    assert!(
        connect.is_err(),
        "after shutdown, new connections to the proxy are refused"
    );
}
