//! Audit-row insertion cost at a sustained rate (the performance issue's target: ≤ 4 µs per row
//! at 10 000 rows/s, on SQLite and on PostgreSQL).
//!
//! The bench plays the audit writer: it derives the batch shape the writer forms at the rate
//! with the default `AuditConfig` (at 10 000 rows/s a full 256-row batch is queued after 25.6 ms,
//! long before the 500 ms flush interval, so: one 256-row batch every 25.6 ms), then calls
//! `Store::write_audit_batch` on that schedule, as the writer does, and reports per row:
//! - wall: the call's elapsed time;
//! - CPU: this process's CPU time (all threads, `getrusage`) during the calls. On
//!   SQLite that is all of it (the library runs on sqlx's worker thread); on PostgreSQL it is
//!   the client side only: the server's backends are other processes, read from
//!   `/proc/<pid>/stat` (the pids from `pg_stat_activity`) when that is readable. The server's
//!   background processes (WAL writer, checkpointer) are not counted.
//!
//! Two phases per backend: the rows alone (the target), then the writer's whole batch (the rows
//! and, in the same transaction, the `last_used_at` of the batch's four tokens). SQLite always; PostgreSQL when `GATEHOUSE_TEST_DATABASE_URL` is set (a fresh database on that
//! server, dropped afterwards). Knobs: `AUDIT_BENCH_RATE` (rows/s, 10000), `AUDIT_BENCH_SECONDS`
//! (measured, 10), `AUDIT_BENCH_WARMUP` (seconds, 2), `AUDIT_BENCH_BACKENDS` (`sqlite,postgres`),
//! `AUDIT_BENCH_PHASES` (`rows,writer`).
//! A run takes 2 × (warm-up + measured) seconds per backend when the writes keep up.

// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gatehouse::config::AuditConfig;
use gatehouse::domain::audit::{AuditEntry, Interface};
use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::targets::TargetSlug;
use gatehouse::domain::tokens::AgentToken;
use gatehouse::store::Store;
use gatehouse::store::targets::NewTarget;
use gatehouse::store::tokens::NewAgentToken;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection, Statement};
use uuid::Uuid;

// Shared by the database benches; not each uses each part.
#[allow(dead_code)]
#[path = "support/bench_db.rs"]
mod bench_db;
use bench_db::{BenchDb, env_or};

/// Rows per batch and time between batches, as the writer forms them at `rate` rows/s: it
/// writes when `batch_size` rows are queued or `flush_interval` has passed, whichever is first.
fn batch_shape(rate: f64, config: &AuditConfig) -> (usize, Duration) {
    let fill = Duration::from_secs_f64(config.batch_size as f64 / rate);
    if fill <= config.flush_interval {
        (config.batch_size, fill)
    } else {
        let rows = (rate * config.flush_interval.as_secs_f64())
            .round()
            .max(1.0) as usize;
        (rows, config.flush_interval)
    }
}

/// Process CPU (user + system, every thread).
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// utime + stime of another process, from `/proc/<pid>/stat`, or None if unreadable.
fn other_process_cpu(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

struct Fixture {
    tokens: Vec<(Uuid, String)>,
    targets: Vec<(Uuid, String)>,
}

/// A few tokens and targets, so rows carry real foreign keys as the proxy's do.
async fn fixture(store: &Store) -> Fixture {
    let mut tokens = Vec::new();
    for i in 0..4 {
        let name = format!("bench-agent-{i}");
        let record = store
            .insert_agent_token(NewAgentToken {
                name: name.clone(),
                hash: AgentToken::generate().hash(),
                allowed_ips: IpAllowlist::default(),
                rate_limit: None,
            })
            .await
            .expect("token");
        tokens.push((record.id, name));
    }
    let mut targets = Vec::new();
    for slug in ["github", "linear", "notion", "stripe"] {
        let target = store
            .insert_target(NewTarget {
                name: format!("Bench {slug}"),
                slug: TargetSlug::parse(slug).expect("slug"),
                base_url: url::Url::parse("https://api.example.com/v1").expect("url"),
                enabled: true,
                connected_account_id: None,
                capability: None,
            })
            .await
            .expect("target");
        targets.push((target.id, slug.to_owned()));
    }
    Fixture { tokens, targets }
}

fn batch(fixture: &Fixture, rows: usize, seq: &mut u64) -> Vec<AuditEntry> {
    (0..rows)
        .map(|_| {
            *seq += 1;
            let n = *seq as usize;
            let (token_id, token_name) = &fixture.tokens[n % fixture.tokens.len()];
            let (target_id, slug) = &fixture.targets[(n / 3) % fixture.targets.len()];
            let status = if n.is_multiple_of(17) { 404 } else { 200 };
            AuditEntry {
                id: Uuid::now_v7(),
                token_id: Some(*token_id),
                token_name: token_name.clone(),
                target_id: Some(*target_id),
                target_slug: slug.clone(),
                method: if n.is_multiple_of(5) { "POST" } else { "GET" }.to_owned(),
                path: format!("/gateway/{slug}/repos/acme/widgets/issues/{}", n % 10_000),
                status_code: status,
                client_ip: "10.0.3.17".to_owned(),
                duration_ms: 3 + (n % 40) as u64,
                upstream_ms: Some(2 + (n % 40) as u64),
                error: None,
                interface: if n.is_multiple_of(7) {
                    Interface::Mcp
                } else {
                    Interface::Gateway
                },
                guard_action: None,
                approved_by: None,
                created_at: chrono::Utc::now(),
            }
        })
        .collect()
}

/// Backend processes serving `database` (other than `admin`'s own), for their CPU.
async fn backend_pids(admin: &DatabaseConnection, database: &str) -> Vec<i32> {
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            admin.get_database_backend(),
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            [database.into()],
        ))
        .await
        .expect("pg_stat_activity");
    rows.iter()
        .map(|row| row.try_get::<i32>("", "pid").expect("pid"))
        .collect()
}

struct Outcome {
    rows: usize,
    batches: usize,
    wall: Duration,
    cpu: Duration,
    per_batch_wall: Vec<Duration>,
    late: usize,
    elapsed: Duration,
    server_cpu: Option<Duration>,
}

/// What each measured batch writes.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// The audit rows alone (`Store::insert_audit_entries`): the target.
    Rows,
    /// The writer's whole unit of work: the rows and their tokens' `last_used_at`.
    WriterBatch,
}

async fn run(
    label: &str,
    phase: Phase,
    store: &Store,
    fixture: &Fixture,
    pg: Option<(&DatabaseConnection, &str)>,
) -> Outcome {
    let rate: f64 = env_or("AUDIT_BENCH_RATE", 10_000.0);
    let seconds: f64 = env_or("AUDIT_BENCH_SECONDS", 10.0);
    let warmup: f64 = env_or("AUDIT_BENCH_WARMUP", 2.0);
    let (rows, period) = batch_shape(rate, &AuditConfig::default());
    let mut seq = 0u64;
    let warmup_batches = (warmup / period.as_secs_f64()).ceil() as usize;
    let measured_batches = ((seconds / period.as_secs_f64()).ceil() as usize).max(1);

    let mut outcome = Outcome {
        rows: 0,
        batches: 0,
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        per_batch_wall: Vec::with_capacity(measured_batches),
        late: 0,
        elapsed: Duration::ZERO,
        server_cpu: None,
    };
    let mut server_start: HashMap<i32, Duration> = HashMap::new();
    let mut next = Instant::now();
    let mut started = Instant::now();
    for i in 0..warmup_batches + measured_batches {
        let measuring = i >= warmup_batches;
        if i == warmup_batches {
            if let Some((admin, database)) = pg {
                for pid in backend_pids(admin, database).await {
                    if let Some(cpu) = other_process_cpu(pid) {
                        server_start.insert(pid, cpu);
                    }
                }
            }
            started = Instant::now();
            next = started;
        }
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        } else if measuring && now - next > period {
            // More than a whole period behind: the writer would be falling behind too.
            outcome.late += 1;
        }
        next += period;
        let entries = batch(fixture, rows, &mut seq);
        // The writer's last-use map: the newest time per token of the batch.
        let mut last_used: HashMap<Uuid, chrono::DateTime<chrono::Utc>> = HashMap::new();
        if phase == Phase::WriterBatch {
            for entry in &entries {
                if let Some(token) = entry.token_id {
                    last_used.insert(token, entry.created_at);
                }
            }
        }
        let uses: Vec<_> = last_used.into_iter().collect();

        let cpu0 = process_cpu();
        let t0 = Instant::now();
        store
            .write_audit_batch(entries, &uses, 0)
            .await
            .expect("write batch");
        let wall = t0.elapsed();
        let cpu = process_cpu() - cpu0;
        if measuring {
            outcome.rows += rows;
            outcome.batches += 1;
            outcome.wall += wall;
            outcome.cpu += cpu;
            outcome.per_batch_wall.push(wall);
        }
    }
    outcome.elapsed = started.elapsed();
    if let Some((admin, database)) = pg {
        let mut total = Duration::ZERO;
        let mut readable = !server_start.is_empty();
        for pid in backend_pids(admin, database).await {
            match other_process_cpu(pid) {
                Some(cpu) => {
                    total += cpu.saturating_sub(server_start.get(&pid).copied().unwrap_or_default())
                }
                None => readable = false,
            }
        }
        outcome.server_cpu = readable.then_some(total);
    }
    report(label, phase, rows, period, &outcome);
    outcome
}

fn report(label: &str, phase: Phase, rows: usize, period: Duration, o: &Outcome) {
    let per_row = |d: Duration| d.as_secs_f64() * 1e6 / o.rows as f64;
    let mut walls = o.per_batch_wall.clone();
    walls.sort();
    let pct = |p: f64| walls[((walls.len() - 1) as f64 * p).round() as usize];
    let achieved = o.rows as f64 / o.elapsed.as_secs_f64();
    let what = match phase {
        Phase::Rows => "",
        Phase::WriterBatch => " + token last-use (writer batch)",
    };
    println!(
        "  {label}{what}: {rows}-row batches every {:.1} ms, {} batches, {:.0} rows/s achieved ({} late); per batch wall median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        period.as_secs_f64() * 1e3,
        o.batches,
        achieved,
        o.late,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        walls[walls.len() - 1].as_secs_f64() * 1e3,
    );
    let server = match o.server_cpu {
        Some(cpu) => format!(", server backends {:.2} µs/row CPU", per_row(cpu)),
        None if label == "postgres" => ", server CPU not readable".to_owned(),
        None => String::new(),
    };
    println!(
        "audit_insert {label}{what}: {rows}-row batches, {:.2} µs/row wall, {:.2} µs/row CPU{server}",
        per_row(o.wall),
        per_row(o.cpu),
    );
}

async fn both_phases(label: &str, store: &Store, pg: Option<(&DatabaseConnection, &str)>) {
    let fixture = fixture(store).await;
    let phases: String = env_or("AUDIT_BENCH_PHASES", "rows,writer".to_owned());
    if phases.split(',').any(|p| p == "rows") {
        run(label, Phase::Rows, store, &fixture, pg).await;
    }
    if phases.split(',').any(|p| p == "writer") {
        run(label, Phase::WriterBatch, store, &fixture, pg).await;
    }
}

async fn sqlite() {
    let db = BenchDb::sqlite().await;
    both_phases("sqlite", &db.store, None).await;
    db.finish().await;
}

async fn postgres(server_url: &str) {
    let db = BenchDb::postgres(server_url).await;
    // A second connection reads the server backends' pids for their CPU time.
    let admin = Database::connect(db.url.as_str())
        .await
        .expect("admin connect");
    let name = db
        .database_name()
        .expect("a PostgreSQL database")
        .to_owned();
    both_phases("postgres", &db.store, Some((&admin, &name))).await;
    let _ = admin.close().await;
    db.finish().await;
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter, if any, selects backends.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let backends: String = env_or("AUDIT_BENCH_BACKENDS", "sqlite,postgres".to_owned());
    let wanted = |name: &str| {
        backends.split(',').any(|b| b == name) && filter.as_deref().is_none_or(|f| name.contains(f))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if wanted("sqlite") {
            sqlite().await;
        }
        match std::env::var("GATEHOUSE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() && wanted("postgres") => postgres(&url).await,
            _ if wanted("postgres") => {
                println!("audit_insert postgres: skipped (GATEHOUSE_TEST_DATABASE_URL unset)")
            }
            _ => {}
        }
    });
}
