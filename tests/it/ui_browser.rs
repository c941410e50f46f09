//! The admin web UI (`/ui`) in a real headless Chromium: login, connect an account through the
//! real authorization server, manage access, targets, tokens, audit log, disconnect, logout.
//! Screenshots of each page land in `target/ui-screenshots/`. The CSRF and session checks are
//! plain HTTP (reqwest with the session cookie).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::accounts::{self, ConnectedSetup};
use crate::support::browser::Browser;

/// Follow the authorization server's pages (login, then consent) until the browser is back on
/// the integrations page.
async fn sign_in_at_provider(browser: &Browser, setup: &ConnectedSetup, login: &str) {
    let back = format!("{}/ui/integrations", setup.public_url);
    sign_in_until(browser, setup, login, |url| {
        url.as_str().starts_with(&back)
            && url
                .query_pairs()
                .any(|(k, _)| k == "connected" || k == "error")
    })
    .await;
}

/// Follow the authorization server's pages until `done` holds for the browser's URL.
async fn sign_in_until(
    browser: &Browser,
    setup: &ConnectedSetup,
    login: &str,
    done: impl Fn(&url::Url) -> bool,
) {
    let mut logins = 0;
    for _ in 0..60 {
        let url = browser.url().await;
        if done(&url) {
            return;
        }
        if url.as_str().starts_with(&setup.public_url) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let login_inputs = browser.all("input[name=login]").await;
        if let Some(input) = login_inputs.first() {
            logins += 1;
            assert!(logins <= 1, "the provider's login form came back at {url}");
            input.send_keys(login).await.unwrap();
            if let Some(password) = browser.all("input[name=password]").await.first() {
                password.send_keys("any-password").await.unwrap();
            }
            browser.click_and_wait("button[type=submit]").await;
        } else if let Some(button) = browser.all("button[type=submit]").await.first() {
            // The consent form.
            button.click().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!(
        "the browser did not come back to Gatehouse; it is at {}",
        browser.url().await
    );
}

async fn wait_for_path(browser: &Browser, path: &str) -> url::Url {
    for _ in 0..50 {
        let url = browser.url().await;
        if url.path() == path {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {path}, the browser is at {}", browser.url().await);
}

async fn create_token(setup: &ConnectedSetup, name: &str) -> (Uuid, String) {
    let (status, body) = setup
        .admin(Method::POST, "/api/tokens", Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().parse().unwrap(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_ui_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let setup = accounts::setup(3600).await;
    let store = setup.app.running().store().clone();
    let ui = |path: &str| setup.app.admin_url(path);

    let (agent_id, agent_plaintext) = create_token(&setup, "agent-one").await;
    let (status, billing) = setup
        .admin(
            Method::POST,
            "/api/targets",
            Some(json!({"name": "Billing API", "base_url": "https://billing.example.com/v1"})),
        )
        .await;
    assert_eq!(status, 201, "{billing}");
    let billing_id: Uuid = billing["id"].as_str().unwrap().parse().unwrap();

    // Without a session every page sends the browser to the login form.
    browser.goto(&ui("/ui/integrations")).await;
    wait_for_path(&browser, "/ui/login").await;
    browser.css("label[for=token]").await;
    browser.screenshot("01-login").await;
    browser
        .css("input#token")
        .await
        .send_keys(setup.app.admin_token.expose())
        .await
        .unwrap();
    browser.click_and_wait("form button[type=submit]").await;
    // A login brings the browser back to the page it asked for.
    wait_for_path(&browser, "/ui/integrations").await;
    let text = browser.text().await;
    assert!(text.contains("Microsoft 365"), "{text}");
    assert!(
        text.contains("OAUTH_GOOGLE_CLIENT_ID"),
        "unconfigured providers name their variables: {text}"
    );
    assert!(text.contains("No account is connected yet."), "{text}");
    browser.screenshot("02-integrations-empty").await;

    // Connect through the real authorization server.
    browser
        .click_and_wait("form[action='/ui/integrations/connect'] button[type=submit]")
        .await;
    sign_in_at_provider(&browser, &setup, "ada@example.com").await;
    let url = browser.url().await;
    let account_id = url
        .query_pairs()
        .find(|(k, _)| k == "connected")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("not connected: {url}"));
    let account_id: Uuid = account_id.parse().unwrap();
    let banner = browser.css(".banner.ok").await.text().await.unwrap();
    assert!(banner.contains("Connected ada@example.com"), "{banner}");
    let card = browser.css("article.account").await;
    let card_text = card.text().await.unwrap();
    assert!(card_text.contains("ada@example.com"), "{card_text}");
    assert!(card_text.contains("connected"), "{card_text}");
    let managed = browser.all("article.account ul.targets li").await;
    assert_eq!(managed.len(), 2, "two managed targets: {card_text}");
    let managed_targets = store.targets_of_account(account_id).await.unwrap();
    assert_eq!(managed_targets.len(), 2);
    browser.screenshot("03-integrations-connected").await;

    // Manage access: grant agent-one, then make it read-only, then revoke.
    let access_box = format!("input[name='access_{agent_id}']");
    let read_only_box = format!("input[name='ro_{agent_id}']");
    let save = "details.access button[type=submit]";
    browser.click("details.access summary").await;
    browser.click(&access_box).await;
    browser.screenshot("04-integrations-manage-access").await;
    browser.click_and_wait(save).await;
    wait_for_path(&browser, "/ui/integrations").await;
    browser.css(".banner.ok").await;
    let rows = store.permissions_of_token(agent_id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|p| !p.read_only), "{rows:?}");
    let mut on: Vec<Uuid> = rows.iter().map(|p| p.target_id).collect();
    let mut expected: Vec<Uuid> = managed_targets.iter().map(|t| t.id).collect();
    on.sort();
    expected.sort();
    assert_eq!(on, expected);

    browser.click("details.access summary").await;
    assert!(
        browser.css(&access_box).await.is_selected().await.unwrap(),
        "the switch shows the grant"
    );
    browser.click(&read_only_box).await;
    browser.click_and_wait(save).await;
    wait_for_path(&browser, "/ui/integrations").await;
    browser.css(".banner.ok").await;
    let rows = store.permissions_of_token(agent_id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|p| p.read_only), "{rows:?}");

    browser.click("details.access summary").await;
    browser.click(&access_box).await;
    browser.click_and_wait(save).await;
    wait_for_path(&browser, "/ui/integrations").await;
    browser.css(".banner.ok").await;
    assert!(
        store
            .permissions_of_token(agent_id)
            .await
            .unwrap()
            .is_empty()
    );

    // Targets: the list shows who manages what; a managed target has no edit controls.
    browser.goto(&ui("/ui/targets")).await;
    let text = browser.text().await;
    assert!(text.contains("Managed by ada@example.com"), "{text}");
    assert!(text.contains("Billing API"), "{text}");
    browser.screenshot("05-targets").await;

    browser
        .goto(&ui(&format!("/ui/targets/{}", managed_targets[0].id)))
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("changes only through its connected account"),
        "{text}"
    );
    assert!(browser.all("form[action$='/edit']").await.is_empty());
    assert!(browser.all("form[action$='/delete']").await.is_empty());
    assert!(browser.all("input[name=base_url]").await.is_empty());
    browser.screenshot("06-target-managed").await;

    browser
        .goto(&ui(&format!("/ui/targets/{billing_id}")))
        .await;
    assert_eq!(browser.all("form[action$='/edit']").await.len(), 1);
    assert_eq!(browser.all("form[action$='/delete']").await.len(), 1);
    // A standard target takes new auth methods; only the hint comes back.
    browser
        .css("input#method-label")
        .await
        .send_keys("Billing key")
        .await
        .unwrap();
    browser
        .css("input#method-credential")
        .await
        .send_keys("billing-secret-123456")
        .await
        .unwrap();
    browser
        .click_and_wait("form[action$='/auth-methods'] button[type=submit]")
        .await;
    let text = browser.text().await;
    assert!(text.contains("Billing key"), "{text}");
    assert!(!text.contains("billing-secret-123456"), "{text}");
    let methods = store.auth_methods(billing_id).await.unwrap();
    assert_eq!(methods.len(), 1, "{methods:?}");
    assert!(methods[0].is_default);
    browser.screenshot("07-target-standard").await;

    // Tokens: create one (plaintext shown once), then a permission on the standard target.
    browser.goto(&ui("/ui/tokens")).await;
    browser
        .css("input#token-name")
        .await
        .send_keys("agent-two")
        .await
        .unwrap();
    browser
        .css("input#token-rate-limit")
        .await
        .send_keys("120")
        .await
        .unwrap();
    browser
        .click_and_wait("form[action='/ui/tokens'] button[type=submit]")
        .await;
    let plaintext = browser
        .css("input#plaintext")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(plaintext.starts_with("sg_"), "{plaintext}");
    // Copy-ready MCP client set-up for the new token, at proxy.public_url (the default here).
    let claude = browser.css("#setup-claude").await.text().await.unwrap();
    assert_eq!(
        claude,
        format!(
            "claude mcp add --transport http gatehouse http://127.0.0.1:8080/mcp --header \"Authorization: Bearer {plaintext}\""
        )
    );
    let servers: serde_json::Value =
        serde_json::from_str(&browser.css("#setup-json").await.text().await.unwrap()).unwrap();
    assert_eq!(
        servers["mcpServers"]["gatehouse"]["headers"]["Authorization"],
        format!("Bearer {plaintext}")
    );
    browser.screenshot("08-tokens-created").await;
    let agent_two = store
        .agent_token_by_hash(
            &gatehouse::domain::tokens::AgentToken::parse(&plaintext)
                .unwrap()
                .hash(),
        )
        .await
        .unwrap()
        .expect("agent-two stored");
    assert_eq!(agent_two.rate_limit.map(|l| l.per_minute()), Some(120));

    browser.goto(&ui(&format!("/ui/tokens/{agent_id}"))).await;
    let form = format!("form[action='/ui/tokens/{agent_id}/permissions/{billing_id}']");
    browser.click(&format!("{form} input[name=access]")).await;
    browser
        .click_and_wait(&format!("{form} button[type=submit]"))
        .await;
    wait_for_path(&browser, &format!("/ui/tokens/{agent_id}")).await;
    browser.css("h1").await;
    // The token page cannot show the secret again: the set-up carries a placeholder.
    let claude = browser.css("#setup-claude").await.text().await.unwrap();
    assert!(
        claude.ends_with("--header \"Authorization: Bearer <your sg_ token>\""),
        "{claude}"
    );
    let rows = store.permissions_of_token(agent_id).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].target_id, billing_id);
    assert!(!rows[0].read_only);
    browser.screenshot("09-token-detail").await;

    // Audit log: a couple of proxied requests, newest first.
    for path in ["/gateway/billing-api/invoices", "/gateway/nowhere/at-all"] {
        let _ = setup
            .app
            .http
            .get(setup.app.proxy_url(path))
            .bearer_auth(&agent_plaintext)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
    let mut audit_text = String::new();
    for _ in 0..30 {
        browser.goto(&ui("/ui/audit")).await;
        audit_text = browser.text().await;
        if audit_text.contains("nowhere") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(audit_text.contains("nowhere"), "{audit_text}");
    browser.css("form.filters select[name=token_id]").await;
    browser.screenshot("10-audit").await;

    // Disconnect: a confirmation naming what goes, then the targets are gone.
    browser.goto(&ui("/ui/integrations")).await;
    browser
        .click_and_wait(&format!(
            "a[href='/ui/integrations/{account_id}/disconnect']"
        ))
        .await;
    let text = browser.text().await;
    for target in &managed_targets {
        assert!(text.contains(&target.name), "{text}");
    }
    browser.screenshot("11-disconnect-confirm").await;
    browser
        .click_and_wait("main button.danger[type=submit]")
        .await;
    wait_for_path(&browser, "/ui/integrations").await;
    let text = browser.text().await;
    assert!(text.contains("Account disconnected"), "{text}");
    assert!(text.contains("No account is connected yet."), "{text}");
    assert!(
        store
            .targets_of_account(account_id)
            .await
            .unwrap()
            .is_empty()
    );
    let remaining: Vec<Uuid> = store
        .list_targets()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(remaining, vec![billing_id]);
    browser.screenshot("12-integrations-disconnected").await;

    // Webhooks: create (the secret shown once), open it, send a test event, see the log.
    browser.goto(&ui("/ui/webhooks")).await;
    browser
        .css("input#webhook-url")
        .await
        .send_keys("https://hooks.example.com/gatehouse")
        .await
        .unwrap();
    browser
        .click_and_wait("form[action='/ui/webhooks'] button[type=submit]")
        .await;
    let secret = browser
        .css("input#plaintext")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.screenshot("13-webhooks-created").await;
    browser
        .click_and_wait("table a[href^='/ui/webhooks/']")
        .await;
    browser
        .click_and_wait("form[action$='/test'] button[type=submit]")
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("webhook.test") && !text.contains(&secret),
        "{text}"
    );
    browser.screenshot("14-webhook-detail").await;

    browser.goto(&ui("/ui/targets")).await;
    let text = browser.text().await;
    assert!(!text.contains("Managed by"), "{text}");

    // Logout ends the session.
    browser
        .click_and_wait("form.logout button[type=submit]")
        .await;
    wait_for_path(&browser, "/ui/login").await;
    browser.goto(&ui("/ui/tokens")).await;
    wait_for_path(&browser, "/ui/login").await;

    browser.close().await;
    setup.app.stop().await;
}

/// A person who is not an admin opens a connect link in a real browser: after consenting they
/// land on a public page of Gatehouse's own, never on the admin login.
#[tokio::test(flavor = "multi_thread")]
async fn a_connect_link_ends_on_a_public_page_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let setup = accounts::setup(3600).await;
    let link = setup.connect_link().await;
    browser.goto(&link).await;
    let callback = format!("{}/oauth/callback", setup.public_url);
    sign_in_until(&browser, &setup, "ada@example.com", |url| {
        url.as_str().starts_with(&callback)
    })
    .await;
    let text = browser.css("main").await.text().await.unwrap();
    assert!(
        text.contains("Connected ada@example.com — you can close this window."),
        "{text}"
    );
    let url = browser.url().await;
    assert_eq!(url.path(), "/oauth/callback", "stays on the public page");
    assert!(
        browser.all("input[name=token]").await.is_empty(),
        "no login form"
    );
    browser.screenshot("13-connect-link-done").await;
    let id = setup.account_id_by_email("ada@example.com").await;
    let (status, account) = setup
        .admin(Method::GET, &format!("/api/connected-accounts/{id}"), None)
        .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["status"], "connected");
    browser.close().await;
    setup.app.stop().await;
}

fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

#[tokio::test]
async fn ui_sessions_and_csrf() {
    let app = TestApp::spawn().await;
    let http = &app.http;

    // No session: pages and actions send the browser to the login page.
    // A page asked for comes back after the login; a form post cannot be replayed.
    for (method, path, login) in [
        (Method::GET, "/ui/tokens", "/ui/login?next=%2Fui%2Ftokens"),
        (Method::POST, "/ui/tokens", "/ui/login"),
    ] {
        let response = http
            .request(method, app.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], login);
    }

    let response = http
        .post(app.admin_url("/ui/login"))
        .form(&[("token", "sga_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let response = http
        .post(app.admin_url("/ui/login"))
        .form(&[("token", app.admin_token.expose())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/ui", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain-http public URL: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("gatehouse_session="), "{cookie}");

    let page = http
        .get(app.admin_url("/ui/tokens"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_of(&page.text().await.unwrap());

    let post = |fields: Vec<(&'static str, String)>| {
        http.post(app.admin_url("/ui/tokens"))
            .header("cookie", &cookie)
            .form(&fields)
            .send()
    };
    let missing = post(vec![("name", "sneaky".to_owned())]).await.unwrap();
    assert_eq!(missing.status(), 403);
    let wrong = post(vec![
        ("name", "sneaky".to_owned()),
        ("csrf", "not-the-token".to_owned()),
    ])
    .await
    .unwrap();
    assert_eq!(wrong.status(), 403);
    let tokens = app.running().store().list_agent_tokens().await.unwrap();
    assert!(
        tokens.is_empty(),
        "a refused form wrote nothing: {tokens:?}"
    );

    let ok = post(vec![("name", "fine".to_owned()), ("csrf", csrf.clone())])
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("sg_"));
    assert_eq!(
        app.running()
            .store()
            .list_agent_tokens()
            .await
            .unwrap()
            .len(),
        1
    );

    // Logout (with the CSRF token) ends the session.
    let out = http
        .post(app.admin_url("/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let again = http
        .get(app.admin_url("/ui/tokens"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);

    app.stop().await;
}
