//! Cost of the proxy's per-request access check on the cache-hit path: `authenticate` (parse the
//! `Authorization` value, SHA-256 the token, look it up by hash, check the client IP) followed by
//! `authorize` (target by slug, permission, method) against a realistic in-memory snapshot
//! (1000 tokens, 200 targets each with an opened bearer credential, 2000 permissions), built
//! from a real SQLite store the way the proxy builds it at start.
// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::access::{AccessControl, SnapshotSource};
use gatehouse::crypto::SecretBox;
use gatehouse::crypto::SecretSlot;
use gatehouse::domain::credential::Credential;
use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::targets::{AuthMethodKind, TargetSlug};
use gatehouse::domain::tokens::AgentToken;
use gatehouse::store::Store;
use gatehouse::store::targets::{NewAuthMethod, NewTarget};
use gatehouse::store::tokens::NewAgentToken;
use std::hint::black_box;
use uuid::Uuid;

const TOKENS: usize = 1000;
const TARGETS: usize = 200;
/// Each token is granted this many targets (token i gets targets i, i+1, … modulo TARGETS).
const GRANTS_PER_TOKEN: usize = 2;

struct Fixture {
    access: AccessControl,
    /// `Bearer sg_…` of a token that holds a permission on `slug`.
    header: String,
    slug: String,
    /// Keeps the SQLite file alive until the benchmark ends.
    _dir: tempfile::TempDir,
}

async fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/b.db?mode=rwc", dir.path().display());
    let store = Store::connect(&url, 2, Duration::from_secs(5))
        .await
        .expect("connect sqlite");
    store.migrate().await.expect("migrate");
    let secrets = Arc::new(SecretBox::new(&[7; 32], &[]));

    let mut target_ids = Vec::with_capacity(TARGETS);
    let mut slugs = Vec::with_capacity(TARGETS);
    for i in 0..TARGETS {
        let slug = format!("target-{i:03}");
        let target = store
            .insert_target(NewTarget {
                name: format!("Target {i}"),
                slug: TargetSlug::parse(&slug).expect("slug"),
                base_url: url::Url::parse(&format!("https://api{i}.example.com/v1/")).expect("url"),
                enabled: true,
                connected_account_id: None,
                capability: None,
            })
            .await
            .expect("insert target");
        // A default bearer credential, sealed as the management layer seals it, so the snapshot
        // holds an opened `Injection::Headers` per target like a real deployment.
        let credential = Credential::Bearer(format!("ghp_{i:04}abcdefghijklmnopqrstuvwxyzABCDEF"));
        let method_id = Uuid::new_v4();
        store
            .insert_auth_method(NewAuthMethod {
                id: method_id,
                target_id: target.id,
                label: "default".to_owned(),
                kind: AuthMethodKind::Bearer,
                sealed_credential: secrets.seal_str(
                    &credential.to_stored(),
                    SecretSlot::auth_method_credential(method_id),
                ),
                credential_hint: credential.hint(),
                is_default: true,
            })
            .await
            .expect("insert auth method");
        target_ids.push(target.id);
        slugs.push(slug);
    }

    let mut probe = None;
    for i in 0..TOKENS {
        let plaintext = AgentToken::generate();
        let record = store
            .insert_agent_token(NewAgentToken {
                name: format!("agent {i}"),
                hash: plaintext.hash(),
                allowed_ips: IpAllowlist::default(),
                rate_limit: None,
            })
            .await
            .expect("insert token");
        let granted: Vec<Uuid> = (0..GRANTS_PER_TOKEN)
            .map(|k| target_ids[(i + k) % TARGETS])
            .collect();
        store
            .upsert_permissions(record.id, &granted, false)
            .await
            .expect("grant");
        // Probe with a token from the middle of the set, on its first granted target.
        if i == TOKENS / 2 {
            probe = Some((
                format!("Bearer {}", plaintext.expose()),
                slugs[i % TARGETS].clone(),
            ));
        }
    }

    let snapshot = SnapshotSource { store, secrets }
        .load()
        .await
        .expect("load snapshot");
    let (header, slug) = probe.expect("probe token");
    Fixture {
        access: AccessControl::new(snapshot),
        header,
        slug,
        _dir: dir,
    }
}

fn access_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fixture = runtime.block_on(build_fixture());
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let access = &fixture.access;

    // Sanity: the probe passes, the unknown token is refused as unknown (not as malformed).
    let caller = access
        .authenticate(Some(fixture.header.as_bytes()), client_ip)
        .expect("probe token authenticates");
    access
        .authorize(&caller, &fixture.slug, &http::Method::GET)
        .expect("probe token is authorized");
    let unknown = format!("Bearer {}", AgentToken::generate().expose());
    assert_eq!(
        access
            .authenticate(Some(unknown.as_bytes()), client_ip)
            .err(),
        Some(gatehouse::access::AccessError::UnknownToken)
    );

    c.bench_function("access_check_hit", |b| {
        b.iter(|| {
            let caller = access
                .authenticate(Some(black_box(fixture.header.as_bytes())), client_ip)
                .expect("authenticated");
            access
                .authorize(&caller, black_box(&fixture.slug), &http::Method::GET)
                .expect("authorized")
        })
    });
    c.bench_function("access_check_unknown_token", |b| {
        b.iter(|| access.authenticate(Some(black_box(unknown.as_bytes())), client_ip))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = access_check
}
criterion_main!(benches);
