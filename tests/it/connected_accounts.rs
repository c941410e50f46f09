//! Connected accounts end to end against the real authorization server (oidc-provider).

use reqwest::Method;
use serde_json::json;

use crate::support::accounts::{ConnectedSetup, setup};

#[tokio::test(flavor = "multi_thread")]
async fn connect_through_a_link_provisions_two_managed_targets_and_the_proxy_injects_the_token() {
    let setup = setup(3600).await;
    let location = setup.connect("ada").await;
    let account_id = ConnectedSetup::connected_id(&location);

    let (status, account) = setup
        .admin(
            Method::GET,
            &format!("/api/connected-accounts/{account_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(
        account["email"], "ada@example.com",
        "mail is preferred over the UPN"
    );
    assert_eq!(account["status"], "connected");
    let targets = account["managed_targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    let short = &account_id.replace('-', "")[..6];
    let mail = targets.iter().find(|t| t["capability"] == "mail").unwrap();
    assert_eq!(mail["slug"], format!("ada-example-com-mail-{short}"));
    assert_eq!(mail["name"], "ada@example.com — Mail");

    // A token with access to the account reaches the Graph stand-in with the account's token.
    let (_, token) = setup
        .admin(Method::POST, "/api/tokens", Some(json!({"name": "agent"})))
        .await;
    let token_id = token["id"].as_str().unwrap();
    let (status, _) = setup
        .admin(
            Method::PUT,
            &format!("/api/connected-accounts/{account_id}/access/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let slug = mail["slug"].as_str().unwrap();
    let agent = token["token"].as_str().unwrap();
    let mut answer = None;
    for _ in 0..40 {
        let response = setup
            .app
            .http
            .get(
                setup
                    .app
                    .proxy_url(&format!("/gateway/{slug}/me/messages?top=1")),
            )
            .bearer_auth(agent)
            .send()
            .await
            .unwrap();
        if response.status() != 403 {
            answer = Some((
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            ));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = answer.expect("permission reached the proxy within 2 s");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["sub"], "ada",
        "the stand-in saw a valid token of ada: {body}"
    );
    assert_eq!(
        setup.oidc.stats().await.refresh_token,
        0,
        "a fresh token needs no refresh"
    );

    // Discovery describes the integration.
    let discovery: serde_json::Value = setup
        .app
        .http
        .get(setup.app.proxy_url("/discovery"))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = discovery["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == slug)
        .unwrap()
        .clone();
    assert_eq!(entry["integration"]["provider"], "microsoft_365");
    assert_eq!(entry["integration"]["email"], "ada@example.com");
    assert_eq!(entry["integration"]["capability"], "mail");
    assert_eq!(entry["integration"]["status"], "connected");
}
