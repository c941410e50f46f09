//! The three listeners of SPEC §1 answer, in process, on loopback.

use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn proxy_admin_and_metrics_listeners_answer() {
    let app = TestApp::spawn().await;

    let health = app.http.get(app.proxy_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );

    let admin = app.http.get(app.admin_url("/health")).send().await.unwrap();
    assert_eq!(admin.status(), 200);

    let ready = app.http.get(app.admin_url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    let metrics = app
        .http
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("gatehouse_build_info{version=\""), "{text}");

    let unknown = app
        .http
        .get(app.proxy_url("/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_admin_token_suppresses_the_generated_one() {
    let app = TestApp::spawn().await;
    assert!(app.running().generated_admin_token.is_none());
    assert_eq!(
        app.running()
            .store()
            .count_active_admin_tokens()
            .await
            .unwrap(),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_without_admin_token_generates_one_once() {
    let db = crate::support::TestDb::new().await;
    let token = gatehouse::domain::tokens::AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &token, key);
    config.env.admin_token = None;
    let first = TestApp::spawn_with(db, token.clone(), key, config.clone()).await;
    let generated = first
        .running()
        .generated_admin_token
        .clone()
        .expect("first start generates one");
    let store = first.running().store().clone();
    assert!(
        store
            .active_admin_token(&generated.hash())
            .await
            .unwrap()
            .is_some()
    );
    let db = {
        let TestApp { running, db, .. } = first;
        if let Some(running) = running {
            running.shutdown().await;
        }
        db
    };
    let second = TestApp::spawn_with(db, token, key, config).await;
    assert!(
        second.running().generated_admin_token.is_none(),
        "a stored one exists now"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_accepting() {
    let app = TestApp::spawn().await;
    let proxy = app.proxy_url("/health");
    let admin = app.admin_url("/health");
    app.stop().await;
    let client = reqwest::Client::new();
    assert!(client.get(proxy).send().await.is_err(), "proxy closed");
    assert!(client.get(admin).send().await.is_err(), "admin closed");
}
