//! The overview's query (`GET /api/stats`) over a full audit table: the operations issue's
//! target is the 24 h window over 1 000 000 audit rows in ≤ 200 ms on both backends.
//!
//! Set-up writes `STATS_BENCH_ROWS` rows (1 000 000 under `cargo bench`, 20 000 when `cargo test`
//! runs this file as a smoke test) spread evenly over the last 23 h 40 min, across 20 targets and
//! 50 tokens with a realistic status mix, through `Store::write_audit_batch` in the writer's
//! 256-row batches — so the per-minute rollups are the ones the real writer leaves. Then it
//! times what the stats handler does (`Store::window_sums`, the accounts list, `Stats::assemble`)
//! for 1h, 24h and 7d, interleaved, `STATS_BENCH_RUNS` (15) times each, and prints the median
//! and the slowest. SQLite always; PostgreSQL when `GATEHOUSE_TEST_DATABASE_URL` is set (a fresh
//! database, dropped afterwards). The HTTP and JSON layers (well under 1 ms) are not included.

// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gatehouse::domain::audit::{AuditEntry, Interface};
use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::stats::{AccountSummary, Stats, StatsWindow};
use gatehouse::domain::tokens::AgentToken;
use gatehouse::store::Store;
use gatehouse::store::tokens::NewAgentToken;
use uuid::Uuid;

// Shared by the database benches; not each uses each part.
#[allow(dead_code)]
#[path = "support/bench_db.rs"]
mod bench_db;
use bench_db::{BenchDb, env_or};

const TARGETS: usize = 20;
const TOKENS: usize = 50;
const BATCH: usize = 256;
const SPAN_SECONDS: i64 = 24 * 3600 - 20 * 60;

/// A small deterministic generator: the same rows on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn fill(store: &Store, rows: usize) -> Duration {
    let mut tokens = Vec::with_capacity(TOKENS);
    for i in 0..TOKENS {
        let token = store
            .insert_agent_token(NewAgentToken {
                name: format!("agent-{i}"),
                hash: AgentToken::generate().hash(),
                allowed_ips: IpAllowlist::default(),
                rate_limit: None,
            })
            .await
            .expect("token");
        tokens.push((token.id, format!("agent-{i}")));
    }
    let slugs: Vec<String> = (0..TARGETS).map(|i| format!("target-{i}")).collect();
    let now = chrono::Utc::now();
    // Over the last 23 h 40 min: the 24 h window ends with the 15-minute bucket holding now, so
    // it starts up to 15 minutes after now − 24 h.
    let step = chrono::Duration::microseconds(SPAN_SECONDS * 1_000_000 / rows.max(1) as i64);
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..rows {
        let r = random.next();
        let (token_id, token_name) = &tokens[(r % TOKENS as u64) as usize];
        let status = match (r >> 8) % 100 {
            0..=84 => 200,
            85..=91 => 404,
            92..=95 => 403,
            96..=98 => 502,
            _ => 500,
        };
        let duration_ms = 1 + ((r >> 16) % 400) * ((r >> 24) % 3 + 1) / 3;
        batch.push(AuditEntry {
            id: Uuid::now_v7(),
            token_id: Some(*token_id),
            token_name: token_name.clone(),
            target_id: None,
            target_slug: slugs[((r >> 32) % TARGETS as u64) as usize].clone(),
            method: "GET".into(),
            path: "/v1/items".into(),
            status_code: status,
            client_ip: "10.0.0.1".into(),
            duration_ms,
            upstream_ms: Some(duration_ms.saturating_sub(1)),
            error: None,
            interface: if (r >> 40).is_multiple_of(10) {
                Interface::Mcp
            } else {
                Interface::Gateway
            },
            guard_action: None,
            approved_by: None,
            created_at: now - step * i32::try_from(rows - i).unwrap_or(i32::MAX),
        });
        if batch.len() == BATCH {
            store
                .write_audit_batch(std::mem::take(&mut batch), &[], 0)
                .await
                .expect("batch");
        }
    }
    store.write_audit_batch(batch, &[], 0).await.expect("batch");
    started.elapsed()
}

async fn stats_once(store: &Store, window: StatsWindow) -> (Duration, Stats) {
    let started = Instant::now();
    let range = window.range(chrono::Utc::now());
    let sums = store.window_sums(&range).await.expect("sums");
    let accounts = store.list_connected_accounts().await.expect("accounts");
    let stats = Stats::assemble(window, range, sums, AccountSummary::of(&accounts));
    (started.elapsed(), stats)
}

async fn measure(label: &str, store: &Store, rows: usize) {
    let filled = fill(store, rows).await;
    println!(
        "stats_query {label}: {rows} audit rows over 24 h written in {:.1} s",
        filled.as_secs_f64()
    );
    let runs: usize = env_or("STATS_BENCH_RUNS", 15);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); StatsWindow::ALL.len()];
    for _ in 0..runs {
        for (slot, window) in StatsWindow::ALL.iter().enumerate() {
            let (took, stats) = stats_once(store, *window).await;
            if *window == StatsWindow::Day {
                // The day window holds every row written (they all fall in the last 24 h).
                assert_eq!(stats.totals.requests as usize, rows, "24h total");
            }
            times[slot].push(took);
        }
    }
    for (window, mut samples) in StatsWindow::ALL.iter().zip(times) {
        samples.sort();
        let median = samples[samples.len() / 2];
        let slowest = samples[samples.len() - 1];
        println!(
            "stats_query {label} window={}: median {:.1} ms, slowest {:.1} ms ({runs} runs)",
            window.as_str(),
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
        );
    }
}

async fn sqlite(rows: usize) {
    let db = BenchDb::sqlite().await;
    measure("sqlite", &db.store, rows).await;
    db.finish().await;
}

async fn postgres(server_url: &str, rows: usize) {
    let db = BenchDb::postgres(server_url).await;
    measure("postgres", &db.store, rows).await;
    db.finish().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs this as a quick smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let rows: usize = env_or(
        "STATS_BENCH_ROWS",
        if benching { 1_000_000 } else { 20_000 },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        sqlite(rows).await;
        match std::env::var("GATEHOUSE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => postgres(&url, rows).await,
            _ => println!("stats_query postgres: skipped (GATEHOUSE_TEST_DATABASE_URL unset)"),
        }
    });
}
