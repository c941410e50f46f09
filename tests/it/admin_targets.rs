//! `/api/targets`: create, slug rules, base URL rules, list, get, patch, delete, and the
//! managed-target guard (docs/admin-api.md "Target", "Base URL rules"; SPEC §5, §9).

use std::collections::BTreeSet;

use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::targets::AuthMethodKind;
use gatehouse::domain::tokens::{AdminToken, AgentToken};
use gatehouse::store::StoreError;
use gatehouse::store::targets::NewAuthMethod;
use gatehouse::store::tokens::NewAgentToken;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::{MANAGED_MESSAGE, json_id, managed_target};
use crate::support::{TestApp, TestDb};

const TARGET_KEYS: [&str; 12] = [
    "id",
    "name",
    "slug",
    "base_url",
    "enabled",
    "managed",
    "connected_account_id",
    "capability",
    "auth_method_count",
    "guard_defaults",
    "created_at",
    "updated_at",
];

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn target_keys(with_account: bool) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = TARGET_KEYS.iter().map(|k| (*k).to_owned()).collect();
    if with_account {
        keys.insert("account".into());
    }
    keys
}

/// A URL the server may have normalised with a trailing `/` on an empty path.
fn same_url(actual: &Value, expected: &str) -> bool {
    actual
        .as_str()
        .is_some_and(|a| a.trim_end_matches('/') == expected.trim_end_matches('/'))
}

fn rfc3339(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{value} is not RFC 3339: {e}"))
        .to_utc()
}

/// An app with the production rule `upstream.allow_private = false`.
async fn strict_app() -> TestApp {
    let db = TestDb::new().await;
    let token = AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &token, key);
    config.upstream.allow_private = false;
    TestApp::spawn_with(db, token, key, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn create_derives_or_takes_the_slug() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();

    let reply = api
        .post(
            "/api/targets",
            json!({"name": "GitHub API", "base_url": "https://api.github.com"}),
        )
        .await;
    let created = reply.expect(201).clone();
    assert_eq!(keys(&created), target_keys(false), "{created}");
    assert_eq!(created["name"], "GitHub API");
    assert_eq!(created["slug"], "github-api");
    assert!(same_url(&created["base_url"], "https://api.github.com"));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["managed"], false);
    assert_eq!(created["connected_account_id"], Value::Null);
    assert_eq!(created["capability"], Value::Null);
    assert_eq!(created["auth_method_count"], 0);
    assert!(rfc3339(&created["updated_at"]) >= rfc3339(&created["created_at"]));
    let stored = store.target(json_id(&created)).await.unwrap();
    assert_eq!(stored.slug.as_str(), "github-api");
    assert_eq!(stored.name, "GitHub API");
    assert!(stored.enabled && !stored.is_managed());

    // Runs of other characters collapse to one '-'.
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "  Stripe -- Payments (v2)!! ", "base_url": "https://api.stripe.com/v2"}),
        )
        .await;
    assert_eq!(reply.expect(201)["slug"], "stripe-payments-v2");

    // An explicit slug is taken as given; enabled can be set on create.
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "Anything At All", "slug": "my-slug-2", "base_url": "https://api.example.com/v1", "enabled": false}),
        )
        .await;
    let explicit = reply.expect(201).clone();
    assert_eq!(explicit["slug"], "my-slug-2");
    assert_eq!(explicit["enabled"], false);
    assert!(same_url(
        &explicit["base_url"],
        "https://api.example.com/v1"
    ));
    assert!(!store.target_by_slug("my-slug-2").await.unwrap().enabled);

    let slugs: BTreeSet<String> = store
        .list_targets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug.as_str().to_owned())
        .collect();
    assert_eq!(
        slugs,
        ["github-api", "my-slug-2", "stripe-payments-v2"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_explicit_slugs_are_400_and_create_nothing() {
    let app = TestApp::spawn().await;
    let api = app.api();
    for slug in [
        json!("Has Caps"),
        json!("under_score"),
        json!("with space"),
        json!("dots.in.it"),
        json!("ümlaut"),
        json!(""),
        json!("a".repeat(64)),
    ] {
        let reply = api
            .post(
                "/api/targets",
                json!({"name": "Valid Name", "slug": slug, "base_url": "https://api.example.com"}),
            )
            .await;
        reply.expect_error(400, Some("slug"));
    }
    // An empty name is a broken rule too.
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "", "slug": "nameless", "base_url": "https://api.example.com"}),
        )
        .await;
    reply.expect_error(400, Some("name"));
    // 63 characters is the maximum and fine.
    let longest = "a".repeat(63);
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "Long", "slug": longest, "base_url": "https://api.example.com"}),
        )
        .await;
    assert_eq!(reply.expect(201)["slug"], longest.as_str());
    let targets = app.running().store().list_targets().await.unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_slug_is_409_and_no_second_row() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let first = api
        .create_target("GitHub API", "https://api.github.com")
        .await;

    // Explicitly, and derived from a name that slugifies the same.
    for body in [
        json!({"name": "Other", "slug": "github-api", "base_url": "https://api.example.com"}),
        json!({"name": "github api", "base_url": "https://api.example.com"}),
    ] {
        let reply = api.post("/api/targets", body).await;
        reply.expect(409);
        assert_eq!(
            reply.json,
            json!({"error": "slug already exists", "field": "slug"})
        );
    }
    let targets = app.running().store().list_targets().await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].id, json_id(&first));
    assert_eq!(targets[0].name, "GitHub API");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn base_url_rules_without_allow_private() {
    let app = strict_app().await;
    let api = app.api();
    let refused = [
        "http://api.github.com",
        "ftp://files.example.com",
        "https://user:pass@api.example.com",
        "https://user@api.example.com",
        "https://api.example.com/#frag",
        "https://127.0.0.1",
        "https://127.0.0.1:8443/api",
        "https://10.1.2.3",
        "https://172.16.0.1",
        "https://192.168.1.10",
        "https://100.64.0.1",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0",
        "https://224.0.0.1",
        "https://[::1]",
        "https://[fe80::1]",
        "https://[fc00::1]",
        "https://[::ffff:127.0.0.1]",
        "https://[::ffff:10.0.0.1]",
        "https://[64:ff9b::a00:1]",
        "https://[2002:a00:1::]",
        "https://localhost",
        "https://localhost:8443",
        "https://api.localhost",
        "https://metadata.google.internal",
        "not a url",
        "https://",
        "",
    ];
    for base_url in refused {
        let reply = api
            .post(
                "/api/targets",
                json!({"name": "Refused", "base_url": base_url}),
            )
            .await;
        assert_eq!(reply.status, 400, "{base_url:?} accepted: {}", reply.text);
        reply.expect_error(400, Some("base_url"));
        assert!(
            app.running()
                .store()
                .list_targets()
                .await
                .unwrap()
                .is_empty(),
            "{base_url:?} left a row"
        );
    }

    for (slug, base_url) in [
        ("github", "https://api.github.com"),
        ("github-v3", "https://api.github.com/v3"),
        ("public-ip", "https://8.8.8.8"),
    ] {
        let reply = api
            .post("/api/targets", json!({"name": slug, "base_url": base_url}))
            .await;
        reply.expect(201);
    }
    assert_eq!(app.running().store().list_targets().await.unwrap().len(), 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_private_admits_http_and_loopback_but_not_the_other_rules() {
    // The default test config has upstream.allow_private = true.
    let app = TestApp::spawn().await;
    let api = app.api();
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "Local", "base_url": "http://127.0.0.1:9"}),
        )
        .await;
    let created = reply.expect(201).clone();
    assert!(same_url(&created["base_url"], "http://127.0.0.1:9"));
    let reply = api
        .post(
            "/api/targets",
            json!({"name": "Private", "base_url": "https://10.0.0.1"}),
        )
        .await;
    reply.expect(201);

    for base_url in [
        "ftp://127.0.0.1",
        "http://user:pass@127.0.0.1:9",
        "http://127.0.0.1:9/#frag",
        "file:///etc/passwd",
    ] {
        let reply = api
            .post(
                "/api/targets",
                json!({"name": "Refused", "base_url": base_url}),
            )
            .await;
        assert_eq!(reply.status, 400, "{base_url:?} accepted: {}", reply.text);
        reply.expect_error(400, Some("base_url"));
    }
    assert_eq!(app.running().store().list_targets().await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_get_show_managed_state_counts_and_account() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let standard = api
        .create_target("Standard", "https://api.example.com")
        .await;
    let standard_id = json_id(&standard);
    for label in ["one", "two"] {
        api.create_auth_method(standard_id, label, "bearer", json!("abcdefghijklmnop"))
            .await;
    }
    let managed = managed_target(store, "ada-mail").await;
    let account_id = managed.connected_account_id.unwrap();

    let reply = api.get("/api/targets").await;
    let list = reply.expect(200);
    assert_eq!(keys(list), BTreeSet::from(["targets".to_owned()]));
    let targets = list["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{list}");
    let find = |id: Uuid| {
        targets
            .iter()
            .find(|t| json_id(t) == id)
            .unwrap_or_else(|| panic!("{id} not listed"))
    };
    let listed_standard = find(standard_id);
    assert_eq!(keys(listed_standard), target_keys(false));
    assert_eq!(listed_standard["managed"], false);
    assert_eq!(listed_standard["connected_account_id"], Value::Null);
    assert_eq!(listed_standard["capability"], Value::Null);
    assert_eq!(listed_standard["auth_method_count"], 2);
    let listed_managed = find(managed.id);
    assert_eq!(keys(listed_managed), target_keys(false));
    assert_eq!(listed_managed["managed"], true);
    assert_eq!(
        listed_managed["connected_account_id"],
        account_id.to_string()
    );
    assert_eq!(listed_managed["capability"], "mail");
    assert_eq!(listed_managed["slug"], "ada-mail");
    assert_eq!(listed_managed["auth_method_count"], 0);

    // By id and by slug: the same body, with `account`.
    let by_id = api.get(&format!("/api/targets/{standard_id}")).await;
    let by_id = by_id.expect(200).clone();
    assert_eq!(keys(&by_id), target_keys(true), "{by_id}");
    assert_eq!(by_id["account"], Value::Null);
    assert_eq!(by_id["auth_method_count"], 2);
    let by_slug = api.get("/api/targets/standard").await;
    assert_eq!(by_slug.expect(200), &by_id);

    let managed_by_slug = api.get("/api/targets/ada-mail").await;
    let managed_body = managed_by_slug.expect(200).clone();
    assert_eq!(keys(&managed_body), target_keys(true));
    assert_eq!(managed_body["managed"], true);
    assert_eq!(
        managed_body["account"],
        json!({
            "id": account_id.to_string(),
            "provider": "microsoft_365",
            "email": "ada-mail@example.com",
            "status": "connected",
        })
    );
    let managed_by_id = api.get(&format!("/api/targets/{}", managed.id)).await;
    assert_eq!(managed_by_id.expect(200), &managed_body);
    // Account tokens never show.
    assert!(!managed_by_slug.text.contains("access_token"));
    assert!(!managed_by_slug.text.contains("refresh_token"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_updates_name_enabled_and_base_url_under_the_rules() {
    let app = strict_app().await;
    let api = app.api();
    let store = app.running().store();
    let created = api.create_target("Before", "https://api.example.com").await;
    let id = json_id(&created);
    let path = format!("/api/targets/{id}");

    let reply = api
        .patch(
            &path,
            json!({"name": "After", "enabled": false, "base_url": "https://api2.example.com/v2"}),
        )
        .await;
    let patched = reply.expect(200).clone();
    assert_eq!(keys(&patched), target_keys(false), "{patched}");
    assert_eq!(patched["name"], "After");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["slug"], "before", "the slug never changes");
    assert!(same_url(
        &patched["base_url"],
        "https://api2.example.com/v2"
    ));
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(rfc3339(&patched["updated_at"]) >= rfc3339(&created["updated_at"]));
    let stored = store.target(id).await.unwrap();
    assert_eq!(stored.name, "After");
    assert!(!stored.enabled);
    assert_eq!(stored.base_url.as_str(), "https://api2.example.com/v2");

    // A partial patch leaves the rest alone.
    let reply = api.patch(&path, json!({"enabled": true})).await;
    let partial = reply.expect(200);
    assert_eq!(partial["name"], "After");
    assert_eq!(partial["enabled"], true);

    // The base URL rules apply on patch too, and a refused patch changes nothing.
    for base_url in [
        "http://api.example.com",
        "https://10.0.0.1",
        "https://[::1]",
        "https://localhost",
        "https://user:pw@api.example.com",
    ] {
        let reply = api.patch(&path, json!({"base_url": base_url})).await;
        reply.expect_error(400, Some("base_url"));
    }
    // The slug is not patchable: an unknown field.
    let reply = api.patch(&path, json!({"slug": "renamed"})).await;
    reply.expect_field_error(400, "slug");
    let after = store.target(id).await.unwrap();
    assert_eq!(after.base_url.as_str(), "https://api2.example.com/v2");
    assert_eq!(after.slug.as_str(), "before");
    assert!(after.enabled);
    assert_eq!(store.list_targets().await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_cascades_to_auth_methods_and_permissions() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let doomed = api.create_target("Doomed", "https://api.example.com").await;
    let doomed_id = json_id(&doomed);
    let kept = api.create_target("Kept", "https://api.example.com").await;
    let kept_id = json_id(&kept);
    let method = api
        .create_auth_method(doomed_id, "key", "bearer", json!("abcdefghijklmnop"))
        .await;
    let token = api.create_token("agent").await;
    let token_id = json_id(&token);
    for target in [doomed_id, kept_id] {
        api.put_empty(&format!("/api/tokens/{token_id}/permissions/{target}"))
            .await
            .expect(201);
    }
    assert_eq!(store.permissions_of_token(token_id).await.unwrap().len(), 2);

    let reply = api.delete(&format!("/api/targets/{doomed_id}")).await;
    reply.expect(204);
    assert!(reply.text.is_empty(), "204 has no body: {}", reply.text);

    assert!(matches!(
        store.target(doomed_id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.auth_methods(doomed_id).await.unwrap().is_empty());
    assert!(matches!(
        store.auth_method(doomed_id, json_id(&method)).await,
        Err(StoreError::NotFound { .. })
    ));
    let left = store.permissions_of_token(token_id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].target_id, kept_id);
    assert!(store.target(kept_id).await.is_ok());

    let gone = api.get(&format!("/api/targets/{doomed_id}")).await;
    gone.expect(404);
    assert_eq!(gone.json, json!({"error": "target not found"}));
    let again = api.delete(&format!("/api/targets/{doomed_id}")).await;
    again.expect(404);
    assert_eq!(again.json, json!({"error": "target not found"}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_targets_are_404() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let missing = Uuid::new_v4();
    let replies = [
        api.get(&format!("/api/targets/{missing}")).await,
        api.get("/api/targets/no-such-slug").await,
        api.patch(&format!("/api/targets/{missing}"), json!({"name": "x"}))
            .await,
        api.delete(&format!("/api/targets/{missing}")).await,
        api.get(&format!("/api/targets/{missing}/auth-methods"))
            .await,
        api.post(
            &format!("/api/targets/{missing}/auth-methods"),
            json!({"label": "k", "type": "bearer", "credential": "abcdefghijklmnop"}),
        )
        .await,
    ];
    for reply in replies {
        reply.expect(404);
        assert_eq!(reply.json, json!({"error": "target not found"}));
    }
    assert!(
        app.running()
            .store()
            .list_targets()
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_targets_change_only_through_their_account() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let managed = managed_target(store, "ada-mail").await;
    // An auth method on it, written directly (the API refuses to create one).
    let method = store
        .insert_auth_method(NewAuthMethod {
            id: Uuid::new_v4(),
            target_id: managed.id,
            label: "direct".into(),
            kind: AuthMethodKind::Bearer,
            sealed_credential: vec![1, 2, 3],
            credential_hint: "…abcd".into(),
            is_default: true,
        })
        .await
        .unwrap();
    let path = format!("/api/targets/{}", managed.id);
    let methods_path = format!("{path}/auth-methods");
    let method_path = format!("{methods_path}/{}", method.id);

    let replies = [
        api.patch(&path, json!({"name": "Hijacked"})).await,
        api.patch(&path, json!({"enabled": false})).await,
        api.patch(&path, json!({"base_url": "https://evil.example.com"}))
            .await,
        api.delete(&path).await,
        api.post(
            &methods_path,
            json!({"label": "k", "type": "bearer", "credential": "abcdefghijklmnop"}),
        )
        .await,
        api.patch(&method_path, json!({"label": "renamed"})).await,
        api.patch(&method_path, json!({"credential": "zyxwvutsrqponmlk"}))
            .await,
        api.delete(&method_path).await,
    ];
    for reply in replies {
        reply.expect(409);
        assert_eq!(reply.json["error"], MANAGED_MESSAGE, "{}", reply.text);
    }

    // Nothing changed.
    assert_eq!(store.target(managed.id).await.unwrap(), managed);
    assert_eq!(store.auth_methods(managed.id).await.unwrap(), vec![method]);

    // Granting a token access to a managed target is allowed.
    let agent = store
        .insert_agent_token(NewAgentToken {
            name: "agent".into(),
            hash: AgentToken::generate().hash(),
            allowed_ips: IpAllowlist::default(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let reply = api
        .put(
            &format!("/api/tokens/{}/permissions/{}", agent.id, managed.id),
            json!({"read_only": true}),
        )
        .await;
    let permission = reply.expect(201);
    assert_eq!(permission["target_slug"], "ada-mail");
    assert_eq!(permission["read_only"], true);
    let stored = store.permissions_of_token(agent.id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].target_id, stored[0].read_only),
        (managed.id, true)
    );
    app.stop().await;
}
