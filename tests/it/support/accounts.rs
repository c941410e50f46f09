//! A Gatehouse wired to the real authorization server of `support::oidc`: the `microsoft_365`
//! provider's endpoints point at it and its Graph stand-in, and the client credentials are set.

use gatehouse::config::{OAuthClientCredentials, ProviderOverrides};
use serde_json::{Value, json};

use super::oidc::{BrowserClient, OidcOptions, OidcServer, query_param};
use super::{TestApp, TestDb};

pub struct ConnectedSetup {
    pub oidc: OidcServer,
    pub app: TestApp,
    pub public_url: String,
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
    let admin_port = free_port();
    let public_url = format!("http://127.0.0.1:{admin_port}");
    let callback = format!("{public_url}/oauth/callback");
    let oidc = match oidc {
        Some(oidc) => oidc,
        None => {
            OidcServer::start(OidcOptions {
                redirect_uris: vec![callback.clone()],
                access_ttl_secs,
                ..OidcOptions::default()
            })
            .await
        }
    };
    oidc.set_redirect_uris(&[&callback]).await;
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = super::app::rand_key();
    let mut config = TestApp::config(&db, &admin_token, key);
    config.admin.listen = format!("127.0.0.1:{admin_port}").parse().unwrap();
    config.admin.public_url = url::Url::parse(&public_url).unwrap();
    config.providers.insert(
        "microsoft_365".to_owned(),
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
        },
    );
    config.env.oauth_clients.insert(
        "microsoft_365".to_owned(),
        OAuthClientCredentials {
            client_id: oidc.client_id().to_owned(),
            client_secret: oidc.client_secret().to_owned(),
        },
    );
    let app = TestApp::spawn_with(db, admin_token, key, config).await;
    ConnectedSetup {
        oidc,
        app,
        public_url,
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

    /// A connect link for `microsoft_365`.
    pub async fn connect_link(&self) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/api/connect-links",
                Some(json!({"provider": "microsoft_365"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["url"].as_str().unwrap().to_owned()
    }

    /// Connect `login` through a connect link in a fresh browser; returns where Gatehouse sent
    /// the browser at the end (`/ui/integrations?connected=…` or `?error=…`).
    pub async fn connect(&self, login: &str) -> String {
        let browser = BrowserClient::new();
        let link = self.connect_link().await;
        let callback = browser
            .sign_in(&link, login, &format!("{}/oauth/callback", self.public_url))
            .await;
        let page = browser.get(&callback).await;
        assert_eq!(
            page.status, 303,
            "callback answered {}: {}",
            page.status, page.body
        );
        page.location.unwrap()
    }

    /// The account id from a `?connected=` location.
    pub fn connected_id(location: &str) -> String {
        query_param(location, "connected").unwrap_or_else(|| panic!("not connected: {location}"))
    }
}
