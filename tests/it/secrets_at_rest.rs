//! SPEC §9: stored credentials are encrypted (no plaintext in the database files or columns),
//! and no secret reaches the log even at trace level.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse::domain::tokens::{AdminToken, AgentToken};
use sea_orm::{ConnectionTrait as _, Database, DbBackend, Statement};
use serde_json::json;

use crate::support::admin::{contains_bytes, json_id};
use crate::support::child::{strip_ansi, terminate};
use crate::support::{TestApp, TestDb};

/// Every table row of the public schema as text (`row::text` renders every column, bytea as
/// `\x…` hex), plus the raw `credential` bytes of the auth methods.
async fn postgres_contents(url: &str) -> (Vec<String>, Vec<Vec<u8>>) {
    let conn = Database::connect(url).await.unwrap();
    let tables = conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        ))
        .await
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let name: String = table.try_get("", "name").unwrap();
        let sql = format!("SELECT t::text AS row FROM \"{name}\" t");
        for row in conn
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap()
        {
            rows.push(row.try_get::<String>("", "row").unwrap());
        }
    }
    let mut credentials = Vec::new();
    for row in conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT credential FROM target_auth_methods",
        ))
        .await
        .unwrap()
    {
        credentials.push(row.try_get::<Vec<u8>>("", "credential").unwrap());
    }
    let _ = conn.close().await;
    (rows, credentials)
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_not_stored_in_plaintext() {
    let app = TestApp::spawn().await;
    let api = app.api();
    let marker = format!("visible-label-{}", uuid::Uuid::new_v4().simple());
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let refresh_canary = format!("refreshcanary{}", uuid::Uuid::new_v4().simple());
    let target = api.create_target("Vault", "https://api.example.com").await;
    let target_id = json_id(&target);
    api.create_auth_method(target_id, &marker, "bearer", json!(canary))
        .await;
    api.create_auth_method(
        target_id,
        "oauth",
        "oauth2_refresh_token",
        json!({
            "client_id": "cid",
            "client_secret": "cs",
            "refresh_token": refresh_canary,
            "token_url": "https://login.example.com/token",
        }),
    )
    .await;
    let created = api.create_token("agent").await;
    let agent_secret = created["token"].as_str().unwrap()[3..].to_owned();
    let webhook = api
        .post(
            "/api/webhooks",
            json!({"url": "https://hooks.example.com/in", "events": ["token.revoked"]}),
        )
        .await;
    let webhook_secret = webhook.expect(201)["secret"].as_str().unwrap()[6..].to_owned();
    let webhook_key = base64::engine::general_purpose::STANDARD
        .decode(&webhook_secret)
        .unwrap();
    let secrets = [
        canary.as_str(),
        refresh_canary.as_str(),
        agent_secret.as_str(),
        webhook_secret.as_str(),
    ];

    let crate::support::TestApp { running, db, .. } = app;
    if let Some(running) = running {
        running.shutdown().await;
    }

    if db.is_postgres() {
        let (rows, credentials) = postgres_contents(&db.url).await;
        assert!(
            rows.iter().any(|r| r.contains(&marker)),
            "control: the label is readable, so the search works"
        );
        assert_eq!(credentials.len(), 2);
        for credential in &credentials {
            for secret in &secrets {
                assert!(
                    !contains_bytes(credential, secret.as_bytes()),
                    "credential column holds {secret} in plaintext"
                );
            }
        }
        for row in &rows {
            assert!(
                !row.contains(&hex::encode(&webhook_key)),
                "the webhook signing key in row {row}"
            );
            for secret in &secrets {
                assert!(!row.contains(secret), "plaintext {secret} in row {row}");
                assert!(
                    !row.contains(&hex::encode(secret.as_bytes())),
                    "hex of {secret} in row {row}"
                );
            }
        }
    } else {
        let mut all = Vec::new();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(db.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path.display().to_string());
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        assert!(
            files.iter().any(|f| f.ends_with("gatehouse.db")),
            "{files:?}"
        );
        assert!(
            contains_bytes(&all, marker.as_bytes()),
            "control: the label is in the files {files:?}, so the search works"
        );
        assert!(
            !contains_bytes(&all, &webhook_key),
            "the webhook signing key in {files:?}"
        );
        for secret in &secrets {
            assert!(
                !contains_bytes(&all, secret.as_bytes()),
                "plaintext {secret} in {files:?}"
            );
            assert!(
                !contains_bytes(&all, hex::encode(secret.as_bytes()).as_bytes()),
                "hex of {secret} in {files:?}"
            );
        }
    }
}

// --- the log ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_at_trace_level() {
    let db = TestDb::new().await;
    let cwd = tempfile::tempdir().unwrap();
    let admin = AdminToken::generate();
    let key = base64::engine::general_purpose::STANDARD.encode(crate::support::app::rand_key());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("serve")
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("GATEHOUSE_ENCRYPTION_KEY", &key)
        .env("GATEHOUSE_ADMIN_TOKEN", admin.expose())
        .env("GATEHOUSE__LOG__LEVEL", "trace")
        .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads for the whole run.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stderr_reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stdout_pipe = child.stdout.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        bytes
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    let mut serving = None;
    while let Ok(line) = lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("gatehouse is serving") {
            serving = Some(strip_ansi(&line));
            break;
        }
    }
    let Some(serving) = serving else {
        let _ = child.kill();
        panic!("exited before serving:\n{log}");
    };
    let addr_of = |name: &str| -> String {
        let start = serving.find(&format!("{name}=")).unwrap() + name.len() + 1;
        serving[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let admin_base = format!("http://{}", addr_of("admin"));
    let proxy_base = format!("http://{}", addr_of("proxy"));

    let canary = format!("logcanary{}", uuid::Uuid::new_v4().simple());
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{admin_base}{path}"))
            .bearer_auth(admin.expose())
    };
    let target = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({"name": "Logged", "base_url": "https://api.example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(target.status(), 201);
    let target: serde_json::Value = target.json().await.unwrap();
    let target_id = target["id"].as_str().unwrap().to_owned();
    let method = api(
        reqwest::Method::POST,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .json(&json!({"label": "key", "type": "bearer", "credential": canary}))
    .send()
    .await
    .unwrap();
    assert_eq!(method.status(), 201);
    let method_id = method.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A failing write that carries the canary: refused, and not echoed anywhere.
    let refused = api(
        reqwest::Method::POST,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .json(&json!({"label": "bad", "type": "basic", "credential": format!("{canary}-no-colon")}))
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(!refused.text().await.unwrap().contains(&canary));
    let patched = api(
        reqwest::Method::PATCH,
        &format!("/api/targets/{target_id}/auth-methods/{method_id}"),
    )
    .json(&json!({"credential": format!("{canary}-v2")}))
    .send()
    .await
    .unwrap();
    assert_eq!(patched.status(), 200);
    let token = api(reqwest::Method::POST, "/api/tokens")
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 201);
    let token: serde_json::Value = token.json().await.unwrap();
    let agent = AgentToken::parse(token["token"].as_str().unwrap()).unwrap();
    // The agent token presented to the admin API: refused.
    let wrong = http
        .get(format!("{admin_base}/api/targets"))
        .bearer_auth(agent.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let listed = api(reqwest::Method::GET, "/api/targets")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    // And to the proxy (no permission, so it never leaves the gateway).
    let proxied = http
        .get(format!("{proxy_base}/gateway/logged/anything"))
        .bearer_auth(agent.expose())
        .send()
        .await
        .unwrap();
    assert_ne!(proxied.status(), 200);

    // A webhook: its secret is shown once and signs a test event the dispatcher tries to send.
    let webhook = api(reqwest::Method::POST, "/api/webhooks")
        .json(&json!({"url": "https://hooks.example.com/in", "events": ["token.revoked"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 201);
    let webhook: serde_json::Value = webhook.json().await.unwrap();
    let webhook_secret = webhook["secret"].as_str().unwrap()[6..].to_owned();
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let tested = api(
        reqwest::Method::POST,
        &format!("/api/webhooks/{webhook_id}/test"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(tested.status(), 202);
    let listed = api(reqwest::Method::GET, "/api/webhooks")
        .send()
        .await
        .unwrap();
    assert!(!listed.text().await.unwrap().contains(&webhook_secret));

    let exit = terminate(&mut child);
    let _ = stderr_reader.join();
    log.extend(lines_rx.try_iter().map(|l| l + "\n"));
    let stdout = String::from_utf8_lossy(&stdout_reader.join().unwrap()).into_owned();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}:\n{log}");

    for (what, secret) in [
        ("credential canary", canary.as_str()),
        ("agent token", &agent.expose()[3..]),
        ("admin token", &admin.expose()[4..]),
        ("webhook secret", webhook_secret.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} in stderr:\n{log}");
        assert!(!stdout.contains(secret), "{what} in stdout:\n{stdout}");
    }
    // Control: the log was captured.
    assert!(log.contains("gatehouse is serving"));
}
