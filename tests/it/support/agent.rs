//! Agent-side helpers: set up a target, token and permission through the admin HTTP API, call the
//! proxy (through reqwest, or as raw bytes so nothing normalises the request target), read audit
//! rows and metrics, and poll with bounded loops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gatehouse::domain::audit::{AuditEntry, AuditQuery};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use super::TestApp;
use super::admin::{Reply, json_id};
use super::upstream::FakeUpstream;

/// The bound of SPEC §7: changes take effect within 2 seconds.
pub const PROPAGATION: Duration = Duration::from_secs(2);

/// A token with a permission on one target, all made through the admin API.
#[derive(Debug, Clone)]
pub struct Agent {
    pub token: String,
    pub token_id: Uuid,
    pub token_name: String,
    pub target_id: Uuid,
    pub slug: String,
    pub target: Value,
}

impl TestApp {
    /// `POST /api/targets {name, slug, base_url}` → 201; the target.
    pub async fn make_target(&self, slug: &str, base_url: &str) -> Value {
        let reply = self
            .api()
            .post(
                "/api/targets",
                json!({"name": format!("Target {slug}"), "slug": slug, "base_url": base_url}),
            )
            .await;
        reply.expect(201).clone()
    }

    /// `POST /api/targets/{id}/auth-methods` (default) → 201; the method.
    pub async fn make_auth_method(&self, target_id: Uuid, kind: &str, credential: Value) -> Value {
        self.api()
            .create_auth_method(target_id, &format!("{kind} method"), kind, credential)
            .await
    }

    /// `POST /api/tokens {name, allowed_ips?}` → 201; (plaintext, id).
    pub async fn make_token(&self, name: &str, allowed_ips: Option<&[&str]>) -> (String, Uuid) {
        let mut body = json!({"name": name});
        if let Some(ips) = allowed_ips {
            body["allowed_ips"] = json!(ips);
        }
        let reply = self.api().post("/api/tokens", body).await;
        let created = reply.expect(201);
        let token = created["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no plaintext token in {created}"))
            .to_owned();
        assert!(token.starts_with("sg_"), "{token}");
        (token, json_id(created))
    }

    /// `PUT /api/tokens/{token}/permissions/{target} {read_only}` → 201 or 200.
    pub async fn grant(&self, token_id: Uuid, target_id: Uuid, read_only: bool) {
        let reply = self
            .api()
            .put(
                &format!("/api/tokens/{token_id}/permissions/{target_id}"),
                json!({"read_only": read_only}),
            )
            .await;
        assert!(
            reply.status == 201 || reply.status == 200,
            "grant: {} {}",
            reply.status,
            reply.text
        );
    }

    /// A target at `base_url` (with `credential` as its default auth method, when given), a
    /// token named `{slug}-agent` and a read-write permission.
    pub async fn agent_for(
        &self,
        slug: &str,
        base_url: &str,
        credential: Option<(&str, Value)>,
    ) -> Agent {
        let target = self.make_target(slug, base_url).await;
        let target_id = json_id(&target);
        if let Some((kind, credential)) = credential {
            self.make_auth_method(target_id, kind, credential).await;
        }
        let token_name = format!("{slug}-agent");
        let (token, token_id) = self.make_token(&token_name, None).await;
        self.grant(token_id, target_id, false).await;
        let agent = Agent {
            token,
            token_id,
            token_name,
            target_id,
            slug: slug.to_owned(),
            target,
        };
        // Setup goes through the change feed; wait (bounded) until the proxy has it.
        self.wait_until_admitted(&agent).await;
        agent
    }

    /// Poll `GET /gateway/{slug}/__ready//probe` until it is no longer refused by steps 1–4 (at
    /// most 2 s). The probe's path is refused at step 5, so the upstream never sees it; it does
    /// leave `invalid_path` audit rows (see [`is_probe`]).
    pub async fn wait_until_admitted(&self, agent: &Agent) {
        let admitted = within(PROPAGATION, || async {
            let reply = self
                .call(
                    Method::GET,
                    &format!("/gateway/{}{PROBE}", agent.slug),
                    Some(&agent.token),
                )
                .await;
            !matches!(reply.status, 401 | 403 | 404)
        })
        .await;
        assert!(
            admitted,
            "the proxy did not admit a freshly set-up token within 2 s"
        );
    }

    /// A request to the proxy listener, with `Authorization: Bearer {token}` when given.
    pub fn gateway(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.proxy_url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>) -> Reply {
        let reply = Reply::read(self.gateway(method, path, token).send().await.unwrap()).await;
        // What the proxy counts: requests to `/gateway/{slug}` that passed steps 1–2.
        let names_a_target = path
            .strip_prefix("/gateway/")
            .is_some_and(|rest| !rest.starts_with('/') && !rest.is_empty());
        let authenticated =
            reply.status != 401 && !(reply.status == 403 && reply.text.contains("ip not allowed"));
        if names_a_target && authenticated {
            self.gateway_answers.fetch_add(1, Ordering::SeqCst);
        }
        reply
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token)).await
    }

    /// Raw bytes to the proxy listener; see [`raw_http`].
    pub async fn raw(&self, request: &[u8]) -> RawReply {
        raw_http(self.running().proxy_addr, request).await
    }

    /// `/metrics` once every `/gateway/{slug}` answer sent through [`TestApp::call`] is counted
    /// in it: the proxy counts a request in its logging phase, just *after* the answer went out,
    /// so a snapshot taken right after a reply may miss it.
    pub async fn settled_metrics_text(&self) -> String {
        let expected = self.gateway_answers.load(Ordering::SeqCst) as f64;
        let mut text = String::new();
        for _ in 0..100 {
            text = self.metrics_text().await;
            let counted = text
                .lines()
                .find_map(|line| line.strip_prefix("gatehouse_request_duration_seconds_count "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if counted >= expected {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy counted fewer than {expected} gateway requests within 5 s: {text}");
    }

    /// `GET /metrics` on the metrics listener, as text.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .http
            .get(self.metrics_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }

    /// Every audit row (up to 500), newest first.
    pub async fn audit_rows(&self) -> Vec<AuditEntry> {
        let (rows, _) = self
            .running()
            .store()
            .audit_page(&AuditQuery {
                limit: 500,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        rows
    }

    /// Every audit row except readiness probes (up to 500), newest first.
    pub async fn audit_rows_without_probes(&self) -> Vec<AuditEntry> {
        let mut rows = self.audit_rows().await;
        rows.retain(|row| !is_probe(row));
        rows
    }

    /// Poll (at most 5 s) until at least `count` audit rows other than readiness probes exist;
    /// then wait a little more (for rows that should not come) and return them, newest first.
    pub async fn wait_for_audit(&self, count: usize) -> Vec<AuditEntry> {
        let reached = within(Duration::from_secs(5), || async {
            self.audit_rows_without_probes().await.len() >= count
        })
        .await;
        let rows = self.audit_rows_without_probes().await;
        assert!(
            reached,
            "expected at least {count} audit rows within 5 s, got {}: {rows:#?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.audit_rows_without_probes().await
    }
}

/// The readiness probe's path after the slug.
pub const PROBE: &str = "/__ready//probe";

/// Is this audit row one of the readiness probes of [`TestApp::wait_until_admitted`]?
pub fn is_probe(row: &AuditEntry) -> bool {
    row.path.contains("/__ready/")
}

/// Poll `check` every 50 ms until it returns true, at most `limit` and 400 rounds; true when it
/// did.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..400 {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Assert an error reply of the proxy: status, JSON content type, `{"error": message}`.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, message: &str) {
    let got = reply.expect_error(status, None);
    assert_eq!(got, message, "{}", reply.text);
}

/// Assert a 401 with a `WWW-Authenticate: Bearer` challenge; `case` names the request in the
/// failure messages.
#[track_caller]
pub fn assert_bearer_401(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.text);
    let challenge = reply.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer"),
        "{case}: WWW-Authenticate should be Bearer, got {challenge:?}"
    );
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub json: Value,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// Assert a JSON error reply: status, content type and `error` message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status}: {}\n{}",
            self.head,
            String::from_utf8_lossy(&self.body)
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error bodies are JSON, got {content_type:?}: {}",
            self.head
        );
        assert_eq!(
            self.json,
            json!({"error": message}),
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

/// Send `request` as is over a new TCP connection and read one response (framed by
/// Content-Length, chunked encoding, or the connection closing), within 10 s.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut connection = RawConnection::open(addr).await;
    connection
        .exchange(request)
        .await
        .unwrap_or_else(|error| panic!("no response: {error}"))
}

/// One client connection to speak raw HTTP/1.1 on, request after request.
pub struct RawConnection {
    stream: tokio::net::TcpStream,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// Write `request`, read one response within 10 s. An error when the connection failed
    /// (closed or reset) before any byte of a response arrived.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<RawReply, String> {
        let stream = &mut self.stream;
        let exchange = async {
            stream
                .write_all(request)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                if let Some(body) = complete_body(&buffer) {
                    return Ok((buffer, body));
                }
                match stream.read(&mut chunk).await {
                    Ok(0) if buffer.is_empty() => return Err("closed".to_owned()),
                    Err(e) if buffer.is_empty() => return Err(format!("read: {e}")),
                    Ok(0) | Err(_) => {
                        let body = header_end(&buffer)
                            .map(|end| buffer[end..].to_vec())
                            .unwrap_or_default();
                        return Ok((buffer, body));
                    }
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let (buffer, body) = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "no response within 10 s".to_owned())??;
        let head = header_end(&buffer)
            .map(|end| String::from_utf8_lossy(&buffer[..end]).into_owned())
            .unwrap_or_else(|| String::from_utf8_lossy(&buffer).into_owned());
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(RawReply {
            status,
            head,
            body,
            json,
        })
    }
}

/// Index just past `\r\n\r\n`.
fn header_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// The body once the whole response is in `buffer`.
fn complete_body(buffer: &[u8]) -> Option<Vec<u8>> {
    let end = header_end(buffer)?;
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let rest = &buffer[end..];
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (rest.len() >= length).then(|| rest[..length].to_vec());
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&rest[at..line_end]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                return Some(body);
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    let status_has_no_body = head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304");
    status_has_no_body.then(Vec::new)
}

/// The value of one series in Prometheus text: the sum over every sample of `name` whose labels
/// include all of `labels`; `None` when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(pair) => pair,
            None => continue,
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let pairs: Vec<(String, String)> = series_labels
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        let matches = labels
            .iter()
            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
        if matches {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// A GET of `target` (the raw request target) to the proxy, with the agent token.
pub fn raw_get(addr: SocketAddr, target: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A `TestApp` on a fresh database with the test configuration changed by `change`.
pub async fn spawn_configured(change: impl FnOnce(&mut gatehouse::config::Config)) -> TestApp {
    spawn_configured_on(super::TestDb::new().await, change).await
}

/// Like [`spawn_configured`], on a database prepared by the caller.
pub async fn spawn_configured_on(
    db: super::TestDb,
    change: impl FnOnce(&mut gatehouse::config::Config),
) -> TestApp {
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = super::app::rand_key();
    let mut config = TestApp::config(&db, &admin_token, key);
    change(&mut config);
    TestApp::spawn_with(db, admin_token, key, config).await
}

/// Call `f` every 50 ms until `done` accepts its result, at most `limit` and 400 rounds; whether
/// it did, and the last result.
pub async fn until<T, F, Fut>(limit: Duration, mut f: F, done: impl Fn(&T) -> bool) -> (bool, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + limit;
    let mut rounds = 0;
    loop {
        let value = f().await;
        rounds += 1;
        if done(&value) {
            return (true, value);
        }
        if Instant::now() >= deadline || rounds >= 400 {
            return (false, value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The targets of the discovery tests, all made through the admin API at `upstream`: token
/// `lister` may use `github`, `linear` (read-only) and `disabled` (disabled after its grant);
/// token `other` may use `hidden` only.
pub struct DiscoveryTargets {
    pub token: String,
    pub token_id: Uuid,
    pub other_token: String,
    pub other_id: Uuid,
    pub github: Value,
    pub linear: Value,
    pub hidden: Value,
    pub disabled: Value,
}

impl TestApp {
    pub async fn discovery_targets(&self, upstream: &FakeUpstream) -> DiscoveryTargets {
        let (token, token_id) = self.make_token("lister", None).await;
        let (other_token, other_id) = self.make_token("other", None).await;

        let github = self.make_target("github", &upstream.url("/gh")).await;
        let linear = self
            .make_target("linear", &upstream.url("/linear/v1"))
            .await;
        let hidden = self.make_target("hidden", &upstream.url("/hidden")).await;
        let disabled = self.make_target("disabled", &upstream.url("/off")).await;
        self.grant(token_id, json_id(&github), false).await;
        self.grant(token_id, json_id(&linear), true).await;
        self.grant(token_id, json_id(&disabled), false).await;
        self.grant(other_id, json_id(&hidden), false).await;
        self.api()
            .patch(
                &format!("/api/targets/{}", json_id(&disabled)),
                json!({"enabled": false}),
            )
            .await
            .expect(200);
        DiscoveryTargets {
            token,
            token_id,
            other_token,
            other_id,
            github,
            linear,
            hidden,
            disabled,
        }
    }
}
