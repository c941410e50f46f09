//! SPEC §7: permission changes, disconnects and token revocations made through one replica take
//! effect on another replica on the same database within 2 seconds.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::TestApp;
use crate::support::accounts::{ConnectedSetup, setup, spawn_replica};

const WITHIN: Duration = Duration::from_secs(2);

/// Poll `path` on `app`'s proxy with `token` until it answers `status`; the time it took.
async fn until_status(app: &TestApp, path: &str, token: &str, status: u16) -> Duration {
    let started = Instant::now();
    let mut last = 0;
    for _ in 0..100 {
        last = app
            .http
            .get(app.proxy_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if last == status {
            return started.elapsed();
        }
        if started.elapsed() > WITHIN * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{path} never answered {status} (last {last}) within {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_through_one_replica_reach_the_other_within_two_seconds() {
    let first = setup(3600).await;
    let account_id = ConnectedSetup::connected_id(&first.connect("ada").await);
    let second = spawn_replica(&first).await;

    let (_, token) = first
        .admin(Method::POST, "/api/tokens", Some(json!({"name": "agent"})))
        .await;
    let (token_id, agent) = (
        token["id"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    );
    let (status, _) = first
        .admin(
            Method::PUT,
            &format!("/api/connected-accounts/{account_id}/access/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, account) = first
        .admin(
            Method::GET,
            &format!("/api/connected-accounts/{account_id}"),
            None,
        )
        .await;
    let slug = account["managed_targets"][0]["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/gateway/{slug}/me");

    // A grant made on the first replica is usable on the second.
    let took = until_status(&second, &path, agent, 200).await;
    assert!(
        took <= WITHIN,
        "grant reached the other replica after {took:?}"
    );

    // Disconnecting on the first replica removes the target on the second.
    let (status, _) = first
        .admin(
            Method::DELETE,
            &format!("/api/connected-accounts/{account_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let took = until_status(&second, &path, agent, 404).await;
    assert!(
        took <= WITHIN,
        "disconnect reached the other replica after {took:?}"
    );

    // Revoking the token on the first replica stops it on the second.
    let (status, _) = first
        .admin(
            Method::POST,
            &format!("/api/tokens/{token_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let took = until_status(&second, "/discovery", agent, 401).await;
    assert!(
        took <= WITHIN,
        "revocation reached the other replica after {took:?}"
    );
    second.stop().await;
}
