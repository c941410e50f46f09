//! The OIDC test harness itself, against the real `oidc-provider`: discovery, the browser-driven
//! authorization-code + PKCE flow, the Graph stand-in, refresh-token rotation with reuse
//! detection, and the control endpoint (counters, injected failures, grant revocation).

use serde_json::Value;

use crate::support::oidc::{
    BrowserClient, Consent, FailRule, GOOGLE_SCOPES, MICROSOFT_SCOPES, OidcOptions, OidcServer,
    Pkce, Shape, TokenReply, query_param,
};

const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

async fn server() -> OidcServer {
    OidcServer::start(OidcOptions {
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        access_ttl_secs: 120,
        ..OidcOptions::default()
    })
    .await
}

/// Sign in as `login` in a fresh browser and exchange the code: the tokens.
async fn connect(oidc: &OidcServer, login: &str) -> TokenReply {
    let pkce = Pkce::new();
    let state = format!("state-{}", uuid::Uuid::new_v4().simple());
    let start = oidc.authorization_request(REDIRECT_URI, MICROSOFT_SCOPES, &state, &pkce);
    let callback = BrowserClient::new()
        .sign_in(&start, login, REDIRECT_URI)
        .await;
    assert_eq!(query_param(&callback, "state").as_deref(), Some(&*state));
    let code = query_param(&callback, "code").expect("a code on the callback");
    let tokens = oidc
        .exchange_code(&code, &pkce.verifier, REDIRECT_URI)
        .await;
    assert_eq!(tokens.status, 200, "code exchange: {:?}", tokens.json);
    tokens
}

async fn graph_me(oidc: &OidcServer, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/me", oidc.graph_base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_document_requires_s256() {
    let oidc = server().await;
    let doc: Value = reqwest::get(oidc.discovery_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], oidc.issuer());
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["token_endpoint"], oidc.token_url());
    assert_eq!(doc["authorization_endpoint"], oidc.authorize_url());
    assert_eq!(doc["revocation_endpoint"], oidc.revoke_url());
    assert_eq!(doc["introspection_endpoint"], oidc.introspection_url());
    let scopes = doc["scopes_supported"].as_array().unwrap();
    for scope in MICROSOFT_SCOPES.split_whitespace() {
        assert!(scopes.iter().any(|s| s == scope), "{scope} supported");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn code_flow_with_pkce_and_graph_profile() {
    let oidc = server().await;
    let tokens = connect(&oidc, "ada").await;
    let access = tokens.access_token().expect("an access token");
    assert!(
        tokens.refresh_token().is_some(),
        "offline_access gives a refresh token"
    );
    assert_eq!(tokens.expires_in(), Some(120));
    let scope = tokens.json["scope"].as_str().unwrap();
    for wanted in MICROSOFT_SCOPES.split_whitespace() {
        assert!(scope.split(' ').any(|s| s == wanted), "{wanted} in {scope}");
    }

    let (status, me) = graph_me(&oidc, access).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["mail"], "ada@example.com");
    assert_eq!(me["userPrincipalName"], "ada@corp.example.com");
    assert_eq!(me["displayName"], "Ada");

    let (status, body) = graph_me(&oidc, "bogus-token").await;
    assert_eq!(status, 401, "{body}");

    // Any other path echoes, with the token's subject.
    let echo: Value = reqwest::Client::new()
        .post(format!("{}/me/sendMail?x=1", oidc.graph_base()))
        .bearer_auth(access)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo,
        serde_json::json!({"path": "/v1.0/me/sendMail", "query": "x=1", "method": "POST", "sub": "ada"})
    );

    let stats = oidc.stats().await;
    assert_eq!(stats.authorization_code, 1);
    assert_eq!(stats.authorization_code_ok, 1);
    assert_eq!(stats.refresh_token, 0);
    assert_eq!(stats.graph_requests, 3);
    assert_eq!(stats.graph_unauthorized, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_follow_the_login_name() {
    let oidc = server().await;
    let upn_only = connect(&oidc, "upn-only-grace").await;
    let (status, me) = graph_me(&oidc, upn_only.access_token().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(me["mail"], Value::Null);
    assert_eq!(me["userPrincipalName"], "upn-only-grace@corp.example.com");

    let no_email = connect(&oidc, "noemail-linus").await;
    let (status, me) = graph_me(&oidc, no_email.access_token().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(me["mail"], Value::Null);
    assert_eq!(me["userPrincipalName"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn code_needs_the_right_verifier_and_is_single_use() {
    let oidc = server().await;
    // No code_challenge at all: refused at the authorization endpoint (PKCE required).
    let mut url = url::Url::parse(&oidc.authorization_request(
        REDIRECT_URI,
        MICROSOFT_SCOPES,
        "s",
        &Pkce::new(),
    ))
    .unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let page = BrowserClient::new()
        .follow(url.as_str(), Some(REDIRECT_URI))
        .await;
    assert_eq!(
        query_param(&page.url, "error").as_deref(),
        Some("invalid_request"),
        "PKCE is required: {}",
        page.url
    );
    assert!(
        query_param(&page.url, "error_description")
            .unwrap()
            .contains("PKCE"),
        "{}",
        page.url
    );

    let pkce = Pkce::new();
    let start = oidc.authorization_request(REDIRECT_URI, MICROSOFT_SCOPES, "st", &pkce);
    let callback = BrowserClient::new()
        .sign_in(&start, "ada", REDIRECT_URI)
        .await;
    let code = query_param(&callback, "code").unwrap();
    let wrong = oidc
        .exchange_code(&code, &Pkce::new().verifier, REDIRECT_URI)
        .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.error(), Some("invalid_grant"));

    let right = oidc
        .exchange_code(&code, &pkce.verifier, REDIRECT_URI)
        .await;
    assert_eq!(right.status, 200, "{:?}", right.json);
    let again = oidc
        .exchange_code(&code, &pkce.verifier, REDIRECT_URI)
        .await;
    assert_eq!(again.error(), Some("invalid_grant"), "a code is single-use");
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_consent_redirects_with_access_denied() {
    let oidc = server().await;
    let start = oidc.authorization_request(REDIRECT_URI, MICROSOFT_SCOPES, "deny-me", &Pkce::new());
    let callback = BrowserClient::new()
        .authorize(&start, "ada", Consent::Deny, REDIRECT_URI)
        .await;
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&callback, "state").as_deref(), Some("deny-me"));
    assert_eq!(query_param(&callback, "code"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotates_and_reuse_revokes_the_grant() {
    let oidc = server().await;
    let tokens = connect(&oidc, "ada").await;
    let old_refresh = tokens.refresh_token().unwrap().to_owned();

    let refreshed = oidc.refresh(&old_refresh).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.json);
    let new_refresh = refreshed.refresh_token().unwrap().to_owned();
    assert_ne!(
        new_refresh, old_refresh,
        "every refresh rotates the refresh token"
    );
    let new_access = refreshed.access_token().unwrap().to_owned();
    assert_eq!(graph_me(&oidc, &new_access).await.0, 200);

    // Reuse of the consumed token: invalid_grant, and the whole grant is gone.
    let reused = oidc.refresh(&old_refresh).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.error(), Some("invalid_grant"));
    let after = oidc.refresh(&new_refresh).await;
    assert_eq!(
        after.error(),
        Some("invalid_grant"),
        "the new token died too"
    );
    assert_eq!(
        graph_me(&oidc, &new_access).await.0,
        401,
        "access tokens die too"
    );
    assert_eq!(oidc.live_grants("ada").await, 0);

    let stats = oidc.stats().await;
    assert_eq!(stats.refresh_token, 3);
    assert_eq!(stats.refresh_token_ok, 1);
    assert_eq!(stats.refresh_token_invalid_grant, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_double_refresh_is_detected() {
    let oidc = server().await;
    let tokens = connect(&oidc, "ada").await;
    let rt = tokens.refresh_token().unwrap().to_owned();
    let (a, b) = tokio::join!(oidc.refresh(&rt), oidc.refresh(&rt));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{:?} / {:?}", a.json, b.json);
    let winner = if a.status == 200 { a } else { b };
    let after = oidc.refresh(winner.refresh_token().unwrap()).await;
    assert_eq!(
        after.error(),
        Some("invalid_grant"),
        "a double refresh kills the grant"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_failures_hit_exactly_the_next_calls() {
    let oidc = server().await;
    let tokens = connect(&oidc, "ada").await;
    let mut rt = tokens.refresh_token().unwrap().to_owned();

    oidc.fail_next(503, 1).await;
    let failed = oidc.refresh(&rt).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.error(), Some("temporarily_unavailable"));
    // The injected failure never reached the endpoint: the same token still works.
    let ok = oidc.refresh(&rt).await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    rt = ok.refresh_token().unwrap().to_owned();

    oidc.inject(FailRule {
        status: Some(429),
        count: 2,
        grant_type: Some("refresh_token".to_owned()),
        headers: vec![("Retry-After".to_owned(), "3".to_owned())],
        ..FailRule::default()
    })
    .await;
    assert_eq!(oidc.refresh(&rt).await.status, 429);
    assert_eq!(oidc.refresh(&rt).await.status, 429);

    // A body that is not JSON.
    oidc.inject(FailRule {
        status: Some(502),
        count: 1,
        body: Some(Value::String("<html>bad gateway</html>".to_owned())),
        ..FailRule::default()
    })
    .await;
    let html = oidc.refresh(&rt).await;
    assert_eq!(html.status, 502);
    assert_eq!(
        html.json,
        Value::String("<html>bad gateway</html>".to_owned())
    );

    let ok = oidc.refresh(&rt).await;
    assert_eq!(ok.status, 200);

    let stats = oidc.stats().await;
    assert_eq!(stats.refresh_token, 6);
    assert_eq!(stats.injected, 4);
    assert_eq!(stats.refresh_token_ok, 2);
    assert_eq!(stats.authorization_code, 1);

    oidc.reset().await;
    assert_eq!(oidc.stats().await, Default::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn delays_pass_through_or_drop_when_the_client_gives_up() {
    let oidc = server().await;
    let tokens = connect(&oidc, "ada").await;
    let rt = tokens.refresh_token().unwrap().to_owned();

    // A client that times out: the call is dropped and never rotates the token.
    oidc.delay_next(3000, 1).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let result = impatient
        .post(oidc.token_url())
        .basic_auth(oidc.client_id(), Some(oidc.client_secret()))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));

    // A patient client gets the real answer after the delay.
    oidc.delay_next(300, 1).await;
    let started = std::time::Instant::now();
    let ok = oidc.refresh(&rt).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        ok.status, 200,
        "the dropped call did not consume the token: {:?}",
        ok.json
    );

    // The dropped call is counted once its delay has run out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = oidc.stats().await;
        if stats.dropped == 1 {
            assert_eq!(stats.refresh_token, 2);
            assert_eq!(stats.refresh_token_ok, 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_account_kills_its_tokens() {
    let oidc = server().await;
    let ada = connect(&oidc, "ada").await;
    let bob = connect(&oidc, "bob").await;
    assert_eq!(oidc.live_grants("ada").await, 1);

    assert_eq!(oidc.revoke_account("ada").await, 1);
    assert_eq!(oidc.live_grants("ada").await, 0);
    assert_eq!(
        oidc.refresh(ada.refresh_token().unwrap()).await.error(),
        Some("invalid_grant")
    );
    assert_eq!(graph_me(&oidc, ada.access_token().unwrap()).await.0, 401);
    // Other accounts are untouched.
    assert_eq!(graph_me(&oidc, bob.access_token().unwrap()).await.0, 200);
    assert_eq!(oidc.refresh(bob.refresh_token().unwrap()).await.status, 200);

    // The revocation endpoint (what Gatehouse's disconnect calls) revokes the grant too.
    let response = reqwest::Client::new()
        .post(oidc.revoke_url())
        .basic_auth(oidc.client_id(), Some(oidc.client_secret()))
        .form(&[("token", bob.refresh_token().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(oidc.stats().await.revocation, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_uris_can_be_added_after_start() {
    let oidc = OidcServer::start(OidcOptions::default()).await;
    let late = "http://127.0.0.1:10/oauth/callback";
    let pkce = Pkce::new();
    let start = oidc.authorization_request(late, MICROSOFT_SCOPES, "late", &pkce);
    let refused = BrowserClient::new().follow(&start, None).await;
    assert_eq!(refused.status, 400, "unknown redirect_uri refused");

    oidc.set_redirect_uris(&[late]).await;
    let callback = BrowserClient::new().sign_in(&start, "ada", late).await;
    let code = query_param(&callback, "code").unwrap();
    let tokens = oidc.exchange_code(&code, &pkce.verifier, late).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.json);
    let introspection = oidc.introspect(tokens.access_token().unwrap()).await;
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["sub"], "ada");
}

// ---------------------------------------------------------------------------------------------
// Shape::Google
// ---------------------------------------------------------------------------------------------

async fn google_server() -> OidcServer {
    OidcServer::start(OidcOptions {
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        access_ttl_secs: 120,
        shape: Shape::Google,
        ..OidcOptions::default()
    })
    .await
}

/// Sign in as `login` with the Google scopes and these extra authorize parameters, then exchange
/// the code.
async fn google_connect(oidc: &OidcServer, login: &str, extra: &[(&str, &str)]) -> TokenReply {
    let pkce = Pkce::new();
    let state = format!("state-{}", uuid::Uuid::new_v4().simple());
    let start = oidc.authorization_request_with(REDIRECT_URI, GOOGLE_SCOPES, &state, &pkce, extra);
    let callback = BrowserClient::new()
        .sign_in(&start, login, REDIRECT_URI)
        .await;
    let code = query_param(&callback, "code").expect("a code on the callback");
    let tokens = oidc
        .exchange_code(&code, &pkce.verifier, REDIRECT_URI)
        .await;
    assert_eq!(tokens.status, 200, "code exchange: {:?}", tokens.json);
    tokens
}

const OFFLINE: &[(&str, &str)] = &[("access_type", "offline")];

#[tokio::test(flavor = "multi_thread")]
async fn google_shape_offline_access_userinfo_and_no_rotation() {
    let oidc = google_server().await;

    // Without access_type=offline: an access token only.
    let online = google_connect(&oidc, "carol", &[]).await;
    assert!(online.access_token().is_some());
    assert_eq!(online.refresh_token(), None, "{:?}", online.json);

    let tokens = google_connect(&oidc, "ada", OFFLINE).await;
    let refresh = tokens
        .refresh_token()
        .expect("access_type=offline + prompt=consent give a refresh token")
        .to_owned();
    let access = tokens.access_token().unwrap().to_owned();

    // The authorization endpoint recorded both requests as sent.
    let requests = oidc.authorize_requests().await;
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].get("access_type"), None);
    assert_eq!(requests[1]["access_type"], "offline");
    assert_eq!(requests[1]["prompt"], "consent");
    assert_eq!(requests[1]["scope"], GOOGLE_SCOPES);

    // The OpenID userinfo endpoint is the profile.
    let profile: Value = reqwest::Client::new()
        .get(oidc.userinfo_url())
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["sub"], "ada", "{profile}");
    assert_eq!(profile["email"], "ada@example.com", "{profile}");
    assert_eq!(profile["name"], "Ada", "{profile}");

    // Refreshes never rotate, and their answers carry no refresh_token.
    for _ in 0..2 {
        let refreshed = oidc.refresh(&refresh).await;
        assert_eq!(refreshed.status, 200, "{:?}", refreshed.json);
        assert_eq!(refreshed.refresh_token(), None, "{:?}", refreshed.json);
        let introspection = oidc.introspect(refreshed.access_token().unwrap()).await;
        assert_eq!(introspection["active"], true);
    }
    let stats = oidc.stats().await;
    assert_eq!(stats.refresh_token_ok, 2, "{stats:?}");
    assert_eq!(stats.refresh_token_invalid_grant, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn google_shape_reconsent_gives_no_refresh_token_and_revocation_ends_the_authorization() {
    let oidc = google_server().await;
    let first = google_connect(&oidc, "ada", OFFLINE).await;
    let refresh = first.refresh_token().unwrap().to_owned();

    // Re-consent while that refresh token lives: no refresh token; the first one still works.
    let second = google_connect(&oidc, "ada", OFFLINE).await;
    assert_eq!(second.refresh_token(), None, "{:?}", second.json);
    let second_access = second.access_token().unwrap().to_owned();
    assert_eq!(oidc.stats().await.refresh_token_withheld, 1);
    assert_eq!(oidc.refresh(&refresh).await.status, 200);
    // Another account is not affected.
    assert!(
        google_connect(&oidc, "bob", OFFLINE)
            .await
            .refresh_token()
            .is_some()
    );

    // Revoking the refresh token (`token` form field) revokes every grant of ada.
    let response = reqwest::Client::new()
        .post(oidc.revoke_url())
        .basic_auth(oidc.client_id(), Some(oidc.client_secret()))
        .form(&[
            ("token", refresh.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let revocations = oidc.revocations().await;
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert_eq!(revocations[0].fields, ["token", "token_type_hint"]);
    assert_eq!(revocations[0].token.as_deref(), Some("refresh_token"));
    assert_eq!(revocations[0].client_auth, "client_secret_basic");
    assert_eq!(oidc.live_grants("ada").await, 0);
    assert_eq!(oidc.live_grants("bob").await, 1);
    assert_eq!(oidc.refresh(&refresh).await.error(), Some("invalid_grant"));
    let introspection = oidc.introspect(&second_access).await;
    assert_eq!(introspection["active"], false, "{introspection}");

    // After the revocation a new consent gets a refresh token again.
    let fresh = google_connect(&oidc, "ada", OFFLINE).await;
    assert!(fresh.refresh_token().is_some(), "{:?}", fresh.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn microsoft_shape_gives_a_refresh_token_on_every_consent() {
    let oidc = server().await;
    let first = connect(&oidc, "ada").await;
    let second = connect(&oidc, "ada").await;
    assert!(first.refresh_token().is_some());
    assert!(second.refresh_token().is_some(), "{:?}", second.json);
    assert_eq!(oidc.stats().await.refresh_token_withheld, 0);
    // Both grants live side by side; revoking one token ends only its own grant.
    assert_eq!(oidc.live_grants("ada").await, 2);
    let response = reqwest::Client::new()
        .post(oidc.revoke_url())
        .basic_auth(oidc.client_id(), Some(oidc.client_secret()))
        .form(&[("token", first.refresh_token().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(oidc.live_grants("ada").await, 1);
    assert_eq!(
        oidc.refresh(second.refresh_token().unwrap()).await.status,
        200
    );
}
