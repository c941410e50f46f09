//! SPEC §4a: the `/mcp` endpoint driven by the OFFICIAL MCP TypeScript SDK client
//! (`support::mcp::McpClient`, a `Client` with a `StreamableHTTPClientTransport`), plus a few raw
//! HTTP checks. What is tested:
//!
//! - initialize: `serverInfo` (`gatehouse`, the crate version), instructions naming `discover`,
//!   protocol negotiation (2025-11-25 and 2025-06-18 echoed; an older or unknown offer answered
//!   with 2025-11-25, the server's latest, as the MCP specification says);
//! - `tools/list`: exactly `discover`, `bootstrap`, `api_request`, each with an object
//!   `inputSchema` and `outputSchema` (the SDK then validates every `structuredContent`);
//! - `discover`/`bootstrap`: the `/discovery` body of the same token;
//! - `api_request`: query objects, JSON / text / base64 bodies both ways, truncation at
//!   `mcp.max_response_bytes`, gateway refusals as `isError` results (403 read-only, 403
//!   forbidden, 404, 400 invalid path, 502), upstream statuses as normal results (429 with its
//!   `Retry-After`), header hygiene both ways, no redirect followed, bad input refused;
//! - audit rows and `gatehouse_requests_total` carry `interface` `mcp` (and `gateway` for
//!   `/gateway`);
//! - a managed target: 50 concurrent `api_request`s in the refresh window share one refresh at
//!   the real authorization server;
//! - tokens on every HTTP request: none/unknown/malformed → 401, IP allowlist → 403, a revoked
//!   token fails within 2 s;
//! - two replicas on one database served alternately to one client (stateless endpoint);
//! - raw HTTP: the 401 of `/mcp` is the 401 of `/gateway`; a body above 10 MiB → 413.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::domain::audit::{AuditEntry, Interface};
use gatehouse::domain::tokens::AgentToken;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, managed_slug, set_token_expiry, setup, wait_for_discovery,
};
use crate::support::admin::{Reply, json_id, managed_target};
use crate::support::agent::{
    Agent, DiscoveryTargets, PROPAGATION, assert_bearer_401, is_probe, metric, spawn_configured,
    spawn_configured_on, until, within,
};
use crate::support::mcp::{McpClient, is_error, result_header, structured, text, text_json};
use crate::support::oidc::assert_one_refresh;
use crate::support::upstream::{
    DOWNLOAD_LEN, FakeUpstream, closed_port, download_body, pattern, sha256_hex,
};
use crate::support::{TestApp, TestDb};

const CREDENTIAL: &str = "mcp-canary-credential-0001";
const QUERY_CANARY: &str = "mcp-query-canary-5d1c";
/// The newest revision the contract names; the SDK (1.32.2) offers it by default.
const LATEST: &str = "2025-11-25";
/// The `/mcp` request body limit of SPEC §4a.
const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// An app with target `api` (bearer [`CREDENTIAL`]) at a fake upstream and an agent on it.
struct World {
    app: TestApp,
    upstream: FakeUpstream,
    agent: Agent,
}

async fn world() -> World {
    world_on(TestApp::spawn().await).await
}

async fn world_on(app: TestApp) -> World {
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!(CREDENTIAL))),
        )
        .await;
    World {
        app,
        upstream,
        agent,
    }
}

impl World {
    fn mcp_url(&self) -> String {
        self.app.proxy_url("/mcp")
    }

    /// A driver connected with the agent's token, tools listed.
    async fn client(&self) -> McpClient {
        McpClient::connected(&self.mcp_url(), &self.agent.token).await
    }
}

/// `api_request` with `arguments`; the SDK must not throw.
async fn api_call(client: &mut McpClient, arguments: Value) -> Value {
    client
        .call_tool("api_request", arguments.clone())
        .await
        .unwrap_or_else(|e| panic!("api_request {arguments}: {e}"))
}

/// An upstream answer (not a refusal): its `structuredContent`, after checking the text content
/// is the JSON of the same object.
#[track_caller]
fn answered(result: &Value) -> Value {
    assert!(
        !is_error(result),
        "an upstream answer is a normal result: {result}"
    );
    let out = structured(result).clone();
    assert!(out["status"].is_u64(), "status is a number: {out}");
    assert!(out["headers"].is_object(), "headers is an object: {out}");
    assert_eq!(
        text_json(result),
        out,
        "the text content is the JSON of structuredContent"
    );
    out
}

/// A refusal by the gateway: `isError: true`, `structuredContent.status` and the gateway's JSON
/// error in `body`; the text content carries the message too.
#[track_caller]
fn refused(result: &Value, status: u16, message: &str) {
    assert!(is_error(result), "a refusal is isError: true: {result}");
    let out = structured(result);
    assert_eq!(out["status"], json!(status), "{result}");
    assert_eq!(out["body"]["error"], json!(message), "{result}");
    assert!(
        text(result).contains(message),
        "the text content names the error: {result}"
    );
}

/// `value[key]` is absent, null, or `default`.
fn absent_or(value: &Value, key: &str, default: Value) -> bool {
    value.get(key).is_none_or(|v| v.is_null() || *v == default)
}

// ---------------------------------------------------------------------------------------------
// initialize and tools/list
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn initialize_names_gatehouse_and_negotiates_the_protocol_version() {
    let w = world().await;
    let urls = vec![w.mcp_url()];
    let token = w.agent.token.as_str();
    let mut client = McpClient::start().await;

    let info = client.connect(&urls, Some(token)).await.unwrap();
    assert_eq!(info["serverVersion"]["name"], "gatehouse", "{info}");
    assert_eq!(
        info["serverVersion"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{info}"
    );
    let instructions = info["instructions"].as_str().unwrap_or_default();
    assert!(
        instructions.contains("discover"),
        "the instructions point at discover: {info}"
    );
    assert!(
        info["capabilities"]["tools"].is_object(),
        "tools capability: {info}"
    );
    assert_eq!(info["offeredProtocolVersion"], LATEST, "{info}");
    assert_eq!(info["protocolVersion"], LATEST, "{info}");

    // Offered version → negotiated version. An offer the server does not support is answered
    // with the server's own latest (MCP lifecycle, "Version Negotiation").
    for (offered, expected) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2024-11-05", LATEST),
        ("1999-01-01", LATEST),
    ] {
        let info = client
            .connect_with_version(&urls, Some(token), offered)
            .await
            .unwrap_or_else(|e| panic!("offering {offered}: {e}"));
        assert_eq!(info["offeredProtocolVersion"], offered, "{info}");
        assert_eq!(
            info["protocolVersion"], expected,
            "offered {offered}: {info}"
        );
        assert_eq!(info["serverVersion"]["name"], "gatehouse");
        // The negotiated revision works: later requests carry it and succeed.
        let tools = client.list_tools().await.unwrap();
        assert_eq!(
            tools["tools"].as_array().map(Vec::len),
            Some(3),
            "offered {offered}: {tools}"
        );
        let discovered = client.call_tool("discover", json!({})).await.unwrap();
        assert!(!is_error(&discovered), "offered {offered}: {discovered}");
        let log = client.http_log().await;
        let calls: Vec<_> = log
            .iter()
            .filter(|e| matches!(e.rpc_method.as_deref(), Some("tools/list" | "tools/call")))
            .collect();
        assert_eq!(calls.len(), 2, "{log:#?}");
        for call in calls {
            assert_eq!(call.status, Some(200), "offered {offered}: {call:?}");
            assert_eq!(
                call.request_protocol_version.as_deref(),
                Some(expected),
                "offered {offered}: {call:?}"
            );
        }
    }
    client.close().await;
}

/// Assert that the JSON schema `schema` declares each of `properties`; `what` names it.
#[track_caller]
fn assert_has_properties(schema: &Value, properties: &[&str], what: &str) {
    for property in properties {
        assert!(
            schema["properties"].get(property).is_some(),
            "{what} has {property}: {schema}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_list_has_discover_bootstrap_and_api_request_with_schemas() {
    let w = world().await;
    let mut client = McpClient::start().await;
    client
        .connect(&[w.mcp_url()], Some(w.agent.token.as_str()))
        .await
        .unwrap();
    let listed = client.list_tools().await.unwrap();
    let tools = listed["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["api_request", "bootstrap", "discover"], "{listed}");
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap();
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
    }

    let api = tool("api_request");
    let input = &api["inputSchema"];
    assert_has_properties(
        input,
        &[
            "target",
            "method",
            "path",
            "query",
            "headers",
            "body",
            "body_base64",
        ],
        "api_request input",
    );
    let required: Vec<&str> = input["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for property in ["target", "method", "path"] {
        assert!(required.contains(&property), "{property} required: {input}");
    }
    for property in ["query", "headers", "body", "body_base64"] {
        assert!(
            !required.contains(&property),
            "{property} optional: {input}"
        );
    }
    let output = &api["outputSchema"];
    assert_has_properties(
        output,
        &[
            "status",
            "headers",
            "body",
            "body_encoding",
            "truncated",
            "size",
        ],
        "api_request output",
    );

    assert!(
        tool("discover")["outputSchema"]["properties"]
            .get("targets")
            .is_some(),
        "{listed}"
    );
    assert_eq!(
        tool("discover")["outputSchema"],
        tool("bootstrap")["outputSchema"],
        "bootstrap is an alias of discover"
    );
    assert_eq!(
        tool("discover")["inputSchema"],
        tool("bootstrap")["inputSchema"]
    );
}

// ---------------------------------------------------------------------------------------------
// discover
// ---------------------------------------------------------------------------------------------

/// `discover` on a new connection of `client` to `url` with `token`, after `tools/list`.
async fn discover_with(client: &mut McpClient, url: &str, token: &str) -> Value {
    client
        .connect(&[url.to_owned()], Some(token))
        .await
        .unwrap();
    client.list_tools().await.unwrap();
    client.call_tool("discover", json!({})).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_is_the_discovery_body_of_the_same_token() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let managed = managed_target(&store, "ada-mail-mcp1").await;
    drop(store);
    let app = spawn_configured_on(db, |_| {}).await;
    let upstream = FakeUpstream::start().await;
    let DiscoveryTargets {
        token,
        token_id,
        other_token,
        ..
    } = app.discovery_targets(&upstream).await;
    let (lonely_token, _) = app.make_token("lonely", None).await;
    app.grant(token_id, managed.id, false).await;

    let slugs = |body: &Value| -> Vec<String> {
        let mut list: Vec<String> = body["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["slug"].as_str().map(str::to_owned))
            .collect();
        list.sort();
        list
    };
    let expected = vec![
        "ada-mail-mcp1".to_owned(),
        "github".to_owned(),
        "linear".to_owned(),
    ];
    let (listed, reply) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 200 && slugs(&r.json) == expected,
    )
    .await;
    assert!(listed, "/discovery settles: {}", reply.text);
    let discovery = reply.json.clone();

    let url = app.proxy_url("/mcp");
    let mut client = McpClient::connected(&url, &token).await;
    for tool in ["discover", "bootstrap"] {
        let result = client.call_tool(tool, json!({})).await.unwrap();
        assert!(!is_error(&result), "{tool}: {result}");
        assert_eq!(
            structured(&result),
            &discovery,
            "{tool} is the /discovery body"
        );
        assert_eq!(text_json(&result), discovery, "{tool}: text content");
    }
    let targets = discovery["targets"].as_array().unwrap();
    let entry = targets
        .iter()
        .find(|t| t["slug"] == "ada-mail-mcp1")
        .unwrap();
    assert_eq!(entry["integration"]["provider"], "microsoft_365", "{entry}");
    assert_eq!(entry["integration"]["email"], "ada-mail-mcp1@example.com");
    assert_eq!(entry["integration"]["capability"], "mail");
    assert_eq!(entry["integration"]["status"], "connected");
    for target in targets.iter().filter(|t| t["slug"] != "ada-mail-mcp1") {
        assert!(
            target.get("integration").is_none_or(Value::is_null),
            "standard targets have no integration: {target}"
        );
        assert_eq!(target["type"], "api", "{target}");
    }

    // Another token sees only its own target.
    let (_, other_reply) = until(
        PROPAGATION,
        || app.get("/discovery", &other_token),
        |r| r.status == 200 && slugs(&r.json) == ["hidden"],
    )
    .await;
    let result = discover_with(&mut client, &url, &other_token).await;
    assert_eq!(structured(&result), &other_reply.json, "{result}");
    assert_eq!(slugs(structured(&result)), ["hidden"]);

    // No targets: the message telling the agent to ask its admin.
    let (_, lonely_reply) = until(
        PROPAGATION,
        || app.get("/discovery", &lonely_token),
        |r| r.status == 200,
    )
    .await;
    let result = discover_with(&mut client, &url, &lonely_token).await;
    let body = structured(&result);
    assert_eq!(body, &lonely_reply.json, "{result}");
    assert_eq!(body["targets"], json!([]), "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.to_lowercase().contains("admin")),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// api_request: requests and responses
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn api_request_get_encodes_the_query_object() {
    let w = world().await;
    let mut client = w.client().await;

    let result = api_call(
        &mut client,
        json!({
            "target": "api",
            "method": "GET",
            "path": "/items/1",
            "query": {"q": "a b&c=d", "page": "2", "name": "é/ü+"},
        }),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 200, "{out}");
    let received = w.upstream.last();
    assert_eq!(received.method, "GET");
    assert_eq!(received.path, "/base/items/1");
    let query = received.query.clone().expect("a query string upstream");
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        vec![
            ("name".to_owned(), "é/ü+".to_owned()),
            ("page".to_owned(), "2".to_owned()),
            ("q".to_owned(), "a b&c=d".to_owned()),
        ],
        "the query object arrives encoded: {query}"
    );
    assert!(
        !query.contains(' ') && query.matches('&').count() == 2,
        "values are percent-encoded: {query}"
    );
    assert_eq!(
        received.header_values("authorization"),
        vec![format!("Bearer {CREDENTIAL}")],
        "the target's credential is injected"
    );
    // A JSON response is parsed into `body`.
    assert_eq!(out["body"]["method"], "GET", "{out}");
    assert_eq!(out["body"]["target"], json!(received.target), "{out}");
    assert!(absent_or(&out, "body_encoding", json!(null)), "{out}");
    assert!(absent_or(&out, "truncated", json!(false)), "{out}");
    assert!(
        result_header(&out["headers"], "content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{out}"
    );
    assert_eq!(
        result_header(&out["headers"], "x-upstream").as_deref(),
        Some("fake")
    );

    // A path with its own query string, plus a query object: both arrive.
    let result = api_call(
        &mut client,
        json!({"target": "api", "method": "GET", "path": "/items?x=1", "query": {"y": "2"}}),
    )
    .await;
    assert_eq!(answered(&result)["status"], 200);
    let received = w.upstream.last();
    assert_eq!(received.path, "/base/items");
    let query = received.query.clone().unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert!(
        pairs.contains(&("x".to_owned(), "1".to_owned()))
            && pairs.contains(&("y".to_owned(), "2".to_owned()))
            && pairs.len() == 2,
        "{query}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_request_sends_json_text_and_binary_bodies() {
    let w = world().await;
    let mut client = w.client().await;

    // A JSON value: sent as application/json. Keys in sorted order, so the serialization is
    // the same whatever map type either side uses.
    let body = json!({"a": 1, "b": [true, null, "x"], "c": {"d": "é"}});
    let result = api_call(
        &mut client,
        json!({"target": "api", "method": "POST", "path": "/upload", "body": body}),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 200, "{out}");
    let received = w.upstream.last();
    assert_eq!(received.method, "POST");
    assert_eq!(received.path, "/base/upload");
    assert!(
        received
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        received.headers
    );
    let sent: Value = serde_json::from_str(&received.body_text)
        .unwrap_or_else(|e| panic!("the upstream got JSON ({e}): {}", received.body_text));
    assert_eq!(sent, body);
    assert_eq!(
        received.body_sha256,
        sha256_hex(&serde_json::to_vec(&body).unwrap()),
        "the serialized JSON body, byte for byte: {}",
        received.body_text
    );
    assert_eq!(out["body"]["body_sha256"], json!(received.body_sha256));

    // A string with its own Content-Type: sent as it is.
    let plain = "plain text, not JSON: {\"x\": ";
    let result = api_call(
        &mut client,
        json!({
            "target": "api",
            "method": "PUT",
            "path": "/notes/1",
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
            "body": plain,
        }),
    )
    .await;
    assert_eq!(answered(&result)["status"], 200);
    let received = w.upstream.last();
    assert_eq!(received.method, "PUT");
    assert_eq!(received.body_text, plain);
    assert_eq!(received.body_sha256, sha256_hex(plain.as_bytes()));
    assert_eq!(
        received.header_values("content-type"),
        vec!["text/plain; charset=utf-8"]
    );

    // Binary in: body_base64 arrives as the exact bytes.
    let bytes = pattern(5000, 11);
    assert!(std::str::from_utf8(&bytes).is_err(), "not UTF-8");
    let result = api_call(
        &mut client,
        json!({
            "target": "api",
            "method": "POST",
            "path": "/blob",
            "headers": {"content-type": "application/octet-stream"},
            "body_base64": STANDARD.encode(&bytes),
        }),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 200, "{out}");
    let received = w.upstream.last();
    assert_eq!(received.path, "/base/blob");
    assert_eq!(received.body_len, bytes.len());
    assert_eq!(received.body_sha256, sha256_hex(&bytes));
    assert_eq!(out["body"]["body_len"], json!(bytes.len()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_response_comes_back_as_base64_cut_at_the_limit() {
    const LIMIT: usize = 64 * 1024;
    let app = spawn_configured(|config| config.mcp.max_response_bytes = LIMIT as u64).await;
    let w = world_on(app).await;
    let mut client = w.client().await;
    let result = api_call(
        &mut client,
        json!({"target": "api", "method": "GET", "path": "/download"}),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 200);
    assert_eq!(out["body_encoding"], "base64", "binary is base64");
    assert_eq!(out["truncated"], true, "cut at mcp.max_response_bytes");
    assert_eq!(out["size"], json!(DOWNLOAD_LEN), "size is the full length");
    let decoded = STANDARD
        .decode(out["body"].as_str().expect("a base64 string"))
        .expect("valid base64");
    assert_eq!(decoded.len(), LIMIT, "exactly the limit is kept");
    assert_eq!(&decoded[..], &download_body()[..LIMIT], "the first bytes");
    assert!(
        result_header(&out["headers"], "content-type").as_deref()
            == Some("application/octet-stream"),
        "{}",
        out["headers"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_statuses_are_normal_results_and_redirects_are_not_followed() {
    let w = world().await;
    let mut client = w.client().await;
    for code in [429u16, 503, 404, 500] {
        let result = api_call(
            &mut client,
            json!({"target": "api", "method": "GET", "path": format!("/status/{code}")}),
        )
        .await;
        let out = answered(&result);
        assert_eq!(out["status"], json!(code), "{out}");
        assert_eq!(
            result_header(&out["headers"], "retry-after").as_deref(),
            Some("7"),
            "{code}: Retry-After comes back: {out}"
        );
        assert_eq!(
            result_header(&out["headers"], "x-upstream-extra").as_deref(),
            Some("1")
        );
        assert_eq!(out["body"], json!({"upstream_status": code}), "{out}");
    }

    let before = w.upstream.count();
    let result = api_call(
        &mut client,
        json!({"target": "api", "method": "GET", "path": "/redirect"}),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 302, "{out}");
    assert!(
        result_header(&out["headers"], "location").is_some_and(|l| l.ends_with("/landing")),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.upstream.count(),
        before + 1,
        "the redirect is not followed"
    );
    assert_eq!(w.upstream.last().path, "/base/redirect");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_refusals_are_error_results_and_nothing_is_forwarded() {
    let w = world().await;
    let app = &w.app;
    let token = &w.agent.token;
    app.make_target("other", &w.upstream.url("/other")).await;
    let reader_id = json_id(&app.make_target("reader", &w.upstream.url("/reader")).await);
    app.grant(w.agent.token_id, reader_id, true).await;
    let closed = closed_port();
    let gone_id = json_id(&app.make_target("gone", &format!("http://{closed}/x")).await);
    app.grant(w.agent.token_id, gone_id, false).await;
    let settled = within(PROPAGATION, || async {
        app.get("/gateway/reader/__ready//probe", token)
            .await
            .status
            == 400
            && app.get("/gateway/other/__ready//probe", token).await.status == 403
            && app.get("/gateway/gone/__ready//probe", token).await.status == 400
    })
    .await;
    assert!(settled, "setup not applied within 2 s");

    let mut client = w.client().await;
    let before = w.upstream.count();
    for (target, method, path, status, message) in [
        ("reader", "POST", "/x", 403, "read-only access"),
        ("reader", "DELETE", "/x", 403, "read-only access"),
        ("other", "GET", "/x", 403, "forbidden"),
        ("nope", "GET", "/x", 404, "target not found"),
        ("api", "GET", "/a/../b", 400, "invalid path"),
        ("api", "GET", "/a//b", 400, "invalid path"),
        ("api", "GET", "/a/%2e%2e/b", 400, "invalid path"),
        ("api", "GET", "/a%2fb", 400, "invalid path"),
    ] {
        let result = api_call(
            &mut client,
            json!({"target": target, "method": method, "path": path}),
        )
        .await;
        refused(&result, status, message);
    }
    assert_eq!(
        w.upstream.count(),
        before,
        "no refusal reached the upstream"
    );

    // The upstream unreachable: 502 from the gateway, an error result.
    let result = api_call(
        &mut client,
        json!({"target": "gone", "method": "GET", "path": "/x"}),
    )
    .await;
    refused(&result, 502, "upstream request failed");

    // Read-only still reads.
    let result = api_call(
        &mut client,
        json!({"target": "reader", "method": "GET", "path": "/ok"}),
    )
    .await;
    assert_eq!(answered(&result)["status"], 200);
    assert_eq!(w.upstream.last().path, "/reader/ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_api_request_input_is_refused_before_the_upstream() {
    let w = world().await;
    let mut client = w.client().await;
    let before = w.upstream.count();
    for arguments in [
        json!({"method": "GET", "path": "/x"}),
        json!({"target": "api", "path": "/x"}),
        json!({"target": "api", "method": "TRACE", "path": "/x"}),
        json!({"target": "api", "method": "POST", "path": "/x", "body_base64": "not base64!"}),
    ] {
        // A tool result with the gateway's 400 shape, naming the input that is wrong.
        let result = client
            .call_tool("api_request", arguments.clone())
            .await
            .unwrap_or_else(|e| panic!("{arguments}: a tool result, not a protocol error: {e}"));
        assert!(is_error(&result), "{arguments}: {result}");
        let out = structured(&result);
        assert_eq!(out["status"], 400, "{arguments}: {out}");
        let field = out["body"]["field"].as_str().unwrap_or_default();
        assert!(
            field == "arguments" || field == "body_base64",
            "{arguments}: names the input: {out}"
        );
        assert!(
            out["body"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(field)),
            "{out}"
        );
    }
    assert_eq!(w.upstream.count(), before, "nothing was forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_hygiene_applies_both_ways() {
    let w = world().await;
    let mut client = w.client().await;
    let agent_secret = "agent-supplied-secret-9f2e";
    let result = api_call(
        &mut client,
        json!({
            "target": "api",
            "method": "GET",
            "path": "/echo-auth",
            "headers": {
                "Authorization": format!("Bearer {agent_secret}"),
                "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
                "X-Forwarded-For": "203.0.113.9",
                "Forwarded": "for=203.0.113.9",
                "X-Real-IP": "203.0.113.9",
                "X-Custom": "stays",
            },
        }),
    )
    .await;
    let out = answered(&result);
    assert_eq!(out["status"], 200, "{out}");
    let received = w.upstream.last();
    assert_eq!(
        received.header_values("authorization"),
        vec![format!("Bearer {CREDENTIAL}")],
        "the injected credential, not the agent's Authorization"
    );
    for removed in [
        "proxy-authorization",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
    ] {
        assert_eq!(
            received.header_values(removed),
            Vec::<String>::new(),
            "{removed} must not reach the upstream"
        );
    }
    assert_eq!(received.header_values("x-custom"), vec!["stays"]);
    assert_eq!(
        received.header_values("host"),
        vec![w.upstream.host()],
        "Host is the upstream's"
    );
    for (name, value) in &received.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(&w.agent.token) && !value.contains(agent_secret),
            "{name} carries an agent secret upstream"
        );
    }
    // The response header echoing the credential is removed; the others come back.
    assert_eq!(
        result_header(&out["headers"], "x-echo-authorization"),
        None,
        "{out}"
    );
    assert_eq!(
        result_header(&out["headers"], "x-plain").as_deref(),
        Some("kept")
    );
    let whole = result.to_string();
    assert!(
        !whole.contains(CREDENTIAL),
        "the credential in a tool result: {whole}"
    );
}

// ---------------------------------------------------------------------------------------------
// Audit rows and metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn audit_rows_and_metrics_name_the_interface() {
    let w = world().await;
    let app = &w.app;
    let token = &w.agent.token;
    let other_id = json_id(&app.make_target("other", &w.upstream.url("/other")).await);
    let settled = within(PROPAGATION, || async {
        app.get("/gateway/other/__ready//probe", token).await.status == 403
    })
    .await;
    assert!(settled, "setup not applied within 2 s");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: HashSet<Uuid> = app.audit_rows().await.into_iter().map(|r| r.id).collect();
    let metrics_before = app.settled_metrics_text().await;

    let mut client = w.client().await;
    let result = api_call(
        &mut client,
        json!({
            "target": "api",
            "method": "GET",
            "path": "/items/7",
            "query": {"secret": QUERY_CANARY},
        }),
    )
    .await;
    assert_eq!(answered(&result)["status"], 200);
    let result = api_call(
        &mut client,
        json!({"target": "other", "method": "GET", "path": "/x"}),
    )
    .await;
    refused(&result, 403, "forbidden");
    let discovered = client.call_tool("discover", json!({})).await.unwrap();
    assert!(!is_error(&discovered));
    app.get("/gateway/api/items/8", token).await.expect(200);

    let fresh = || async {
        app.audit_rows()
            .await
            .into_iter()
            .filter(|r| !before.contains(&r.id) && !is_probe(r))
            .collect::<Vec<AuditEntry>>()
    };
    let (_, _) = until(Duration::from_secs(5), fresh, |rows| rows.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rows = fresh().await;
    let mcp: Vec<&AuditEntry> = rows
        .iter()
        .filter(|r| r.interface == Interface::Mcp)
        .collect();
    let gateway: Vec<&AuditEntry> = rows
        .iter()
        .filter(|r| r.interface == Interface::Gateway)
        .collect();
    assert_eq!(
        mcp.len(),
        2,
        "one row per api_request, none for discover: {rows:#?}"
    );
    assert_eq!(gateway.len(), 1, "{rows:#?}");

    let api_row = mcp.iter().find(|r| r.target_slug == "api").unwrap();
    assert_eq!(api_row.interface.as_str(), "mcp");
    assert_eq!(api_row.method, "GET");
    assert_eq!(api_row.status_code, 200);
    assert_eq!(api_row.error, None);
    assert_eq!(api_row.target_id, Some(w.agent.target_id));
    assert!(api_row.path.ends_with("/items/7"), "{api_row:?}");
    assert!(api_row.upstream_ms.is_some(), "{api_row:?}");
    let other_row = mcp.iter().find(|r| r.target_slug == "other").unwrap();
    assert_eq!(other_row.status_code, 403);
    assert_eq!(other_row.error.as_deref(), Some("forbidden"));
    assert_eq!(other_row.target_id, Some(other_id));
    for row in &mcp {
        assert_eq!(row.token_id, Some(w.agent.token_id), "{row:?}");
        assert_eq!(row.token_name, w.agent.token_name, "{row:?}");
        assert_eq!(row.client_ip, "127.0.0.1", "the agent's address: {row:?}");
        assert!(!row.path.contains('?'), "no query string: {row:?}");
        let text = format!("{row:?}");
        for secret in [token.as_str(), CREDENTIAL, QUERY_CANARY] {
            assert!(!text.contains(secret), "a secret in an audit row: {text}");
        }
    }
    assert_eq!(gateway[0].interface.as_str(), "gateway");
    assert_eq!(gateway[0].path, "/gateway/api/items/8");
    assert_eq!(gateway[0].status_code, 200);

    let metrics_after = app.metrics_text().await;
    let value = |text: &str, labels: &[(&str, &str)]| {
        metric(text, "gatehouse_requests_total", labels).unwrap_or(0.0)
    };
    let delta =
        |labels: &[(&str, &str)]| value(&metrics_after, labels) - value(&metrics_before, labels);
    assert_eq!(
        delta(&[("target", "api"), ("status", "2xx"), ("interface", "mcp")]),
        1.0,
        "{metrics_after}"
    );
    assert_eq!(
        delta(&[("target", "other"), ("status", "4xx"), ("interface", "mcp")]),
        1.0,
        "{metrics_after}"
    );
    assert_eq!(
        delta(&[
            ("target", "api"),
            ("status", "2xx"),
            ("interface", "gateway")
        ]),
        1.0,
        "{metrics_after}"
    );
    assert!(
        metrics_after
            .lines()
            .any(|l| l.starts_with("gatehouse_requests_total{") && l.contains("interface=\"mcp\"")),
        "{metrics_after}"
    );
}

// ---------------------------------------------------------------------------------------------
// A managed target: single-flight refresh through the tool
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_api_requests_on_a_managed_target_share_one_refresh() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_id: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let slug = managed_slug(&setup.app, &id, "mail").await;
    // 20 s left: valid, but inside the 60 s window, so every request needs the refresh.
    set_token_expiry(
        &setup.app.db.url,
        account_id,
        chrono::Utc::now() + chrono::Duration::seconds(20),
    )
    .await;
    wait_for_discovery(&setup.app, &agent, &slug).await;

    let mut client = McpClient::connected(&setup.app.proxy_url("/mcp"), &agent).await;
    let discovered = client.call_tool("discover", json!({})).await.unwrap();
    let entry = structured(&discovered)["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == json!(slug))
        .cloned()
        .unwrap_or_else(|| panic!("{slug} discovered: {discovered}"));
    assert_eq!(
        entry["integration"],
        json!({
            "provider": "microsoft_365",
            "email": "ada@example.com",
            "capability": "mail",
            "status": "connected",
        }),
        "{entry}"
    );

    let before = setup.oidc.stats().await;
    let results = client
        .call_many(
            "api_request",
            json!({"target": slug, "method": "GET", "path": "/me/messages"}),
            50,
        )
        .await
        .unwrap();
    let after = setup.oidc.stats().await;
    assert_eq!(results.len(), 50);
    for result in &results {
        assert!(result.get("error").is_none(), "the SDK threw: {result}");
        let out = answered(result);
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"]["sub"], "ada", "{out}");
    }
    assert_one_refresh(&before, &after);

    let rows = setup.app.wait_for_audit(50).await;
    let mcp_rows = rows
        .iter()
        .filter(|r| r.interface == Interface::Mcp && r.target_slug == slug && r.status_code == 200)
        .count();
    assert_eq!(mcp_rows, 50, "{rows:#?}");
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_checked_on_every_mcp_request() {
    let w = world().await;
    let app = &w.app;
    let urls = vec![w.mcp_url()];
    let mut client = McpClient::start().await;
    let unknown = AgentToken::generate();
    for (what, token) in [
        ("no token", None),
        ("an unknown token", Some(unknown.expose())),
        ("a malformed token", Some("not-a-token")),
    ] {
        let error = client
            .connect(&urls, token)
            .await
            .expect_err("connect must fail");
        assert_eq!(error.code, Some(401), "{what}: {error}");
    }

    // The IP allowlist applies to the agent's own address.
    let (far, far_id) = app.make_token("far", Some(&["198.51.100.0/24"])).await;
    app.grant(far_id, w.agent.target_id, false).await;
    let (seen, _) = until(
        PROPAGATION,
        || app.get("/discovery", &far),
        |r| r.status == 403,
    )
    .await;
    assert!(seen, "the far token reached the proxy");
    let error = client
        .connect(&urls, Some(far.as_str()))
        .await
        .expect_err("an address outside allowed_ips");
    assert_eq!(error.code, Some(403), "{error}");

    // A revoked token fails its next request (within the 2 s propagation bound).
    let (token, token_id) = app.make_token("soon revoked", None).await;
    app.grant(token_id, w.agent.target_id, false).await;
    let (seen, _) = until(
        PROPAGATION,
        || app.get("/discovery", &token),
        |r| r.status == 200 && r.json["targets"].as_array().is_some_and(|t| t.len() == 1),
    )
    .await;
    assert!(seen, "the token reached the proxy");
    client.connect(&urls, Some(token.as_str())).await.unwrap();
    client.list_tools().await.unwrap();
    let result = api_call(
        &mut client,
        json!({"target": "api", "method": "GET", "path": "/before"}),
    )
    .await;
    assert_eq!(answered(&result)["status"], 200);

    app.api()
        .post_empty(&format!("/api/tokens/{token_id}/revoke"))
        .await
        .expect(200);
    let revoked_at = Instant::now();
    let forwarded = w.upstream.count();
    let mut rounds = 0;
    loop {
        rounds += 1;
        match client.call_tool("discover", json!({})).await {
            Err(error) => {
                assert_eq!(error.code, Some(401), "{error}");
                break;
            }
            Ok(result) => {
                assert!(
                    revoked_at.elapsed() <= PROPAGATION && rounds < 200,
                    "still served {:?} after the revocation: {result}",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
    let error = client
        .call_tool(
            "api_request",
            json!({"target": "api", "method": "GET", "path": "/after"}),
        )
        .await
        .expect_err("a revoked token");
    assert_eq!(error.code, Some(401), "{error}");
    assert!(
        w.upstream
            .received()
            .iter()
            .skip(forwarded)
            .all(|r| r.path != "/base/after"),
        "nothing forwarded for a revoked token"
    );
}

// ---------------------------------------------------------------------------------------------
// Two replicas
// ---------------------------------------------------------------------------------------------

/// A second Gatehouse on the same database, encryption key and admin token as `first`.
async fn replica_of(first: &TestApp) -> TestApp {
    let db = TestDb {
        url: first.db.url.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let admin_token = first.admin_token.clone();
    let key = first.encryption_key;
    let config = TestApp::config(&db, &admin_token, key);
    TestApp::spawn_with(db, admin_token, key, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_serve_one_client_alternately() {
    let w = world().await;
    let second = replica_of(&w.app).await;
    second.wait_until_admitted(&w.agent).await;
    let urls = vec![w.mcp_url(), second.proxy_url("/mcp")];
    let mut client = McpClient::start().await;
    let info = client
        .connect(&urls, Some(w.agent.token.as_str()))
        .await
        .unwrap();
    assert_eq!(info["serverVersion"]["name"], "gatehouse");
    client.list_tools().await.unwrap();
    for i in 0..4 {
        let result = client.call_tool("discover", json!({})).await.unwrap();
        assert!(!is_error(&result), "{result}");
        assert!(
            structured(&result)["targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["slug"] == "api")),
            "{result}"
        );
        // Two calls in a row: with requests dealt out in turn, one lands on each replica
        // (one call per round would always meet the same replica).
        for j in 0..2 {
            let result = api_call(
                &mut client,
                json!({"target": "api", "method": "GET", "path": format!("/round/{i}-{j}")}),
            )
            .await;
            assert_eq!(answered(&result)["status"], 200);
            assert_eq!(w.upstream.last().path, format!("/base/round/{i}-{j}"));
        }
    }

    let log = client.http_log().await;
    for exchange in log.iter().filter(|e| e.method == "POST") {
        assert!(
            matches!(exchange.status, Some(200 | 202)),
            "every POST succeeded on either replica: {exchange:?}\n{log:#?}"
        );
    }
    let served: HashSet<usize> = log
        .iter()
        .filter(|e| e.rpc_method.as_deref() == Some("tools/call") && e.status == Some(200))
        .filter_map(|e| e.index)
        .collect();
    assert_eq!(
        served,
        HashSet::from([0, 1]),
        "both replicas answered tool calls: {log:#?}"
    );

    // Both replicas wrote their rows to the one database.
    let (all, rows) = until(
        Duration::from_secs(5),
        || w.app.audit_rows(),
        |rows| {
            rows.iter()
                .filter(|r| r.interface == Interface::Mcp && r.path.contains("/round/"))
                .count()
                >= 8
        },
    )
    .await;
    assert!(all, "eight mcp audit rows: {rows:#?}");
    for app in [&w.app, &second] {
        let text = app.metrics_text().await;
        assert!(
            metric(
                &text,
                "gatehouse_requests_total",
                &[("interface", "mcp"), ("target", "api")]
            )
            .unwrap_or(0.0)
                >= 1.0,
            "each replica forwarded api_request calls: {text}"
        );
    }
    client.close().await;
    second.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

/// A POST of an `initialize` request to `/mcp` with this `Authorization` header (or none).
async fn raw_initialize(app: &TestApp, authorization: Option<&str>) -> Reply {
    let mut request = app
        .http
        .post(app.proxy_url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": LATEST,
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            })
            .to_string(),
        );
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    Reply::read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_without_a_valid_token_gets_the_gateway_401() {
    let w = world().await;
    let app = &w.app;
    let gateway = app.call(Method::GET, "/gateway/api/x", None).await;
    assert_eq!(gateway.status, 401, "{}", gateway.text);
    let unknown = AgentToken::generate();
    let unknown_header = format!("Bearer {}", unknown.expose());
    for authorization in [
        None,
        Some("Bearer not-a-token"),
        Some("Basic YWxpY2U6c2VjcmV0"),
        Some(unknown_header.as_str()),
    ] {
        let reply = raw_initialize(app, authorization).await;
        assert_bearer_401(&reply, &format!("{authorization:?}"));
        let content_type = reply.header("content-type");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        assert!(reply.json["error"].is_string(), "{}", reply.text);
        assert_eq!(
            reply.json, gateway.json,
            "{authorization:?}: the same body as /gateway's 401"
        );
    }
    // A GET (the SSE stream) is checked too.
    let reply = app.call(Method::GET, "/mcp", None).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(reply.json, gateway.json);
    // The valid token passes the same request.
    let bearer = format!("Bearer {}", w.agent.token);
    let reply = raw_initialize(app, Some(bearer.as_str())).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A `tools/list` JSON-RPC request of exactly `len` bytes (padding in `_meta`).
fn padded_request(len: usize) -> Vec<u8> {
    let prefix = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"pad":""#;
    let suffix = br#""}}}"#;
    assert!(len > prefix.len() + suffix.len());
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix);
    body.resize(len - suffix.len(), b'a');
    body.extend_from_slice(suffix);
    assert_eq!(body.len(), len);
    body
}

/// POST `body` to `/mcp` over a raw connection, writing while reading (a server may answer
/// before it has read the whole body); the status and head of the response, within 20 s.
async fn raw_post_mcp(addr: SocketAddr, token: &str, body: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: {LATEST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writing = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
    });
    let reading = async {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer
    };
    let buffer = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("an answer within 20 s");
    writing.abort();
    let head = String::from_utf8_lossy(&buffer).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_body_over_ten_mebibytes_is_413() {
    let w = world().await;
    let addr = w.app.running().proxy_addr;
    let (status, head) = raw_post_mcp(addr, &w.agent.token, padded_request(BODY_LIMIT + 1)).await;
    assert_eq!(status, 413, "10 MiB + 1 byte: {head}");
    // A large body under the limit is not refused for its size.
    let (status, head) = raw_post_mcp(addr, &w.agent.token, padded_request(1024 * 1024)).await;
    assert_ne!(status, 413, "1 MiB: {head}");
    assert_ne!(status, 0, "1 MiB: an answer: {head}");
}
