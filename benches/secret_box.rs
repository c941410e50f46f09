//! Cost of sealing and opening one credential with `SecretBox` (AES-256-GCM), the work done
//! per credential write and per cache load.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::crypto::{SecretBox, SecretSlot};
use std::hint::black_box;

fn seal_and_open(c: &mut Criterion) {
    let secret_box = SecretBox::new(&[7; 32], &[[8; 32]]);
    let slot = SecretSlot {
        table: "target_auth_methods",
        column: "credential",
        row_id: uuid::Uuid::new_v4(),
    };
    let credential = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB";
    let sealed = secret_box.seal_str(credential, slot);
    c.bench_function("secret_box_seal_40b", |b| {
        b.iter(|| secret_box.seal_str(black_box(credential), slot))
    });
    c.bench_function("secret_box_open_40b", |b| {
        b.iter(|| secret_box.open(black_box(&sealed), slot))
    });
}

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
