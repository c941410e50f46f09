//! Guard rules and approvals in the admin web UI (SPEC §12), in a real headless Chromium: the
//! agent's DELETE is held, the approval URL it got leads a logged-out browser through the login
//! and back to the approval page, Approve lets exactly one re-sent request through to a real
//! loopback upstream, Deny on the list page refuses the next one; a guard rule added and the
//! built-in rules switched off on the target page. Plus the login's `next` parameter, which must
//! never redirect off-site. Screenshots: `target/ui-screenshots/approval-*.png`,
//! `approvals-list.png`, `target-guard-rules.png`. Both backends.

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::support::admin::{Reply, json_id};
use crate::support::agent::{PROPAGATION, until};
use crate::support::browser::Browser;
use crate::support::upstream::{FakeUpstream, sha256_hex};
use crate::support::{TestApp, TestDb};

const SLUG: &str = "ops";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An app whose `admin.public_url` is its real admin address, so the approval URL the agent
/// gets is one the browser can open. The port is reserved and released first; another test may
/// take it meanwhile: then try another (at most 5 times).
async fn spawn_with_real_public_url() -> (TestApp, String) {
    let db = TestDb::new().await;
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut attempts = 0;
    loop {
        let public_url = format!("http://127.0.0.1:{}", free_port());
        let mut config = TestApp::config(&db, &admin_token, key);
        config.admin.listen = public_url.trim_start_matches("http://").parse().unwrap();
        config.admin.public_url = url::Url::parse(&public_url).unwrap();
        match gatehouse::app::App::build(config).await {
            Ok(running) => {
                return (
                    TestApp::from_running(db, admin_token, key, running),
                    public_url,
                );
            }
            Err(error) if attempts < 5 && error.to_string().contains("admin.listen") => {
                attempts += 1;
            }
            Err(error) => panic!("gatehouse starts: {error}"),
        }
    }
}

/// The agent's request, optionally naming an approval in `Gatehouse-Approval`.
async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    approval: Option<&str>,
) -> Reply {
    let mut request = app.gateway(method, path, Some(token));
    if let Some(id) = approval {
        request = request.header("Gatehouse-Approval", id);
    }
    Reply::read(request.send().await.unwrap()).await
}

/// A 403 `approval required`: the approval's id and URL.
fn held(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.json["error"], "approval required", "{}", reply.text);
    let id = reply.json["approval"]["id"].as_str().unwrap().to_owned();
    let url = reply.json["approval"]["url"].as_str().unwrap().to_owned();
    (id, url)
}

fn assert_refused(reply: &Reply, error: &str) {
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.json["error"], error, "{}", reply.text);
}

async fn text_of(browser: &Browser, selector: &str) -> String {
    browser.css(selector).await.text().await.unwrap()
}

/// The browser's session cookie, for plain-HTTP requests as the same admin.
async fn session_cookie(browser: &Browser) -> String {
    let cookie = browser
        .client
        .get_named_cookie("gatehouse_session")
        .await
        .unwrap();
    format!("gatehouse_session={}", cookie.value())
}

#[tokio::test]
async fn an_admin_decides_approvals_in_the_browser_and_edits_guard_rules() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, public_url) = spawn_with_real_public_url().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for(SLUG, &upstream.url(""), None).await;
    upstream.clear();

    // The built-in rules hold a DELETE; nothing goes upstream.
    let first = send(
        &app,
        &agent.token,
        Method::DELETE,
        "/gateway/ops/items/1",
        None,
    )
    .await;
    let (first_id, first_url) = held(&first);
    assert_eq!(first_url, format!("{public_url}/ui/approvals/{first_id}"));
    assert_eq!(upstream.count(), 0);

    // Logged out, the approval URL leads to the login, and the login back to it.
    browser.goto(&first_url).await;
    let at_login = browser.url().await;
    assert_eq!(at_login.path(), "/ui/login");
    let next: Vec<String> = at_login
        .query_pairs()
        .filter(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(next, [format!("/ui/approvals/{first_id}")]);
    browser
        .css("input#token")
        .await
        .send_keys(app.admin_token.expose())
        .await
        .unwrap();
    browser.click_and_wait("form button[type=submit]").await;
    assert_eq!(browser.url().await.as_str(), first_url);

    // The page shows what was asked, and the two decisions.
    assert_eq!(text_of(&browser, "dd[data-field=method]").await, "DELETE");
    assert_eq!(text_of(&browser, "dd[data-field=path]").await, "/items/1");
    assert_eq!(text_of(&browser, "dd[data-field=status]").await, "pending");
    assert_eq!(
        text_of(&browser, "dd[data-field=token]").await,
        agent.token_name
    );
    assert_eq!(text_of(&browser, "dd[data-field=target]").await, SLUG);
    assert!(
        text_of(&browser, "dd[data-field=reason]")
            .await
            .contains("DELETE needs a person's approval")
    );
    assert_eq!(browser.all("button[data-action]").await.len(), 2);
    browser.screenshot("approval-1280").await;

    // Approve: the outcome, no buttons any more.
    browser.click_and_wait("button[data-action=approve]").await;
    assert_eq!(browser.url().await.as_str(), first_url);
    assert_eq!(text_of(&browser, "dd[data-field=status]").await, "approved");
    assert_eq!(
        text_of(&browser, "dd[data-field=decided-by]").await,
        "admin:GATEHOUSE_ADMIN_TOKEN"
    );
    assert!(text_of(&browser, "#outcome").await.starts_with("Approved"));
    assert!(browser.all("button[data-action]").await.is_empty());
    browser.screenshot("approval-approved").await;

    // One-time: a second decision (a stale tab's form) is a 409 page naming why.
    let cookie = session_cookie(&browser).await;
    let csrf = browser
        .css("form.logout input[name=csrf]")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let again = app
        .http
        .post(app.admin_url(&format!("/ui/approvals/{first_id}/deny")))
        .header(reqwest::header::COOKIE, &cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let page = again.text().await.unwrap();
    assert!(page.contains("approval is approved"), "{page}");
    assert!(!page.contains("data-action=\"approve\""), "{page}");
    let shown = app.api().get(&format!("/api/approvals/{first_id}")).await;
    assert_eq!(shown.expect(200)["status"], "approved");

    // The agent re-sends with the approval: it passes once, exactly one DELETE upstream.
    let passed = send(
        &app,
        &agent.token,
        Method::DELETE,
        "/gateway/ops/items/1",
        Some(&first_id),
    )
    .await;
    assert_eq!(passed.status, 200, "{}", passed.text);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "DELETE");
    assert_eq!(received[0].path, "/items/1");
    assert!(received[0].header("gatehouse-approval").is_none());
    let reused = send(
        &app,
        &agent.token,
        Method::DELETE,
        "/gateway/ops/items/1",
        Some(&first_id),
    )
    .await;
    assert_refused(&reused, "approval already used");
    assert_eq!(upstream.count(), 1);

    // A second one, denied from the list page.
    let second = send(
        &app,
        &agent.token,
        Method::DELETE,
        "/gateway/ops/items/2",
        None,
    )
    .await;
    let (second_id, _) = held(&second);
    browser.goto(&app.admin_url("/ui/approvals")).await;
    assert_eq!(
        text_of(&browser, "header nav a[aria-current=page]").await,
        "Approvals"
    );
    let pending_row = format!("#pending ~ div tr[data-approval='{second_id}']");
    assert!(
        text_of(&browser, &pending_row)
            .await
            .contains("DELETE /items/2")
    );
    let decided_row = format!("#decided ~ div tr[data-approval='{first_id}']");
    let decided = text_of(&browser, &decided_row).await;
    // Approved, then used by the re-sent request.
    assert!(decided.contains("used"), "{decided}");
    assert!(decided.contains("admin:GATEHOUSE_ADMIN_TOKEN"), "{decided}");
    browser.screenshot("approvals-list").await;
    browser
        .click_and_wait(&format!("{pending_row} button[data-action=deny]"))
        .await;
    assert_eq!(browser.url().await.path(), "/ui/approvals");
    assert!(browser.all(&pending_row).await.is_empty());
    let denied_row = format!("#decided ~ div tr[data-approval='{second_id}']");
    assert!(text_of(&browser, &denied_row).await.contains("denied"));
    let refused = send(
        &app,
        &agent.token,
        Method::DELETE,
        "/gateway/ops/items/2",
        Some(&second_id),
    )
    .await;
    assert_refused(&refused, "approval denied");
    assert_eq!(upstream.count(), 1, "a denied request never goes upstream");

    // A body is shown as text: markup in it stays text (escaped), with its size and hash.
    let body = "{\"note\": \"<script>document.title='pwned'</script> & <b>bold</b>\"}";
    let third = app
        .gateway(
            Method::POST,
            "/gateway/ops/jobs/7/restart",
            Some(&agent.token),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (_, third_url) = held(&Reply::read(third).await);
    browser.goto(&third_url).await;
    assert_eq!(text_of(&browser, "pre.body-preview").await, body);
    assert!(browser.all("pre.body-preview *").await.is_empty());
    assert_ne!(browser.client.title().await.unwrap(), "pwned");
    let facts = text_of(&browser, "dd[data-field=body]").await;
    assert!(facts.contains(&format!("{} bytes", body.len())), "{facts}");
    assert!(facts.contains(&sha256_hex(body.as_bytes())), "{facts}");
    assert!(
        text_of(&browser, "dd[data-field=reason]")
            .await
            .contains("/restart")
    );
    browser.screenshot("approval-body").await;
    assert_eq!(upstream.count(), 1);

    // A guard rule through the target page's form; the API lists it.
    let target = format!("/ui/targets/{}", agent.target_id);
    browser.goto(&app.admin_url(&target)).await;
    browser
        .css("#rule-method")
        .await
        .select_by_value("POST")
        .await
        .unwrap();
    browser
        .css("#rule-match")
        .await
        .select_by_value("prefix")
        .await
        .unwrap();
    browser
        .css("#rule-path")
        .await
        .send_keys("/Admin")
        .await
        .unwrap();
    browser
        .css("#rule-action")
        .await
        .select_by_value("block")
        .await
        .unwrap();
    browser
        .css("#rule-reason")
        .await
        .send_keys("no admin calls from agents")
        .await
        .unwrap();
    browser
        .click_and_wait("form[action$='/guard-rules'] button[type=submit]")
        .await;
    let rules = app
        .api()
        .get(&format!("/api/targets/{}/guard-rules", agent.target_id))
        .await;
    let rules = rules.expect(200)["guard_rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(rule["method"], "POST");
    assert_eq!(rule["path_match"], "prefix");
    assert_eq!(rule["path"], "/Admin");
    assert_eq!(rule["action"], "block");
    assert_eq!(rule["reason"], "no admin calls from agents");
    let rule_id = json_id(rule);
    let row = format!("tr[data-rule='{rule_id}']");
    assert_eq!(
        text_of(&browser, &format!("{row} [data-cell=method]")).await,
        "POST"
    );
    assert_eq!(
        text_of(&browser, &format!("{row} [data-cell=path]")).await,
        "/Admin"
    );
    // It is in force within the propagation bound (case-insensitively).
    let (blocked, last) = until(
        PROPAGATION,
        || {
            send(
                &app,
                &agent.token,
                Method::POST,
                "/gateway/ops/admin/users",
                None,
            )
        },
        |reply| reply.status == 403,
    )
    .await;
    assert!(blocked, "{} {}", last.status, last.text);
    assert_refused(&last, "blocked by guard rule");
    assert_eq!(last.json["reason"], "no admin calls from agents");

    // The built-ins, off through the toggle: a DELETE then passes without approval.
    assert!(
        text_of(&browser, "#built-in-text")
            .await
            .contains("/shutdown")
    );
    let toggle = browser.css("#guard-defaults").await;
    assert!(toggle.is_selected().await.unwrap());
    toggle.click().await.unwrap();
    browser
        .click_and_wait("form[action$='/guard-defaults'] button[type=submit]")
        .await;
    assert!(
        !browser
            .css("#guard-defaults")
            .await
            .is_selected()
            .await
            .unwrap()
    );
    browser.screenshot("target-guard-rules").await;
    let shown = app
        .api()
        .get(&format!("/api/targets/{}", agent.target_id))
        .await;
    assert_eq!(shown.expect(200)["guard_defaults"], false);
    let before = upstream.count();
    let (passed, last) = until(
        PROPAGATION,
        || {
            send(
                &app,
                &agent.token,
                Method::DELETE,
                "/gateway/ops/items/3",
                None,
            )
        },
        |reply| reply.status != 403,
    )
    .await;
    assert!(passed, "{} {}", last.status, last.text);
    assert_eq!(last.status, 200, "{}", last.text);
    assert_eq!(upstream.count(), before + 1);
    assert_eq!(upstream.last().method, "DELETE");
    assert_eq!(upstream.last().path, "/items/3");

    // Deleting the rule through its button empties the list.
    browser
        .click_and_wait(&format!("{row} button[type=submit]"))
        .await;
    let rules = app
        .api()
        .get(&format!("/api/targets/{}/guard-rules", agent.target_id))
        .await;
    assert_eq!(rules.expect(200)["guard_rules"], Value::Array(Vec::new()));
    assert!(browser.all(&row).await.is_empty());

    browser.close().await;
    app.stop().await;
}

/// `POST /ui/login` with `next`; the redirect's `Location`.
async fn login_to(app: &TestApp, next: &str) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", app.admin_token.expose())
        .append_pair("next", next)
        .finish();
    let reply = app
        .http
        .post(app.admin_url("/ui/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 303, "next={next}");
    reply.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_login_returns_only_to_pages_of_the_ui() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    // A logged-out GET keeps where it was going; a logged-out POST does not (a redirect would
    // turn it into a GET of a form action).
    let page = format!("/ui/approvals/{id}");
    let reply = app.http.get(app.admin_url(&page)).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 303);
    assert_eq!(
        reply.headers()[reqwest::header::LOCATION],
        format!("/ui/login?next=%2Fui%2Fapprovals%2F{id}").as_str()
    );
    let reply = app
        .http
        .post(app.admin_url(&format!("{page}/approve")))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 303);
    assert_eq!(reply.headers()[reqwest::header::LOCATION], "/ui/login");

    assert_eq!(login_to(&app, &page).await, page);
    assert_eq!(
        login_to(&app, "/ui/audit?status=403").await,
        "/ui/audit?status=403"
    );
    // Off-site or odd: the home page instead.
    for next in [
        "https://evil.example/ui/overview",
        "//evil.example/ui/overview",
        "/\\evil.example/ui/",
        "/ui\\..\\@evil.example",
        "http:/ui/overview",
        "ui/overview",
        "/uix/overview",
        "/ui/login",
        "/ui/overview\r\nSet-Cookie: x=1",
        " /ui/overview",
        "/ui/caf\u{e9}",
        "",
    ] {
        assert_eq!(login_to(&app, next).await, "/ui/overview", "next={next:?}");
    }
    // The login page carries a safe `next` into its form, and drops an unsafe one.
    let form = app
        .http
        .get(app.admin_url(&format!("/ui/login?next=%2Fui%2Fapprovals%2F{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains(&format!("name=\"next\" value=\"/ui/approvals/{id}\"")),
        "{form}"
    );
    let form = app
        .http
        .get(app.admin_url("/ui/login?next=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!form.contains("name=\"next\""), "{form}");
    assert!(!form.contains("evil.example"), "{form}");
    app.stop().await;
}

/// A session cookie from `POST /ui/login`.
async fn ui_session(app: &TestApp) -> String {
    let reply = app
        .http
        .post(app.admin_url("/ui/login"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={}", app.admin_token.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 303);
    let cookie = reply.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The hidden CSRF value of the first form on `page`.
fn csrf_of(page: &str) -> String {
    let (_, rest) = page
        .split_once("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field");
    rest.split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_managed_mail_target_takes_guard_rules_and_the_switch_in_the_ui() {
    let app = TestApp::spawn().await;
    let target = crate::support::admin::managed_target(app.running().store(), "ada-mail").await;
    let cookie = ui_session(&app).await;
    let get_page = || async {
        let reply = app
            .http
            .get(app.admin_url(&format!("/ui/targets/{}", target.id)))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200);
        reply.text().await.unwrap()
    };
    let page = get_page().await;
    // What the built-ins are for mail; the rest of the page stays read-only.
    assert!(page.contains("Sending mail"), "{page}");
    assert!(!page.contains("/shutdown"), "{page}");
    assert!(!page.contains("Edit target"), "{page}");
    assert!(
        page.contains("id=\"guard-defaults\" type=\"checkbox\" name=\"guard_defaults\" checked")
    );
    let post = |path: String, body: String| {
        let cookie = cookie.clone();
        let request = app
            .http
            .post(app.admin_url(&path))
            .header(reqwest::header::COOKIE, cookie)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        async move { request.send().await.unwrap() }
    };
    let csrf = csrf_of(&page);
    let added = post(
        format!("/ui/targets/{}/guard-rules", target.id),
        format!("csrf={csrf}&method=&path_match=contains&path=%2Fattachments&action=block&reason="),
    )
    .await;
    assert_eq!(added.status().as_u16(), 303);
    let rules = app
        .api()
        .get(&format!("/api/targets/{}/guard-rules", target.id))
        .await;
    let rules = rules.expect(200)["guard_rules"].clone();
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules[0]["method"], Value::Null, "empty method = any");
    assert_eq!(rules[0]["path"], "/attachments");
    assert_eq!(rules[0]["action"], "block");
    // A bad rule is a 400 page naming the field, not a crash.
    let bad = post(
        format!("/ui/targets/{}/guard-rules", target.id),
        format!("csrf={csrf}&method=&path_match=regex&path=%2Fx&action=block"),
    )
    .await;
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("path_match"));
    // Without the CSRF token nothing changes.
    let forged = post(
        format!("/ui/targets/{}/guard-defaults", target.id),
        String::new(),
    )
    .await;
    assert_eq!(forged.status().as_u16(), 403);
    // The switch off (an unchecked box submits nothing).
    let off = post(
        format!("/ui/targets/{}/guard-defaults", target.id),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(off.status().as_u16(), 303);
    let shown = app.api().get(&format!("/api/targets/{}", target.id)).await;
    assert_eq!(shown.expect(200)["guard_defaults"], false);
    let page = get_page().await;
    assert!(page.contains("id=\"guard-defaults\" type=\"checkbox\" name=\"guard_defaults\">"));
    assert!(page.contains("<code>/attachments</code>"), "{page}");
    app.stop().await;
}
