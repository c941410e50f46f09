//! `GET /api/audit-logs`: newest first, cursor paging, filters, parameter validation
//! (docs/admin-api.md "Audit log").

use std::collections::BTreeSet;

use gatehouse::domain::audit::AuditEntry;
use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::tokens::AgentToken;
use gatehouse::store::Store;
use gatehouse::store::tokens::NewAgentToken;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::admin::{AdminClient, json_id};

const ENTRY_KEYS: [&str; 16] = [
    "id",
    "token_id",
    "token_name",
    "target_id",
    "target_slug",
    "method",
    "path",
    "status_code",
    "client_ip",
    "duration_ms",
    "upstream_ms",
    "error",
    "interface",
    "guard_action",
    "approved_by",
    "created_at",
];

struct Seeded {
    /// Inserted oldest first.
    entries: Vec<AuditEntry>,
    token_a: Uuid,
    token_b: Uuid,
    target_alpha: Uuid,
}

/// Seven entries, one second apart, over two tokens, two target slugs and three statuses.
async fn seed(app: &TestApp) -> Seeded {
    let store: &Store = app.running().store();
    let mut tokens = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let record = store
            .insert_agent_token(NewAgentToken {
                name: name.into(),
                hash: AgentToken::generate().hash(),
                allowed_ips: IpAllowlist::default(),
                rate_limit: None,
            })
            .await
            .unwrap();
        tokens.push(record.id);
    }
    let alpha = app
        .api()
        .create_target("Alpha", "https://api.example.com")
        .await;
    let alpha_id = json_id(&alpha);
    let base = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let statuses = [200u16, 403, 502, 200, 200, 403, 200];
    let entries: Vec<AuditEntry> = (0..7usize)
        .map(|i| {
            let alpha = i % 2 == 0;
            AuditEntry {
                id: Uuid::new_v4(),
                token_id: Some(tokens[i % 2]),
                token_name: if i % 2 == 0 { "agent-a" } else { "agent-b" }.into(),
                target_id: alpha.then_some(alpha_id),
                target_slug: if alpha { "alpha" } else { "beta" }.into(),
                method: if i == 3 { "POST" } else { "GET" }.into(),
                path: format!("/gateway/{}/item/{i}", if alpha { "alpha" } else { "beta" }),
                status_code: statuses[i],
                client_ip: "127.0.0.1".into(),
                duration_ms: 10 + i as u64,
                upstream_ms: (statuses[i] != 403).then_some(5 + i as u64),
                error: (statuses[i] == 502).then(|| "upstream_connect".to_owned()),
                interface: gatehouse::domain::audit::Interface::Gateway,
                guard_action: None,
                approved_by: None,
                created_at: base + chrono::Duration::seconds(i as i64),
            }
        })
        .collect();
    store.insert_audit_entries(entries.clone()).await.unwrap();
    Seeded {
        entries,
        token_a: tokens[0],
        token_b: tokens[1],
        target_alpha: alpha_id,
    }
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {page}"))
        .iter()
        .map(json_id)
        .collect()
}

/// Ids of the seeded entries matching `keep`, newest first.
fn expected(seeded: &Seeded, keep: impl Fn(&AuditEntry) -> bool) -> Vec<Uuid> {
    seeded
        .entries
        .iter()
        .rev()
        .filter(|e| keep(e))
        .map(|e| e.id)
        .collect()
}

async fn page(api: &AdminClient<'_>, query: &str) -> Value {
    let reply = api.get(&format!("/api/audit-logs{query}")).await;
    reply.expect(200).clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn newest_first_with_every_field() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;
    let api = app.api();
    let body = page(&api, "").await;
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["entries", "next_before"]));
    assert_eq!(ids(&body), expected(&seeded, |_| true));
    assert_eq!(body["next_before"], Value::Null, "a page that is not full");

    let newest = &body["entries"][0];
    let entry_keys: BTreeSet<&str> = newest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(entry_keys, BTreeSet::from(ENTRY_KEYS));
    let source = &seeded.entries[6];
    assert_eq!(newest["token_id"], seeded.token_a.to_string());
    assert_eq!(newest["token_name"], "agent-a");
    assert_eq!(newest["target_id"], seeded.target_alpha.to_string());
    assert_eq!(newest["target_slug"], "alpha");
    assert_eq!(newest["method"], "GET");
    assert_eq!(newest["path"], source.path);
    assert_eq!(newest["status_code"], 200);
    assert_eq!(newest["client_ip"], "127.0.0.1");
    assert_eq!(newest["duration_ms"], 16);
    assert_eq!(newest["upstream_ms"], 11);
    assert_eq!(newest["error"], Value::Null);
    assert_eq!(newest["interface"], "gateway");
    let created_at = chrono::DateTime::parse_from_rfc3339(newest["created_at"].as_str().unwrap())
        .unwrap()
        .to_utc();
    assert_eq!(created_at, source.created_at);

    let failed = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status_code"] == 502)
        .unwrap();
    assert_eq!(failed["error"], "upstream_connect");
    assert_eq!(failed["target_slug"], "alpha");
    let forbidden = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status_code"] == 403 && e["target_slug"] == "beta")
        .unwrap();
    assert_eq!(forbidden["upstream_ms"], Value::Null);
    assert_eq!(forbidden["target_id"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_and_next_before_cover_every_row_once() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;
    let api = app.api();
    for limit in [1usize, 2, 3, 7] {
        let mut seen = Vec::new();
        let mut query = format!("?limit={limit}");
        let mut pages = 0;
        loop {
            let body = page(&api, &query).await;
            let page_ids = ids(&body);
            assert!(page_ids.len() <= limit, "limit {limit}: {body}");
            pages += 1;
            assert!(pages <= 8, "paging does not end: {body}");
            seen.extend(page_ids.iter().copied());
            match &body["next_before"] {
                Value::String(cursor) => {
                    assert_eq!(page_ids.len(), limit, "a cursor only after a full page");
                    query = format!("?limit={limit}&before={cursor}");
                }
                Value::Null => {
                    break;
                }
                other => panic!("next_before is a string or null, got {other}"),
            }
        }
        assert_eq!(seen, expected(&seeded, |_| true), "limit {limit}");
    }
    // 500 is the maximum and fine.
    let body = page(&api, "?limit=500").await;
    assert_eq!(ids(&body).len(), 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_by_token_target_and_status() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;
    let api = app.api();
    let a = seeded.token_a;
    let b = seeded.token_b;

    let body = page(&api, &format!("?token_id={b}")).await;
    assert_eq!(ids(&body), expected(&seeded, |e| e.token_id == Some(b)));
    assert_eq!(ids(&body).len(), 3);

    let body = page(&api, "?target=alpha").await;
    assert_eq!(ids(&body), expected(&seeded, |e| e.target_slug == "alpha"));
    assert_eq!(ids(&body).len(), 4);

    let body = page(&api, "?status=403").await;
    assert_eq!(ids(&body), expected(&seeded, |e| e.status_code == 403));
    assert_eq!(ids(&body).len(), 2);

    let body = page(&api, &format!("?token_id={a}&status=200")).await;
    assert_eq!(
        ids(&body),
        expected(&seeded, |e| e.token_id == Some(a) && e.status_code == 200)
    );

    let body = page(&api, "?target=beta&status=502").await;
    assert!(ids(&body).is_empty());
    assert_eq!(body["next_before"], Value::Null);

    let body = page(&api, "?target=nothing-here").await;
    assert_eq!(body, json!({"entries": [], "next_before": null}));

    // Filters and the cursor together.
    let first = page(&api, "?target=alpha&limit=2").await;
    let cursor = first["next_before"].as_str().unwrap().to_owned();
    let second = page(&api, &format!("?target=alpha&limit=2&before={cursor}")).await;
    let mut both = ids(&first);
    both.extend(ids(&second));
    assert_eq!(both, expected(&seeded, |e| e.target_slug == "alpha"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_query_parameters_are_400() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let api = app.api();
    for query in ["?limit=0", "?limit=501", "?limit=-1", "?limit=ten"] {
        let reply = api.get(&format!("/api/audit-logs{query}")).await;
        reply.expect_error(400, Some("limit"));
    }
    for query in ["?before=garbage", "?before=123", "?before=123_notauuid"] {
        let reply = api.get(&format!("/api/audit-logs{query}")).await;
        let message = reply.expect_error(400, None);
        if !reply.json["field"].is_null() {
            assert_eq!(reply.json["field"], "before", "{message}");
        }
    }
    let reply = api.get("/api/audit-logs?token_id=not-a-uuid").await;
    reply.expect_error(400, None);
    if !reply.json["field"].is_null() {
        assert_eq!(reply.json["field"], "token_id", "{}", reply.text);
    }
    // Unknown parameters are rejected like unknown body fields.
    let reply = api.get("/api/audit-logs?bogus=1").await;
    reply.expect_error(400, Some("bogus"));
    let reply = api.get("/api/audit-logs?status=abc").await;
    reply.expect_error(400, None);
    if !reply.json["field"].is_null() {
        assert_eq!(reply.json["field"], "status", "{}", reply.text);
    }
    app.stop().await;
}
