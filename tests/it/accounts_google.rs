//! `google_workspace` connected accounts end to end, against the real authorization server in
//! Google's shape (`Shape::Google`: refresh tokens for `access_type=offline` + `prompt=consent`,
//! never rotated, none on a re-consent, profile from the OpenID userinfo endpoint, revocation by
//! the `token` form field): the connect flow, refresh, reconnect without a refresh token (SPEC
//! §6: the stored one is kept), disconnect, and the built-in Gmail and Calendar base URLs.

use std::collections::BTreeMap;

use gatehouse::domain::targets::Capability;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, gateway_get, managed_slug, set_token_expiry, setup_google,
    setup_google_with, stored_refresh_token, wait_for_discovery,
};
use crate::support::oidc::GOOGLE_SCOPES;

const GMAIL_DEFAULT: &str = "https://gmail.googleapis.com/gmail/v1";
const CALENDAR_DEFAULT: &str = "https://www.googleapis.com/calendar/v3";

async fn account_json(setup: &ConnectedSetup, id: &str) -> Value {
    let (status, account) = setup
        .admin(Method::GET, &format!("/api/connected-accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{account}");
    account
}

/// The managed target of `account` with this capability.
fn managed<'a>(account: &'a Value, capability: &str) -> &'a Value {
    account["managed_targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["capability"] == capability)
        .unwrap_or_else(|| panic!("no {capability} target: {account}"))
}

/// The authorization request Gatehouse sent (the `n`-th the server received) carries Google's
/// offline-access parameters besides the contract's own.
#[track_caller]
fn assert_google_authorize_request(
    setup: &ConnectedSetup,
    requests: &[serde_json::Map<String, Value>],
    n: usize,
) {
    let request = requests
        .get(n)
        .unwrap_or_else(|| panic!("authorization request #{n}: {requests:?}"));
    let param = |name: &str| request.get(name).and_then(Value::as_str);
    assert_eq!(param("access_type"), Some("offline"), "{request:?}");
    assert_eq!(param("prompt"), Some("consent"), "{request:?}");
    assert_eq!(param("response_type"), Some("code"), "{request:?}");
    assert_eq!(param("client_id"), Some(setup.oidc.client_id()));
    assert_eq!(
        param("redirect_uri").map(str::to_owned),
        Some(format!("{}/oauth/callback", setup.public_url))
    );
    assert_eq!(param("code_challenge_method"), Some("S256"));
    assert!(param("code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(param("state").is_some_and(|s| !s.is_empty()));
    let mut sent: Vec<&str> = param("scope").unwrap_or_default().split(' ').collect();
    let mut wanted: Vec<&str> = GOOGLE_SCOPES.split_whitespace().collect();
    sent.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(sent, wanted, "the built-in Google scopes: {request:?}");
}

/// Connected `ada` with an agent granted the account and admitted by the proxy (no proxied
/// request yet), and the refresh token Gatehouse stored.
struct Connected {
    setup: ConnectedSetup,
    id: String,
    account_id: Uuid,
    agent: String,
    mail: String,
    refresh_token: String,
}

async fn connected() -> Connected {
    let setup = setup_google(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_id: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let mail = managed_slug(&setup.app, &id, "mail").await;
    wait_for_discovery(&setup.app, &agent, &mail).await;
    let refresh_token = stored_refresh_token(&setup.app, account_id)
        .await
        .expect("the first consent's refresh token is stored");
    Connected {
        setup,
        id,
        account_id,
        agent,
        mail,
        refresh_token,
    }
}

impl Connected {
    /// Put the stored access token in the past (do it while nothing is cached: before the first
    /// proxied request, or right after a reconnect).
    async fn expire(&self) {
        set_token_expiry(
            &self.setup.app.db.url,
            self.account_id,
            chrono::Utc::now() - chrono::Duration::seconds(5),
        )
        .await;
    }

    async fn get_mail(&self) -> crate::support::admin::Reply {
        gateway_get(
            &self.setup.app,
            &self.agent,
            &self.mail,
            "/users/me/messages",
        )
        .await
    }

    async fn stored_refresh_token(&self) -> Option<String> {
        stored_refresh_token(&self.setup.app, self.account_id).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_google_asks_for_offline_access_and_reads_the_userinfo_profile() {
    let setup = setup_google(3600).await;
    let location = setup.connect("ada").await;
    let id = ConnectedSetup::connected_id(&location);
    let account_uuid: Uuid = id.parse().unwrap();

    let requests = setup.oidc.authorize_requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_google_authorize_request(&setup, &requests, 0);

    // The profile is the OpenID userinfo's `email` and `name`.
    let account = account_json(&setup, &id).await;
    assert_eq!(account["provider"], "google_workspace", "{account}");
    assert_eq!(account["email"], "ada@example.com", "{account}");
    assert_eq!(account["display_name"], "Ada", "{account}");
    assert_eq!(account["status"], "connected", "{account}");

    // Two managed targets on the configured Gmail and Calendar bases.
    let targets = account["managed_targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{account}");
    let short = &id.replace('-', "")[..6];
    let mail = managed(&account, "mail");
    let calendar = managed(&account, "calendar");
    assert_eq!(mail["slug"], format!("ada-example-com-mail-{short}"));
    assert_eq!(mail["name"], "ada@example.com — Mail");
    assert_eq!(
        calendar["slug"],
        format!("ada-example-com-calendar-{short}")
    );
    assert_eq!(calendar["name"], "ada@example.com — Calendar");
    let base = |target: &Value| {
        url::Url::parse(target["base_url"].as_str().unwrap())
            .unwrap()
            .to_string()
    };
    assert_eq!(
        base(mail),
        url::Url::parse(&setup.oidc.gmail_base())
            .unwrap()
            .to_string()
    );
    assert_eq!(
        base(calendar),
        url::Url::parse(&setup.oidc.calendar_base())
            .unwrap()
            .to_string()
    );

    // A refresh token came with the first consent and is stored; it is live at the provider.
    let refresh_token = stored_refresh_token(&setup.app, account_uuid)
        .await
        .expect("a refresh token is stored");
    let introspection = setup.oidc.introspect(&refresh_token).await;
    assert_eq!(introspection["active"], true, "{introspection}");

    // The proxy injects the account's access token on both targets.
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let mail_slug = mail["slug"].as_str().unwrap();
    let calendar_slug = calendar["slug"].as_str().unwrap();
    wait_for_discovery(&setup.app, &agent, mail_slug).await;
    let reply = gateway_get(
        &setup.app,
        &agent,
        mail_slug,
        "/users/me/messages?q=is%3Aunread",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"path": "/gmail/v1/users/me/messages", "query": "q=is%3Aunread", "method": "GET", "sub": "ada"})
    );
    let reply = gateway_get(
        &setup.app,
        &agent,
        calendar_slug,
        "/calendars/primary/events",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["path"], "/calendar/v3/calendars/primary/events");
    assert_eq!(reply.json["sub"], "ada");

    let stats = setup.oidc.stats().await;
    assert_eq!(stats.authorization_code_ok, 1, "{stats:?}");
    assert_eq!(stats.refresh_token, 0, "a fresh token needs no refresh");
    assert_eq!(stats.graph_unauthorized, 0, "{stats:?}");

    // A connect link works for Google too and ends on the public page.
    let page = setup.connect_via_link("bob@contoso.io").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Connected bob@contoso.io"),
        "{}",
        page.body
    );
    let requests = setup.oidc.authorize_requests().await;
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_google_authorize_request(&setup, &requests, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_keeps_the_refresh_token_google_does_not_rotate() {
    let connected = connected().await;
    let setup = &connected.setup;
    let before = setup.oidc.stats().await;

    connected.expire().await;
    let reply = connected.get_mail().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada", "{}", reply.text);
    let after = setup.oidc.stats().await;
    assert_eq!(after.refresh_token - before.refresh_token, 1, "{after:?}");
    assert_eq!(
        after.refresh_token_ok - before.refresh_token_ok,
        1,
        "{after:?}"
    );
    assert_eq!(after.graph_unauthorized, 0, "{after:?}");

    // The refresh answer had no refresh_token: the stored one is the same token as before.
    let row = setup
        .app
        .running()
        .store()
        .account_tokens(connected.account_id)
        .await
        .unwrap();
    assert_eq!(row.account.status.as_str(), "connected");
    assert!(
        row.account.last_refresh_error.is_none(),
        "{:?}",
        row.account
    );
    assert!(
        row.account
            .token_expires_at
            .is_some_and(|e| e > chrono::Utc::now() + chrono::Duration::minutes(30)),
        "the new access token's expiry is stored: {:?}",
        row.account.token_expires_at
    );
    assert_eq!(
        connected.stored_refresh_token().await.as_deref(),
        Some(connected.refresh_token.as_str()),
        "the stored refresh token is kept"
    );

    // The same refresh token keeps working at the provider (it was not rotated away).
    let again = setup.oidc.refresh(&connected.refresh_token).await;
    assert_eq!(again.status, 200, "{:?}", again.json);
    assert!(again.access_token().is_some());
    assert_eq!(
        again.refresh_token(),
        None,
        "Google-shaped refresh answers carry no refresh_token"
    );
    let introspection = setup.oidc.introspect(&connected.refresh_token).await;
    assert_eq!(introspection["active"], true, "{introspection}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_without_a_refresh_token_keeps_the_stored_one_and_the_account_working() {
    let connected = connected().await;
    let setup = &connected.setup;
    let reply = connected.get_mail().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let tokens_before = setup
        .app
        .running()
        .store()
        .account_tokens(connected.account_id)
        .await
        .unwrap();

    // Second consent: the provider answers the code exchange without a refresh token.
    let again = ConnectedSetup::connected_id(&setup.connect("ada").await);
    assert_eq!(again, connected.id, "reconnected in place");
    let stats = setup.oidc.stats().await;
    assert_eq!(stats.authorization_code_ok, 2, "{stats:?}");
    assert_eq!(
        stats.refresh_token_withheld, 1,
        "the re-consent got no refresh token: {stats:?}"
    );
    let requests = setup.oidc.authorize_requests().await;
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_google_authorize_request(setup, &requests, 1);

    let account = account_json(setup, &connected.id).await;
    assert_eq!(account["status"], "connected", "{account}");
    let tokens_after = setup
        .app
        .running()
        .store()
        .account_tokens(connected.account_id)
        .await
        .unwrap();
    assert_ne!(
        tokens_after.sealed_access_token, tokens_before.sealed_access_token,
        "the new access token is stored"
    );
    assert_eq!(
        connected.stored_refresh_token().await.as_deref(),
        Some(connected.refresh_token.as_str()),
        "a token response without refresh_token keeps the stored one (SPEC §6)"
    );

    // The new access token works at once.
    let reply = connected.get_mail().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada");

    // Once it expires, the kept refresh token gets a new one: the account keeps working.
    // (The reconnect emptied the cache, but the request above filled it again: reconnect
    // once more to empty it, then expire the stored token.)
    let again = ConnectedSetup::connected_id(&setup.connect("ada").await);
    assert_eq!(again, connected.id);
    connected.expire().await;
    let before = setup.oidc.stats().await;
    assert_eq!(before.refresh_token_withheld, 2, "{before:?}");
    let reply = connected.get_mail().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada", "{}", reply.text);
    let after = setup.oidc.stats().await;
    assert_eq!(after.refresh_token - before.refresh_token, 1, "{after:?}");
    assert_eq!(
        after.refresh_token_ok - before.refresh_token_ok,
        1,
        "{after:?}"
    );
    assert_eq!(after.graph_unauthorized, 0, "{after:?}");
    let account = account_json(setup, &connected.id).await;
    assert_eq!(account["status"], "connected", "{account}");
    assert_eq!(
        connected.stored_refresh_token().await.as_deref(),
        Some(connected.refresh_token.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_revokes_the_kept_refresh_token_with_the_token_field() {
    let connected = connected().await;
    let setup = &connected.setup;
    // A reconnect without a refresh token first: the token to revoke is the one kept.
    let again = ConnectedSetup::connected_id(&setup.connect("ada").await);
    assert_eq!(again, connected.id);
    assert_eq!(setup.oidc.stats().await.refresh_token_withheld, 1);
    assert!(setup.oidc.live_grants("ada").await >= 1);
    assert!(setup.oidc.revocations().await.is_empty());

    setup
        .app
        .api()
        .delete(&format!("/api/connected-accounts/{}", connected.id))
        .await
        .expect(204);

    let stats = setup.oidc.stats().await;
    assert_eq!(stats.revocation, 1, "one revocation call: {stats:?}");
    let revocations = setup.oidc.revocations().await;
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    let revocation = &revocations[0];
    assert_eq!(revocation.status, 200, "{revocation:?}");
    assert!(
        revocation.fields.iter().any(|f| f == "token"),
        "the token goes in the `token` form field: {revocation:?}"
    );
    assert_eq!(
        revocation.token.as_deref(),
        Some("refresh_token"),
        "the live refresh token was revoked: {revocation:?}"
    );
    assert_eq!(revocation.client_auth, "client_secret_basic");
    assert_eq!(
        setup.oidc.live_grants("ada").await,
        0,
        "Google revokes the whole authorization"
    );
    let dead = setup.oidc.refresh(&connected.refresh_token).await;
    assert_eq!(dead.error(), Some("invalid_grant"), "{:?}", dead.json);
    let (status, _) = setup
        .admin(
            Method::GET,
            &format!("/api/connected-accounts/{}", connected.id),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[test]
fn google_workspace_defaults_to_the_gmail_and_calendar_apis() {
    let providers =
        gatehouse::oauth::providers::Providers::new(&BTreeMap::new(), &BTreeMap::new()).unwrap();
    let google = providers.get("google_workspace").unwrap();
    assert_eq!(google.mail_base_url.as_str(), GMAIL_DEFAULT);
    assert_eq!(google.calendar_base_url.as_str(), CALENDAR_DEFAULT);
    assert_eq!(
        google.revoke_url.as_ref().map(url::Url::as_str),
        Some("https://oauth2.googleapis.com/revoke")
    );
    assert_eq!(
        google.profile_url.as_str(),
        "https://openidconnect.googleapis.com/v1/userinfo"
    );
    assert_eq!(google.authorize_params, &[("access_type", "offline")]);
    assert_eq!(google.email_fields, &["email"]);
    let mut scopes: Vec<&str> = google.scopes.iter().map(String::as_str).collect();
    let mut wanted: Vec<&str> = GOOGLE_SCOPES.split_whitespace().collect();
    scopes.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(scopes, wanted);
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_google_targets_use_the_built_in_gmail_and_calendar_bases() {
    // Endpoints at the test server, but no base URL overrides: the built-in ones apply.
    let setup = setup_google_with(3600, |overrides| {
        overrides.mail_base_url = None;
        overrides.calendar_base_url = None;
    })
    .await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account = account_json(&setup, &id).await;
    assert_eq!(managed(&account, "mail")["base_url"], GMAIL_DEFAULT);
    assert_eq!(managed(&account, "calendar")["base_url"], CALENDAR_DEFAULT);
    for target in setup
        .app
        .running()
        .store()
        .targets_of_account(id.parse().unwrap())
        .await
        .unwrap()
    {
        let wanted = match target.capability {
            Some(Capability::Mail) => GMAIL_DEFAULT,
            Some(Capability::Calendar) => CALENDAR_DEFAULT,
            None => panic!("a managed target without a capability: {target:?}"),
        };
        assert_eq!(target.base_url.as_str(), wanted);
    }
}
