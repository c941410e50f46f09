//! Two Gatehouse processes (replicas) on ONE database against one authorization server: the
//! refresh lease (one conditional UPDATE) makes exactly one of them refresh (SPEC §7). Runs on
//! PostgreSQL when `GATEHOUSE_TEST_DATABASE_URL` is set, else on one SQLite file shared by both.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, burst, gateway_get, managed_slug, percentile,
    set_token_expiry, setup, spawn_replica, wait_for_discovery,
};

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_database_refresh_once_for_a_hundred_concurrent_requests() {
    let first = setup(3600).await;
    let id = ConnectedSetup::connected_id(&first.connect("ada").await);
    let account_id: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&first.app, &id).await;
    let slug = managed_slug(&first.app, &id, "mail").await;
    let second = spawn_replica(&first).await;
    // 20 s left: inside the 60 s window on both replicas; neither has cached the token yet.
    set_token_expiry(
        &first.app.db.url,
        account_id,
        chrono::Utc::now() + chrono::Duration::seconds(20),
    )
    .await;
    wait_for_discovery(&first.app, &agent, &slug).await;
    wait_for_discovery(&second, &agent, &slug).await;
    let store = first.app.running().store();
    let version = store
        .account_tokens(account_id)
        .await
        .unwrap()
        .account
        .token_version;
    let before = first.oidc.stats().await;

    let results = burst(&[&first.app, &second], &agent, &slug, 100).await;
    let after = first.oidc.stats().await;
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.2).collect();
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    let max = percentile(&mut latencies, 100.0);
    println!(
        "accounts_replicas ({}): 100 concurrent requests over 2 replicas: refreshes at the \
         provider {}, p50 {p50:?}, p99 {p99:?}, max {max:?}",
        if first.app.db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        after.refresh_token - before.refresh_token
    );
    let failed: Vec<&(u16, String, Duration)> = results.iter().filter(|r| r.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 100 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    for (_, body, _) in &results {
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["sub"], "ada", "{body}");
    }
    assert_eq!(
        after.refresh_token - before.refresh_token,
        1,
        "exactly one refresh at the provider across both replicas: {after:?}"
    );
    assert_eq!(after.refresh_token_ok - before.refresh_token_ok, 1);
    assert_eq!(after.refresh_token_invalid_grant, 0, "no reuse: {after:?}");
    assert_eq!(after.graph_unauthorized, 0, "{after:?}");
    assert_eq!(first.oidc.live_grants("ada").await, 1, "the grant lives");
    let row = store.account_tokens(account_id).await.unwrap();
    assert_eq!(row.account.token_version, version + 1, "one refresh saved");
    assert_eq!(row.account.status.as_str(), "connected");
    assert!(row.lease_owner.is_none(), "the lease is released");

    // Both keep serving without another refresh.
    for app in [&first.app, &second] {
        let reply = gateway_get(app, &agent, &slug, "/me/messages").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(first.oidc.stats().await.refresh_token, after.refresh_token);
    second.stop().await;
}
