//! SPEC §4 step 5 and docs/gateway.md "Path rules", on the raw request target: every request is
//! written by hand over TCP so nothing on the client side normalises the path.

use serde_json::json;

use crate::support::TestApp;
use crate::support::agent::{Agent, RawReply};
use crate::support::upstream::FakeUpstream;

async fn setup() -> (TestApp, FakeUpstream, Agent) {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "x",
            &upstream.url("/base"),
            Some(("bearer", json!("path-secret-0000001"))),
        )
        .await;
    (app, upstream, agent)
}

fn get(app: &TestApp, target: &str, token: &str) -> Vec<u8> {
    let addr = app.running().proxy_addr;
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target.as_bytes());
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    request
}

/// Every refused form of docs/gateway.md: 400 `invalid path`, the upstream receives nothing,
/// and the refusal is audited as `invalid_path`.
#[tokio::test(flavor = "multi_thread")]
async fn refused_paths_get_400_and_reach_nothing() {
    let (app, upstream, agent) = setup().await;
    let refused: &[&str] = &[
        "/gateway/x/../secret",
        "/gateway/x/a/../../secret",
        "/gateway/x/..",
        "/gateway/x/a/..",
        "/gateway/x/./a",
        "/gateway/x/a/.",
        "/gateway/x/.",
        "/gateway/x/%2e%2e/a",
        "/gateway/x/%2E%2e/a",
        "/gateway/x/%2e./a",
        "/gateway/x/.%2E/a",
        "/gateway/x/%2e/a",
        "/gateway/x/%252e%252e/a",
        "/gateway/x/%252E%252E/a",
        "/gateway/x/%252e/a",
        "/gateway/x/a%2fb",
        "/gateway/x/a%2Fb",
        "/gateway/x/a%252fb",
        "/gateway/x/a%252Fb",
        "/gateway/x/a%5cb",
        "/gateway/x/a%5Cb",
        "/gateway/x/a%255cb",
        "/gateway/x/a\\b",
        "/gateway/x/a%00b",
        "/gateway/x/a%0ab",
        "/gateway/x/a%0Db",
        "/gateway/x/a%1fb",
        "/gateway/x/a%7fb",
        "/gateway/x/a//b",
        "/gateway/x//a",
        "/gateway/x/a/b//",
        "/gateway/x/..?q=1",
        "/gateway/x/a%2fb?q=1",
    ];
    let mut wrong = Vec::new();
    for target in refused {
        let reply = app.raw(&get(&app, target, &agent.token)).await;
        if reply.status != 400 || reply.json != json!({"error": "invalid path"}) {
            wrong.push(format!(
                "{target}: {} {}",
                reply.head.lines().next().unwrap_or_default(),
                String::from_utf8_lossy(&reply.body)
            ));
        }
    }
    assert!(wrong.is_empty(), "not refused as invalid path: {wrong:#?}");
    // Status and body were checked above; the content type once here.
    let reply = app.raw(&get(&app, refused[0], &agent.token)).await;
    assert_invalid(&reply, refused[0]);

    assert_eq!(
        upstream.count(),
        0,
        "refused paths reached the upstream: {:#?}",
        upstream
            .received()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );

    // Each refusal passed steps 1–2, so each is audited, as invalid_path with status 400.
    let count = refused.len() + 1;
    let rows = app.wait_for_audit(count).await;
    assert_eq!(rows.len(), count, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.status_code, 400, "{row:?}");
        assert_eq!(row.error.as_deref(), Some("invalid_path"), "{row:?}");
        assert_eq!(row.target_slug, "x", "{row:?}");
        assert!(
            !row.path.contains('?'),
            "no query in the audit path: {row:?}"
        );
    }
}

fn absolute(app: &TestApp, authority: &str, token: &str) -> Vec<u8> {
    let addr = app.running().proxy_addr;
    format!(
        "GET http://{authority}/gateway/x/a HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// An absolute-form request target whose authority is not this listener is refused with 400 and
/// reaches nothing (SPEC §4 step 5, docs/gateway.md "Absolute-form targets" agree on this much).
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_with_a_foreign_authority_is_refused_with_400() {
    let (app, upstream, agent) = setup().await;
    for authority in ["evil.example", "127.0.0.1:1"] {
        let reply = app.raw(&absolute(&app, authority, &agent.token)).await;
        assert_eq!(reply.status, 400, "http://{authority}/…: {}", reply.head);
    }
    assert_eq!(upstream.count(), 0, "the upstream received nothing");
}

#[track_caller]
fn assert_invalid(reply: &RawReply, case: &str) {
    assert_eq!(
        reply.status,
        400,
        "{case}: expected 400, got {}\n{}",
        reply.head,
        String::from_utf8_lossy(&reply.body)
    );
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{case}: error bodies are JSON, got {content_type:?}"
    );
    assert_eq!(
        reply.json,
        json!({"error": "invalid path"}),
        "{case}: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

/// What passes is forwarded byte for byte: base path + raw remainder, raw query kept.
#[tokio::test(flavor = "multi_thread")]
async fn passing_paths_are_forwarded_byte_for_byte() {
    let (app, upstream, agent) = setup().await;
    let cases: &[(&str, &str)] = &[
        (
            "/gateway/x/a%20b/c?q=1%2F2&x=%2e",
            "/base/a%20b/c?q=1%2F2&x=%2e",
        ),
        ("/gateway/x/repos/", "/base/repos/"),
        ("/gateway/x/repos", "/base/repos"),
        ("/gateway/x/", "/base/"),
        ("/gateway/x/a/b/c.json", "/base/a/b/c.json"),
        ("/gateway/x/v1/.well-known", "/base/v1/.well-known"),
        ("/gateway/x/a..b/...", "/base/a..b/..."),
        ("/gateway/x/%41%42%c3%a9", "/base/%41%42%c3%a9"),
        ("/gateway/x/a+b;c=d@e:f", "/base/a+b;c=d@e:f"),
        (
            "/gateway/x/a?b=%2e%2e/..&c=./x",
            "/base/a?b=%2e%2e/..&c=./x",
        ),
        (
            "/gateway/x/a?q=%2F&q=%2f&q=a%20b+c",
            "/base/a?q=%2F&q=%2f&q=a%20b+c",
        ),
    ];
    for (sent, expected) in cases {
        upstream.clear();
        let reply = app.raw(&get(&app, sent, &agent.token)).await;
        assert_eq!(
            reply.status,
            200,
            "{sent}: {}\n{}",
            reply.head,
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(upstream.count(), 1, "{sent}: one upstream request");
        assert_eq!(&upstream.last().target, expected, "{sent}");
        assert_eq!(
            reply.json["target"], *expected,
            "{sent}: the echo comes back"
        );
    }

    // The bare slug reaches the base path.
    upstream.clear();
    let reply = app.raw(&get(&app, "/gateway/x", &agent.token)).await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    let target = upstream.last().target;
    assert!(
        target == "/base" || target == "/base/",
        "/gateway/x should reach the base path, got {target}"
    );
    upstream.clear();
    let reply = app.raw(&get(&app, "/gateway/x?page=2", &agent.token)).await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    let target = upstream.last().target;
    assert!(
        target == "/base?page=2" || target == "/base/?page=2",
        "/gateway/x?page=2 should reach the base path with its query, got {target}"
    );
}

/// A base URL without a path: the remainder is the whole upstream path.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_without_a_path() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("root", &upstream.url(""), None).await;
    for (sent, expected) in [
        ("/gateway/root/a/b?c=d", "/a/b?c=d"),
        ("/gateway/root/", "/"),
        ("/gateway/root", "/"),
        ("/gateway/root/a%2Bb/", "/a%2Bb/"),
    ] {
        upstream.clear();
        let reply = app.raw(&get(&app, sent, &agent.token)).await;
        assert_eq!(reply.status, 200, "{sent}: {}", reply.head);
        assert_eq!(upstream.last().target, expected, "{sent}");
    }
}

/// A base URL with a trailing slash does not double it.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_with_a_trailing_slash() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("slash", &upstream.url("/v2/"), None).await;
    upstream.clear();
    let reply = app
        .raw(&get(&app, "/gateway/slash/users/1", &agent.token))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(upstream.last().target, "/v2/users/1");
}

/// An absolute-form target naming this listener is allowed (docs: refused only when the
/// authority is not ours), and forwarded like the origin form.
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_naming_this_listener_passes() {
    let (app, upstream, agent) = setup().await;
    upstream.clear();
    let addr = app.running().proxy_addr;
    let request = format!(
        "GET http://{addr}/gateway/x/a%20b?q=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token
    );
    let reply = app.raw(request.as_bytes()).await;
    assert_eq!(
        reply.status,
        200,
        "{}\n{}",
        reply.head,
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(upstream.last().target, "/base/a%20b?q=1");
}
