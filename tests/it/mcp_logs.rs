//! SPEC §4a and §9: neither the agent token nor an MCP session id appears in a log line, even at
//! trace level, when agents use `/mcp`. The real binary runs as a child process at trace level
//! (`GATEHOUSE__LOG__LEVEL=trace`, `RUST_LOG=trace`); the official MCP TypeScript SDK client
//! (`support::mcp::McpClient`) drives `/mcp` with a canary token (initialize, tools/list,
//! `discover`, `api_request` GET and POST, an unknown token); then the whole stdout and stderr
//! are searched for the token, any `Mcp-Session-Id` value, the injected credential and canaries
//! carried in the tool arguments.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::domain::tokens::{AdminToken, AgentToken};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::support::child::{strip_ansi, wait_with_deadline};
use crate::support::mcp::{McpClient, is_error, structured};
use crate::support::upstream::FakeUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// Collects a child's output on a thread for the whole run.
fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n').map_while(Result::ok) {
            let mut log = into.lock();
            log.push_str(&String::from_utf8_lossy(&line));
            log.push('\n');
        }
    })
}

/// Kills the child if the test fails before SIGTERM.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_session_id_reaches_the_logs_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = AdminToken::generate();
    let upstream = FakeUpstream::start().await;
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEHOUSE_ADMIN_TOKEN", admin_token.expose())
        .env("GATEHOUSE__LOG__LEVEL", "trace")
        .env("RUST_LOG", "trace")
        .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__UPSTREAM__ALLOW_PRIVATE", "true")
        .env("GATEHOUSE__AUDIT__FLUSH_INTERVAL", "50ms")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let readers = vec![
        collect(child.stdout.take().unwrap(), log.clone()),
        collect(child.stderr.take().unwrap(), log.clone()),
    ];
    let mut guard = Guard(Some(child));

    // The bound addresses from the startup line.
    let deadline = Instant::now() + Duration::from_secs(60);
    let serving = loop {
        let text = strip_ansi(&log.lock());
        if let Some(line) = text.lines().find(|l| l.contains("gatehouse is serving")) {
            break line.to_owned();
        }
        if Instant::now() > deadline || guard.0.as_mut().unwrap().try_wait().unwrap().is_some() {
            panic!("not serving:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr_of = |name: &str| -> String {
        let start = serving.find(&format!("{name}=")).unwrap() + name.len() + 1;
        serving[start..]
            .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .find(|s| !s.is_empty())
            .unwrap()
            .to_owned()
    };
    let proxy = addr_of("proxy");
    let admin = addr_of("admin");

    let credential = format!("credcanary{}", uuid::Uuid::new_v4().simple());
    let query_canary = format!("querycanary{}", uuid::Uuid::new_v4().simple());
    let header_canary = format!("headercanary{}", uuid::Uuid::new_v4().simple());
    let unknown_token = AgentToken::generate();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("http://{admin}{path}"))
            .bearer_auth(admin_token.expose())
    };
    let target: Value = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({"name": "Logged", "slug": "logged", "base_url": upstream.url("/base")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target_id = target["id"].as_str().unwrap().to_owned();
    let method = api(
        reqwest::Method::POST,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .json(&json!({"label": "key", "type": "bearer", "credential": credential}))
    .send()
    .await
    .unwrap();
    assert_eq!(method.status().as_u16(), 201);
    let created: Value = api(reqwest::Method::POST, "/api/tokens")
        .json(&json!({"name": "mcp logged agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    let granted = api(
        reqwest::Method::PUT,
        &format!("/api/tokens/{token_id}/permissions/{target_id}"),
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert!(granted.status().is_success());

    // Wait (bounded) until the proxy knows the token and the grant.
    let mut admitted = false;
    for _ in 0..40 {
        let response = http
            .get(format!("http://{proxy}/discovery"))
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
    let urls = vec![format!("http://{proxy}/mcp")];
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

    let mut child = guard.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_with_deadline(&mut child, Duration::from_secs(30));
    for reader in readers {
        let _ = reader.join();
    }
    let text = log.lock().clone();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    let plain = strip_ansi(&text);
    assert!(
        plain.contains("gatehouse is serving"),
        "served with GATEHOUSE__LOG__LEVEL=trace"
    );
    session_ids.sort();
    session_ids.dedup();
    let mut secrets: Vec<(String, String)> = vec![
        ("the agent token".to_owned(), token.clone()),
        (
            "the unknown agent token".to_owned(),
            unknown_token.expose().to_owned(),
        ),
        (
            "the admin token".to_owned(),
            admin_token.expose().to_owned(),
        ),
        ("the injected credential".to_owned(), credential.clone()),
        ("the query canary".to_owned(), query_canary.clone()),
        ("the header canary".to_owned(), header_canary.clone()),
    ];
    for id in session_ids.iter().filter(|id| !id.is_empty()) {
        secrets.push(("an MCP session id".to_owned(), id.clone()));
    }
    // The token's secret part alone (without the `sg_` prefix) must not appear either.
    if let Some(rest) = token.strip_prefix("sg_") {
        secrets.push((
            "the agent token without its prefix".to_owned(),
            rest.to_owned(),
        ));
    }
    for (what, secret) in &secrets {
        if let Some(at) = text.find(secret.as_str()) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{what} appears in the logs:\n{}",
                text[line_start..line_end].replace(secret.as_str(), "<SECRET>")
            );
        }
    }
    println!(
        "mcp_logs: {} bytes of trace-level log searched; {} MCP session id(s) seen",
        text.len(),
        session_ids.len()
    );
}
