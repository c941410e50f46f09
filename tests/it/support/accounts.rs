//! A Gatehouse wired to the real authorization server of `support::oidc`: one provider's
//! endpoints point at it and its Graph stand-in, and that provider's client credentials are set —
//! `microsoft_365` ([`setup`], [`setup_on`]) or `google_workspace` against the server in Google's
//! shape ([`setup_google`], [`setup_google_with`]).

use gatehouse::config::{OAuthClientCredentials, ProviderOverrides};
use serde_json::{Value, json};

use super::oidc::{BrowserClient, OidcOptions, OidcServer, Page, Shape, query_param};
use super::{TestApp, TestDb};

pub struct ConnectedSetup {
    pub oidc: OidcServer,
    pub app: TestApp,
    pub public_url: String,
    /// The provider type [`Self::connect`], [`Self::connect_link`] and
    /// [`Self::admin_connect_start`] start (`microsoft_365` or `google_workspace`).
    pub provider: &'static str,
}

/// Reserve a loopback port for the admin listener: the redirect URI must be known before start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn setup(access_ttl_secs: u64) -> ConnectedSetup {
    setup_on(TestDb::new().await, access_ttl_secs, None).await
}

/// `oidc`: reuse a running server (two Gatehouse replicas against one provider).
pub async fn setup_on(
    db: TestDb,
    access_ttl_secs: u64,
    oidc: Option<OidcServer>,
) -> ConnectedSetup {
    setup_provider(
        db,
        access_ttl_secs,
        oidc,
        Shape::Microsoft,
        "microsoft_365",
        microsoft_overrides,
        &|_| {},
    )
    .await
}

/// [`setup`] with the Gatehouse configuration changed by `configure` first.
pub async fn setup_configured(
    access_ttl_secs: u64,
    configure: &dyn Fn(&mut gatehouse::config::Config),
) -> ConnectedSetup {
    setup_provider(
        TestDb::new().await,
        access_ttl_secs,
        None,
        Shape::Microsoft,
        "microsoft_365",
        microsoft_overrides,
        configure,
    )
    .await
}

/// `google_workspace` against a fresh server in Google's shape ([`Shape::Google`]), with
/// [`google_overrides`]: endpoints at the server, profile from its OpenID userinfo endpoint,
/// Gmail and Calendar bases on the stand-in. Built-in scopes and authorize parameters.
pub async fn setup_google(access_ttl_secs: u64) -> ConnectedSetup {
    setup_google_with(access_ttl_secs, |_| {}).await
}

/// [`setup_google`] with the overrides adjusted first (e.g. the base URLs removed, to see the
/// built-in ones).
pub async fn setup_google_with(
    access_ttl_secs: u64,
    adjust: impl FnOnce(&mut ProviderOverrides),
) -> ConnectedSetup {
    setup_provider(
        TestDb::new().await,
        access_ttl_secs,
        None,
        Shape::Google,
        "google_workspace",
        |oidc| {
            let mut overrides = google_overrides(oidc);
            adjust(&mut overrides);
            overrides
        },
        &|_| {},
    )
    .await
}

/// A Gatehouse with only `provider` configured: `overrides` for it and the server's client
/// credentials (`OAUTH_MICROSOFT_…` / `OAUTH_GOOGLE_…` in production).
async fn setup_provider(
    db: TestDb,
    access_ttl_secs: u64,
    oidc: Option<OidcServer>,
    shape: Shape,
    provider: &'static str,
    overrides: impl FnOnce(&OidcServer) -> ProviderOverrides,
    configure: &dyn Fn(&mut gatehouse::config::Config),
) -> ConnectedSetup {
    let admin_port = free_port();
    let public_url = format!("http://127.0.0.1:{admin_port}");
    let callback = format!("{public_url}/oauth/callback");
    let oidc = match oidc {
        Some(oidc) => oidc,
        None => {
            OidcServer::start(OidcOptions {
                redirect_uris: vec![callback.clone()],
                access_ttl_secs,
                shape,
                ..OidcOptions::default()
            })
            .await
        }
    };
    assert_eq!(oidc.options().shape, shape, "the server's shape");
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = super::app::rand_key();
    let overrides = overrides(&oidc);
    // The admin port must be known before start (it is in the redirect URI), so it is reserved
    // and released first; another test may take it meanwhile: then try another port.
    let (mut admin_port, mut public_url) = (admin_port, public_url);
    let mut attempts = 0;
    let running = loop {
        let callback = format!("{public_url}/oauth/callback");
        oidc.set_redirect_uris(&[&callback]).await;
        let mut config = TestApp::config(&db, &admin_token, key);
        configure(&mut config);
        config.admin.listen = format!("127.0.0.1:{admin_port}").parse().unwrap();
        config.admin.public_url = url::Url::parse(&public_url).unwrap();
        config
            .providers
            .insert(provider.to_owned(), overrides.clone());
        config.env.oauth_clients.insert(
            provider.to_owned(),
            OAuthClientCredentials {
                client_id: oidc.client_id().to_owned(),
                client_secret: oidc.client_secret().to_owned(),
            },
        );
        match gatehouse::app::App::build(config).await {
            Ok(running) => break running,
            Err(error) if attempts < 5 && error.to_string().contains("admin.listen") => {
                attempts += 1;
                admin_port = free_port();
                public_url = format!("http://127.0.0.1:{admin_port}");
            }
            Err(error) => panic!("gatehouse starts: {error}"),
        }
    };
    let app = TestApp::from_running(db, admin_token, key, running);
    ConnectedSetup {
        oidc,
        app,
        public_url,
        provider,
    }
}

impl ConnectedSetup {
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .app
            .http
            .request(method, self.app.admin_url(path))
            .bearer_auth(self.app.admin_token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A connect link for [`Self::provider`].
    pub async fn connect_link(&self) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/api/connect-links",
                Some(json!({"provider": self.provider})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["url"].as_str().unwrap().to_owned()
    }

    /// A browser logged in to the web UI with the admin token.
    pub async fn admin_browser(&self) -> BrowserClient {
        let browser = BrowserClient::new();
        let page = browser
            .post_form(
                &format!("{}/ui/login", self.public_url),
                &[("token".to_owned(), self.app.admin_token.expose().to_owned())],
            )
            .await;
        assert_eq!(page.status, 303, "ui login answered: {}", page.body);
        browser
    }

    /// Press "Connect {provider}" on the integrations page in `browser` (an admin's): the
    /// provider URL the flow continues at.
    pub async fn admin_connect_start(&self, browser: &BrowserClient) -> String {
        let page = browser
            .get(&format!("{}/ui/integrations", self.public_url))
            .await;
        assert_eq!(page.status, 200, "integrations page: {}", page.body);
        let marker = "name=\"csrf\" value=\"";
        let start = page.body.find(marker).expect("a csrf field") + marker.len();
        let end = page.body[start..].find('"').unwrap() + start;
        let csrf = page.body[start..end].to_owned();
        let started = browser
            .post_form(
                &format!("{}/ui/integrations/connect", self.public_url),
                &[
                    ("csrf".to_owned(), csrf),
                    ("provider".to_owned(), self.provider.to_owned()),
                ],
            )
            .await;
        started
            .location
            .unwrap_or_else(|| panic!("connect answered {}: {}", started.status, started.body))
    }

    /// Connect `login` as an admin does (from the integrations page); returns where Gatehouse
    /// sent the browser at the end (`/ui/integrations?connected=…` or `?error=…`).
    pub async fn connect(&self, login: &str) -> String {
        let browser = self.admin_browser().await;
        let start = self.admin_connect_start(&browser).await;
        let callback = browser
            .sign_in(
                &start,
                login,
                &format!("{}/oauth/callback", self.public_url),
            )
            .await;
        let page = browser.get(&callback).await;
        assert_eq!(
            page.status, 303,
            "callback answered {}: {}",
            page.status, page.body
        );
        page.location.unwrap()
    }

    /// Connect `login` through a connect link, in a fresh browser with no admin session: the
    /// page the flow ends on.
    pub async fn connect_via_link(&self, login: &str) -> Page {
        let browser = BrowserClient::new();
        let link = self.connect_link().await;
        let callback = browser
            .sign_in(&link, login, &format!("{}/oauth/callback", self.public_url))
            .await;
        browser.get(&callback).await
    }

    /// The id of the connected account with this email (through the admin API).
    pub async fn account_id_by_email(&self, email: &str) -> String {
        let (status, list) = self
            .admin(reqwest::Method::GET, "/api/connected-accounts", None)
            .await;
        assert_eq!(status, 200, "{list}");
        list["connected_accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["email"] == email)
            .unwrap_or_else(|| panic!("no account {email}: {list}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The account id from a `?connected=` location.
    pub fn connected_id(location: &str) -> String {
        query_param(location, "connected").unwrap_or_else(|| panic!("not connected: {location}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers of accounts_connect.rs, accounts_refresh.rs and accounts_replicas.rs.
// ---------------------------------------------------------------------------------------------

/// Run one statement on the test database directly (outside Gatehouse). Write placeholders as
/// `$1, $2, …`; they become `?` on SQLite.
pub async fn db_execute(db_url: &str, sql: &str, values: Vec<sea_orm::Value>) -> u64 {
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let backend = db.get_database_backend();
    let sql = placeholders_for(backend, sql);
    let result = db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend, &sql, values,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = db.close().await;
    result.rows_affected()
}

/// `SELECT COUNT(*)` of a table (with an optional `WHERE` clause and its values).
pub async fn db_count(db_url: &str, table: &str, filter: &str, values: Vec<sea_orm::Value>) -> i64 {
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let backend = db.get_database_backend();
    let sql = if filter.is_empty() {
        format!("SELECT COUNT(*) AS n FROM {table}")
    } else {
        format!("SELECT COUNT(*) AS n FROM {table} WHERE {filter}")
    };
    let sql = placeholders_for(backend, &sql);
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            backend, &sql, values,
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap();
    let _ = db.close().await;
    row.try_get::<i64>("", "n").unwrap()
}

/// The `state_hash` column of every pending OAuth flow.
pub async fn db_state_hashes(db_url: &str) -> Vec<String> {
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT state_hash FROM oauth_states",
        ))
        .await
        .unwrap();
    let _ = db.close().await;
    rows.iter()
        .map(|row| row.try_get::<String>("", "state_hash").unwrap())
        .collect()
}

fn placeholders_for(backend: sea_orm::DatabaseBackend, sql: &str) -> String {
    if backend != sea_orm::DatabaseBackend::Sqlite {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Write an account's `token_expires_at` in the database (the app's in-memory cache is not
/// told: do this before the app's first proxied request for the account).
pub async fn set_token_expiry(
    db_url: &str,
    account_id: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
) {
    let changed = db_execute(
        db_url,
        "UPDATE connected_accounts SET token_expires_at = $1 WHERE id = $2",
        vec![at.into(), account_id.into()],
    )
    .await;
    assert_eq!(changed, 1, "the account row exists");
}

/// An agent token (plaintext, id) granted every managed target of the account.
pub async fn agent_with_access(app: &TestApp, account_id: &str) -> (String, String) {
    let created = app
        .api()
        .post(
            "/api/tokens",
            json!({"name": format!("agent-{}", uuid::Uuid::new_v4().simple())}),
        )
        .await;
    let token = created.expect(201).clone();
    let token_id = token["id"].as_str().unwrap().to_owned();
    let granted = app
        .api()
        .put_empty(&format!(
            "/api/connected-accounts/{account_id}/access/{token_id}"
        ))
        .await;
    granted.expect(200);
    (token["token"].as_str().unwrap().to_owned(), token_id)
}

/// The slug of the account's managed target with this capability (`mail`, `calendar`).
pub async fn managed_slug(app: &TestApp, account_id: &str, capability: &str) -> String {
    let reply = app
        .api()
        .get(&format!("/api/connected-accounts/{account_id}"))
        .await;
    reply.expect(200)["managed_targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["capability"] == capability)
        .unwrap_or_else(|| panic!("no {capability} target: {}", reply.text))["slug"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Wait (at most 5 s) until the proxy's `/discovery` lists `slug` for `token` — the permission
/// has reached the proxy — WITHOUT a proxied request (which would fetch and cache the
/// account's access token).
pub async fn wait_for_discovery(app: &TestApp, token: &str, slug: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for _ in 0..100 {
        let response = app
            .http
            .get(app.proxy_url("/discovery"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if body["targets"]
                .as_array()
                .is_some_and(|targets| targets.iter().any(|t| t["slug"] == slug))
            {
                return;
            }
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "/discovery of {} did not list {slug} within 5 s",
        app.proxy_url("")
    );
}

/// One proxied GET through `/gateway/{slug}{path}`.
pub async fn gateway_get(
    app: &TestApp,
    token: &str,
    slug: &str,
    path: &str,
) -> super::admin::Reply {
    let response = app
        .http
        .get(app.proxy_url(&format!("/gateway/{slug}{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    super::admin::Reply::read(response).await
}

/// The `microsoft_365` overrides of [`setup_on`]: every endpoint at the test server.
pub fn microsoft_overrides(oidc: &OidcServer) -> ProviderOverrides {
    ProviderOverrides {
        authorize_url: Some(url::Url::parse(&oidc.authorize_url()).unwrap()),
        token_url: Some(url::Url::parse(&oidc.token_url()).unwrap()),
        revoke_url: Some(url::Url::parse(&oidc.revoke_url()).unwrap()),
        profile_url: Some(url::Url::parse(&format!("{}/me", oidc.graph_base())).unwrap()),
        mail_base_url: Some(url::Url::parse(&oidc.graph_base()).unwrap()),
        calendar_base_url: Some(url::Url::parse(&oidc.graph_base()).unwrap()),
        scopes: Some(
            super::oidc::MICROSOFT_SCOPES
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        ),
    }
}

/// The `google_workspace` overrides of [`setup_google`]: authorize, token and revocation
/// endpoints at the test server, the profile from its OpenID userinfo endpoint, Gmail and
/// Calendar bases on the stand-in. Scopes stay the built-in ones.
pub fn google_overrides(oidc: &OidcServer) -> ProviderOverrides {
    ProviderOverrides {
        authorize_url: Some(url::Url::parse(&oidc.authorize_url()).unwrap()),
        token_url: Some(url::Url::parse(&oidc.token_url()).unwrap()),
        revoke_url: Some(url::Url::parse(&oidc.revoke_url()).unwrap()),
        profile_url: Some(url::Url::parse(&oidc.userinfo_url()).unwrap()),
        mail_base_url: Some(url::Url::parse(&oidc.gmail_base()).unwrap()),
        calendar_base_url: Some(url::Url::parse(&oidc.calendar_base()).unwrap()),
        scopes: None,
    }
}

/// A second Gatehouse process (replica) on the SAME database as `first`, with the same
/// encryption key and admin token, against the same authorization server.
pub async fn spawn_replica(first: &ConnectedSetup) -> TestApp {
    let db = TestDb {
        url: first.app.db.url.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let admin_token = first.app.admin_token.clone();
    let key = first.app.encryption_key;
    let mut config = TestApp::config(&db, &admin_token, key);
    config.admin.public_url = url::Url::parse(&first.public_url).unwrap();
    config
        .providers
        .insert("microsoft_365".to_owned(), microsoft_overrides(&first.oidc));
    config.env.oauth_clients.insert(
        "microsoft_365".to_owned(),
        OAuthClientCredentials {
            client_id: first.oidc.client_id().to_owned(),
            client_secret: first.oidc.client_secret().to_owned(),
        },
    );
    TestApp::spawn_with(db, admin_token, key, config).await
}

/// Fire `count` proxied GETs at once, round-robin over `apps` (at most 256 in flight); returns
/// each (status, body text, latency) in completion order.
pub async fn burst(
    apps: &[&TestApp],
    token: &str,
    slug: &str,
    count: usize,
) -> Vec<(u16, String, std::time::Duration)> {
    assert!(count <= 256, "bounded burst");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let app = apps[i % apps.len()];
        let http = app.http.clone();
        let url = app.proxy_url(&format!("/gateway/{slug}/me/messages?n={i}"));
        let token = token.to_owned();
        set.spawn(async move {
            let started = std::time::Instant::now();
            let response = http
                .get(url)
                .bearer_auth(token)
                .timeout(std::time::Duration::from_secs(60))
                .send()
                .await;
            match response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    (status, text, started.elapsed())
                }
                Err(e) => (0, format!("request failed: {e}"), started.elapsed()),
            }
        });
    }
    let mut results = Vec::with_capacity(count);
    while let Some(joined) = set.join_next().await {
        results.push(joined.unwrap());
    }
    results
}

/// The `p`-th percentile (nearest rank) of the latencies.
pub fn percentile(latencies: &mut [std::time::Duration], p: f64) -> std::time::Duration {
    latencies.sort();
    if latencies.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

/// The account's stored refresh token, opened with the app's encryption key (`None` when the
/// row holds none).
pub async fn stored_refresh_token(app: &TestApp, account_id: uuid::Uuid) -> Option<String> {
    let row = app
        .running()
        .store()
        .account_tokens(account_id)
        .await
        .unwrap();
    let secrets = gatehouse::crypto::SecretBox::new(&app.encryption_key, &[]);
    row.sealed_refresh_token.map(|sealed| {
        secrets
            .open_string(
                &sealed,
                gatehouse::crypto::SecretSlot::account_refresh_token(account_id),
            )
            .expect("the stored refresh token opens with the app's key")
    })
}
