//! SPEC §12 "expired ones are pruned": the retention round (every `audit.prune_interval`, one
//! replica per round) marks approvals past their deadline `expired` in the row, and deletes
//! them a while after; before the sweep they already read as expired.

use std::time::Duration;

use gatehouse::domain::guard::ApprovalStatus;
use gatehouse::store::StoreError;
use serde_json::json;
use uuid::Uuid;

use crate::support::agent::until;
use crate::support::upstream::FakeUpstream;
use crate::support::{TestApp, TestDb};

#[tokio::test]
async fn expired_approvals_are_marked_then_deleted() {
    let db = TestDb::new().await;
    let admin_token = gatehouse::domain::tokens::AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &admin_token, key);
    config.guard.approval_ttl = Duration::from_secs(1);
    config.audit.prune_interval = Duration::from_millis(300);
    let app = TestApp::spawn_with(db, admin_token, key, config).await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/"), None).await;

    let held = app
        .http
        .delete(app.proxy_url("/gateway/api/items/1"))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status().as_u16(), 403);
    let body: serde_json::Value = held.json().await.unwrap();
    let id: Uuid = body["approval"]["id"].as_str().unwrap().parse().unwrap();
    let store = app.running().store().clone();
    assert_eq!(
        store.approval(id).await.unwrap().status,
        ApprovalStatus::Pending
    );

    // The app's own retention round writes the status once the deadline passed.
    let (marked, last) = until(
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.approval(id).await.map(|a| a.status).ok() }
        },
        |status| *status == Some(ApprovalStatus::Expired),
    )
    .await;
    assert!(marked, "the sweep marks it expired: {last:?}");
    let listed = app.api().get("/api/approvals?status=expired").await;
    assert_eq!(listed.expect(200)["approvals"][0]["id"], json!(id));

    // Rows whose deadline is older than what is kept are deleted.
    let far = chrono::Utc::now() + chrono::Duration::hours(1);
    let (_, deleted) = store.sweep_approvals(far).await.unwrap();
    assert_eq!(deleted, 1);
    assert!(matches!(
        store.approval(id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(upstream.count(), 0, "the held request never went upstream");
}
