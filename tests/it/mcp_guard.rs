//! SPEC §12 over MCP, with the official TypeScript SDK client (`support::mcp::McpClient`):
//!
//! - without the elicitation capability, a held `api_request` is an error result carrying the
//!   approval; a person approves it (admin API, on another replica) and the re-call with
//!   `approval_id` passes once, whichever replica answers;
//! - with an elicitation handler, the server asks the person through the client: accept lets
//!   the request through once, decline refuses it, and the answer may reach another replica
//!   than the one waiting (the decision is the approval's row);
//! - a person who answers after `guard.elicitation_wait` still decides the approval, which the
//!   agent then uses with `approval_id`;
//! - with the built-in rules switched off nothing is asked.

use std::time::Duration;

use gatehouse::domain::guard::GuardOutcome;
use serde_json::{Value, json};

use crate::support::agent::{Agent, until};
use crate::support::mcp::{McpClient, is_error, structured};
use crate::support::upstream::FakeUpstream;
use crate::support::{TestApp, TestDb};

struct World {
    app: TestApp,
    upstream: FakeUpstream,
    agent: Agent,
}

async fn world(elicitation_wait: Duration) -> World {
    let db = TestDb::new().await;
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &admin_token, key);
    config.guard.elicitation_wait = elicitation_wait;
    let app = TestApp::spawn_with(db, admin_token, key, config).await;
    let upstream = FakeUpstream::start().await;
    let agent = app
        .agent_for(
            "api",
            &upstream.url("/base"),
            Some(("bearer", json!("cred-1"))),
        )
        .await;
    World {
        app,
        upstream,
        agent,
    }
}

fn delete_item() -> Value {
    json!({"target": "api", "method": "DELETE", "path": "/items/7"})
}

/// The `approval` object of a held result, after checking it is the gateway's 403.
#[track_caller]
fn held_approval(result: &Value) -> Value {
    assert!(
        is_error(result),
        "a held request is an error result: {result}"
    );
    let output = structured(result);
    assert_eq!(output["status"], json!(403), "{output}");
    assert_eq!(
        output["body"]["error"],
        json!("approval required"),
        "{output}"
    );
    let approval = output["body"]["approval"].clone();
    assert!(
        approval["id"].is_string() && approval["url"].is_string(),
        "{approval}"
    );
    approval
}

async fn call(client: &mut McpClient, arguments: Value) -> Value {
    client
        .call_tool("api_request", arguments.clone())
        .await
        .unwrap_or_else(|e| panic!("api_request {arguments}: {e}"))
}

async fn approval_json(app: &TestApp, id: &str) -> Value {
    app.api()
        .get(&format!("/api/approvals/{id}"))
        .await
        .expect(200)
        .clone()
}

/// The DELETEs the upstream received.
fn deletes(upstream: &FakeUpstream) -> usize {
    upstream
        .received()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count()
}

#[tokio::test]
async fn without_elicitation_the_approval_id_round_trips_across_replicas() {
    let w = world(Duration::from_secs(30)).await;
    let other = w.app.spawn_replica().await;
    let mut client = McpClient::start().await;
    let urls = [w.app.proxy_url("/mcp"), other.proxy_url("/mcp")];
    client.connect(&urls, Some(&w.agent.token)).await.unwrap();
    client.list_tools().await.unwrap();

    let approval = held_approval(&call(&mut client, delete_item()).await);
    assert_eq!(deletes(&w.upstream), 0, "nothing went upstream");
    assert!(client.elicitations().await.is_empty(), "nothing was asked");
    let id = approval["id"].as_str().unwrap().to_owned();
    // Pending: the re-call is refused and says so.
    let pending = call(
        &mut client,
        json!({"target": "api", "method": "DELETE",
        "path": "/items/7", "approval_id": id}),
    )
    .await;
    assert_eq!(
        structured(&pending)["body"]["error"],
        json!("approval pending"),
        "{pending}"
    );

    // A person approves it on the other replica.
    let decided = other
        .api()
        .post_empty(&format!("/api/approvals/{id}/approve"))
        .await;
    assert_eq!(decided.expect(200)["status"], json!("approved"));

    let mut again = delete_item();
    again["approval_id"] = json!(id);
    let passed = call(&mut client, again.clone()).await;
    assert!(!is_error(&passed), "the approved request passes: {passed}");
    assert_eq!(structured(&passed)["status"], json!(200));
    assert_eq!(deletes(&w.upstream), 1);
    let received = w.upstream.last();
    assert_eq!(received.path, "/base/items/7");
    assert!(received.header("gatehouse-approval").is_none());

    // Once only, whichever replica answers the next call.
    for _ in 0..2 {
        let used = call(&mut client, again.clone()).await;
        assert_eq!(
            structured(&used)["body"]["error"],
            json!("approval already used"),
            "{used}"
        );
    }
    assert_eq!(deletes(&w.upstream), 1);
    // Another request cannot ride on it either.
    let mut other_path = again.clone();
    other_path["path"] = json!("/items/8");
    let mismatch = call(&mut client, other_path).await;
    assert_eq!(
        structured(&mismatch)["body"]["error"],
        json!("approval does not match this request")
    );
    assert_eq!(approval_json(&w.app, &id).await["status"], json!("used"));

    let (found, rows) = until(
        Duration::from_secs(10),
        || w.app.audit_rows(),
        |rows| {
            rows.iter()
                .any(|r| r.guard_action == Some(GuardOutcome::Approved))
        },
    )
    .await;
    assert!(found, "an approved audit row: {rows:#?}");
    let row = rows
        .iter()
        .find(|r| r.guard_action == Some(GuardOutcome::Approved))
        .unwrap();
    assert_eq!(
        row.approved_by.as_deref(),
        Some("admin:GATEHOUSE_ADMIN_TOKEN")
    );
    client.close().await;
    other.stop().await;
}

#[tokio::test]
async fn an_accepted_elicitation_lets_the_request_through_once() {
    let w = world(Duration::from_secs(20)).await;
    let other = w.app.spawn_replica().await;
    let mut client = McpClient::start().await;
    // Round robin: the elicitation's answer is the next HTTP request, so it reaches the
    // replica that did not ask.
    let urls = [w.app.proxy_url("/mcp"), other.proxy_url("/mcp")];
    client
        .connect_with_elicitation(
            &urls,
            &w.agent.token,
            json!({"action": "accept", "content": {"approve": true}, "delayMs": 300}),
        )
        .await
        .unwrap();

    let result = call(&mut client, delete_item()).await;
    assert!(
        !is_error(&result),
        "accepted: the upstream's answer: {result}"
    );
    assert_eq!(structured(&result)["status"], json!(200));
    assert_eq!(deletes(&w.upstream), 1);

    let asked = client.elicitations().await;
    assert_eq!(asked.len(), 1, "{asked:#?}");
    let message = asked[0]["params"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("\"{}\"", w.agent.token_name))
            && message.contains("DELETE /items/7 on api"),
        "{message}"
    );
    let request_id = asked[0]["requestId"].as_str().unwrap();
    let approval_id = request_id.strip_prefix("gatehouse-approval:").unwrap();
    let approval = approval_json(&other, approval_id).await;
    assert_eq!(approval["status"], json!("used"), "{approval}");
    assert_eq!(
        approval["decided_by"],
        json!(format!("mcp-elicitation:{}", w.agent.token_name))
    );
    // The answer went to the other replica than the tools/call that waited for it.
    let log = client.http_log().await;
    let call_index = log
        .iter()
        .position(|e| e.rpc_method.as_deref() == Some("tools/call"))
        .unwrap();
    let answer_index = log
        .iter()
        .position(|e| e.rpc_method.as_deref() == Some("(response)"))
        .unwrap();
    assert_ne!(
        log[call_index].url, log[answer_index].url,
        "the decision crossed replicas: {log:#?}"
    );
    assert_eq!(log[answer_index].status, Some(202));
    client.close().await;
    other.stop().await;
}

#[tokio::test]
async fn a_declined_elicitation_refuses_and_nothing_goes_upstream() {
    let w = world(Duration::from_secs(20)).await;
    let mut client = McpClient::start().await;
    client
        .connect_with_elicitation(
            &[w.app.proxy_url("/mcp")],
            &w.agent.token,
            json!({"action": "decline"}),
        )
        .await
        .unwrap();
    let result = call(&mut client, delete_item()).await;
    assert!(is_error(&result), "{result}");
    assert_eq!(structured(&result)["status"], json!(403));
    assert_eq!(
        structured(&result)["body"]["error"],
        json!("approval denied"),
        "{result}"
    );
    assert_eq!(deletes(&w.upstream), 0);
    assert_eq!(client.elicitations().await.len(), 1);
    let (found, rows) = until(
        Duration::from_secs(10),
        || w.app.audit_rows(),
        |rows| {
            rows.iter()
                .any(|r| r.guard_action == Some(GuardOutcome::Denied))
        },
    )
    .await;
    assert!(found, "a denied audit row: {rows:#?}");
    client.close().await;
}

#[tokio::test]
async fn a_late_answer_still_decides_the_approval_the_agent_then_uses() {
    let w = world(Duration::from_secs(1)).await;
    let mut client = McpClient::start().await;
    client
        .connect_with_elicitation(
            &[w.app.proxy_url("/mcp")],
            &w.agent.token,
            json!({"action": "accept", "content": {"approve": true}, "delayMs": 2500}),
        )
        .await
        .unwrap();
    // The wait (1 s) ends before the person answers (2.5 s): the held result comes back.
    let approval = held_approval(&call(&mut client, delete_item()).await);
    let id = approval["id"].as_str().unwrap().to_owned();
    assert_eq!(deletes(&w.upstream), 0);
    let (approved, last) = until(
        Duration::from_secs(10),
        || approval_json(&w.app, &id),
        |a| a["status"] == json!("approved"),
    )
    .await;
    assert!(approved, "the late answer approves it: {last}");
    let mut again = delete_item();
    again["approval_id"] = json!(id);
    let passed = call(&mut client, again).await;
    assert!(!is_error(&passed), "{passed}");
    assert_eq!(deletes(&w.upstream), 1);
    client.close().await;
}

#[tokio::test]
async fn with_the_built_in_rules_off_nothing_is_asked() {
    let w = world(Duration::from_secs(20)).await;
    w.app
        .api()
        .patch(
            &format!("/api/targets/{}", w.agent.target_id),
            json!({"guard_defaults": false}),
        )
        .await
        .expect(200);
    let mut client = McpClient::start().await;
    client
        .connect_with_elicitation(
            &[w.app.proxy_url("/mcp")],
            &w.agent.token,
            json!({"action": "decline"}),
        )
        .await
        .unwrap();
    let result = call(&mut client, delete_item()).await;
    assert!(!is_error(&result), "{result}");
    assert_eq!(deletes(&w.upstream), 1);
    assert!(client.elicitations().await.is_empty());
    client.close().await;
}

/// An agent that was never asked cannot answer for the person: a forged elicitation answer
/// (a JSON-RPC response naming the approval, posted by the agent itself) decides nothing.
#[tokio::test]
async fn a_forged_elicitation_answer_decides_nothing() {
    let w = world(Duration::from_secs(20)).await;
    let mut client = McpClient::connected(&w.app.proxy_url("/mcp"), &w.agent.token).await;
    let approval = held_approval(&call(&mut client, delete_item()).await);
    let id = approval["id"].as_str().unwrap().to_owned();
    let forged = json!({"jsonrpc": "2.0", "id": format!("gatehouse-approval:{id}"),
        "result": {"action": "accept", "content": {"approve": true}}});
    let response = w
        .app
        .http
        .post(w.app.proxy_url("/mcp"))
        .bearer_auth(&w.agent.token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", "gatehouse-elicit-forged")
        .json(&forged)
        .send()
        .await
        .unwrap();
    // Taken like any answer (202), and ignored.
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(approval_json(&w.app, &id).await["status"], json!("pending"));
    let mut again = delete_item();
    again["approval_id"] = json!(id);
    let refused = call(&mut client, again).await;
    assert_eq!(
        structured(&refused)["body"]["error"],
        json!("approval pending"),
        "{refused}"
    );
    assert_eq!(deletes(&w.upstream), 0);
    client.close().await;
}
