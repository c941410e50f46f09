//! A small client for the Management API (`/api/…` on the admin listener): every call returns a
//! `Reply` holding the status, headers and body (raw text and parsed JSON), so tests can assert
//! all three. Also builders for rows the API cannot create (managed targets).

use gatehouse::domain::targets::{Capability, Target, TargetSlug};
use gatehouse::store::Store;
use gatehouse::store::accounts::NewConnectedAccount;
use gatehouse::store::targets::NewTarget;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::TestApp;

/// The exact 409 message of SPEC §5 for any change to a managed target.
pub const MANAGED_MESSAGE: &str =
    "cannot modify a managed target — change it through its connected account";

/// One response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, `Value::Null` when it is empty or not JSON.
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    /// The header's value, `""` when it is absent or not visible ASCII.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Assert the status, with the body in the failure message.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        &self.json
    }

    /// Assert a JSON error reply: status, `error` a non-empty string, and `field` (when given)
    /// naming the field, with the message starting with the field name as the contract says.
    #[track_caller]
    pub fn expect_error(&self, status: u16, field: Option<&str>) -> String {
        self.expect(status);
        let content_type = self.header("content-type");
        assert!(
            content_type.starts_with("application/json"),
            "error bodies are JSON, got content-type {content_type:?}: {}",
            self.text
        );
        let message = self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text))
            .to_owned();
        assert!(!message.is_empty(), "{}", self.text);
        if let Some(field) = field {
            assert_eq!(
                self.json["field"], field,
                "field should name {field}: {}",
                self.text
            );
            assert!(
                message.starts_with(field),
                "message should start with the field name {field}: {message}"
            );
        }
        message
    }

    /// Assert a 4xx from the JSON extractor (wrong type, unknown or missing field): `field`
    /// names the field and the message mentions it.
    #[track_caller]
    pub fn expect_field_error(&self, status: u16, field: &str) -> String {
        let message = self.expect_error(status, None);
        assert_eq!(
            self.json["field"], field,
            "field should name {field}: {}",
            self.text
        );
        assert!(
            message.contains(field),
            "message should mention {field}: {message}"
        );
        message
    }

    /// The `id` of the JSON body, as a UUID.
    #[track_caller]
    pub fn id(&self) -> Uuid {
        json_id(&self.json)
    }
}

#[track_caller]
pub fn json_id(value: &Value) -> Uuid {
    value["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("no id in {value}"))
}

/// The admin API of one `TestApp`, authenticated with its admin token.
pub struct AdminClient<'a> {
    app: &'a TestApp,
}

impl TestApp {
    pub fn api(&self) -> AdminClient<'_> {
        AdminClient { app: self }
    }
}

impl AdminClient<'_> {
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .request(method, self.app.admin_url(path))
            .bearer_auth(self.app.admin_token.expose())
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// A POST without a body (regenerate, revoke).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::POST, path)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(Method::PATCH, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(&body)).await
    }

    /// A PUT without a body (the permission PUT accepts one).
    pub async fn put_empty(&self, path: &str) -> Reply {
        self.send(self.request(Method::PUT, path)).await
    }

    /// `POST /api/targets`, expecting 201; the created target.
    pub async fn create_target(&self, name: &str, base_url: &str) -> Value {
        let reply = self
            .post(
                "/api/targets",
                serde_json::json!({"name": name, "base_url": base_url}),
            )
            .await;
        reply.expect(201).clone()
    }

    /// `POST /api/targets/{id}/auth-methods`, expecting 201; the created method.
    pub async fn create_auth_method(
        &self,
        target_id: Uuid,
        label: &str,
        kind: &str,
        credential: Value,
    ) -> Value {
        let reply = self
            .post(
                &format!("/api/targets/{target_id}/auth-methods"),
                serde_json::json!({"label": label, "type": kind, "credential": credential}),
            )
            .await;
        reply.expect(201).clone()
    }

    /// `POST /api/tokens`, expecting 201; the created token (with its plaintext `token`).
    pub async fn create_token(&self, name: &str) -> Value {
        let reply = self
            .post("/api/tokens", serde_json::json!({"name": name}))
            .await;
        reply.expect(201).clone()
    }
}

/// A connected account plus one managed (mail) target on it, written straight to the store: the
/// admin API cannot create managed targets.
pub async fn managed_target(store: &Store, slug: &str) -> Target {
    let account = store
        .insert_connected_account(NewConnectedAccount {
            id: Uuid::new_v4(),
            provider_type: "microsoft_365".into(),
            email: format!("{slug}@example.com"),
            display_name: Some("Ada".into()),
            sealed_access_token: vec![9; 40],
            sealed_refresh_token: Some(vec![8; 40]),
            token_expires_at: None,
            scopes: "offline_access Mail.Read".into(),
        })
        .await
        .unwrap();
    store
        .insert_target(NewTarget {
            name: format!("{slug}@example.com — Mail"),
            slug: TargetSlug::parse(slug).unwrap(),
            base_url: url::Url::parse("https://graph.microsoft.com/v1.0").unwrap(),
            enabled: true,
            connected_account_id: Some(account.id),
            capability: Some(Capability::Mail),
        })
        .await
        .unwrap()
}

/// Does `haystack` contain `needle` as a byte sequence?
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
