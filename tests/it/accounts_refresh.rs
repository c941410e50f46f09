//! Access-token refresh of connected accounts end to end against the real authorization server
//! (oidc-provider with refresh-token rotation and reuse detection: any double refresh kills the
//! grant): single flight, dead grants, transient failures and recovery (SPEC §7).

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::support::accounts::{
    ConnectedSetup, agent_with_access, burst, gateway_get, managed_slug, percentile,
    set_token_expiry, setup, wait_for_discovery,
};
use crate::support::admin::Reply;
use crate::support::oidc::{FailRule, assert_one_refresh};

/// A connected `ada` whose access token is inside its refresh window (expires in `expires_in`
/// seconds, possibly negative), with an agent token granted the account and admitted by the
/// proxy — and no proxied request made yet (nothing cached).
struct Due {
    setup: ConnectedSetup,
    account_id: Uuid,
    agent: String,
    slug: String,
}

async fn due(expires_in: i64) -> Due {
    let setup = setup(3600).await;
    let id = ConnectedSetup::connected_id(&setup.connect("ada").await);
    let account_id: Uuid = id.parse().unwrap();
    let (agent, _) = agent_with_access(&setup.app, &id).await;
    let slug = managed_slug(&setup.app, &id, "mail").await;
    set_token_expiry(
        &setup.app.db.url,
        account_id,
        chrono::Utc::now() + chrono::Duration::seconds(expires_in),
    )
    .await;
    wait_for_discovery(&setup.app, &agent, &slug).await;
    Due {
        setup,
        account_id,
        agent,
        slug,
    }
}

impl Due {
    async fn get(&self) -> Reply {
        gateway_get(&self.setup.app, &self.agent, &self.slug, "/me/messages").await
    }

    async fn account(&self) -> Value {
        let reply = self
            .setup
            .app
            .api()
            .get(&format!("/api/connected-accounts/{}", self.account_id))
            .await;
        reply.expect(200).clone()
    }
}

/// A connected-account 503 of the proxy: `{error, account: {provider, email, status}, action}`.
#[track_caller]
fn assert_account_503(reply: &Reply, status: &str) {
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(
        reply.json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        reply.text
    );
    assert_eq!(
        reply.json["account"]["provider"], "microsoft_365",
        "{}",
        reply.text
    );
    assert_eq!(
        reply.json["account"]["email"], "ada@example.com",
        "{}",
        reply.text
    );
    assert_eq!(reply.json["account"]["status"], status, "{}", reply.text);
    assert!(
        reply.json["action"].as_str().is_some_and(|a| !a.is_empty()),
        "{}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_requests_in_the_refresh_window_share_one_refresh() {
    // 20 s left: valid, but inside the 60 s window, so every request needs the refresh.
    let due = due(20).await;
    let store = due.setup.app.running().store();
    let version = store
        .account_tokens(due.account_id)
        .await
        .unwrap()
        .account
        .token_version;
    let before = due.setup.oidc.stats().await;

    let results = burst(&[&due.setup.app], &due.agent, &due.slug, 200).await;
    let after = due.setup.oidc.stats().await;
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.2).collect();
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    let max = percentile(&mut latencies, 100.0);
    println!(
        "accounts_refresh: 200 concurrent requests on a token inside its refresh window: \
         refreshes at the provider {}, p50 {p50:?}, p99 {p99:?}, max {max:?}",
        after.refresh_token - before.refresh_token
    );
    let failed: Vec<&(u16, String, Duration)> = results.iter().filter(|r| r.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    for (_, body, _) in &results {
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["sub"], "ada", "{body}");
    }
    assert_one_refresh(&before, &after);
    assert_eq!(
        due.setup.oidc.live_grants("ada").await,
        1,
        "the grant lives"
    );

    let row = store.account_tokens(due.account_id).await.unwrap();
    assert_eq!(row.account.token_version, version + 1, "one refresh saved");
    assert_eq!(row.account.status.as_str(), "connected");
    assert!(
        row.account
            .token_expires_at
            .is_some_and(|e| e > chrono::Utc::now() + chrono::Duration::minutes(30)),
        "the new token's expiry is stored: {:?}",
        row.account.token_expires_at
    );
    assert!(row.lease_owner.is_none(), "the lease is released");

    // The refreshed token is now served from memory: no further refresh.
    for _ in 0..10 {
        let reply = due.get().await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(
        due.setup.oidc.stats().await.refresh_token,
        after.refresh_token
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grant_disconnects_the_account_and_later_requests_skip_the_provider() {
    let due = due(-5).await;
    assert!(due.setup.oidc.revoke_account("ada").await >= 1);
    let store = due.setup.app.running().store();
    let sealed_refresh = store
        .account_tokens(due.account_id)
        .await
        .unwrap()
        .sealed_refresh_token;

    let reply = due.get().await;
    assert_account_503(&reply, "disconnected");
    assert!(
        reply.json["action"].as_str().unwrap().contains("reconnect"),
        "{}",
        reply.text
    );
    let stats = due.setup.oidc.stats().await;
    assert!(stats.refresh_token >= 1, "{stats:?}");
    assert_eq!(
        stats.refresh_token, stats.refresh_token_invalid_grant,
        "the provider said invalid_grant: {stats:?}"
    );

    let account = due.account().await;
    assert_eq!(account["status"], "disconnected", "{account}");
    assert!(
        account["status_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the provider's message is kept: {account}"
    );
    let row = store.account_tokens(due.account_id).await.unwrap();
    assert_eq!(row.account.status.as_str(), "disconnected");
    assert_eq!(
        row.sealed_refresh_token, sealed_refresh,
        "the refresh token is kept"
    );

    // Later requests: 503 at once, the provider is not called again.
    for _ in 0..3 {
        let reply = due.get().await;
        assert_account_503(&reply, "disconnected");
        assert!(
            reply.headers.get("retry-after").is_none(),
            "a dead grant is not retried: {:?}",
            reply.headers
        );
    }
    let later = due.setup.oidc.stats().await;
    assert_eq!(
        later.refresh_token, stats.refresh_token,
        "no new provider call: {later:?}"
    );
}

/// One transient failure of the token endpoint (`rule`), then recovery.
async fn transient_failure_then_recovery(rule: FailRule, what: &str) {
    let due = due(20).await;
    let store = due.setup.app.running().store();
    let before_row = store.account_tokens(due.account_id).await.unwrap();
    let before = due.setup.oidc.stats().await;
    due.setup.oidc.inject(rule).await;

    let started = Instant::now();
    let reply = due.get().await;
    let waited = started.elapsed();
    assert_account_503(&reply, "connected");
    let retry_after = reply
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After on a transient failure: {reply:?}"))
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        retry_after, "2",
        "{what}: the first backoff is 2 s (docs: 2, 4, 8 … 60)"
    );
    let failed = due.setup.oidc.stats().await;
    assert_eq!(
        failed.refresh_token - before.refresh_token,
        1,
        "{what}: one call: {failed:?}"
    );

    let account = due.account().await;
    assert_eq!(account["status"], "connected", "{what}: {account}");
    assert!(
        account["last_refresh_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{what}: last_refresh_error recorded: {account}"
    );
    let row = store.account_tokens(due.account_id).await.unwrap();
    assert_eq!(row.account.status.as_str(), "connected");
    assert_eq!(
        row.sealed_refresh_token, before_row.sealed_refresh_token,
        "{what}: the stored refresh token is unchanged"
    );
    assert_eq!(row.account.token_version, before_row.account.token_version);
    assert!(row.lease_owner.is_none(), "{what}: the lease is released");

    // Right away: still backing off (503 with Retry-After), no new provider call.
    let reply = due.get().await;
    assert_account_503(&reply, "connected");
    assert!(reply.headers.get("retry-after").is_some(), "{reply:?}");
    assert_eq!(
        due.setup.oidc.stats().await.refresh_token,
        failed.refresh_token,
        "{what}: no provider call during the backoff"
    );

    // The failure is gone; once the backoff has passed requests succeed again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = reply;
    let mut rounds = 0;
    while last.status != 200 && Instant::now() < deadline && rounds < 150 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = due.get().await;
        rounds += 1;
    }
    assert_eq!(last.status, 200, "{what}: recovered: {}", last.text);
    assert_eq!(last.json["sub"], "ada");
    let recovered = due.setup.oidc.stats().await;
    println!(
        "accounts_refresh: {what}: failed request answered after {waited:?}; refresh calls \
         {} ({} ok), dropped {}",
        recovered.refresh_token - before.refresh_token,
        recovered.refresh_token_ok - before.refresh_token_ok,
        recovered.dropped - before.dropped,
    );
    assert_eq!(
        recovered.refresh_token - before.refresh_token,
        2,
        "{what}: one failed and one successful refresh: {recovered:?}"
    );
    assert_eq!(recovered.refresh_token_ok - before.refresh_token_ok, 1);
    assert_eq!(recovered.refresh_token_invalid_grant, 0, "{recovered:?}");
    let account = due.account().await;
    assert_eq!(account["status"], "connected");
    assert_eq!(
        account["last_refresh_error"],
        Value::Null,
        "{what}: cleared by the successful refresh: {account}"
    );
    let row = store.account_tokens(due.account_id).await.unwrap();
    assert_eq!(
        row.account.token_version,
        before_row.account.token_version + 1
    );
    assert_ne!(
        row.sealed_refresh_token, before_row.sealed_refresh_token,
        "{what}: the rotated refresh token is stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_503_keeps_the_account_connected_then_recovers() {
    transient_failure_then_recovery(
        FailRule {
            status: Some(503),
            count: 1,
            grant_type: Some("refresh_token".to_owned()),
            ..FailRule::default()
        },
        "503",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_429_keeps_the_account_connected_then_recovers() {
    transient_failure_then_recovery(
        FailRule {
            status: Some(429),
            count: 1,
            grant_type: Some("refresh_token".to_owned()),
            ..FailRule::default()
        },
        "429",
    )
    .await;
}

/// The token client gives up after 10 s; the delayed call is then dropped by the server (it
/// never rotates the refresh token behind the client's back). This test takes ~12 s.
#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_timeout_keeps_the_account_connected_then_recovers() {
    transient_failure_then_recovery(
        FailRule {
            delay_ms: Some(15_000),
            count: 1,
            grant_type: Some("refresh_token".to_owned()),
            ..FailRule::default()
        },
        "timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_is_transient_too() {
    transient_failure_then_recovery(
        FailRule {
            status: Some(502),
            count: 1,
            grant_type: Some("refresh_token".to_owned()),
            body: Some(Value::String("<html>bad gateway</html>".to_owned())),
            ..FailRule::default()
        },
        "502 with an HTML body",
    )
    .await;
}
