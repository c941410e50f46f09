//! `McpClient`: the OFFICIAL MCP TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned by
//! `tests/support/mcp-client/package-lock.json`) driven from Rust, for the `/mcp` tests (SPEC
//! §4a). One `node client.mjs` child per `McpClient`; commands go to its stdin as JSON lines and
//! answers come back on its stdout (see `tests/support/mcp-client/README.md`).
//!
//! - [`McpClient::connect`] creates an SDK `Client` with a `StreamableHTTPClientTransport`
//!   (`Authorization: Bearer …` on every HTTP request when a token is given) and runs the
//!   initialize handshake. With several URLs, HTTP request i goes to `urls[i % n]` (replicas
//!   behind a round-robin balancer). [`McpClient::connect_with_version`] makes the client offer
//!   a given protocol version. [`McpClient::connect_with_elicitation`] makes it declare
//!   form-mode elicitation and answer every `elicitation/create` the same way (a person
//!   accepting, declining or dismissing); [`McpClient::elicitations`] lists what it was asked.
//! - [`McpClient::list_tools`] also makes the SDK validate every later `structuredContent`
//!   against the tool's `outputSchema` (a mismatch is an error).
//! - [`McpClient::http_log`] tells, per HTTP request, which URL it went to, its method, status
//!   and response content type.
//!
//! Every command has a 30 s bound: a test never hangs on the driver. The first use runs `npm
//! ci` in `tests/support/mcp-client` when `node_modules` is missing or stale (once per machine,
//! under a file lock). Node.js >= 20 and npm must be on the `PATH`.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::node;

/// How long one driver command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The Node project: `tests/support/mcp-client`.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mcp-client")
}

/// What the SDK threw (or the driver refused): its message and, for HTTP failures, the HTTP
/// status in `code` (the SDK's `StreamableHTTPError`); for JSON-RPC errors the JSON-RPC code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCallError {
    pub message: String,
    pub code: Option<i64>,
    /// The JavaScript error class (`StreamableHTTPError`, `McpError`, `TypeError`, …).
    pub name: Option<String>,
}

impl McpCallError {
    fn from_json(error: &Value) -> Self {
        Self {
            message: error["message"]
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned),
            code: error["code"].as_i64(),
            name: error["name"].as_str().map(str::to_owned),
        }
    }
}

impl std::fmt::Display for McpCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {:?}, {})",
            self.message,
            self.code,
            self.name.as_deref().unwrap_or("?")
        )
    }
}

impl std::error::Error for McpCallError {}

/// One HTTP request the SDK transport made, as the driver's `fetch` saw it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpExchange {
    /// Order in which requests were sent (0, 1, 2, …).
    pub seq: u64,
    /// Which of the `connect` URLs it went to (`None`: not the endpoint itself).
    pub index: Option<usize>,
    pub url: String,
    pub method: String,
    /// The JSON-RPC method of a POST body (`initialize`, `tools/call`, …); `(response)` when
    /// the body is the client's response to a server request (an elicitation answer).
    pub rpc_method: Option<String>,
    /// The JSON-RPC `id` of a POST body (`None` for a notification); for an elicitation
    /// answer, the id of the server's `elicitation/create`.
    #[serde(default)]
    pub rpc_id: Option<Value>,
    /// The `protocolVersion` an `initialize` request offered.
    pub offered_protocol_version: Option<String>,
    /// The request's `MCP-Protocol-Version` header.
    pub request_protocol_version: Option<String>,
    /// The request's `Mcp-Session-Id` header.
    pub request_session_id: Option<String>,
    /// `None` when the request failed before any response.
    pub status: Option<u16>,
    pub content_type: Option<String>,
    /// The response's `Mcp-Session-Id` header.
    pub session_id: Option<String>,
    pub error: Option<String>,
}

/// The Node child running `client.mjs`.
pub struct McpClient {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    answers: tokio::sync::mpsc::UnboundedReceiver<Value>,
    next_id: u64,
    /// Holds the driver's stderr log.
    log_dir: tempfile::TempDir,
}

impl McpClient {
    /// Start a driver (runs `npm ci` first when needed). Nothing is connected yet.
    pub async fn start() -> Self {
        match tokio::task::spawn_blocking(spawn_driver).await {
            Ok(client) => client,
            // Re-raise the start's own message (node missing, npm ci failed, ...).
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("MCP client start task: {e}"),
        }
    }

    /// A driver connected to `url` with `token`, tools listed (so the SDK validates every
    /// `structuredContent` against its tool's `outputSchema` from now on). Panics on failure.
    pub async fn connected(url: &str, token: &str) -> Self {
        let mut client = Self::start().await;
        client
            .connect(&[url.to_owned()], Some(token))
            .await
            .unwrap_or_else(|e| panic!("MCP connect to {url}: {e}"));
        client
            .list_tools()
            .await
            .unwrap_or_else(|e| panic!("MCP tools/list at {url}: {e}"));
        client
    }

    /// Send one command (`{"op": …}`; the id is added) and wait at most [`COMMAND_TIMEOUT`].
    pub async fn send(&mut self, command: Value) -> Result<Value, McpCallError> {
        self.send_within(command, COMMAND_TIMEOUT).await
    }

    /// Like [`Self::send`] with another bound. Panics when the driver is gone or the bound
    /// passes without an answer (the test fails instead of hanging).
    pub async fn send_within(
        &mut self,
        mut command: Value,
        limit: Duration,
    ) -> Result<Value, McpCallError> {
        self.next_id += 1;
        let id = self.next_id;
        command["id"] = json!(id);
        let op = command["op"].as_str().unwrap_or("?").to_owned();
        let line = serde_json::to_string(&command).unwrap();
        let written = match self.stdin.as_mut() {
            Some(stdin) => write_line(stdin, &line),
            None => Err(std::io::Error::other("stdin already closed")),
        };
        if let Err(e) = written {
            panic!(
                "cannot write to the MCP client driver ({op}): {e}\nits stderr:\n{}",
                self.log_tail()
            );
        }
        let deadline = Instant::now() + limit;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout(remaining, self.answers.recv()).await;
            match outcome {
                Ok(Some(answer)) => {
                    // An answer to an earlier command that timed out: skip it.
                    if answer["id"] != json!(id) {
                        continue;
                    }
                    return if answer["ok"] == json!(true) {
                        Ok(answer["result"].clone())
                    } else {
                        Err(McpCallError::from_json(&answer["error"]))
                    };
                }
                Ok(None) => panic!(
                    "the MCP client driver exited during {op}; its stderr:\n{}",
                    self.log_tail()
                ),
                Err(_) => panic!(
                    "the MCP client driver did not answer {op} within {limit:?}; its stderr:\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    /// Connect (initialize + `notifications/initialized`) to `urls` (round robin, see the
    /// module doc) with `Authorization: Bearer {token}` when given. The result:
    /// `{serverVersion, instructions, protocolVersion, offeredProtocolVersion, capabilities,
    /// sessionId}`. A previous connection of this driver is closed first.
    pub async fn connect(
        &mut self,
        urls: &[String],
        token: Option<&str>,
    ) -> Result<Value, McpCallError> {
        self.send(json!({"op": "connect", "urls": urls, "token": token}))
            .await
    }

    /// Like [`Self::connect`], the client offering `version` in `initialize`.
    pub async fn connect_with_version(
        &mut self,
        urls: &[String],
        token: Option<&str>,
        version: &str,
    ) -> Result<Value, McpCallError> {
        self.send(json!({
            "op": "connect",
            "urls": urls,
            "token": token,
            "protocolVersion": version,
        }))
        .await
    }

    /// Like [`Self::connect`] to `urls` with `token`, the client declaring form-mode
    /// elicitation and answering every `elicitation/create` with `answer`: `{"action":
    /// "accept" | "decline" | "cancel", "content"?: {…}, "delayMs"?: n}` (`content` is sent
    /// only with accept; `delayMs` is how long the "person" takes).
    pub async fn connect_with_elicitation(
        &mut self,
        urls: &[String],
        token: &str,
        answer: Value,
    ) -> Result<Value, McpCallError> {
        self.send(json!({
            "op": "connect",
            "urls": urls,
            "token": token,
            "elicitation": answer,
        }))
        .await
    }

    /// The `elicitation/create` requests of the current connection, oldest first: `{requestId,
    /// params: {mode, message, requestedSchema, …}, receivedAt}` (`receivedAt` in ms since the
    /// Unix epoch).
    pub async fn elicitations(&mut self) -> Vec<Value> {
        let list = self
            .send(json!({"op": "elicitations"}))
            .await
            .unwrap_or_else(|e| panic!("elicitations: {e}"));
        list.as_array()
            .cloned()
            .unwrap_or_else(|| panic!("bad elicitations {list}"))
    }

    /// `tools/list`, as the server sent it (`{tools: [...]}`).
    pub async fn list_tools(&mut self) -> Result<Value, McpCallError> {
        self.send(json!({"op": "listTools"})).await
    }

    /// `tools/call`: the `CallToolResult` as it is (`content`, `structuredContent`, `isError`).
    /// An `Err` when the SDK threw (an HTTP 401, a JSON-RPC error, an output-schema mismatch).
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, McpCallError> {
        self.send(json!({"op": "callTool", "name": name, "arguments": arguments}))
            .await
    }

    /// `count` concurrent `tools/call`s (`Promise.all`); each element is a `CallToolResult` or
    /// `{"error": {message, code, name}}`.
    pub async fn call_many(
        &mut self,
        name: &str,
        arguments: Value,
        count: usize,
    ) -> Result<Vec<Value>, McpCallError> {
        let results = self
            .send(json!({"op": "callMany", "name": name, "arguments": arguments, "count": count}))
            .await?;
        Ok(results.as_array().cloned().unwrap_or_default())
    }

    /// Every HTTP request of the current connection, oldest first.
    pub async fn http_log(&mut self) -> Vec<HttpExchange> {
        let log = self
            .send(json!({"op": "httpLog"}))
            .await
            .unwrap_or_else(|e| panic!("httpLog: {e}"));
        serde_json::from_value(log.clone()).unwrap_or_else(|e| panic!("bad httpLog {log}: {e}"))
    }

    /// Close the SDK client; the driver exits.
    pub async fn close(mut self) {
        let _ = self.send(json!({"op": "close"})).await;
        if let Some(mut child) = self.child.take() {
            drop(self.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The driver's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("client.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- MCP client driver log ---\n{}", self.log_tail());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading tool results
// ---------------------------------------------------------------------------------------------

/// `isError` of a `CallToolResult` (absent = false).
pub fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// The `structuredContent` of a `CallToolResult`; panics when there is none.
#[track_caller]
pub fn structured(result: &Value) -> &Value {
    let content = &result["structuredContent"];
    assert!(
        content.is_object(),
        "a tool result with structuredContent: {result}"
    );
    content
}

/// The first text content of a `CallToolResult`; panics when there is none.
#[track_caller]
pub fn text(result: &Value) -> &str {
    result["content"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["type"] == "text"))
        .and_then(|item| item["text"].as_str())
        .unwrap_or_else(|| panic!("a tool result with text content: {result}"))
}

/// The first text content parsed as JSON; panics when it is not JSON.
#[track_caller]
pub fn text_json(result: &Value) -> Value {
    let text = text(result);
    serde_json::from_str(text).unwrap_or_else(|e| panic!("text content is not JSON ({e}): {text}"))
}

/// A header of an `api_request` result's `headers` object, by name in any case; a value given
/// as a list is joined with ", ".
pub fn result_header(headers: &Value, name: &str) -> Option<String> {
    let map = headers.as_object()?;
    let (_, value) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Starting the driver
// ---------------------------------------------------------------------------------------------

/// One command line to the driver (small: the pipe never blocks for long).
fn write_line(stdin: &mut ChildStdin, line: &str) -> std::io::Result<()> {
    stdin.write_all(line.as_bytes())?;
    stdin.write_all(b"\n")?;
    stdin.flush()
}

fn spawn_driver() -> McpClient {
    let dir = node::ensure_node_modules(&project_dir(), node_missing_message);
    let log_dir = tempfile::tempdir().unwrap();
    let log = File::create(log_dir.path().join("client.log")).unwrap();
    let mut child = Command::new("node")
        .arg("client.mjs")
        .current_dir(&dir)
        .env("NODE_ENV", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("{}", node_missing_message(&e.to_string())));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Value>(&line) {
                Ok(answer) => {
                    // The receiver may be gone (test over); keep draining anyway.
                    let _ = tx.send(answer);
                }
                Err(e) => eprintln!("MCP client driver: not a JSON answer ({e}): {line}"),
            }
        }
    });
    McpClient {
        child: Some(child),
        stdin,
        answers: rx,
        next_id: 0,
        log_dir,
    }
}

fn node_missing_message(detail: &str) -> String {
    format!(
        "the MCP tests need Node.js (>= 20) and npm on the PATH to run the MCP SDK client in \
         tests/support/mcp-client ({detail}). Install them, e.g. `apt-get install -y nodejs npm`."
    )
}
