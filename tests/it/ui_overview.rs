//! The overview page (`/ui/overview`, the UI's home) in a real headless Chromium, after traffic
//! through two targets of which one fails, with a disconnected account that needs a person.
//! Screenshots: `target/ui-screenshots/overview-*.png`.

use gatehouse::domain::accounts::AccountStatus;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::admin::managed_target;
use crate::support::browser::Browser;
use crate::support::upstream::FakeUpstream;

async fn cell(browser: &Browser, selector: &str) -> String {
    browser.css(selector).await.text().await.unwrap()
}

#[tokio::test]
async fn the_overview_shows_traffic_per_target_and_accounts_that_need_a_person() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn().await;
    let store = app.running().store().clone();

    // A connected account whose grant died: the overview must put it first.
    let managed = managed_target(&store, "ada-mail").await;
    let account_id: Uuid = managed.connected_account_id.unwrap();
    let account = store.connected_account(account_id).await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    assert!(
        store
            .claim_refresh_lease(account_id, account.token_version, "test", until)
            .await
            .unwrap()
    );
    store
        .record_refresh_failure(
            account_id,
            "test",
            account.token_version,
            Some((
                AccountStatus::Disconnected,
                "invalid_grant: consent revoked".into(),
            )),
            "invalid_grant",
            std::time::Duration::from_secs(15 * 60),
        )
        .await
        .unwrap();

    let upstream = FakeUpstream::start().await;
    let billing = app.agent_for("billing", &upstream.url(""), None).await;
    let flaky = app.agent_for("flaky", &upstream.url(""), None).await;
    for i in 0..5 {
        assert_eq!(
            app.get(&format!("/gateway/billing/invoices/{i}"), &billing.token)
                .await
                .status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            app.get("/gateway/flaky/status/500", &flaky.token)
                .await
                .status,
            500
        );
    }
    // Every row (the readiness probes of `agent_for` included) is written before we look.
    app.wait_for_audit(8).await;
    let rows = app.audit_rows().await;
    let of = |slug: &str| rows.iter().filter(|r| r.target_slug == slug).count();
    let (billing_rows, flaky_rows) = (of("billing"), of("flaky"));

    let ui = |path: &str| app.admin_url(path);
    browser.goto(&ui("/ui/login")).await;
    browser
        .css("input#token")
        .await
        .send_keys(app.admin_token.expose())
        .await
        .unwrap();
    browser.click_and_wait("form button[type=submit]").await;
    assert_eq!(browser.url().await.path(), "/ui/overview");

    // Per target: requests, 5xx and the error ratio.
    assert_eq!(
        cell(&browser, "tr[data-target=billing] td[data-cell=requests]").await,
        billing_rows.to_string()
    );
    assert_eq!(
        cell(&browser, "tr[data-target=billing] td[data-cell='5xx']").await,
        "0"
    );
    assert_eq!(
        cell(&browser, "tr[data-target=billing] td[data-cell='2xx']").await,
        "5"
    );
    assert_eq!(
        cell(&browser, "tr[data-target=flaky] td[data-cell=requests]").await,
        flaky_rows.to_string()
    );
    assert_eq!(
        cell(&browser, "tr[data-target=flaky] td[data-cell='5xx']").await,
        "3"
    );
    let ratio = format!("{:.1} %", 300.0 / flaky_rows as f64);
    assert_eq!(
        cell(&browser, "tr[data-target=flaky] td[data-cell=error-ratio]").await,
        ratio
    );
    // Totals, the tokens, and the chart's bars add up to the same requests.
    let total = billing_rows + flaky_rows;
    let requests_tile = cell(&browser, "[data-tile=requests] dd").await;
    assert_eq!(requests_tile, total.to_string());
    assert_eq!(
        cell(
            &browser,
            &format!("tr[data-token='{}'] td[data-cell=requests]", flaky.token_id)
        )
        .await,
        flaky_rows.to_string()
    );
    let mut in_bars = 0;
    for bar in browser.all("svg.bars g[data-total]").await {
        in_bars += bar
            .attr("data-total")
            .await
            .unwrap()
            .unwrap()
            .parse::<usize>()
            .unwrap();
    }
    assert_eq!(in_bars, total);
    assert!(
        !browser.all("svg.bars rect.server").await.is_empty(),
        "5xx drawn"
    );
    // The disconnected account is highlighted with what to do.
    let attention = cell(&browser, "#attention").await;
    assert!(attention.contains("ada-mail@example.com"), "{attention}");
    assert!(
        attention.contains("disconnected: reconnect it"),
        "{attention}"
    );
    browser.screenshot("overview-1280").await;

    // The day window holds the same traffic in 15-minute buckets.
    browser
        .click_and_wait("nav.windows a[href='/ui/overview?window=24h']")
        .await;
    assert_eq!(
        cell(&browser, "nav.windows a[aria-current=page]").await,
        "Last 24 hours"
    );
    assert_eq!(
        cell(&browser, "[data-tile=requests] dd").await,
        total.to_string()
    );
    assert!(cell(&browser, "#chart-title").await.contains("15 minutes"));

    // A narrow window: the page still lays out (no horizontal scroll of the page itself).
    browser.client.set_window_size(420, 900).await.unwrap();
    browser.goto(&ui("/ui/overview")).await;
    browser.screenshot("overview-narrow").await;
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::Value::Bool(true),
        "the page fits a narrow window"
    );

    // A bad window is a clear 400 page naming the rule, not a panic: asked with the browser's
    // own session, so the login redirect does not answer first.
    let session = browser
        .client
        .get_named_cookie("gatehouse_session")
        .await
        .unwrap();
    let bad = app
        .http
        .get(ui("/ui/overview?window=5y"))
        .header(
            reqwest::header::COOKIE,
            format!("gatehouse_session={}", session.value()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let page = bad.text().await.unwrap();
    assert!(page.contains("must be one of 1h, 24h, 7d"), "{page}");
    browser.close().await;
}
