//! `OidcServer`: a REAL authorization server for the connected-accounts tests — panva's
//! `oidc-provider` (pinned by `tests/support/oidc/package-lock.json`) run by Node.js on
//! 127.0.0.1, one isolated instance per test — plus its "Graph stand-in" API on a second port,
//! which checks every bearer token with the provider's introspection endpoint.
//!
//! - PKCE (S256) required; `offline_access` (with `prompt=consent`) issues refresh tokens; every
//!   refresh rotates the refresh token, and presenting a consumed one revokes the whole grant.
//!   That is [`Shape::Microsoft`]; [`Shape::Google`] behaves like Google instead (see there).
//! - [`OidcServer::stats`] counts token-endpoint calls per grant type; [`OidcServer::fail_next`],
//!   [`OidcServer::delay_next`] and [`OidcServer::inject`] put failures in front of the real
//!   token endpoint; [`OidcServer::revoke_account`] revokes an account's grants (as a user would
//!   in their account settings).
//! - [`BrowserClient`] plays the browser: a cookie jar, redirects followed one by one, and the
//!   provider's login and consent forms submitted.
//!
//! The first use runs `npm ci` in `tests/support/oidc` when `node_modules` is missing or stale
//! (once per machine, under a file lock). Node.js >= 20 and npm must be on the `PATH`.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::node;

/// How long the server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Every HTTP call of the harness itself.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Node project: `tests/support/oidc`.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc")
}

/// Which provider the server behaves like (`OIDC_SHAPE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// Microsoft identity platform: a refresh token for `offline_access` (with `prompt=consent`),
    /// rotated on every refresh; a consumed one presented again revokes the whole grant. The
    /// profile is the Graph stand-in's `/v1.0/me`.
    #[default]
    Microsoft,
    /// Google: a refresh token only when the authorization request carried
    /// `access_type=offline` and `prompt=consent`, and NONE when the account already holds a live
    /// one for this client (a re-consent); refresh tokens are never rotated and refresh answers
    /// carry no `refresh_token`; the profile is the OpenID userinfo endpoint
    /// ([`OidcServer::userinfo_url`]); revoking any token (`token` form field) revokes every
    /// grant of that account for the client.
    Google,
}

impl Shape {
    fn as_env(self) -> &'static str {
        match self {
            Self::Microsoft => "microsoft",
            Self::Google => "google",
        }
    }
}

/// What the one confidential client of the server looks like.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    pub client_id: String,
    pub client_secret: String,
    /// Exact redirect URIs. More can be allowed later with [`OidcServer::set_redirect_uris`]
    /// (Gatehouse learns its own port only once it has started).
    pub redirect_uris: Vec<String>,
    /// Lifetime of access tokens, in seconds.
    pub access_ttl_secs: u64,
    /// Which provider the server behaves like.
    pub shape: Shape,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            client_id: "gatehouse-test".to_owned(),
            client_secret: format!("secret-{}", uuid::Uuid::new_v4().simple()),
            redirect_uris: Vec::new(),
            access_ttl_secs: 3600,
            shape: Shape::default(),
        }
    }
}

/// Counters of the control endpoint (`GET /__control/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct OidcStats {
    /// Every call that reached the token endpoint, by grant type (injected failures included).
    pub authorization_code: u64,
    pub refresh_token: u64,
    pub other_grant: u64,
    /// Of those, the ones the real token endpoint answered with 200.
    pub authorization_code_ok: u64,
    pub refresh_token_ok: u64,
    /// ... and with an error.
    pub authorization_code_error: u64,
    pub refresh_token_error: u64,
    /// `refresh_token` calls the real endpoint answered `invalid_grant` (reuse, revoked grant).
    pub refresh_token_invalid_grant: u64,
    /// Calls answered by an injected failure.
    pub injected: u64,
    /// Delayed calls whose client hung up before the delay ended (never reached the endpoint).
    pub dropped: u64,
    pub revocation: u64,
    pub introspection: u64,
    /// Requests to the Graph stand-in, and those it answered 401.
    pub graph_requests: u64,
    pub graph_unauthorized: u64,
    /// Grants revoked through [`OidcServer::revoke_account`].
    pub revoked_grants: u64,
    /// [`Shape::Google`]: code exchanges answered without a refresh token because the account
    /// already held a live one (a re-consent).
    pub refresh_token_withheld: u64,
}

/// One call of the revocation endpoint, as the server saw it (`GET /__control/revocations`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Revocation {
    /// The form field names, in order.
    pub fields: Vec<String>,
    pub token_type_hint: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub client_auth: String,
    /// What the `token` field was: `refresh_token`, `access_token`, or `None` (unknown, dead or
    /// missing).
    pub token: Option<String>,
    /// The endpoint's answer.
    pub status: u16,
}

/// Assert that the provider saw exactly one refresh between `before` and `after`, that it
/// succeeded, that no refresh token was reused and that the Graph stand-in refused no token.
#[track_caller]
pub fn assert_one_refresh(before: &OidcStats, after: &OidcStats) {
    assert_eq!(
        after.refresh_token - before.refresh_token,
        1,
        "exactly one refresh at the provider: {after:?}"
    );
    assert_eq!(after.refresh_token_ok - before.refresh_token_ok, 1);
    assert_eq!(after.refresh_token_invalid_grant, 0, "no reuse: {after:?}");
    assert_eq!(
        after.graph_unauthorized, 0,
        "every token was live: {after:?}"
    );
}

/// One injected behaviour for the next token-endpoint calls (`POST /__control/fail`).
#[derive(Debug, Clone, Default)]
pub struct FailRule {
    /// Answer with this status instead of calling the real endpoint.
    pub status: Option<u16>,
    /// Wait this long first. Without `status` the call then goes on to the real endpoint —
    /// unless the client hung up meanwhile: then it is dropped (counted in `dropped`), so a
    /// client-side timeout never rotates a refresh token behind the client's back.
    pub delay_ms: Option<u64>,
    /// How many calls this applies to.
    pub count: u32,
    /// Only calls with this `grant_type` (`refresh_token`, `authorization_code`); all if `None`.
    pub grant_type: Option<String>,
    /// The body: a JSON value, or a string sent as `text/plain` (a body that is not JSON).
    /// Default: `{"error": "temporarily_unavailable", ...}` for 429 and 5xx.
    pub body: Option<Value>,
    /// Extra response headers, e.g. `Retry-After`.
    pub headers: Vec<(String, String)>,
}

/// A token-endpoint answer.
#[derive(Debug, Clone)]
pub struct TokenReply {
    pub status: u16,
    pub json: Value,
}

impl TokenReply {
    pub fn access_token(&self) -> Option<&str> {
        self.json["access_token"].as_str()
    }

    pub fn refresh_token(&self) -> Option<&str> {
        self.json["refresh_token"].as_str()
    }

    /// The OAuth `error` field.
    pub fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    pub fn expires_in(&self) -> Option<u64> {
        self.json["expires_in"].as_u64()
    }
}

/// A PKCE pair (S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        Self::from_verifier(verifier)
    }

    pub fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// The Microsoft 365 scopes of the provider registry, as the server knows them.
pub const MICROSOFT_SCOPES: &str = "offline_access User.Read Mail.ReadWrite Mail.ReadWrite.Shared \
     Mail.Send Mail.Send.Shared Calendars.ReadWrite Calendars.ReadWrite.Shared";

/// The Google Workspace scopes of the provider registry (its built-in ones, no `offline_access`:
/// Google asks for `access_type=offline` instead).
pub const GOOGLE_SCOPES: &str = "openid email profile https://www.googleapis.com/auth/gmail.modify \
     https://www.googleapis.com/auth/calendar";

pub struct OidcServer {
    child: Option<Child>,
    issuer: String,
    graph_port: u16,
    options: OidcOptions,
    http: reqwest::Client,
    /// Holds the server's stderr log.
    log_dir: tempfile::TempDir,
}

impl OidcServer {
    /// Start a fresh, isolated server (runs `npm ci` first when needed).
    pub async fn start(options: OidcOptions) -> Self {
        let opts = options.clone();
        let (child, issuer, graph_port, log_dir) =
            match tokio::task::spawn_blocking(move || spawn_server(&opts)).await {
                Ok(started) => started,
                // Re-raise the start's own message (node missing, npm ci failed, ...).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("OIDC server start task: {e}"),
            };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap();
        Self {
            child: Some(child),
            issuer,
            graph_port,
            options,
            http,
            log_dir,
        }
    }

    /// `http://127.0.0.1:{port}`, also the provider's `issuer`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.options.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.options.client_secret
    }

    pub fn options(&self) -> &OidcOptions {
        &self.options
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn revoke_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }

    /// The OpenID userinfo endpoint (Google-style profile: `email`, needs the `email` scope).
    pub fn userinfo_url(&self) -> String {
        format!("{}/me", self.issuer)
    }

    /// `http://127.0.0.1:{graph_port}`: the Graph stand-in, where every path needs a bearer token.
    pub fn graph_root(&self) -> String {
        format!("http://127.0.0.1:{}", self.graph_port)
    }

    /// `http://127.0.0.1:{graph_port}/v1.0`: profile at `{graph_base}/me`, any other path echoes
    /// `{path, query, method, sub}`.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.graph_root())
    }

    /// A Google-style userinfo on the stand-in: `{sub, name, email}`.
    pub fn graph_userinfo_url(&self) -> String {
        format!("{}/oauth2/v3/userinfo", self.graph_root())
    }

    /// A Gmail API stand-in base on the stand-in (`/gmail/v1`, echoes like any other path).
    pub fn gmail_base(&self) -> String {
        format!("{}/gmail/v1", self.graph_root())
    }

    /// A Calendar API stand-in base on the stand-in (`/calendar/v3`, echoes).
    pub fn calendar_base(&self) -> String {
        format!("{}/calendar/v3", self.graph_root())
    }

    /// An authorization request as Gatehouse sends it (`response_type=code`, `prompt=consent`,
    /// PKCE S256).
    pub fn authorization_request(
        &self,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        pkce: &Pkce,
    ) -> String {
        self.authorization_request_with(redirect_uri, scope, state, pkce, &[])
    }

    /// [`Self::authorization_request`] with extra query parameters (Google's
    /// `access_type=offline`).
    pub fn authorization_request_with(
        &self,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> String {
        let mut url = url::Url::parse(&self.authorize_url()).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.options.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "consent")
            .extend_pairs(extra);
        url.into()
    }

    /// Exchange a code (client_secret_basic).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> TokenReply {
        self.token_call(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    /// Refresh (client_secret_basic).
    pub async fn refresh(&self, refresh_token: &str) -> TokenReply {
        self.token_call(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token_call(&self, form: &[(&str, &str)]) -> TokenReply {
        let response = self
            .http
            .post(self.token_url())
            .basic_auth(&self.options.client_id, Some(&self.options.client_secret))
            .form(form)
            .send()
            .await
            .expect("token endpoint reachable");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        TokenReply { status, json }
    }

    /// The provider's introspection of a token, as the client.
    pub async fn introspect(&self, token: &str) -> Value {
        self.http
            .post(self.introspection_url())
            .basic_auth(&self.options.client_id, Some(&self.options.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection endpoint reachable")
            .json()
            .await
            .unwrap()
    }

    fn control_url(&self, path: &str) -> String {
        format!("{}/__control/{path}", self.issuer)
    }

    async fn control_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.control_url(path))
            .json(&body)
            .send()
            .await
            .expect("OIDC control endpoint reachable");
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(
            status.is_success(),
            "control {path} answered {status}: {body}"
        );
        body
    }

    /// Token-endpoint (and stand-in) counters.
    pub async fn stats(&self) -> OidcStats {
        self.http
            .get(self.control_url("stats"))
            .send()
            .await
            .expect("OIDC control endpoint reachable")
            .json()
            .await
            .unwrap()
    }

    /// The query of every request the authorization endpoint received (initial requests only,
    /// not the resumes after login and consent), oldest first.
    pub async fn authorize_requests(&self) -> Vec<serde_json::Map<String, Value>> {
        self.control_get("authorize_requests").await
    }

    /// Every call of the revocation endpoint, oldest first.
    pub async fn revocations(&self) -> Vec<Revocation> {
        self.control_get("revocations").await
    }

    async fn control_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(self.control_url(path))
            .send()
            .await
            .expect("OIDC control endpoint reachable")
            .json()
            .await
            .unwrap()
    }

    /// Zero the counters, forget the recorded authorization and revocation requests and drop
    /// every pending injected failure.
    pub async fn reset(&self) {
        self.control_post("reset", json!({})).await;
    }

    /// The next `count` token-endpoint calls (any grant type) answer `status` with a
    /// `temporarily_unavailable` JSON body (for 429/5xx) instead of reaching the endpoint.
    pub async fn fail_next(&self, status: u16, count: u32) {
        self.inject(FailRule {
            status: Some(status),
            count,
            ..FailRule::default()
        })
        .await;
    }

    /// The next `count` token-endpoint calls wait `ms` before going on to the real endpoint (a
    /// call whose client gave up meanwhile is dropped, see [`FailRule::delay_ms`]).
    pub async fn delay_next(&self, ms: u64, count: u32) {
        self.inject(FailRule {
            delay_ms: Some(ms),
            count,
            ..FailRule::default()
        })
        .await;
    }

    /// Queue any injected behaviour. Rules apply in the order they were queued.
    pub async fn inject(&self, rule: FailRule) {
        let mut body = json!({ "count": rule.count });
        if let Some(status) = rule.status {
            body["status"] = json!(status);
        }
        if let Some(delay) = rule.delay_ms {
            body["delay_ms"] = json!(delay);
        }
        if let Some(grant_type) = &rule.grant_type {
            body["grant_type"] = json!(grant_type);
        }
        if let Some(value) = &rule.body {
            body["body"] = value.clone();
        }
        if !rule.headers.is_empty() {
            let headers: serde_json::Map<String, Value> = rule
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            body["headers"] = Value::Object(headers);
        }
        self.control_post("fail", body).await;
    }

    /// Replace the redirect URIs allowed besides those given at start (exact match).
    pub async fn set_redirect_uris(&self, uris: &[&str]) {
        self.control_post("redirect_uris", json!({ "redirect_uris": uris }))
            .await;
    }

    /// Revoke every grant of the account with this login (all its tokens die): what a user does
    /// when they remove the app from their account. Returns how many grants were revoked.
    pub async fn revoke_account(&self, login: &str) -> u64 {
        self.control_post("revoke", json!({ "account": login }))
            .await["revoked_grants"]
            .as_u64()
            .unwrap()
    }

    /// How many live grants the account with this login has.
    pub async fn live_grants(&self, login: &str) -> u64 {
        let grants: Value = self
            .http
            .get(self.control_url("grants"))
            .send()
            .await
            .expect("OIDC control endpoint reachable")
            .json()
            .await
            .unwrap();
        grants[login].as_u64().unwrap_or(0)
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = {
                let start = log.len().saturating_sub(4000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(log.len());
                log[start..].to_owned()
            };
            eprintln!("--- OIDC server log ({}) ---\n{tail}", self.issuer);
        }
    }
}

#[derive(Deserialize)]
struct ReadyLine {
    issuer: String,
    graph_port: u16,
}

fn spawn_server(options: &OidcOptions) -> (Child, String, u16, tempfile::TempDir) {
    let dir = node::ensure_node_modules(&project_dir(), node_missing_message);
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("server.log");
    let log = File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .env("OIDC_PORT", "0")
        .env("GRAPH_PORT", "0")
        .env("OIDC_CLIENT_ID", &options.client_id)
        .env("OIDC_CLIENT_SECRET", &options.client_secret)
        .env("OIDC_REDIRECT_URIS", options.redirect_uris.join(","))
        .env("OIDC_ACCESS_TTL", options.access_ttl_secs.to_string())
        .env("OIDC_SHAPE", options.shape.as_env())
        // The server exits when this pipe closes: no orphan even if the test binary is killed.
        .env("OIDC_EXIT_ON_STDIN_EOF", "1")
        .env("NODE_ENV", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("{}", node_missing_message(&e.to_string())));

    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.trim_start().starts_with('{') && line.contains("\"issuer\"") {
                sent = tx.send(line).is_ok();
            }
            // Keep draining so the server never blocks on a full pipe.
        }
    });

    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => {
            let ready: ReadyLine = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad ready line from the OIDC server: {e}: {line}"));
            (child, ready.issuer, ready.graph_port, log_dir)
        }
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "the OIDC test server did not get ready within {READY_TIMEOUT:?} ({e}; exit: \
                 {status:?}). Its stderr:\n{log}"
            );
        }
    }
}

fn node_missing_message(detail: &str) -> String {
    format!(
        "the connected-accounts tests need Node.js (>= 20) and npm on the PATH to run the OIDC \
         test server in tests/support/oidc ({detail}). Install them, e.g. `apt-get install -y \
         nodejs npm`."
    )
}

// ---------------------------------------------------------------------------------------------
// BrowserClient
// ---------------------------------------------------------------------------------------------

/// What the user does on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Approve,
    /// Follow the page's "Cancel" link: the provider redirects with `error=access_denied`.
    Deny,
}

/// One response, redirects not followed.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    /// The `Location` header, resolved against `url`.
    pub location: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
struct StoredCookie {
    host: String,
    path: String,
    name: String,
    value: String,
}

/// A browser: a cookie jar (by host and path, ports ignored as browsers do), redirects followed
/// one at a time, and the provider's devInteractions login and consent forms submitted.
pub struct BrowserClient {
    http: reqwest::Client,
    jar: Mutex<Vec<StoredCookie>>,
}

impl Default for BrowserClient {
    fn default() -> Self {
        Self::new()
    }
}

/// At most this many requests in one [`BrowserClient::sign_in`].
const MAX_HOPS: usize = 30;

impl BrowserClient {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(HTTP_TIMEOUT)
                .build()
                .unwrap(),
            jar: Mutex::new(Vec::new()),
        }
    }

    /// One GET, cookies sent and stored, redirects not followed.
    pub async fn get(&self, url: &str) -> Page {
        self.send(reqwest::Method::GET, url, None).await
    }

    /// One form POST, cookies sent and stored, redirects not followed.
    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> Page {
        self.send(reqwest::Method::POST, url, Some(fields)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> Page {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
        let mut request = self.http.request(method, parsed.clone());
        if let Some(cookie) = self.cookie_header(&parsed) {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        if let Some(fields) = form {
            request = request.form(fields);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("browser request to {url} failed: {e}"));
        let status = response.status().as_u16();
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Ok(value) = value.to_str() {
                self.store_cookie(&parsed, value);
            }
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                parsed
                    .join(v)
                    .unwrap_or_else(|e| panic!("bad Location {v:?} from {url}: {e}"))
                    .to_string()
            });
        let body = response.text().await.unwrap_or_default();
        Page {
            url: url.to_owned(),
            status,
            location,
            body,
        }
    }

    /// Sign in as `login` and approve the consent: starting at `start_url`, follow redirects and
    /// fill the provider's forms until the browser is sent to a URL starting with `stop_prefix`
    /// (typically the redirect URI); that URL is returned, NOT requested.
    pub async fn sign_in(&self, start_url: &str, login: &str, stop_prefix: &str) -> String {
        self.authorize(start_url, login, Consent::Approve, stop_prefix)
            .await
    }

    /// Like [`Self::sign_in`], with the consent decision given.
    pub async fn authorize(
        &self,
        start_url: &str,
        login: &str,
        consent: Consent,
        stop_prefix: &str,
    ) -> String {
        let mut next: (String, Option<Vec<(String, String)>>) = (start_url.to_owned(), None);
        let mut logins = 0;
        let mut trail: Vec<String> = Vec::new();
        for _ in 0..MAX_HOPS {
            let (url, form) = next;
            if url.starts_with(stop_prefix) {
                return url;
            }
            trail.push(format!(
                "{} {url}",
                if form.is_some() { "POST" } else { "GET" }
            ));
            let page = match &form {
                Some(fields) => self.post_form(&url, fields).await,
                None => self.get(&url).await,
            };
            if (300..400).contains(&page.status) {
                let location = page
                    .location
                    .unwrap_or_else(|| panic!("{} from {url} without Location", page.status));
                next = (location, None);
                continue;
            }
            let fail = |why: &str| -> ! {
                panic!(
                    "browser: {why} at {url} (status {}).\nTrail:\n  {}\nBody:\n{}",
                    page.status,
                    trail.join("\n  "),
                    snippet(&page.body)
                )
            };
            if page.status != 200 {
                fail("unexpected answer");
            }
            let Some(form_html) = find_form(&page.body) else {
                fail("a page without a form, before reaching the stop prefix");
            };
            let action = page_url_join(&url, &form_html.action);
            let prompt = form_html
                .fields
                .iter()
                .find(|(name, _)| name == "prompt")
                .map(|(_, v)| v.clone());
            match prompt.as_deref() {
                Some("login") => {
                    logins += 1;
                    if logins > 1 {
                        fail("the login form came back (login rejected?)");
                    }
                    let mut fields: Vec<(String, String)> = form_html
                        .fields
                        .into_iter()
                        .filter(|(name, _)| name != "login" && name != "password")
                        .collect();
                    fields.push(("login".to_owned(), login.to_owned()));
                    fields.push(("password".to_owned(), "any-password".to_owned()));
                    next = (action, Some(fields));
                }
                Some("consent") => match consent {
                    Consent::Approve => next = (action, Some(form_html.fields)),
                    Consent::Deny => {
                        let Some(abort) = find_abort_link(&page.body) else {
                            fail("a consent page without a Cancel link");
                        };
                        next = (page_url_join(&url, &abort), None);
                    }
                },
                _ => fail("an unknown form"),
            }
        }
        panic!(
            "browser: more than {MAX_HOPS} requests without reaching {stop_prefix}:\n  {}",
            trail.join("\n  ")
        );
    }

    /// Follow redirects from `start_url` (GET, cookies kept) until a non-redirect answer, which
    /// is returned; stops early — without requesting it — at a URL starting with `stop_prefix`.
    pub async fn follow(&self, start_url: &str, stop_prefix: Option<&str>) -> Page {
        let mut url = start_url.to_owned();
        for _ in 0..MAX_HOPS {
            if stop_prefix.is_some_and(|p| url.starts_with(p)) {
                return Page {
                    url,
                    status: 0,
                    location: None,
                    body: String::new(),
                };
            }
            let page = self.get(&url).await;
            match (&page.location, (300..400).contains(&page.status)) {
                (Some(location), true) => url = location.clone(),
                _ => return page,
            }
        }
        panic!("browser: more than {MAX_HOPS} redirects from {start_url}");
    }

    /// The value of a cookie by name (any host and path).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar
            .lock()
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    /// Every cookie as `(name, value)`.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.jar
            .lock()
            .iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect()
    }

    /// Set a cookie for `url`'s host, path `/` (e.g. a forged one).
    pub fn set_cookie(&self, url: &str, name: &str, value: &str) {
        let parsed = url::Url::parse(url).unwrap();
        self.store_cookie(&parsed, &format!("{name}={value}; Path=/"));
    }

    /// Forget cookies with this name.
    pub fn remove_cookie(&self, name: &str) {
        self.jar.lock().retain(|c| c.name != name);
    }

    pub fn clear_cookies(&self) {
        self.jar.lock().clear();
    }

    fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let host = url.host_str()?.to_ascii_lowercase();
        let path = url.path();
        let jar = self.jar.lock();
        let mut matching: Vec<&StoredCookie> = jar
            .iter()
            .filter(|c| c.host == host && path_matches(path, &c.path))
            .collect();
        if matching.is_empty() {
            return None;
        }
        // Longer paths first, as browsers send them.
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn store_cookie(&self, url: &url::Url, header: &str) {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return;
        };
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        if name.is_empty() {
            return;
        }
        let mut path = default_path(url.path());
        let mut expired = false;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.trim().to_ascii_lowercase().as_str() {
                "path" if val.trim().starts_with('/') => path = val.trim().to_owned(),
                "max-age" => expired |= val.trim().parse::<i64>().is_ok_and(|age| age <= 0),
                "expires" => {
                    expired |= chrono::DateTime::parse_from_rfc2822(val.trim())
                        .is_ok_and(|at| at < chrono::Utc::now())
                }
                _ => {}
            }
        }
        let mut jar = self.jar.lock();
        jar.retain(|c| !(c.host == host && c.path == path && c.name == name));
        if !expired {
            jar.push(StoredCookie {
                host,
                path,
                name,
                value,
            });
        }
    }
}

/// RFC 6265 §5.1.4.
fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// RFC 6265 §5.1.4 default-path.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

fn page_url_join(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(reference))
        .unwrap_or_else(|e| panic!("cannot resolve {reference:?} against {base}: {e}"))
        .to_string()
}

fn snippet(body: &str) -> &str {
    let mut end = body.len().min(3000);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

struct HtmlForm {
    action: String,
    fields: Vec<(String, String)>,
}

/// The first `<form>` of a page: its `action` and its named `<input>`s with their values.
fn find_form(html: &str) -> Option<HtmlForm> {
    let start = html.find("<form")?;
    let tag_end = start + html[start..].find('>')?;
    let action = attribute(&html[start..tag_end], "action").unwrap_or_default();
    let end = html[tag_end..]
        .find("</form>")
        .map_or(html.len(), |i| tag_end + i);
    let mut fields = Vec::new();
    let mut rest = &html[tag_end..end];
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..];
        let close = tag.find('>').unwrap_or(tag.len());
        let tag = &tag[..close];
        if let Some(name) = attribute(tag, "name") {
            fields.push((name, attribute(tag, "value").unwrap_or_default()));
        }
        rest = &rest[i + close..];
    }
    Some(HtmlForm { action, fields })
}

/// The devInteractions "[ Cancel ]" link (`…/abort`).
fn find_abort_link(html: &str) -> Option<String> {
    let mut rest = html;
    while let Some(i) = rest.find("href=\"") {
        let value_start = i + "href=\"".len();
        let len = rest[value_start..].find('"')?;
        let href = decode_entities(&rest[value_start..value_start + len]);
        if href.contains("/abort") {
            return Some(href);
        }
        rest = &rest[value_start + len..];
    }
    None
}

/// A double- or single-quoted attribute of one tag, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut search = 0;
    while let Some(found) = tag[search..].find(name) {
        let at = search + found;
        search = at + name.len();
        let boundary_before = at == 0
            || tag.as_bytes()[at - 1].is_ascii_whitespace()
            || tag.as_bytes()[at - 1] == b'<';
        let after = tag[search..].trim_start();
        if !boundary_before || !after.starts_with('=') {
            continue;
        }
        let after = after[1..].trim_start();
        let quote = after.chars().next()?;
        if quote == '"' || quote == '\'' {
            let end = after[1..].find(quote)?;
            return Some(decode_entities(&after[1..1 + end]));
        }
        let end = after
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(after.len());
        return Some(decode_entities(&after[..end]));
    }
    None
}

fn decode_entities(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `code` / `state` / `error` / ... query parameters of a redirect URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_login_form() {
        let html = r#"<form autocomplete="off" action="/interaction/abc&#x2F;x?a=1&amp;b=2" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
  <input required type="password" name="password" placeholder="and password" >
</form><a href="/interaction/abc/abort">[ Cancel ]</a>"#;
        let form = find_form(html).unwrap();
        assert_eq!(form.action, "/interaction/abc/x?a=1&b=2");
        assert_eq!(
            form.fields,
            vec![
                ("prompt".to_owned(), "login".to_owned()),
                ("login".to_owned(), String::new()),
                ("password".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            find_abort_link(html).as_deref(),
            Some("/interaction/abc/abort")
        );
    }

    #[test]
    fn cookie_paths() {
        assert!(path_matches("/interaction/abc", "/interaction/abc"));
        assert!(path_matches("/interaction/abc/login", "/interaction/abc"));
        assert!(!path_matches("/interaction/abcd", "/interaction/abc"));
        assert!(path_matches("/anything", "/"));
        assert_eq!(default_path("/a/b"), "/a");
        assert_eq!(default_path("/a"), "/");
    }
}
