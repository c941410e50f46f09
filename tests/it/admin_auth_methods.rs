//! `/api/targets/{id}/auth-methods`: every credential type with its hint, credential
//! validation, the single default, patch and delete (docs/admin-api.md "Auth method").

use std::collections::BTreeSet;

use gatehouse::domain::targets::AuthMethodKind;
use gatehouse::domain::tokens::AdminToken;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::{AdminClient, Reply, json_id};
use crate::support::{TestApp, TestDb};

const METHOD_KEYS: [&str; 8] = [
    "id",
    "target_id",
    "label",
    "type",
    "credential_hint",
    "is_default",
    "created_at",
    "updated_at",
];

fn assert_method_shape(method: &Value) {
    let keys: BTreeSet<&str> = method
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {method}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(METHOD_KEYS), "{method}");
}

/// An app with `upstream.allow_private = false`, as in production.
async fn strict_app() -> TestApp {
    let db = TestDb::new().await;
    let token = AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &token, key);
    config.upstream.allow_private = false;
    TestApp::spawn_with(db, token, key, config).await
}

/// Assert none of `secrets` occurs in `text`.
#[track_caller]
fn assert_no_secret(text: &str, secrets: &[&str], context: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{context}: secret {secret:?} leaked in {text}"
        );
    }
}

async fn post_method(api: &AdminClient<'_>, target_id: Uuid, body: Value) -> Reply {
    api.post(&format!("/api/targets/{target_id}/auth-methods"), body)
        .await
}

struct Accepted {
    kind: &'static str,
    kind_enum: AuthMethodKind,
    credential: Value,
    /// The expected hint; compared ignoring ASCII case for header names (see
    /// `case_insensitive_hint`).
    hint: &'static str,
    case_insensitive_hint: bool,
    secrets: &'static [&'static str],
}

fn accepted_cases() -> Vec<Accepted> {
    vec![
        Accepted {
            kind: "bearer",
            kind_enum: AuthMethodKind::Bearer,
            credential: json!("ghp_S3cretBearerValue9876"),
            hint: "…9876",
            case_insensitive_hint: false,
            secrets: &["ghp_S3cretBearerValue", "S3cretBearer"],
        },
        Accepted {
            kind: "bearer",
            kind_enum: AuthMethodKind::Bearer,
            credential: json!("shortsecr"),
            hint: "…",
            case_insensitive_hint: false,
            secrets: &["shortsecr"],
        },
        Accepted {
            kind: "basic",
            kind_enum: AuthMethodKind::Basic,
            credential: json!("ada:Pa55word-basic-secret"),
            hint: "ada:…",
            case_insensitive_hint: false,
            secrets: &["Pa55word-basic-secret", "basic-secret"],
        },
        Accepted {
            kind: "custom_header",
            kind_enum: AuthMethodKind::CustomHeader,
            credential: json!([{"name": "X-Api-Key", "value": "hdr-secret-value-1"}]),
            hint: "X-Api-Key: …",
            case_insensitive_hint: true,
            secrets: &["hdr-secret-value-1"],
        },
        Accepted {
            kind: "custom_header",
            kind_enum: AuthMethodKind::CustomHeader,
            credential: json!(r#"[{"name": "X-Api-Key", "value": "hdr-secret-value-2"}]"#),
            hint: "X-Api-Key: …",
            case_insensitive_hint: true,
            secrets: &["hdr-secret-value-2"],
        },
        Accepted {
            kind: "query_param",
            kind_enum: AuthMethodKind::QueryParam,
            credential: json!("api_key:qp-secret-value"),
            hint: "api_key=…",
            case_insensitive_hint: false,
            secrets: &["qp-secret-value"],
        },
        Accepted {
            kind: "oauth2_refresh_token",
            kind_enum: AuthMethodKind::OAuth2RefreshToken,
            credential: json!({
                "client_id": "client-123",
                "client_secret": "oauth-client-secret-x",
                "refresh_token": "oauth-refresh-token-y",
                "token_url": "https://login.example.com/oauth2/token",
                "scope": "read write",
            }),
            hint: "client-123 @ login.example.com",
            case_insensitive_hint: false,
            secrets: &["oauth-client-secret-x", "oauth-refresh-token-y"],
        },
        Accepted {
            kind: "oauth2_refresh_token",
            kind_enum: AuthMethodKind::OAuth2RefreshToken,
            credential: json!(
                r#"{"client_id": "client-456", "client_secret": "oauth-client-secret-z", "refresh_token": "oauth-refresh-token-w", "token_url": "https://auth.example.org/token"}"#
            ),
            hint: "client-456 @ auth.example.org",
            case_insensitive_hint: false,
            secrets: &["oauth-client-secret-z", "oauth-refresh-token-w"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_is_accepted_with_its_hint_and_never_shows_the_credential() {
    let app = strict_app().await;
    let api = app.api();
    let store = app.running().store();
    for (i, case) in accepted_cases().into_iter().enumerate() {
        let target = api
            .create_target(&format!("Target {i}"), "https://api.example.com")
            .await;
        let target_id = json_id(&target);
        let context = format!("{} {}", case.kind, case.credential);
        let reply = post_method(
            &api,
            target_id,
            json!({"label": format!("label {i}"), "type": case.kind, "credential": case.credential}),
        )
        .await;
        let created = reply.expect(201).clone();
        assert_method_shape(&created);
        assert_eq!(created["type"], case.kind, "{context}");
        assert_eq!(created["label"], format!("label {i}"));
        assert_eq!(created["target_id"], target_id.to_string());
        assert_eq!(created["is_default"], true, "the first one is the default");
        let hint = created["credential_hint"].as_str().unwrap();
        if case.case_insensitive_hint {
            assert!(hint.eq_ignore_ascii_case(case.hint), "{context}: {hint}");
        } else {
            assert_eq!(hint, case.hint, "{context}");
        }
        assert_no_secret(&reply.text, case.secrets, &context);

        // Nor in the list, the target, or the target list.
        for path in [
            format!("/api/targets/{target_id}/auth-methods"),
            format!("/api/targets/{target_id}"),
            "/api/targets".to_owned(),
        ] {
            let reply = api.get(&path).await;
            reply.expect(200);
            assert_no_secret(&reply.text, case.secrets, &path);
        }
        let list = api
            .get(&format!("/api/targets/{target_id}/auth-methods"))
            .await;
        let methods = list.expect(200)["auth_methods"].as_array().unwrap().clone();
        assert_eq!(methods, vec![created.clone()]);

        // The store holds it, sealed, with the same hint.
        let stored = store.auth_methods(target_id).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, json_id(&created));
        assert_eq!(stored[0].kind, case.kind_enum);
        assert_eq!(stored[0].credential_hint, hint);
        assert!(stored[0].is_default);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_header_hint_names_every_header() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let target = api.create_target("Multi", "https://api.example.com").await;
    let target_id = json_id(&target);
    let reply = post_method(
        &api,
        target_id,
        json!({"label": "two", "type": "custom_header", "credential": [
            {"name": "X-Api-Key", "value": "first-secret-aaa"},
            {"name": "X-Api-Tenant", "value": "second-secret-bbb"},
        ]}),
    )
    .await;
    let created = reply.expect(201);
    let hint = created["credential_hint"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(hint.contains("x-api-key"), "{hint}");
    assert!(hint.contains("x-api-tenant"), "{hint}");
    assert_no_secret(
        &reply.text,
        &["first-secret-aaa", "second-secret-bbb"],
        "two headers",
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_are_400_and_store_nothing() {
    let app = strict_app().await;
    let api = app.api();
    let store = app.running().store();
    let target = api.create_target("Strict", "https://api.example.com").await;
    let target_id = json_id(&target);
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("X-H{i}"), "value": "v"}))
        .collect();
    let oauth = |overrides: Value| {
        let mut base = json!({
            "client_id": "cid",
            "client_secret": "oauth-secret-canary",
            "refresh_token": "oauth-refresh-canary",
            "token_url": "https://login.example.com/token",
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let cases: Vec<(&str, Value)> = vec![
        ("bearer", json!("")),
        ("bearer", json!("bearer-canary with-space")),
        ("bearer", json!("bearer-canary\twith-tab")),
        ("bearer", json!("bearer-canary\nwith-newline")),
        ("bearer", json!("bearer-canary\u{7}bell")),
        ("bearer", json!(42)),
        ("bearer", json!(["bearer-canary"])),
        ("basic", json!("basic-canary-without-colon")),
        ("basic", json!(":basic-canary-empty-user")),
        ("basic", json!("us\u{1}er:basic-canary")),
        ("basic", json!("")),
        (
            "custom_header",
            json!([{"name": "Bad Header", "value": "hdr-canary"}]),
        ),
        (
            "custom_header",
            json!([{"name": "Host", "value": "hdr-canary"}]),
        ),
        (
            "custom_header",
            json!([{"name": "content-length", "value": "1"}]),
        ),
        (
            "custom_header",
            json!([{"name": "Transfer-Encoding", "value": "chunked"}]),
        ),
        (
            "custom_header",
            json!([{"name": "Cookie", "value": "hdr-canary"}]),
        ),
        (
            "custom_header",
            json!([{"name": "Connection", "value": "close"}]),
        ),
        ("custom_header", json!([])),
        ("custom_header", Value::Array(eleven)),
        (
            "custom_header",
            json!([{"name": "X-Ok", "value": "hdr-canary\r\nInjected: yes"}]),
        ),
        ("custom_header", json!("not json hdr-canary")),
        ("custom_header", json!({"name": "X-Api-Key"})),
        ("query_param", json!("qp-canary-without-colon")),
        ("query_param", json!(":qp-canary-empty-name")),
        (
            "oauth2_refresh_token",
            oauth(json!({"refresh_token": null})),
        ),
        ("oauth2_refresh_token", oauth(json!({"client_id": null}))),
        ("oauth2_refresh_token", oauth(json!({"token_url": null}))),
        (
            "oauth2_refresh_token",
            oauth(json!({"token_url": "http://login.example.com/token"})),
        ),
        (
            "oauth2_refresh_token",
            oauth(json!({"token_url": "https://169.254.169.254/token"})),
        ),
        (
            "oauth2_refresh_token",
            oauth(json!({"token_url": "https://localhost/token"})),
        ),
        ("oauth2_refresh_token", json!("not json oauth-canary")),
    ];
    for (kind, credential) in cases {
        let reply = post_method(
            &api,
            target_id,
            json!({"label": "bad", "type": kind, "credential": credential}),
        )
        .await;
        let context = format!("{kind} {credential}");
        assert_eq!(reply.status, 400, "{context} accepted: {}", reply.text);
        reply.expect_error(400, Some("credential"));
        assert_no_secret(&reply.text, &["canary"], &context);
        assert!(
            store.auth_methods(target_id).await.unwrap().is_empty(),
            "{context} left a row"
        );
    }

    // An unknown type names `type`.
    let reply = post_method(
        &api,
        target_id,
        json!({"label": "bad", "type": "digest", "credential": "abcdefghijklmnop"}),
    )
    .await;
    reply.expect_error(400, Some("type"));
    assert!(store.auth_methods(target_id).await.unwrap().is_empty());
    let target = api.get(&format!("/api/targets/{target_id}")).await;
    assert_eq!(target.expect(200)["auth_method_count"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_default_per_target() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let target = api
        .create_target("Defaults", "https://api.example.com")
        .await;
    let target_id = json_id(&target);
    let methods_path = format!("/api/targets/{target_id}/auth-methods");

    let first = api
        .create_auth_method(target_id, "first", "bearer", json!("aaaaaaaaaaaa0001"))
        .await;
    assert_eq!(first["is_default"], true, "first becomes default");
    let second = api
        .create_auth_method(target_id, "second", "bearer", json!("aaaaaaaaaaaa0002"))
        .await;
    assert_eq!(
        second["is_default"], false,
        "later ones do not by themselves"
    );
    let third = post_method(
        &api,
        target_id,
        json!({"label": "third", "type": "bearer", "credential": "aaaaaaaaaaaa0003", "is_default": true}),
    )
    .await;
    let third = third.expect(201).clone();
    assert_eq!(third["is_default"], true);

    let defaults_via_api = |list: &Value| -> Vec<Uuid> {
        list["auth_methods"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["is_default"] == true)
            .map(json_id)
            .collect()
    };
    let list = api.get(&methods_path).await;
    let list = list.expect(200).clone();
    assert_eq!(list["auth_methods"].as_array().unwrap().len(), 3);
    assert_eq!(defaults_via_api(&list), vec![json_id(&third)]);
    let stored_defaults: Vec<Uuid> = store
        .auth_methods(target_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_default)
        .map(|m| m.id)
        .collect();
    assert_eq!(stored_defaults, vec![json_id(&third)]);

    // PATCH is_default true moves the default.
    let reply = api
        .patch(
            &format!("{methods_path}/{}", json_id(&second)),
            json!({"is_default": true}),
        )
        .await;
    let patched = reply.expect(200).clone();
    assert_method_shape(&patched);
    assert_eq!(patched["is_default"], true);
    let list = api.get(&methods_path).await;
    assert_eq!(defaults_via_api(list.expect(200)), vec![json_id(&second)]);
    let stored_defaults: Vec<Uuid> = store
        .auth_methods(target_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_default)
        .map(|m| m.id)
        .collect();
    assert_eq!(stored_defaults, vec![json_id(&second)]);
    assert_eq!(
        api.get(&format!("/api/targets/{target_id}"))
            .await
            .expect(200)["auth_method_count"],
        3
    );

    // On a fresh target, `is_default: false` keeps even the first from being default.
    let other = api
        .create_target("No Default", "https://api.example.com")
        .await;
    let other_id = json_id(&other);
    let reply = post_method(
        &api,
        other_id,
        json!({"label": "opt-out", "type": "bearer", "credential": "aaaaaaaaaaaa0004", "is_default": false}),
    )
    .await;
    assert_eq!(reply.expect(201)["is_default"], false);
    assert!(
        store
            .auth_methods(other_id)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.is_default)
    );
    // …and the other target's default is untouched.
    assert!(
        store
            .auth_method(target_id, json_id(&second))
            .await
            .unwrap()
            .is_default
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_label_and_credential_then_delete() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let target = api
        .create_target("Patchable", "https://api.example.com")
        .await;
    let target_id = json_id(&target);
    let created = api
        .create_auth_method(target_id, "old label", "bearer", json!("first-secret-1111"))
        .await;
    assert_eq!(created["credential_hint"], "…1111");
    let method_id = json_id(&created);
    let path = format!("/api/targets/{target_id}/auth-methods/{method_id}");

    let reply = api
        .patch(
            &path,
            json!({"label": "new label", "credential": "second-secret-2222"}),
        )
        .await;
    let patched = reply.expect(200).clone();
    assert_method_shape(&patched);
    assert_eq!(patched["label"], "new label");
    assert_eq!(patched["credential_hint"], "…2222");
    assert_eq!(patched["is_default"], true, "a patch keeps the default");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_no_secret(&reply.text, &["second-secret", "first-secret"], "patch");
    let stored = store.auth_method(target_id, method_id).await.unwrap();
    assert_eq!(stored.label, "new label");
    assert_eq!(stored.credential_hint, "…2222");

    // A bad new credential is refused and changes nothing.
    let reply = api
        .patch(&path, json!({"credential": "third secret-canary"}))
        .await;
    reply.expect_error(400, Some("credential"));
    assert_no_secret(&reply.text, &["canary"], "bad patch");
    let stored = store.auth_method(target_id, method_id).await.unwrap();
    assert_eq!(stored.credential_hint, "…2222");
    // The type cannot be changed by a patch: an unknown field.
    let reply = api.patch(&path, json!({"type": "basic"})).await;
    reply.expect_field_error(400, "type");
    assert_eq!(
        store.auth_method(target_id, method_id).await.unwrap().kind,
        AuthMethodKind::Bearer
    );

    // A method addressed through another target is not found.
    let other = api.create_target("Other", "https://api.example.com").await;
    let other_id = json_id(&other);
    let wrong = format!("/api/targets/{other_id}/auth-methods/{method_id}");
    for reply in [
        api.patch(&wrong, json!({"label": "x"})).await,
        api.delete(&wrong).await,
    ] {
        reply.expect(404);
        assert_eq!(reply.json, json!({"error": "auth method not found"}));
    }
    assert!(store.auth_method(target_id, method_id).await.is_ok());

    let reply = api.delete(&path).await;
    reply.expect(204);
    assert!(reply.text.is_empty());
    assert!(store.auth_methods(target_id).await.unwrap().is_empty());
    for reply in [
        api.delete(&path).await,
        api.patch(&path, json!({"label": "again"})).await,
    ] {
        reply.expect(404);
        assert_eq!(reply.json, json!({"error": "auth method not found"}));
    }
    let list = api
        .get(&format!("/api/targets/{target_id}/auth-methods"))
        .await;
    assert_eq!(list.expect(200), &json!({"auth_methods": []}));
    assert_eq!(
        api.get(&format!("/api/targets/{target_id}"))
            .await
            .expect(200)["auth_method_count"],
        0
    );
    app.stop().await;
}
