//! SPEC §4a and §9: neither the agent token nor an MCP session id appears in a log line, even at
//! trace level, when agents use `/mcp`. The real binary runs as a child process at trace level
//! (`GATEHOUSE__LOG__LEVEL=trace`, `RUST_LOG=trace`); the official MCP TypeScript SDK client
//! (`support::mcp::McpClient`) drives `/mcp` with a canary token (initialize, tools/list,
//! `discover`, `api_request` GET and POST, an unknown token); then the whole stdout and stderr
//! are searched for the token, any `Mcp-Session-Id` value, the injected credential and canaries
//! carried in the tool arguments.

use std::time::Duration;

use gatehouse::domain::tokens::AdminToken;
use serde_json::{Value, json};

use crate::support::child::{Canaries, LoggedServer, assert_not_logged, strip_ansi};
use crate::support::mcp::{McpClient, is_error, structured};
use crate::support::upstream::FakeUpstream;

#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_session_id_reaches_the_logs_at_trace_level() {
    let admin_token = AdminToken::generate();
    let upstream = FakeUpstream::start().await;
    let server = LoggedServer::start(&admin_token, &[("RUST_LOG", "trace")]).await;

    let canaries = Canaries::generate();
    let Canaries {
        credential,
        query_canary,
        header_canary,
        unknown_token,
    } = &canaries;

    let (token, _) = server
        .logged_agent(&upstream.url("/base"), credential, "mcp logged agent")
        .await;

    // Wait (bounded) until the proxy knows the token and the grant.
    let mut admitted = false;
    for _ in 0..40 {
        let response = server
            .http
            .get(server.proxy_url("/discovery"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["slug"] == "logged"))
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the token was admitted within 2 s");

    // Drive /mcp with the official SDK client.
    let urls = vec![server.proxy_url("/mcp")];
    let mut session_ids: Vec<String> = Vec::new();
    let mut client = McpClient::start().await;
    let info = client
        .connect(&urls, Some(token.as_str()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    assert_eq!(info["serverVersion"]["name"], "gatehouse", "{info}");
    if let Some(id) = info["sessionId"].as_str() {
        session_ids.push(id.to_owned());
    }
    client.list_tools().await.unwrap();
    let discovered = client.call_tool("discover", json!({})).await.unwrap();
    assert!(!is_error(&discovered), "{discovered}");
    let result = client
        .call_tool(
            "api_request",
            json!({
                "target": "logged",
                "method": "GET",
                "path": "/items",
                "query": {"secret": query_canary},
                "headers": {"x-secret-header": header_canary},
            }),
        )
        .await
        .unwrap();
    assert!(!is_error(&result), "{result}");
    assert_eq!(structured(&result)["status"], 200, "{result}");
    assert_eq!(
        upstream.last().header("authorization"),
        Some(format!("Bearer {credential}")),
        "the request went through with the injected credential"
    );
    let result = client
        .call_tool(
            "api_request",
            json!({
                "target": "logged",
                "method": "POST",
                "path": "/echo-auth",
                "headers": {"cookie": format!("session={header_canary}")},
                "body": {"note": format!("body-{header_canary}")},
            }),
        )
        .await
        .unwrap();
    assert!(!is_error(&result), "{result}");
    // A refused call and a refused path are logged too.
    let result = client
        .call_tool(
            "api_request",
            json!({"target": "nope", "method": "GET", "path": format!("/x?secret={query_canary}")}),
        )
        .await
        .unwrap();
    assert!(is_error(&result), "{result}");
    let result = client
        .call_tool(
            "api_request",
            json!({"target": "logged", "method": "GET", "path": "/a//b"}),
        )
        .await
        .unwrap();
    assert!(is_error(&result), "{result}");
    for exchange in client.http_log().await {
        session_ids.extend(exchange.session_id);
        session_ids.extend(exchange.request_session_id);
    }
    // An unknown token: refused, and not logged either.
    let refused = client
        .connect(&urls, Some(unknown_token.expose()))
        .await
        .expect_err("an unknown token is refused");
    assert_eq!(refused.code, Some(401), "{refused}");
    client.close().await;
    // Let the audit writer run once.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (exit, text) = server.stop();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    let plain = strip_ansi(&text);
    assert!(
        plain.contains("gatehouse is serving"),
        "served with GATEHOUSE__LOG__LEVEL=trace"
    );
    session_ids.sort();
    session_ids.dedup();
    let mut secrets = canaries.secrets(&token, &admin_token);
    for id in session_ids.iter().filter(|id| !id.is_empty()) {
        secrets.push(("an MCP session id", id.as_str()));
    }
    // The token's secret part alone (without the `sg_` prefix) must not appear either.
    if let Some(rest) = token.strip_prefix("sg_") {
        secrets.push(("the agent token without its prefix", rest));
    }
    assert_not_logged(&text, &secrets);
    println!(
        "mcp_logs: {} bytes of trace-level log searched; {} MCP session id(s) seen",
        text.len(),
        session_ids.len()
    );
}
