//! Cost of writing one batch of audit rows (the background writer's unit of work) into SQLite,
//! the embedded default — the largest single share of CPU under proxy load (docs/performance.md).

// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gatehouse::domain::audit::AuditEntry;
use gatehouse::store::Store;

const BATCH: usize = 256;

fn batch() -> Vec<AuditEntry> {
    (0..BATCH)
        .map(|i| AuditEntry {
            id: uuid::Uuid::now_v7(),
            token_id: None,
            token_name: "bench-agent".to_owned(),
            target_id: None,
            target_slug: "bench-upstream".to_owned(),
            method: "GET".to_owned(),
            path: format!("/gateway/bench-upstream/items/{i}"),
            status_code: 200,
            client_ip: "127.0.0.1".to_owned(),
            duration_ms: 1,
            upstream_ms: Some(1),
            error: None,
            interface: gatehouse::domain::audit::Interface::Gateway,
            created_at: chrono::Utc::now(),
        })
        .collect()
}

fn insert_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    let store = runtime.block_on(async {
        let store = Store::connect(&url, 2, Duration::from_secs(5))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        store
    });
    let mut group = c.benchmark_group("audit");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("audit_insert_batch_256", |b| {
        b.iter_batched(
            batch,
            |entries| {
                runtime
                    .block_on(store.insert_audit_entries(black_box(entries)))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, insert_batch);
criterion_main!(benches);
