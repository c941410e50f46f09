//! `/api/tokens` and their permissions (docs/admin-api.md "Token", "Permission"), plus the
//! `gatehouse token create` subcommand (SPEC §1).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use base64::Engine as _;
use gatehouse::domain::tokens::AgentToken;
use gatehouse::store::StoreError;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::admin::{json_id, managed_target};
use crate::support::{TestApp, TestDb};

const TOKEN_KEYS: [&str; 9] = [
    "id",
    "name",
    "allowed_ips",
    "rate_limit",
    "revoked",
    "created_at",
    "updated_at",
    "revoked_at",
    "last_used_at",
];

fn key_set(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn token_keys(with_plaintext: bool) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = TOKEN_KEYS.iter().map(|k| (*k).to_owned()).collect();
    if with_plaintext {
        keys.insert("token".into());
    }
    keys
}

/// The plaintext `token` of a create/regenerate reply, checked for shape.
#[track_caller]
fn plaintext(body: &Value) -> AgentToken {
    let text = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"));
    assert!(text.starts_with("sg_"), "{text}");
    AgentToken::parse(text).unwrap_or_else(|| panic!("malformed agent token {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn create_shows_the_plaintext_once() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();

    let reply = api.post("/api/tokens", json!({"name": "ci bot"})).await;
    let created = reply.expect(201).clone();
    assert_eq!(key_set(&created), token_keys(true), "{created}");
    let token = plaintext(&created);
    let id = json_id(&created);
    assert_eq!(created["name"], "ci bot");
    assert_eq!(created["allowed_ips"], json!([]));
    assert_eq!(created["revoked"], false);
    assert_eq!(created["revoked_at"], Value::Null);
    assert_eq!(created["last_used_at"], Value::Null);
    let record = store
        .agent_token_by_hash(&token.hash())
        .await
        .unwrap()
        .expect("stored by hash");
    assert_eq!(record.id, id);
    assert_eq!(record.name, "ci bot");
    assert!(record.allowed_ips.is_any());

    // The plaintext (and the hash) appear in no later response.
    let secret = &token.expose()[3..];
    let hash = token.hash();
    let later = [
        api.get("/api/tokens").await,
        api.get(&format!("/api/tokens/{id}")).await,
        api.patch(&format!("/api/tokens/{id}"), json!({"name": "renamed bot"}))
            .await,
        api.get(&format!("/api/tokens/{id}/permissions")).await,
    ];
    for reply in &later {
        reply.expect(200);
        assert!(
            !reply.text.contains(secret),
            "plaintext shown again: {}",
            reply.text
        );
        assert!(
            !reply.text.contains(hash.as_str()),
            "hash shown: {}",
            reply.text
        );
        assert!(reply.json.get("token").is_none(), "{}", reply.text);
    }
    let list = &later[0].json;
    assert_eq!(key_set(list), BTreeSet::from(["tokens".to_owned()]));
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(key_set(&tokens[0]), token_keys(false));
    assert_eq!(json_id(&tokens[0]), id);
    let one = &later[1].json;
    assert_eq!(key_set(one), token_keys(false));
    assert_eq!(one["name"], "ci bot");
    assert_eq!(key_set(&later[2].json), token_keys(false));
    assert_eq!(later[2].json["name"], "renamed bot");
    assert_eq!(store.agent_token(id).await.unwrap().name, "renamed bot");

    // Two tokens, two different plaintexts.
    let second = api.create_token("second").await;
    assert_ne!(plaintext(&second), token);
    assert_eq!(store.list_agent_tokens().await.unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_ips_are_validated_and_normalised() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();

    let reply = api
        .post(
            "/api/tokens",
            json!({"name": "fenced", "allowed_ips": ["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32"]}),
        )
        .await;
    let created = reply.expect(201).clone();
    assert_eq!(
        created["allowed_ips"],
        json!(["10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"])
    );
    let id = json_id(&created);
    assert_eq!(
        store
            .agent_token(id)
            .await
            .unwrap()
            .allowed_ips
            .to_strings(),
        vec!["10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"]
    );

    for bad in [
        json!(["not-an-ip"]),
        json!(["10.0.0.0/33"]),
        json!(["300.1.1.1"]),
        json!(["10.0.0.0/8", ""]),
        json!("10.0.0.0/8"),
    ] {
        let reply = api
            .post(
                "/api/tokens",
                json!({"name": "bad ips", "allowed_ips": bad}),
            )
            .await;
        assert_eq!(reply.status, 400, "{bad} accepted: {}", reply.text);
        assert_eq!(reply.json["field"], "allowed_ips", "{bad}: {}", reply.text);
        assert!(reply.json["error"].is_string());
    }
    // An element of the wrong type: the field path may point into the list.
    let reply = api
        .post(
            "/api/tokens",
            json!({"name": "bad ips", "allowed_ips": [10]}),
        )
        .await;
    reply.expect_error(400, None);
    assert!(
        reply.json["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("allowed_ips")),
        "{}",
        reply.text
    );
    assert_eq!(store.list_agent_tokens().await.unwrap().len(), 1);

    // PATCH: name and allowed_ips, with the same rules.
    let path = format!("/api/tokens/{id}");
    let reply = api
        .patch(
            &path,
            json!({"name": "moved", "allowed_ips": ["192.168.0.7"]}),
        )
        .await;
    let patched = reply.expect(200).clone();
    assert_eq!(key_set(&patched), token_keys(false));
    assert_eq!(patched["name"], "moved");
    assert_eq!(patched["allowed_ips"], json!(["192.168.0.7/32"]));
    assert_eq!(patched["created_at"], created["created_at"]);
    let reply = api
        .patch(&path, json!({"allowed_ips": ["192.168.0.0/99"]}))
        .await;
    reply.expect_error(400, Some("allowed_ips"));
    let stored = store.agent_token(id).await.unwrap();
    assert_eq!(stored.name, "moved");
    assert_eq!(stored.allowed_ips.to_strings(), vec!["192.168.0.7/32"]);

    // An empty list means any address again.
    let reply = api.patch(&path, json!({"allowed_ips": []})).await;
    assert_eq!(reply.expect(200)["allowed_ips"], json!([]));
    assert!(store.agent_token(id).await.unwrap().allowed_ips.is_any());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn regenerate_replaces_the_hash_at_once() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let created = api.create_token("rotating").await;
    let id = json_id(&created);
    let old = plaintext(&created);

    let reply = api
        .post_empty(&format!("/api/tokens/{id}/regenerate"))
        .await;
    let regenerated = reply.expect(200).clone();
    assert_eq!(key_set(&regenerated), token_keys(true), "{regenerated}");
    assert_eq!(json_id(&regenerated), id, "same token, new secret");
    assert_eq!(regenerated["name"], "rotating");
    let new = plaintext(&regenerated);
    assert_ne!(new, old);

    let old_parsed = AgentToken::parse(old.expose()).unwrap();
    assert_eq!(
        store.agent_token_by_hash(&old_parsed.hash()).await.unwrap(),
        None,
        "the old plaintext stops working at once"
    );
    assert_eq!(
        store
            .agent_token_by_hash(&new.hash())
            .await
            .unwrap()
            .map(|r| r.id),
        Some(id)
    );
    let list = api.get("/api/tokens").await;
    assert!(!list.text.contains(&new.expose()[3..]));
    assert_eq!(store.list_agent_tokens().await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_is_idempotent_and_delete_is_final() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let created = api.create_token("short-lived").await;
    let id = json_id(&created);
    let target = api
        .create_target("Somewhere", "https://api.example.com")
        .await;
    api.put_empty(&format!(
        "/api/tokens/{id}/permissions/{}",
        json_id(&target)
    ))
    .await
    .expect(201);

    let reply = api.post_empty(&format!("/api/tokens/{id}/revoke")).await;
    let revoked = reply.expect(200).clone();
    assert_eq!(key_set(&revoked), token_keys(false), "{revoked}");
    assert_eq!(revoked["revoked"], true);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let record = store.agent_token(id).await.unwrap();
    assert!(record.is_revoked());

    let again = api.post_empty(&format!("/api/tokens/{id}/revoke")).await;
    let again = again.expect(200);
    assert_eq!(again["revoked"], true);
    assert_eq!(
        again["revoked_at"], revoked["revoked_at"],
        "first time kept"
    );
    assert_eq!(
        store.agent_token(id).await.unwrap().revoked_at,
        record.revoked_at
    );
    let listed = api.get("/api/tokens").await;
    assert_eq!(listed.expect(200)["tokens"][0]["revoked"], true);

    let reply = api.delete(&format!("/api/tokens/{id}")).await;
    reply.expect(204);
    assert!(reply.text.is_empty());
    assert!(matches!(
        store.agent_token(id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.all_permissions().await.unwrap().is_empty(), "cascade");

    for reply in [
        api.get(&format!("/api/tokens/{id}")).await,
        api.delete(&format!("/api/tokens/{id}")).await,
        api.patch(&format!("/api/tokens/{id}"), json!({"name": "zombie"}))
            .await,
        api.post_empty(&format!("/api/tokens/{id}/revoke")).await,
        api.post_empty(&format!("/api/tokens/{id}/regenerate"))
            .await,
        api.get(&format!("/api/tokens/{id}/permissions")).await,
    ] {
        reply.expect(404);
        assert_eq!(reply.json, json!({"error": "token not found"}));
    }
    assert!(store.list_agent_tokens().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_put_is_idempotent_and_delete_reports_absence() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let store = app.running().store();
    let token = api.create_token("agent").await;
    let token_id = json_id(&token);
    let target = api
        .create_target("GitHub API", "https://api.github.com")
        .await;
    let target_id = json_id(&target);
    let managed = managed_target(store, "ada-mail").await;
    let path = format!("/api/tokens/{token_id}/permissions/{target_id}");

    // Created with an empty body: read_only defaults to false.
    let reply = api.put_empty(&path).await;
    let created = reply.expect(201).clone();
    let expected_keys: BTreeSet<String> = [
        "id",
        "token_id",
        "target_id",
        "target_slug",
        "target_name",
        "read_only",
        "created_at",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(key_set(&created), expected_keys, "{created}");
    assert_eq!(created["token_id"], token_id.to_string());
    assert_eq!(created["target_id"], target_id.to_string());
    assert_eq!(created["target_slug"], "github-api");
    assert_eq!(created["target_name"], "GitHub API");
    assert_eq!(created["read_only"], false);

    // An empty body declared as JSON is fine as well.
    let reply = api
        .send(
            api.request(reqwest::Method::PUT, &path)
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(json_id(reply.expect(200)), json_id(&created));

    // Again, now read-only: 200, same row, updated.
    let reply = api.put(&path, json!({"read_only": true})).await;
    let updated = reply.expect(200).clone();
    assert_eq!(json_id(&updated), json_id(&created));
    assert_eq!(updated["read_only"], true);
    // Unchanged: still 200.
    let reply = api.put(&path, json!({"read_only": true})).await;
    assert_eq!(reply.expect(200)["read_only"], true);
    let stored = store.permissions_of_token(token_id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, json_id(&created));
    assert!(stored[0].read_only);

    // A second target (managed: allowed) and the listing.
    let reply = api
        .put(
            &format!("/api/tokens/{token_id}/permissions/{}", managed.id),
            json!({}),
        )
        .await;
    reply.expect(201);
    let list = api
        .get(&format!("/api/tokens/{token_id}/permissions"))
        .await;
    let list = list.expect(200).clone();
    assert_eq!(key_set(&list), BTreeSet::from(["permissions".to_owned()]));
    let mut listed: Vec<(String, bool)> = list["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(key_set(p), expected_keys);
            (
                p["target_slug"].as_str().unwrap().to_owned(),
                p["read_only"].as_bool().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("ada-mail".to_owned(), false),
            ("github-api".to_owned(), true)
        ]
    );

    // Unknown target or token: 404, nothing written.
    let missing = Uuid::new_v4();
    let reply = api
        .put_empty(&format!("/api/tokens/{token_id}/permissions/{missing}"))
        .await;
    reply.expect(404);
    assert_eq!(reply.json, json!({"error": "target not found"}));
    let reply = api
        .put_empty(&format!("/api/tokens/{missing}/permissions/{target_id}"))
        .await;
    reply.expect(404);
    assert_eq!(reply.json, json!({"error": "token not found"}));
    // A bad body is still refused.
    let reply = api.put(&path, json!({"read_only": "yes"})).await;
    reply.expect_field_error(400, "read_only");
    assert_eq!(store.all_permissions().await.unwrap().len(), 2);
    assert!(
        store
            .permissions_of_token(token_id)
            .await
            .unwrap()
            .iter()
            .any(|p| p.target_id == target_id && p.read_only)
    );

    // DELETE: 204, then 404.
    let reply = api.delete(&path).await;
    reply.expect(204);
    assert!(reply.text.is_empty());
    let left = store.permissions_of_token(token_id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].target_id, managed.id);
    let reply = api.delete(&path).await;
    reply.expect(404);
    assert_eq!(reply.json, json!({"error": "permission not found"}));
    app.stop().await;
}

// --- the CLI -------------------------------------------------------------------------------

/// `gatehouse` in an empty temp dir with only PATH, the database and a key in its environment.
fn gatehouse_cli(dir: &std::path::Path, db: &TestDb) -> Command {
    let key = base64::engine::general_purpose::STANDARD.encode(crate::support::app::rand_key());
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GATEHOUSE_ENCRYPTION_KEY", key)
        .stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_token_create_prints_one_token_and_grants_the_target() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let target = store
        .insert_target(gatehouse::store::targets::NewTarget {
            name: "GitHub".into(),
            slug: gatehouse::domain::targets::TargetSlug::parse("github").unwrap(),
            base_url: url::Url::parse("https://api.github.com").unwrap(),
            enabled: true,
            connected_account_id: None,
            capability: None,
        })
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();

    let output = gatehouse_cli(cwd.path(), &db)
        .args([
            "token",
            "create",
            "--name",
            "cli agent",
            "--target",
            "github",
            "--read-only",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    let printed: Vec<&str> = stdout.lines().filter(|l| l.contains("sg_")).collect();
    assert_eq!(printed.len(), 1, "one token on stdout: {stdout}");
    let token = AgentToken::parse(printed[0].trim())
        .unwrap_or_else(|| panic!("not a bare sg_ token line: {:?}", printed[0]));
    assert!(!stderr.contains(&token.expose()[3..]), "token on stderr");

    let record = store
        .agent_token_by_hash(&token.hash())
        .await
        .unwrap()
        .expect("token stored by hash");
    assert_eq!(record.name, "cli agent");
    let permissions = store.permissions_of_token(record.id).await.unwrap();
    assert_eq!(permissions.len(), 1);
    assert_eq!(permissions[0].target_id, target.id);
    assert!(permissions[0].read_only);

    // `--with-setup`: the token line, then the MCP client set-up for it (proxy.public_url).
    let output = gatehouse_cli(cwd.path(), &db)
        .args(["token", "create", "--name", "mcp agent", "--with-setup"])
        .env("GATEHOUSE__PROXY__PUBLIC_URL", "https://gw.example.com")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first = stdout.lines().next().unwrap_or_default();
    let agent = AgentToken::parse(first).unwrap_or_else(|| panic!("token first: {stdout}"));
    let command = format!(
        "claude mcp add --transport http gatehouse https://gw.example.com/mcp --header \"Authorization: Bearer {}\"",
        agent.expose()
    );
    assert!(stdout.contains(&command), "{stdout}");
    assert!(
        stdout.contains("\"url\": \"https://gw.example.com/mcp\""),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&agent.expose()[3..]),
        "token on stderr"
    );
    store
        .delete_agent_token(
            store
                .agent_token_by_hash(&agent.hash())
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();

    // An unknown target: non-zero exit, one line naming it, nothing written.
    let output = gatehouse_cli(cwd.path(), &db)
        .args([
            "token",
            "create",
            "--name",
            "orphan",
            "--target",
            "no-such-target",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success(), "an unknown target must fail");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].contains("no-such-target"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("sg_"),
        "no token printed on failure"
    );
    let tokens = store.list_agent_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1, "no token row for the failed create");
    assert_eq!(tokens[0].id, record.id);
    assert_eq!(store.all_permissions().await.unwrap().len(), 1);
    store.close().await;
}
