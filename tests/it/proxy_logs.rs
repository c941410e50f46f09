//! SPEC §9: no secret in a log line, even at trace level (Pingora's own logs included). The
//! real binary runs as a child process; its whole stdout and stderr are searched for canaries.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::domain::tokens::{AdminToken, AgentToken};
use parking_lot::Mutex;
use serde_json::json;

use crate::support::child::{strip_ansi, wait_with_deadline};
use crate::support::upstream::FakeUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// Collects a child's output on a thread for the whole run.
fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n').map_while(Result::ok) {
            let mut log = into.lock();
            log.push_str(&String::from_utf8_lossy(&line));
            log.push('\n');
        }
    })
}

/// Kills the child if the test fails before SIGTERM.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_logs_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = AdminToken::generate();
    let upstream = FakeUpstream::start().await;
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEHOUSE_ADMIN_TOKEN", admin_token.expose())
        .env("GATEHOUSE__LOG__LEVEL", "trace")
        .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__UPSTREAM__ALLOW_PRIVATE", "true")
        .env("GATEHOUSE__AUDIT__FLUSH_INTERVAL", "50ms")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let readers = vec![
        collect(child.stdout.take().unwrap(), log.clone()),
        collect(child.stderr.take().unwrap(), log.clone()),
    ];
    let mut guard = Guard(Some(child));

    // The bound addresses from the startup line.
    let deadline = Instant::now() + Duration::from_secs(60);
    let serving = loop {
        let text = strip_ansi(&log.lock());
        if let Some(line) = text.lines().find(|l| l.contains("gatehouse is serving")) {
            break line.to_owned();
        }
        if Instant::now() > deadline || guard.0.as_mut().unwrap().try_wait().unwrap().is_some() {
            panic!("not serving:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr_of = |name: &str| -> String {
        let start = serving.find(&format!("{name}=")).unwrap() + name.len() + 1;
        serving[start..]
            .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .find(|s| !s.is_empty())
            .unwrap()
            .to_owned()
    };
    let proxy = addr_of("proxy");
    let admin = addr_of("admin");

    let credential = format!("credcanary{}", uuid::Uuid::new_v4().simple());
    let query_canary = format!("querycanary{}", uuid::Uuid::new_v4().simple());
    let header_canary = format!("headercanary{}", uuid::Uuid::new_v4().simple());
    let unknown_token = AgentToken::generate();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("http://{admin}{path}"))
            .bearer_auth(admin_token.expose())
    };
    let target: serde_json::Value = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({"name": "Logged", "slug": "logged", "base_url": upstream.url("/base")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target_id = target["id"].as_str().unwrap().to_owned();
    let method = api(
        reqwest::Method::POST,
        &format!("/api/targets/{target_id}/auth-methods"),
    )
    .json(&json!({"label": "key", "type": "bearer", "credential": credential}))
    .send()
    .await
    .unwrap();
    assert_eq!(method.status().as_u16(), 201);
    let created: serde_json::Value = api(reqwest::Method::POST, "/api/tokens")
        .json(&json!({"name": "logged agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    let granted = api(
        reqwest::Method::PUT,
        &format!("/api/tokens/{token_id}/permissions/{target_id}"),
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert!(granted.status().is_success());

    // A second target where nothing listens: upstream failures are logged (by Pingora too).
    let closed = crate::support::upstream::closed_port();
    let gone: serde_json::Value = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({"name": "Gone", "slug": "gone", "base_url": format!("http://{closed}/x")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gone_id = gone["id"].as_str().unwrap().to_owned();
    let gone_method = api(
        reqwest::Method::POST,
        &format!("/api/targets/{gone_id}/auth-methods"),
    )
    .json(
        &json!({"label": "key", "type": "query_param", "credential": format!("key:{credential}")}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(gone_method.status().as_u16(), 201);
    let granted = api(
        reqwest::Method::PUT,
        &format!("/api/tokens/{token_id}/permissions/{gone_id}"),
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert!(granted.status().is_success());

    let url = |path: &str| format!("http://{proxy}{path}");
    let mut ok = false;
    for _ in 0..40 {
        let response = http
            .get(url(&format!("/gateway/logged/items?secret={query_canary}")))
            .bearer_auth(&token)
            .header("x-secret-header", &header_canary)
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the proxied request succeeded within 2 s");
    assert_eq!(
        upstream.last().header("authorization"),
        Some(format!("Bearer {credential}"))
    );
    // More traffic: a credential-echoing response, a refused path, a 404, discovery, and an
    // unknown token (which must not be logged either).
    for (path, bearer) in [
        (
            format!("/gateway/logged/echo-auth?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/logged/a%2fb?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/nope/x?secret={query_canary}"),
            token.as_str(),
        ),
        ("/discovery".to_owned(), token.as_str()),
        (
            format!("/gateway/gone/x?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/logged/x?secret={query_canary}"),
            unknown_token.expose(),
        ),
    ] {
        let response = http
            .post(url(&path))
            .bearer_auth(bearer)
            .header("x-secret-header", &header_canary)
            .header("cookie", format!("session={header_canary}"))
            .body(format!("body-{header_canary}"))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await;
    }
    // Let the audit writer run once.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut child = guard.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_with_deadline(&mut child, Duration::from_secs(30));
    for reader in readers {
        let _ = reader.join();
    }
    let text = log.lock().clone();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    let plain = strip_ansi(&text);
    assert!(
        plain.contains("gatehouse is serving"),
        "served with GATEHOUSE__LOG__LEVEL=trace"
    );
    for (what, secret) in [
        ("the agent token", token.as_str()),
        ("the unknown agent token", unknown_token.expose()),
        ("the admin token", admin_token.expose()),
        ("the injected credential", credential.as_str()),
        ("the query canary", query_canary.as_str()),
        ("the header canary", header_canary.as_str()),
    ] {
        if let Some(at) = text.find(secret) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{what} appears in the logs:\n{}",
                text[line_start..line_end].replace(secret, "<SECRET>")
            );
        }
    }
}
