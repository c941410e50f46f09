//! The connect flow of connected accounts end to end against the real authorization server
//! (oidc-provider): connect links, the profile's email, provider errors, state and cookie
//! checks, reconnect, disconnect, managed targets, providers and account access
//! (SPEC §5, §6; docs/connected-accounts.md).

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, db_count, db_execute, db_state_hashes, gateway_get,
    managed_slug, set_token_expiry, setup, wait_for_discovery,
};
use crate::support::admin::MANAGED_MESSAGE;
use crate::support::oidc::{BrowserClient, Consent, MICROSOFT_SCOPES, Page, query_param};

const COOKIE: &str = "gatehouse_oauth";

fn callback_prefix(setup: &ConnectedSetup) -> String {
    format!("{}/oauth/callback", setup.public_url)
}

/// `url` with its query parameter `name` replaced by `value` (or removed when `None`).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    parsed.to_string()
}

/// The 400 HTML page of a refused callback or link.
#[track_caller]
fn assert_refused_page(page: &Page, what: &str) {
    assert_eq!(
        page.status, 400,
        "{what}: expected the 400 page, got {} (location {:?}): {}",
        page.status, page.location, page.body
    );
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "{what}: the 400 answer is an HTML page: {}",
        page.body
    );
    assert!(page.location.is_none(), "{what}: no redirect");
}

/// A `303 /ui/integrations?…` answer; returns the location.
#[track_caller]
fn assert_ui_redirect(page: &Page) -> String {
    assert_eq!(
        page.status, 303,
        "callback answered {}: {}",
        page.status, page.body
    );
    let location = page.location.clone().unwrap();
    assert_eq!(
        url::Url::parse(&location).unwrap().path(),
        "/ui/integrations",
        "{location}"
    );
    location
}

/// The public page a connect-link flow ends on (SPEC §6): HTML, no redirect (never the admin
/// login), nothing of the admin UI on it; `says` is in its text.
#[track_caller]
fn assert_public_page(page: &Page, status: u16, says: &str) {
    assert_eq!(
        page.status, status,
        "expected the public {status} page, got {} (location {:?}): {}",
        page.status, page.location, page.body
    );
    assert!(page.location.is_none(), "no redirect: {:?}", page.location);
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "{}",
        page.body
    );
    assert!(page.body.contains(says), "{says:?} in: {}", page.body);
    for admin_only in ["/ui/", "/api/", "csrf", "Log in", "token"] {
        assert!(
            !page.body.contains(admin_only),
            "no admin data ({admin_only}) on the public page: {}",
            page.body
        );
    }
}

/// No account, no target, no account row: the failed flow stored nothing.
async fn assert_nothing_stored(setup: &ConnectedSetup, what: &str) {
    let (status, list) = setup
        .admin(Method::GET, "/api/connected-accounts", None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["connected_accounts"].as_array().map(Vec::len),
        Some(0),
        "{what}: no account listed: {list}"
    );
    let targets = setup.app.running().store().list_targets().await.unwrap();
    assert!(targets.is_empty(), "{what}: no target: {targets:?}");
    assert_eq!(
        db_count(&setup.app.db.url, "connected_accounts", "", vec![]).await,
        0,
        "{what}: no account row"
    );
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn account(setup: &ConnectedSetup, id: &str) -> Value {
    let (status, account) = setup
        .admin(Method::GET, &format!("/api/connected-accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{account}");
    account
}

/// The managed target ids of an account, sorted.
fn target_ids(account: &Value) -> Vec<String> {
    let mut ids: Vec<String> = account["managed_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Poll a proxied GET until the permission has reached the proxy (not 401/403/404), at most 5 s.
async fn first_admitted(
    setup: &ConnectedSetup,
    token: &str,
    slug: &str,
) -> crate::support::admin::Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let reply = gateway_get(&setup.app, token, slug, "/me/messages?top=1").await;
        if !matches!(reply.status, 401 | 403 | 404) || std::time::Instant::now() >= deadline {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_link_starts_the_flow_once_in_any_browser() {
    let setup = setup(3600).await;
    let link = setup.connect_link().await;
    assert!(
        link.starts_with(&format!("{}/oauth/authorize?link=", setup.public_url)),
        "the link is on admin.public_url: {link}"
    );

    // The link answers 302 to the provider with the contract's parameters and the binding
    // cookie; no admin credentials are sent.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&link)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&setup.oidc.authorize_url()),
        "{location}"
    );
    let param = |name: &str| query_param(&location, name);
    assert_eq!(param("response_type").as_deref(), Some("code"));
    assert_eq!(param("client_id").as_deref(), Some(setup.oidc.client_id()));
    assert_eq!(
        param("redirect_uri"),
        Some(callback_prefix(&setup)),
        "redirect URI from admin.public_url"
    );
    let scope = param("scope").unwrap();
    for wanted in MICROSOFT_SCOPES.split_whitespace() {
        assert!(
            scope.split_whitespace().any(|s| s == wanted),
            "scope {wanted} requested: {scope}"
        );
    }
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param("code_challenge").map(|c| c.len()), Some(43));
    assert_eq!(param("prompt").as_deref(), Some("consent"));
    let state = param("state").unwrap();
    assert!(state.len() >= 16, "an unguessable state: {state}");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .unwrap_or_else(|| panic!("{COOKIE} set: {:?}", response.headers()))
        .to_owned();
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches(&format!("{COOKIE}="));
    assert!(value.contains('.'), "nonce.hmac: {cookie}");
    let attributes = cookie.to_ascii_lowercase();
    assert!(attributes.contains("httponly"), "{cookie}");
    assert!(attributes.contains("samesite=lax"), "{cookie}");
    assert!(attributes.contains("path=/oauth"), "{cookie}");
    assert!(
        !attributes.contains("secure"),
        "no Secure on an http public URL: {cookie}"
    );
    // Only the hash of the state is stored.
    assert_eq!(
        db_state_hashes(&setup.app.db.url).await,
        vec![sha256_hex(&state)],
        "the state row stores SHA-256 of the state"
    );

    // The link works once: a second use (any browser) gets the 400 page.
    let again = BrowserClient::new().get(&link).await;
    assert_refused_page(&again, "a used connect link");
    assert_eq!(
        db_state_hashes(&setup.app.db.url).await.len(),
        1,
        "the refused link started no flow"
    );

    // A fresh link, in a browser without any admin session, connects the account.
    let browser = BrowserClient::new();
    let link = setup.connect_link().await;
    let callback = browser
        .sign_in(&link, "ada", &callback_prefix(&setup))
        .await;
    // The person who opened the link is not an admin: a page of its own, not the admin UI.
    assert_public_page(
        &browser.get(&callback).await,
        200,
        "Connected ada@example.com — you can close this window",
    );
    let id = setup.account_id_by_email("ada@example.com").await;
    let account = account(&setup, &id).await;
    assert_eq!(account["status"], "connected");
    assert_eq!(account["provider"], "microsoft_365");
    // ... and that link is spent as well.
    assert_refused_page(
        &BrowserClient::new().get(&link).await,
        "a link that completed a connect",
    );
    let stats = setup.oidc.stats().await;
    assert_eq!(stats.authorization_code, 1, "{stats:?}");
    assert_eq!(stats.authorization_code_ok, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_link_flow_that_fails_ends_on_the_public_page() {
    let setup = setup(3600).await;
    // A profile without an email: the error in plain words, nothing stored, no admin page.
    assert_public_page(
        &setup.connect_via_link("noemail-x").await,
        400,
        "This account has no email address, so it cannot be connected.",
    );
    assert_nothing_stored(&setup, "no email through a link").await;
    // The same failure in an admin's flow still goes back to the integrations page.
    let location = setup.connect("noemail-x").await;
    assert_eq!(query_param(&location, "error").as_deref(), Some("no_email"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_is_preferred_over_the_upn_and_a_upn_only_profile_uses_the_upn() {
    let setup = setup(3600).await;
    let ada = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let upn = ConnectedSetup::connected_id(&setup.connect("upn-only-x").await);
    assert_ne!(ada, upn);

    let ada = account(&setup, &ada).await;
    assert_eq!(
        ada["email"], "ada@example.com",
        "mail, not ada@corp.example.com"
    );
    assert_eq!(ada["display_name"], "Ada");
    let upn_account = account(&setup, &upn).await;
    assert_eq!(upn_account["email"], "upn-only-x@corp.example.com");
    assert_eq!(upn_account["status"], "connected");
    let short = &upn.replace('-', "")[..6];
    let mut slugs: Vec<String> = upn_account["managed_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_owned())
        .collect();
    slugs.sort();
    assert_eq!(
        slugs,
        vec![
            format!("upn-only-x-corp-example-com-calendar-{short}"),
            format!("upn-only-x-corp-example-com-mail-{short}"),
        ]
    );
    let names: Vec<&str> = upn_account["managed_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"upn-only-x@corp.example.com — Calendar"),
        "{names:?}"
    );
    assert_eq!(
        setup
            .app
            .running()
            .store()
            .list_targets()
            .await
            .unwrap()
            .len(),
        4,
        "two managed targets per account"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_without_email_fails_with_no_email_and_stores_nothing() {
    let setup = setup(3600).await;
    let location = setup.connect("noemail-x").await;
    assert_eq!(
        url::Url::parse(&location).unwrap().path(),
        "/ui/integrations"
    );
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("no_email"),
        "{location}"
    );
    assert_eq!(query_param(&location, "connected"), None, "{location}");
    assert_nothing_stored(&setup, "no email").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_consent_redirects_with_access_denied_and_stores_nothing() {
    let setup = setup(3600).await;
    // An admin's flow goes back to the integrations page with the error.
    let browser = setup.admin_browser().await;
    let start = setup.admin_connect_start(&browser).await;
    let callback = browser
        .authorize(&start, "ada", Consent::Deny, &callback_prefix(&setup))
        .await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let location = assert_ui_redirect(&browser.get(&callback).await);
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied"),
        "{location}"
    );
    // A connect link's flow ends on the public page, in plain words.
    let browser = BrowserClient::new();
    let link = setup.connect_link().await;
    let callback = browser
        .authorize(&link, "ada", Consent::Deny, &callback_prefix(&setup))
        .await;
    assert_public_page(
        &browser.get(&callback).await,
        400,
        "You declined the access request, so nothing was connected.",
    );
    assert_nothing_stored(&setup, "denied consent").await;
    assert_eq!(
        setup.oidc.stats().await.authorization_code,
        0,
        "no code exchange"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_missing_state_is_refused_with_400() {
    let setup = setup(3600).await;
    let browser = BrowserClient::new();
    let link = setup.connect_link().await;
    let callback = browser
        .sign_in(&link, "ada", &callback_prefix(&setup))
        .await;

    let forged = with_param(
        &callback,
        "state",
        Some(&format!("forged-{}", Uuid::new_v4().simple())),
    );
    assert_refused_page(&browser.get(&forged).await, "a forged state");
    let missing = with_param(&callback, "state", None);
    assert_refused_page(&browser.get(&missing).await, "a missing state");
    assert_nothing_stored(&setup, "forged state").await;
    assert_eq!(
        setup.oidc.stats().await.authorization_code,
        0,
        "a forged state never reaches the token endpoint"
    );

    // The genuine callback of that browser still completes (on the link's public page).
    assert_public_page(
        &browser.get(&callback).await,
        200,
        "Connected ada@example.com",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_state_is_refused_with_400() {
    let setup = setup(3600).await;
    let browser = BrowserClient::new();
    let link = setup.connect_link().await;
    let callback = browser
        .sign_in(&link, "ada", &callback_prefix(&setup))
        .await;
    let expired = chrono::Utc::now() - chrono::Duration::minutes(1);
    let changed = db_execute(
        &setup.app.db.url,
        "UPDATE oauth_states SET expires_at = $1",
        vec![expired.into()],
    )
    .await;
    assert_eq!(changed, 1, "one pending flow");

    assert_refused_page(&browser.get(&callback).await, "an expired state");
    assert_nothing_stored(&setup, "expired state").await;
    assert_eq!(
        setup.oidc.stats().await.authorization_code,
        0,
        "no code exchange"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_state_is_refused_and_only_one_account_exists() {
    let setup = setup(3600).await;
    let browser = setup.admin_browser().await;
    let start = setup.admin_connect_start(&browser).await;
    let callback = browser
        .sign_in(&start, "ada", &callback_prefix(&setup))
        .await;
    let cookie = browser.cookie(COOKIE).expect("binding cookie set");

    let location = assert_ui_redirect(&browser.get(&callback).await);
    let id = ConnectedSetup::connected_id(&location);

    // Replay the very same callback, with the very same cookie.
    browser.remove_cookie(COOKIE);
    browser.set_cookie(&setup.public_url, COOKIE, &cookie);
    assert_refused_page(&browser.get(&callback).await, "a replayed state");

    let (_, list) = setup
        .admin(Method::GET, "/api/connected-accounts", None)
        .await;
    let accounts = list["connected_accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{list}");
    assert_eq!(accounts[0]["id"], id.as_str());
    assert_eq!(
        db_count(&setup.app.db.url, "connected_accounts", "", vec![]).await,
        1
    );
    assert_eq!(
        setup
            .app
            .running()
            .store()
            .list_targets()
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        setup.oidc.stats().await.authorization_code,
        1,
        "the code is exchanged once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_mismatched_cookie_is_refused_and_consumes_the_state() {
    let setup = setup(3600).await;
    let prefix = callback_prefix(&setup);

    // No cookie at all; then the right cookie again: the state was consumed by the first try.
    let browser = BrowserClient::new();
    let callback = browser
        .sign_in(&setup.connect_link().await, "ada", &prefix)
        .await;
    let right = browser.cookie(COOKIE).unwrap();
    browser.remove_cookie(COOKIE);
    assert_refused_page(&browser.get(&callback).await, "no binding cookie");
    browser.set_cookie(&setup.public_url, COOKIE, &right);
    assert_refused_page(
        &browser.get(&callback).await,
        "the right cookie after a refused try (state consumed)",
    );

    // A genuine, correctly signed cookie of ANOTHER browser's flow.
    let browser = BrowserClient::new();
    let callback = browser
        .sign_in(&setup.connect_link().await, "ada", &prefix)
        .await;
    let other = BrowserClient::new();
    let started = other.get(&setup.connect_link().await).await;
    assert_eq!(started.status, 302);
    let foreign = other.cookie(COOKIE).unwrap();
    assert_ne!(foreign, browser.cookie(COOKIE).unwrap());
    browser.remove_cookie(COOKIE);
    browser.set_cookie(&setup.public_url, COOKIE, &foreign);
    assert_refused_page(&browser.get(&callback).await, "another flow's cookie");

    // This browser's nonce with a tampered signature.
    let browser = BrowserClient::new();
    let callback = browser
        .sign_in(&setup.connect_link().await, "ada", &prefix)
        .await;
    let own = browser.cookie(COOKIE).unwrap();
    let (nonce, _) = own.split_once('.').unwrap();
    browser.remove_cookie(COOKIE);
    browser.set_cookie(&setup.public_url, COOKIE, &format!("{nonce}.AAAAAAAAAAAA"));
    assert_refused_page(&browser.get(&callback).await, "a tampered signature");

    assert_nothing_stored(&setup, "cookie mismatch").await;
    assert_eq!(
        setup.oidc.stats().await.authorization_code,
        0,
        "no code exchange"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_keeps_the_account_id_targets_and_permissions() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let before = account(&setup, &id).await;
    let (agent, token_id) = agent_with_access(&setup.app, &id).await;
    let slug = managed_slug(&setup.app, &id, "mail").await;
    let reply = first_admitted(&setup, &agent, &slug).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada");
    let store = setup.app.running().store();
    let account_uuid: Uuid = id.parse().unwrap();
    let tokens_before = store.account_tokens(account_uuid).await.unwrap();
    let token_uuid: Uuid = token_id.parse().unwrap();
    let permissions_before = store.permissions_of_token(token_uuid).await.unwrap();
    assert_eq!(permissions_before.len(), 2);

    let again = ConnectedSetup::connected_id(&setup.connect("ada").await);
    assert_eq!(again, id, "same account id");
    let after = account(&setup, &id).await;
    assert_eq!(target_ids(&after), target_ids(&before), "same targets");
    assert_eq!(after["status"], "connected");
    assert_eq!(after["created_at"], before["created_at"]);
    let (_, list) = setup
        .admin(Method::GET, "/api/connected-accounts", None)
        .await;
    assert_eq!(list["connected_accounts"].as_array().unwrap().len(), 1);
    assert_eq!(store.list_targets().await.unwrap().len(), 2);
    let mut kept: Vec<(Uuid, bool)> = store
        .permissions_of_token(token_uuid)
        .await
        .unwrap()
        .iter()
        .map(|p| (p.target_id, p.read_only))
        .collect();
    let mut had: Vec<(Uuid, bool)> = permissions_before
        .iter()
        .map(|p| (p.target_id, p.read_only))
        .collect();
    kept.sort();
    had.sort();
    assert_eq!(kept, had, "permissions kept");
    let tokens_after = store.account_tokens(account_uuid).await.unwrap();
    assert_ne!(
        tokens_after.sealed_access_token, tokens_before.sealed_access_token,
        "new tokens stored"
    );
    assert!(tokens_after.account.token_version > tokens_before.account.token_version);

    // The fresh access token works through the proxy.
    let reply = gateway_get(&setup.app, &agent, &slug, "/me/messages?top=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada");
    let stats = setup.oidc.stats().await;
    assert_eq!(stats.authorization_code_ok, 2, "{stats:?}");
    assert_eq!(stats.refresh_token, 0, "{stats:?}");
    assert_eq!(stats.graph_unauthorized, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_revives_a_disconnected_account() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_uuid: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let slug = managed_slug(&setup.app, &id, "mail").await;
    // The user removes the app at the provider; the next refresh finds the grant dead.
    assert!(setup.oidc.revoke_account("ada").await >= 1);
    set_token_expiry(
        &setup.app.db.url,
        account_uuid,
        chrono::Utc::now() - chrono::Duration::seconds(5),
    )
    .await;
    wait_for_discovery(&setup.app, &agent, &slug).await;
    let reply = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(account(&setup, &id).await["status"], "disconnected");

    let again = ConnectedSetup::connected_id(&setup.connect("ada").await);
    assert_eq!(again, id);
    let revived = account(&setup, &id).await;
    assert_eq!(revived["status"], "connected", "{revived}");
    assert_eq!(revived["status_message"], Value::Null, "{revived}");
    let reply = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["sub"], "ada");
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_cascades_to_targets_and_permissions_and_revokes_the_grant() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_uuid: Uuid = id.parse().unwrap();
    let target_ids: Vec<Uuid> = target_ids(&account(&setup, &id).await)
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let (agent, token_id) = agent_with_access(&setup.app, &id).await;
    let token_uuid: Uuid = token_id.parse().unwrap();
    let slug = managed_slug(&setup.app, &id, "mail").await;
    let reply = first_admitted(&setup, &agent, &slug).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(setup.oidc.live_grants("ada").await >= 1);
    let store = setup.app.running().store();
    assert_eq!(
        store.permissions_of_token(token_uuid).await.unwrap().len(),
        2
    );

    let response = setup
        .app
        .api()
        .delete(&format!("/api/connected-accounts/{id}"))
        .await;
    response.expect(204);
    assert!(response.text.is_empty(), "{}", response.text);

    let (status, _) = setup
        .admin(Method::GET, &format!("/api/connected-accounts/{id}"), None)
        .await;
    assert_eq!(status, 404);
    assert!(store.account_tokens(account_uuid).await.is_err());
    assert_eq!(
        db_count(&setup.app.db.url, "connected_accounts", "", vec![]).await,
        0,
        "the row and its sealed tokens are gone"
    );
    let left = store.list_targets().await.unwrap();
    assert!(
        left.iter().all(|t| !target_ids.contains(&t.id)),
        "managed targets deleted: {left:?}"
    );
    assert!(
        store
            .permissions_of_token(token_uuid)
            .await
            .unwrap()
            .is_empty(),
        "permissions deleted"
    );
    for target in &target_ids {
        assert_eq!(
            db_count(
                &setup.app.db.url,
                "token_permissions",
                "target_id = $1",
                vec![(*target).into()],
            )
            .await,
            0
        );
    }
    // The provider grant is revoked (best effort, here it works).
    let stats = setup.oidc.stats().await;
    assert!(stats.revocation >= 1, "revocation called: {stats:?}");
    assert_eq!(
        setup.oidc.live_grants("ada").await,
        0,
        "the grant is gone at the provider"
    );
    // The proxy stops serving the target within 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut last = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
    while last.status == 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        last = gateway_get(&setup.app, &agent, &slug, "/me/messages").await;
    }
    assert!(
        matches!(last.status, 403 | 404),
        "the deleted target is refused: {} {}",
        last.status,
        last.text
    );
    // A second delete finds nothing.
    setup
        .app
        .api()
        .delete(&format!("/api/connected-accounts/{id}"))
        .await
        .expect(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_targets_are_read_only() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let store = setup.app.running().store();
    let before = store.list_targets().await.unwrap();
    assert_eq!(before.len(), 2);
    let api = setup.app.api();
    for target in &before {
        assert_eq!(target.connected_account_id, Some(id.parse().unwrap()));
        let path = format!("/api/targets/{}", target.id);
        let replies = [
            api.patch(&path, json!({"name": "renamed"})).await,
            api.patch(&path, json!({"enabled": false})).await,
            api.delete(&path).await,
            api.post(
                &format!("{path}/auth-methods"),
                json!({"label": "key", "type": "bearer", "credential": "abcdefgh12345"}),
            )
            .await,
        ];
        for reply in replies {
            reply.expect(409);
            assert_eq!(reply.json["error"], MANAGED_MESSAGE, "{}", reply.text);
        }
    }
    let after = store.list_targets().await.unwrap();
    assert_eq!(after, before, "nothing changed");
    for target in &after {
        let methods = api
            .get(&format!("/api/targets/{}/auth-methods", target.id))
            .await;
        let methods = methods.expect(200);
        let list = methods
            .as_array()
            .or_else(|| methods["auth_methods"].as_array())
            .cloned()
            .unwrap_or_default();
        assert!(list.is_empty(), "no auth method added: {methods}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_show_which_are_configured_and_their_env_vars() {
    let setup = setup(3600).await;
    let (status, body) = setup.admin(Method::GET, "/api/providers", None).await;
    assert_eq!(status, 200, "{body}");
    let providers = body["providers"].as_array().unwrap();
    let find = |kind: &str| {
        providers
            .iter()
            .find(|p| p["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} listed: {body}"))
            .clone()
    };
    let microsoft = find("microsoft_365");
    assert_eq!(microsoft["configured"], true, "{microsoft}");
    assert_eq!(
        microsoft["env_vars"],
        json!(["OAUTH_MICROSOFT_CLIENT_ID", "OAUTH_MICROSOFT_CLIENT_SECRET"])
    );
    assert_eq!(microsoft["capabilities"], json!(["mail", "calendar"]));
    assert!(microsoft["name"].as_str().is_some_and(|n| !n.is_empty()));
    let google = find("google_workspace");
    assert_eq!(google["configured"], false, "{google}");
    assert_eq!(
        google["env_vars"],
        json!(["OAUTH_GOOGLE_CLIENT_ID", "OAUTH_GOOGLE_CLIENT_SECRET"])
    );
    assert_eq!(google["capabilities"], json!(["mail", "calendar"]));
    // Never a secret in the answer.
    assert!(
        !body.to_string().contains(setup.oidc.client_secret()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_links_for_unknown_or_unconfigured_providers_are_refused() {
    let setup = setup(3600).await;
    let api = setup.app.api();
    api.post("/api/connect-links", json!({"provider": "myspace"}))
        .await
        .expect_error(400, Some("provider"));
    api.post("/api/connect-links", json!({}))
        .await
        .expect_error(400, Some("provider"));
    let google = api
        .post(
            "/api/connect-links",
            json!({"provider": "google_workspace"}),
        )
        .await;
    let message = google.expect_error(409, None);
    assert!(
        message.contains("OAUTH_GOOGLE_CLIENT_ID"),
        "the 409 names what to set: {message}"
    );
    assert_eq!(
        db_count(&setup.app.db.url, "connect_links", "", vec![]).await,
        0,
        "no link stored"
    );
    let created = api
        .post("/api/connect-links", json!({"provider": "microsoft_365"}))
        .await;
    let body = created.expect(201);
    assert!(body["url"].as_str().is_some());
    assert!(body["expires_at"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn account_access_grants_and_revokes_both_managed_targets() {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let targets: Vec<Uuid> = target_ids(&account(&setup, &id).await)
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let api = setup.app.api();
    let token = api
        .post("/api/tokens", json!({"name": "agent"}))
        .await
        .expect(201)
        .clone();
    let token_id = token["id"].as_str().unwrap().to_owned();
    let token_uuid: Uuid = token_id.parse().unwrap();
    let store = setup.app.running().store();
    let path = format!("/api/connected-accounts/{id}/access/{token_id}");
    let permissions = || async {
        let mut list: Vec<(Uuid, bool)> = store
            .permissions_of_token(token_uuid)
            .await
            .unwrap()
            .iter()
            .map(|p| (p.target_id, p.read_only))
            .collect();
        list.sort();
        list
    };
    let mut sorted_targets = targets.clone();
    sorted_targets.sort();
    let all = |read_only: bool| -> Vec<(Uuid, bool)> {
        sorted_targets.iter().map(|t| (*t, read_only)).collect()
    };

    let granted = api.put_empty(&path).await;
    let body = granted.expect(200);
    assert_eq!(
        *body,
        json!({"account_id": id, "token_id": token_id, "targets": 2})
    );
    assert_eq!(permissions().await, all(false));
    // Idempotent.
    api.put(&path, json!({})).await.expect(200);
    assert_eq!(permissions().await, all(false));
    // `read_only` as given.
    api.put(&path, json!({"read_only": true})).await.expect(200);
    assert_eq!(permissions().await, all(true));
    // The token sees both targets.
    let agent = token["token"].as_str().unwrap();
    let slug = managed_slug(&setup.app, &id, "calendar").await;
    wait_for_discovery(&setup.app, agent, &slug).await;

    let revoked = api.delete(&path).await;
    assert_eq!(
        *revoked.expect(200),
        json!({"account_id": id, "token_id": token_id, "targets": 2})
    );
    assert!(permissions().await.is_empty());
    let again = api.delete(&path).await;
    assert_eq!(again.expect(200)["targets"], 0);
    // Unknown account or token → 404.
    api.put_empty(&format!(
        "/api/connected-accounts/{}/access/{token_id}",
        Uuid::new_v4()
    ))
    .await
    .expect(404);
    api.put_empty(&format!(
        "/api/connected-accounts/{id}/access/{}",
        Uuid::new_v4()
    ))
    .await
    .expect(404);
}
