//! HTTPS upstreams: `upstream.extra_ca_file` adds a private CA to the roots of the proxy's one
//! upstream connector (so connections are pooled and TLS sessions resume); without it, or for a
//! certificate of another name (or address), the handshake fails and the agent gets the
//! gateway's 502.
//! A bad `extra_ca_file` is a startup error naming the key and the path.

use std::path::{Path, PathBuf};

use gatehouse::app::App;
use gatehouse::domain::tokens::AdminToken;
use serde_json::json;

use crate::support::agent::{Agent, assert_error, spawn_configured};
use crate::support::app::rand_key;
use crate::support::tls_upstream::{TestCa, TlsUpstream};
use crate::support::{TestApp, TestDb};

const CREDENTIAL: &str = "tls-upstream-canary-0123456789";

/// `contents` in a file of a temp dir that lives as long as the returned guard.
fn write_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// An app trusting `ca` for upstream TLS (or only the system roots), and an agent whose target
/// is `https://localhost:{port}/base` on `upstream` with a bearer credential.
async fn app_and_agent(ca_file: Option<&Path>, upstream: &TlsUpstream) -> (TestApp, Agent) {
    let ca_file = ca_file.map(Path::to_owned);
    let app = spawn_configured(|config| config.upstream.extra_ca_file = ca_file).await;
    let agent = app
        .agent_for(
            "onprem",
            &upstream.url("localhost", "/base"),
            Some(("bearer", json!(CREDENTIAL))),
        )
        .await;
    (app, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_signed_by_the_extra_ca_gets_the_credential_on_one_reused_connection() {
    let ca = TestCa::new("Gatehouse test CA");
    let upstream = TlsUpstream::start(ca.leaf(&["localhost", "127.0.0.1"])).await;
    let (_dir, ca_file) = write_file("ca.pem", ca.pem().as_bytes());
    let (app, agent) = app_and_agent(Some(&ca_file), &upstream).await;

    let first = app.get("/gateway/onprem/items?page=2", &agent.token).await;
    first.expect(200);
    assert_eq!(
        first.json,
        json!({"tls": true, "target": "/base/items?page=2"})
    );
    // The first upstream connection is back in the pool once the request is logged (Pingora
    // returns it just before the logging phase, which is after the answer went out).
    app.settled_metrics_text().await;
    let second = app.get("/gateway/onprem/more", &agent.token).await;
    second.expect(200);

    let received = upstream.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[0].method, "GET");
    assert_eq!(received[0].target, "/base/items?page=2");
    assert_eq!(received[1].target, "/base/more");
    for request in &received {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {CREDENTIAL}").as_str()),
            "{request:?}"
        );
        assert_eq!(
            request.header("host"),
            Some(format!("localhost:{}", upstream.addr.port()).as_str())
        );
    }
    assert_eq!(
        (upstream.accepted(), upstream.handshakes()),
        (1, 1),
        "both requests went over one pooled TLS connection: {received:#?}"
    );
    assert_eq!(received[1].connection, 1);

    let rows = app.wait_for_audit(2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.status_code, 200, "{row:?}");
        assert_eq!(row.error, None, "{row:?}");
        assert_eq!(row.target_slug, "onprem");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_upstream_connection_resumes_the_tls_session() {
    let ca = TestCa::new("Gatehouse test CA");
    let upstream = TlsUpstream::start(ca.leaf(&["localhost"])).await;
    let (_dir, ca_file) = write_file("ca.pem", ca.pem().as_bytes());
    let (app, agent) = app_and_agent(Some(&ca_file), &upstream).await;

    // `/close`: the upstream answers `Connection: close`, so the next request needs a new
    // connection; the connector-wide client config still holds the session from the first.
    app.get("/gateway/onprem/first/close", &agent.token)
        .await
        .expect(200);
    app.get("/gateway/onprem/second", &agent.token)
        .await
        .expect(200);
    assert_eq!(upstream.handshakes(), 2);
    assert_eq!(
        upstream.resumed(),
        1,
        "the second handshake resumed the first session"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_api_request_pipeline_trusts_the_same_roots() {
    let ca = TestCa::new("Gatehouse test CA");
    let upstream = TlsUpstream::start(ca.leaf(&["localhost"])).await;
    let (_dir, ca_file) = write_file("ca.pem", ca.pem().as_bytes());
    let (app, agent) = app_and_agent(Some(&ca_file), &upstream).await;

    // One JSON-RPC call as it is (the endpoint is stateless and answers JSON).
    let call = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "api_request",
            "arguments": {"target": "onprem", "method": "GET", "path": "/via-mcp"},
        },
    });
    let response = app
        .http
        .post(app.proxy_url("/mcp"))
        .bearer_auth(&agent.token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&call)
        .send()
        .await
        .unwrap();
    let reply = crate::support::admin::Reply::read(response).await;
    reply.expect(200);
    let result = &reply.json["result"];
    assert_eq!(result["isError"], json!(false), "{}", reply.text);
    assert_eq!(
        result["structuredContent"]["status"],
        json!(200),
        "{}",
        reply.text
    );
    let received = upstream.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].target, "/base/via-mcp");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {CREDENTIAL}").as_str())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_address_target_is_verified_against_the_address() {
    let ca = TestCa::new("Gatehouse test CA");
    let with_ip = TlsUpstream::start(ca.leaf(&["localhost", "127.0.0.1"])).await;
    let without_ip = TlsUpstream::start(ca.leaf(&["localhost"])).await;
    let (_dir, ca_file) = write_file("ca.pem", ca.pem().as_bytes());
    let ca_file = Some(ca_file);
    let app = spawn_configured(|config| config.upstream.extra_ca_file = ca_file).await;
    let good = app
        .agent_for(
            "by-ip",
            &with_ip.url("127.0.0.1", "/base"),
            Some(("bearer", json!(CREDENTIAL))),
        )
        .await;
    let bad = app
        .agent_for("no-ip-san", &without_ip.url("127.0.0.1", "/base"), None)
        .await;

    let reply = app.get("/gateway/by-ip/items", &good.token).await;
    reply.expect(200);
    let received = with_ip.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].target, "/base/items");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {CREDENTIAL}").as_str())
    );

    let reply = app.get("/gateway/no-ip-san/items", &bad.token).await;
    assert_error(&reply, 502, "upstream request failed");
    assert_eq!(without_ip.handshakes(), 0);
    assert!(without_ip.received().is_empty());
    app.stop().await;
}

/// The agent's view and the audit row of a failed TLS handshake, and that the upstream's
/// handler saw nothing.
async fn assert_refused_handshake(app: &TestApp, agent: &Agent, upstream: &TlsUpstream) {
    let reply = app.get("/gateway/onprem/items", &agent.token).await;
    assert_error(&reply, 502, "upstream request failed");
    assert!(
        !reply.text.contains("certificate") && !reply.text.contains("localhost"),
        "a 5xx carries no cause: {}",
        reply.text
    );
    assert!(
        upstream.accepted() >= 1,
        "the proxy did connect; the handshake failed"
    );
    assert_eq!(upstream.handshakes(), 0);
    assert!(upstream.received().is_empty(), "{:#?}", upstream.received());

    let rows = app.wait_for_audit(1).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status_code, 502);
    assert_eq!(rows[0].error.as_deref(), Some("upstream_unreachable"));
    assert_eq!(rows[0].path, "/gateway/onprem/items");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_extra_ca_a_private_ca_is_not_trusted() {
    let ca = TestCa::new("Gatehouse test CA");
    let upstream = TlsUpstream::start(ca.leaf(&["localhost", "127.0.0.1"])).await;
    let (app, agent) = app_and_agent(None, &upstream).await;
    assert_refused_handshake(&app, &agent, &upstream).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_name_is_refused_with_the_ca_trusted() {
    let ca = TestCa::new("Gatehouse test CA");
    let upstream = TlsUpstream::start(ca.leaf(&["api.other.example"])).await;
    let (_dir, ca_file) = write_file("ca.pem", ca.pem().as_bytes());
    let (app, agent) = app_and_agent(Some(&ca_file), &upstream).await;
    assert_refused_handshake(&app, &agent, &upstream).await;
    app.stop().await;
}

/// `App::build`'s error with `upstream.extra_ca_file = path`.
async fn startup_error(path: &Path) -> String {
    let db = TestDb::new().await;
    let mut config = TestApp::config(&db, &AdminToken::generate(), rand_key());
    config.upstream.extra_ca_file = Some(path.to_owned());
    match App::build(config).await {
        Ok(running) => {
            running.shutdown().await;
            panic!("gatehouse started with extra_ca_file = {}", path.display());
        }
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_extra_ca_file_is_a_startup_error_naming_key_and_path() {
    let ca = TestCa::new("Gatehouse test CA");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let (_key_dir, key_only) = write_file("key-only.pem", ca.key_pem().as_bytes());
    let (_text_dir, text) = write_file("notes.txt", b"this is not a certificate\n");
    let (_garbage_dir, garbage) = write_file(
        "garbage.pem",
        b"-----BEGIN CERTIFICATE-----\n%%% garbage %%%\n-----END CERTIFICATE-----\n",
    );
    let (_junk_dir, junk) = write_file(
        "junk.pem",
        b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    for (path, problem) in [
        (&missing, "cannot read"),
        (&key_only, "holds no PEM CERTIFICATE"),
        (&text, "holds no PEM CERTIFICATE"),
        (&garbage, "is not a valid PEM file"),
        (&junk, "is not a usable X.509 certificate"),
        (&dir.path().to_owned(), "cannot read"),
    ] {
        let error = startup_error(path).await;
        assert!(
            error.starts_with("upstream.extra_ca_file: "),
            "names the key: {error}"
        );
        assert!(
            error.contains(&path.display().to_string()),
            "names the path: {error}"
        );
        assert!(error.contains(problem), "says why ({problem}): {error}");
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(!error.contains("garbage %%%"), "no content echoed: {error}");
    }
}
