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
        // New tokens and permissions reach the proxy's snapshot asynchronously (within 2 s).
        if response.status() != 403 && response.status() != 401 {
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

/// A standard target whose credential is an `oauth2_refresh_token`: the gateway refreshes once,
/// caches the access token, and stores the rotated refresh token.
#[tokio::test(flavor = "multi_thread")]
async fn oauth2_refresh_token_auth_method_is_refreshed_once_and_rotated() {
    use crate::support::oidc::{
        BrowserClient, MICROSOFT_SCOPES, OidcOptions, OidcServer, Pkce, query_param,
    };
    const REDIRECT: &str = "http://127.0.0.1:9/cb";
    let oidc = OidcServer::start(OidcOptions {
        redirect_uris: vec![REDIRECT.to_owned()],
        ..OidcOptions::default()
    })
    .await;
    let pkce = Pkce::new();
    let start = oidc.authorization_request(REDIRECT, MICROSOFT_SCOPES, "s1", &pkce);
    let callback = BrowserClient::new().sign_in(&start, "ada", REDIRECT).await;
    let code = query_param(&callback, "code").unwrap();
    let tokens = oidc.exchange_code(&code, &pkce.verifier, REDIRECT).await;
    let refresh_token = tokens.refresh_token().unwrap().to_owned();

    let app = crate::support::TestApp::spawn().await;
    let admin = |method: reqwest::Method, path: &str| {
        app.http
            .request(method, app.admin_url(path))
            .bearer_auth(app.admin_token.expose())
    };
    let target: serde_json::Value = admin(Method::POST, "/api/targets")
        .json(&json!({"name": "graph", "base_url": oidc.graph_base()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target_id = target["id"].as_str().unwrap();
    let method = admin(
        Method::POST,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .json(
        &json!({"label": "oauth", "type": "oauth2_refresh_token", "credential": {
            "client_id": oidc.client_id(), "client_secret": oidc.client_secret(),
            "refresh_token": refresh_token, "token_url": oidc.token_url()}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(method.status(), 201);
    let token: serde_json::Value = admin(Method::POST, "/api/tokens")
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = admin(
        Method::PUT,
        &format!(
            "/api/tokens/{}/permissions/{target_id}",
            token["id"].as_str().unwrap()
        ),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(put.status(), 201);
    let agent = token["token"].as_str().unwrap();
    let call = || async {
        let response = app
            .http
            .get(app.proxy_url("/gateway/graph/me"))
            .bearer_auth(agent)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default(),
        )
    };
    let mut first = call().await;
    for _ in 0..40 {
        if first.0 != 403 && first.0 != 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        first = call().await;
    }
    assert_eq!(first.0, 200, "{:?}", first.1);
    assert_eq!(first.1["mail"], "ada@example.com");
    let second = call().await;
    assert_eq!(second.0, 200);
    assert_eq!(
        oidc.stats().await.refresh_token,
        1,
        "one refresh, then the cached token"
    );

    // The gateway's refresh consumed the original token (the provider rotated it), and the
    // auth method now holds a different credential version (its hint is recomputed on write).
    let methods: serde_json::Value = admin(
        Method::GET,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let method = &methods["auth_methods"][0];
    assert_ne!(
        method["updated_at"], method["created_at"],
        "rotated token written back: {method}"
    );
    let reuse = oidc.refresh(&refresh_token).await;
    assert_eq!(
        reuse.error(),
        Some("invalid_grant"),
        "the original refresh token was consumed"
    );
}
