//! Helpers for tests that run the real `gatehouse` binary as a child process.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse::domain::tokens::{AdminToken, AgentToken};
use parking_lot::Mutex;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// The log text without terminal colour escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait for the child to exit; kill it and fail the test after `limit`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send the child SIGTERM (with `kill -TERM`) and wait for it to exit (at most 30 s).
pub fn terminate(child: &mut Child) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_with_deadline(child, Duration::from_secs(30))
}

/// Fail the test with the line (the secret masked) where one of `secrets`, given as (what it
/// is, its value), appears in `log`.
#[track_caller]
pub fn assert_not_logged(log: &str, secrets: &[(&str, &str)]) {
    for &(what, secret) in secrets {
        if let Some(at) = log.find(secret) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!(
                "{what} appears in the logs:\n{}",
                log[line_start..line_end].replace(secret, "<SECRET>")
            );
        }
    }
}

/// Fresh values no log line may contain: a credential to inject, a query value, a header value
/// and an agent token Gatehouse does not know.
pub struct Canaries {
    pub credential: String,
    pub query_canary: String,
    pub header_canary: String,
    pub unknown_token: AgentToken,
}

impl Canaries {
    pub fn generate() -> Self {
        Self {
            credential: format!("credcanary{}", uuid::Uuid::new_v4().simple()),
            query_canary: format!("querycanary{}", uuid::Uuid::new_v4().simple()),
            header_canary: format!("headercanary{}", uuid::Uuid::new_v4().simple()),
            unknown_token: AgentToken::generate(),
        }
    }

    /// For [`assert_not_logged`], with the agent token and the admin token: every secret of a
    /// log test, as (what it is, its value).
    pub fn secrets<'a>(
        &'a self,
        agent_token: &'a str,
        admin_token: &'a AdminToken,
    ) -> Vec<(&'static str, &'a str)> {
        vec![
            ("the agent token", agent_token),
            ("the unknown agent token", self.unknown_token.expose()),
            ("the admin token", admin_token.expose()),
            ("the injected credential", self.credential.as_str()),
            ("the query canary", self.query_canary.as_str()),
            ("the header canary", self.header_canary.as_str()),
        ]
    }
}

/// Collects a child's output on a thread for the whole run.
fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n').map_while(Result::ok) {
            let mut log = into.lock();
            log.push_str(&String::from_utf8_lossy(&line));
            log.push('\n');
        }
    })
}

/// The real binary (`gatehouse serve`) as a child process at trace level, for the log tests: a
/// clean environment (`PATH`, the admin token, `GATEHOUSE__LOG__LEVEL=trace`, the three
/// listeners on 127.0.0.1 ephemeral ports, loopback upstreams allowed, the audit flushed every
/// 50 ms, plus the caller's variables), a fresh temporary working directory (so the SQLite
/// default database), and its whole stdout and stderr collected into one log. Dropping it
/// before [`LoggedServer::stop`] kills the child.
pub struct LoggedServer {
    /// The bound proxy listener (`host:port`), from the "gatehouse is serving" line.
    pub proxy: String,
    /// The bound admin listener (`host:port`), from the same line.
    pub admin: String,
    /// A client that follows no redirect.
    pub http: reqwest::Client,
    admin_token: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LoggedServer {
    /// Spawn the binary with `admin_token` and the `extra_env` variables; return once it logged
    /// "gatehouse is serving" (fail the test if it exits first or takes more than 60 s).
    pub async fn start(admin_token: &AdminToken, extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEHOUSE_ADMIN_TOKEN", admin_token.expose())
            .env("GATEHOUSE__LOG__LEVEL", "trace")
            .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
            .env("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:0")
            .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
            .env("GATEHOUSE__UPSTREAM__ALLOW_PRIVATE", "true")
            .env("GATEHOUSE__AUDIT__FLUSH_INTERVAL", "50ms")
            .envs(extra_env.iter().copied())
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
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut server = Self {
            proxy: String::new(),
            admin: String::new(),
            http,
            admin_token: admin_token.expose().to_owned(),
            child: Some(child),
            log,
            readers,
            _dir: dir,
        };

        // The bound addresses from the startup line.
        let deadline = Instant::now() + Duration::from_secs(60);
        let serving = loop {
            let text = strip_ansi(&server.log.lock());
            if let Some(line) = text.lines().find(|l| l.contains("gatehouse is serving")) {
                break line.to_owned();
            }
            let exited = server.child.as_mut().unwrap().try_wait().unwrap().is_some();
            if Instant::now() > deadline || exited {
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
        server.proxy = addr_of("proxy");
        server.admin = addr_of("admin");
        server
    }

    /// `http://{proxy}{path}`.
    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// A Management API request with the admin token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    /// A Management API POST of `body`; the answer's JSON body.
    async fn post_json(&self, path: &str, body: Value) -> Value {
        self.api(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /api/targets {name, slug, base_url}`, then its auth method `{label: "key", type:
    /// kind, credential}` (asserting 201); the target's id.
    pub async fn make_target(
        &self,
        name: &str,
        slug: &str,
        base_url: &str,
        kind: &str,
        credential: &str,
    ) -> String {
        let target = self
            .post_json(
                "/api/targets",
                json!({"name": name, "slug": slug, "base_url": base_url}),
            )
            .await;
        let target_id = target["id"].as_str().unwrap().to_owned();
        let method = self
            .api(
                reqwest::Method::POST,
                &format!("/api/targets/{target_id}/auth-methods"),
            )
            .json(&json!({"label": "key", "type": kind, "credential": credential}))
            .send()
            .await
            .unwrap();
        assert_eq!(method.status().as_u16(), 201);
        target_id
    }

    /// `POST /api/tokens {name}`; (plaintext, id).
    pub async fn make_token(&self, name: &str) -> (String, String) {
        let created = self.post_json("/api/tokens", json!({"name": name})).await;
        (
            created["token"].as_str().unwrap().to_owned(),
            created["id"].as_str().unwrap().to_owned(),
        )
    }

    /// `PUT /api/tokens/{token_id}/permissions/{target_id} {}`, asserting success.
    pub async fn grant(&self, token_id: &str, target_id: &str) {
        let granted = self
            .api(
                reqwest::Method::PUT,
                &format!("/api/tokens/{token_id}/permissions/{target_id}"),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(granted.status().is_success());
    }

    /// Target `logged` ("Logged") at `base_url` with the bearer `credential`, and a token named
    /// `token_name` granted on it; (plaintext, token id).
    pub async fn logged_agent(
        &self,
        base_url: &str,
        credential: &str,
        token_name: &str,
    ) -> (String, String) {
        let target_id = self
            .make_target("Logged", "logged", base_url, "bearer", credential)
            .await;
        let (token, token_id) = self.make_token(token_name).await;
        self.grant(&token_id, &target_id).await;
        (token, token_id)
    }

    /// SIGTERM, wait for the exit (at most 30 s) and for the output readers: the exit status
    /// and the whole log (stdout and stderr, colour escapes kept).
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("the server is running");
        let exit = terminate(&mut child);
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        let log = self.log.lock().clone();
        (exit, log)
    }
}
