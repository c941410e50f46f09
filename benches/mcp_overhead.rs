//! What an MCP `api_request` costs over the same request on `/gateway` (SPEC §4a; target:
//! ≤ 0.5 ms added at p50 and ≤ 1 ms at p99, one connection). Not a timed test: it prints a
//! table for docs/performance.md.
//!
//! The real app runs in this process on loopback (SQLite in a temporary directory) in front of
//! a small axum upstream that answers `{"ok":true}`. One keep-alive client sends the two kinds
//! of request in interleaved rounds, so both see the same machine noise:
//! - `gateway`: `GET /gateway/bench/items?n=1`;
//! - `mcp`: `POST /mcp` `tools/call api_request {target: bench, method: GET, path: /items,
//!   query: {n: 1}}` (what an MCP client sends on an initialized stateless connection).
//!
//!   cargo bench --bench mcp_overhead            # ROUNDS (7) × PER_ROUND (300) of each kind

// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gatehouse::app::App;
use gatehouse::config::{Config, EnvSecrets};
use gatehouse::domain::tokens::AdminToken;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"ok":true}"#,
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rounds = env_usize("ROUNDS", 7);
    let per_round = env_usize("PER_ROUND", 300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let admin = AdminToken::generate();
        let mut config = Config::default();
        config.proxy.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics.listen = "127.0.0.1:0".parse().unwrap();
        config.proxy.threads = 1;
        config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        config.upstream.allow_private = true;
        config.secrets.key_file = dir.path().join("secret.key");
        config.log.level = "warn".to_owned();
        config.env = EnvSecrets {
            encryption_key: Some([7; 32]),
            old_encryption_keys: Vec::new(),
            admin_token: Some(admin.expose().to_owned()),
            oauth_clients: BTreeMap::new(),
        };
        let app = App::build(config).await.unwrap();
        let upstream = upstream().await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let api = |path: &str| format!("http://{}{path}", app.admin_addr);
        let target: Value = http
            .post(api("/api/targets"))
            .bearer_auth(admin.expose())
            .json(&json!({"name": "bench", "slug": "bench", "base_url": format!("http://{upstream}")}))
            .send().await.unwrap().json().await.unwrap();
        let token: Value = http
            .post(api("/api/tokens"))
            .bearer_auth(admin.expose())
            .json(&json!({"name": "bench-agent"}))
            .send().await.unwrap().json().await.unwrap();
        let status = http
            .put(api(&format!("/api/tokens/{}/permissions/{}", token["id"].as_str().unwrap(), target["id"].as_str().unwrap())))
            .bearer_auth(admin.expose())
            .json(&json!({}))
            .send().await.unwrap().status();
        assert!(status.is_success());
        let agent = token["token"].as_str().unwrap().to_owned();
        let proxy = |path: &str| format!("http://{}{path}", app.proxy_addr);

        let gateway_once = || async {
            let started = Instant::now();
            let response = http
                .get(proxy("/gateway/bench/items?n=1"))
                .bearer_auth(&agent)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            started.elapsed()
        };
        let call = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "api_request", "arguments": {
                "target": "bench", "method": "GET", "path": "/items", "query": {"n": "1"}}}
        })
        .to_string();
        let mcp_once = || async {
            let started = Instant::now();
            let response = http
                .post(proxy("/mcp"))
                .bearer_auth(&agent)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .body(call.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["result"]["structuredContent"]["status"], 200, "{body}");
            started.elapsed()
        };

        // Warm up: connections, caches, the snapshot.
        for _ in 0..100 {
            gateway_once().await;
            mcp_once().await;
        }
        let mut gateway = Vec::new();
        let mut mcp = Vec::new();
        for round in 0..rounds {
            // Alternate which kind goes first in a round.
            for kind in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                for _ in 0..per_round {
                    if kind == 0 {
                        gateway.push(gateway_once().await);
                    } else {
                        mcp.push(mcp_once().await);
                    }
                }
            }
        }
        gateway.sort();
        mcp.sort();
        println!("one connection, {rounds} interleaved rounds × {per_round} requests of each kind");
        println!("| path | p50 µs | p90 µs | p99 µs |");
        println!("|---|---:|---:|---:|");
        for (name, samples) in [("/gateway", &gateway), ("/mcp api_request", &mcp)] {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} |",
                micros(percentile(samples, 0.5)),
                micros(percentile(samples, 0.9)),
                micros(percentile(samples, 0.99))
            );
        }
        println!(
            "| added by MCP | {:.0} | {:.0} | {:.0} |",
            micros(percentile(&mcp, 0.5)) - micros(percentile(&gateway, 0.5)),
            micros(percentile(&mcp, 0.9)) - micros(percentile(&gateway, 0.9)),
            micros(percentile(&mcp, 0.99)) - micros(percentile(&gateway, 0.99)),
        );
        app.shutdown().await;
    });
}
