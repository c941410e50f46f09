//! Cost of the guard check every `/gateway` request pays (SPEC §12): the method-override
//! lookup and `GuardPolicy::evaluate` for a standard target with the built-in rules on and a
//! few admin rules, on paths that match nothing (the common case), with and without
//! percent-encoding or capitals (which make the path be normalized into a new string).
// Benchmark set-up: a failure there is a failed run, not an input to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::domain::guard::{
    DefaultRules, GuardPolicy, GuardRule, RuleAction, RuleMatch, effective_method,
};
use http::Method;
use uuid::Uuid;

fn policy() -> GuardPolicy {
    let rule = |method: Option<&str>, path_match: &str, path: &str, action| GuardRule {
        id: Uuid::new_v4(),
        target_id: Uuid::nil(),
        position: 0,
        matcher: RuleMatch::parse(method, path_match, path).unwrap(),
        action,
        reason: "bench".to_owned(),
        created_at: chrono::Utc::now(),
    };
    GuardPolicy {
        rules: vec![
            rule(Some("GET"), "prefix", "/public/", RuleAction::Allow),
            rule(None, "contains", "/admin", RuleAction::Block),
            rule(
                Some("POST"),
                "equals",
                "/v1/charges",
                RuleAction::ApprovalRequired,
            ),
        ],
        defaults: Some(DefaultRules::Standard),
    }
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let headers = http::HeaderMap::new();
    let mut group = c.benchmark_group("guard_check");
    for (name, path) in [
        ("root", "/"),
        ("plain", "/repos/acme/widgets/issues/1234/comments"),
        ("encoded", "/repos/acme/Widgets/issues/%31234/comments"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let overrides = [
                    "x-http-method-override",
                    "x-http-method",
                    "x-method-override",
                ]
                .iter()
                .filter_map(|name| headers.get(*name))
                .map(|value| value.as_bytes());
                let method = effective_method(&Method::GET, overrides);
                black_box(policy.evaluate(&method, black_box(path)))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
