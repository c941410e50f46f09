//! Store round trips on the configured backend: what goes in comes back as domain types, and
//! constraints surface as typed `StoreError`s.

use gatehouse::domain::audit::{AuditEntry, AuditQuery};
use gatehouse::domain::ip_allowlist::IpAllowlist;
use gatehouse::domain::targets::{AuthMethodKind, Capability, TargetSlug};
use gatehouse::domain::tokens::{AdminToken, AgentToken};
use gatehouse::store::StoreError;
use gatehouse::store::accounts::NewConnectedAccount;
use gatehouse::store::targets::{AuthMethodPatch, NewAuthMethod, NewTarget, TargetPatch};
use gatehouse::store::tokens::{AgentTokenPatch, NewAgentToken};
use uuid::Uuid;

use crate::support::TestDb;

fn new_target(slug: &str) -> NewTarget {
    NewTarget {
        name: format!("Target {slug}"),
        slug: TargetSlug::parse(slug).unwrap(),
        base_url: url::Url::parse("https://api.example.com/v1").unwrap(),
        enabled: true,
        connected_account_id: None,
        capability: None,
    }
}

fn new_method(target_id: Uuid, label: &str, is_default: bool) -> NewAuthMethod {
    NewAuthMethod {
        id: Uuid::new_v4(),
        target_id,
        label: label.to_owned(),
        kind: AuthMethodKind::Bearer,
        sealed_credential: vec![1, 2, 3],
        credential_hint: "…abcd".to_owned(),
        is_default,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tokens_round_trip() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let plaintext = AgentToken::generate();
    let created = store
        .insert_agent_token(NewAgentToken {
            name: "ci bot".into(),
            hash: plaintext.hash(),
            allowed_ips: IpAllowlist::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap(),
            rate_limit: None,
        })
        .await
        .unwrap();
    assert_eq!(store.agent_token(created.id).await.unwrap(), created);
    assert_eq!(
        store.agent_token_by_hash(&plaintext.hash()).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        created.allowed_ips.to_strings(),
        vec!["10.0.0.0/8", "127.0.0.1/32"]
    );

    let duplicate = store
        .insert_agent_token(NewAgentToken {
            name: "dup".into(),
            hash: plaintext.hash(),
            allowed_ips: IpAllowlist::default(),
            rate_limit: None,
        })
        .await;
    assert!(matches!(
        duplicate,
        Err(StoreError::Conflict {
            constraint: "tokens.token_hash"
        })
    ));

    let renamed = store
        .update_agent_token(
            created.id,
            AgentTokenPatch {
                name: Some("renamed".into()),
                allowed_ips: Some(IpAllowlist::default()),
                rate_limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert!(renamed.allowed_ips.is_any());

    let replacement = AgentToken::generate();
    store
        .replace_agent_token_hash(created.id, &replacement.hash())
        .await
        .unwrap();
    assert_eq!(
        store.agent_token_by_hash(&plaintext.hash()).await.unwrap(),
        None
    );
    assert!(
        store
            .agent_token_by_hash(&replacement.hash())
            .await
            .unwrap()
            .is_some()
    );

    let revoked = store.revoke_agent_token(created.id).await.unwrap();
    assert!(revoked.is_revoked());
    let again = store.revoke_agent_token(created.id).await.unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "a second revoke keeps the first time"
    );

    let used_at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    store
        .touch_agent_tokens(&[(created.id, used_at)])
        .await
        .unwrap();
    assert_eq!(
        store.agent_token(created.id).await.unwrap().last_used_at,
        Some(used_at)
    );

    store.delete_agent_token(created.id).await.unwrap();
    assert!(matches!(
        store.agent_token(created.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_agent_token(created.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_tokens_round_trip() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let token = AdminToken::generate();
    assert_eq!(store.count_active_admin_tokens().await.unwrap(), 0);
    let record = store
        .insert_admin_token("first", &token.hash())
        .await
        .unwrap();
    assert_eq!(
        store.active_admin_token(&token.hash()).await.unwrap(),
        Some(record)
    );
    assert_eq!(
        store
            .active_admin_token(&AdminToken::generate().hash())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.count_active_admin_tokens().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_auth_methods_and_permissions_round_trip_and_cascade() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let target = store.insert_target(new_target("github")).await.unwrap();
    assert_eq!(store.target(target.id).await.unwrap(), target);
    assert_eq!(store.target_by_slug("github").await.unwrap(), target);
    assert!(matches!(
        store.insert_target(new_target("github")).await,
        Err(StoreError::Conflict {
            constraint: "targets.slug"
        })
    ));
    let patched = store
        .update_target(
            target.id,
            TargetPatch {
                enabled: Some(false),
                ..TargetPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(!patched.enabled);
    assert_eq!(patched.name, target.name);

    // Making a method default clears the others, on insert and on update.
    let first = store
        .insert_auth_method(new_method(target.id, "first", true))
        .await
        .unwrap();
    let second = store
        .insert_auth_method(new_method(target.id, "second", true))
        .await
        .unwrap();
    let methods = store.auth_methods(target.id).await.unwrap();
    assert_eq!(methods.iter().filter(|m| m.is_default).count(), 1);
    assert!(
        !store
            .auth_method(target.id, first.id)
            .await
            .unwrap()
            .is_default
    );
    store
        .update_auth_method(
            target.id,
            first.id,
            AuthMethodPatch {
                is_default: Some(true),
                ..AuthMethodPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(
        !store
            .auth_method(target.id, second.id)
            .await
            .unwrap()
            .is_default
    );
    let defaults = store.default_credentials().await.unwrap();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0].method_id, first.id);
    assert_eq!(defaults[0].sealed, vec![1, 2, 3]);
    assert_eq!(store.auth_method_counts().await.unwrap()[&target.id], 2);

    let token = store
        .insert_agent_token(NewAgentToken {
            name: "agent".into(),
            hash: AgentToken::generate().hash(),
            allowed_ips: IpAllowlist::default(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let (permission, created) = store
        .upsert_permission(token.id, target.id, false)
        .await
        .unwrap();
    assert!(created);
    let (updated, created) = store
        .upsert_permission(token.id, target.id, true)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!((updated.id, updated.read_only), (permission.id, true));
    assert_eq!(
        store.permissions_of_token(token.id).await.unwrap(),
        vec![updated]
    );

    // Deleting the target takes its auth methods and permissions with it.
    store.delete_target(target.id).await.unwrap();
    assert!(store.auth_methods(target.id).await.unwrap().is_empty());
    assert!(
        store
            .permissions_of_token(token.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.default_credentials().await.unwrap().is_empty());
    assert!(!store.delete_permission(token.id, target.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_reference_existing_rows() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let result = store
        .upsert_permission(Uuid::new_v4(), Uuid::new_v4(), false)
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::Conflict {
                constraint: "foreign key"
            })
        ),
        "{result:?}"
    );
    assert!(
        store.all_permissions().await.unwrap().is_empty(),
        "nothing half-written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connected_accounts_round_trip_and_cascade_to_managed_targets() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let new = NewConnectedAccount {
        id: Uuid::new_v4(),
        provider_type: "microsoft_365".into(),
        email: "ada@example.com".into(),
        display_name: Some("Ada".into()),
        sealed_access_token: vec![9; 40],
        sealed_refresh_token: Some(vec![8; 40]),
        token_expires_at: Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
        scopes: "offline_access User.Read".into(),
    };
    let account = store.insert_connected_account(new.clone()).await.unwrap();
    assert_eq!(store.connected_account(account.id).await.unwrap(), account);
    assert_eq!(account.token_version, 0);
    assert_eq!(account.status.as_str(), "connected");
    let again = store
        .insert_connected_account(NewConnectedAccount {
            id: Uuid::new_v4(),
            ..new
        })
        .await;
    assert!(matches!(
        again,
        Err(StoreError::Conflict {
            constraint: "connected_accounts.provider_type_email"
        })
    ));

    let mut managed = new_target("ada-mail");
    managed.connected_account_id = Some(account.id);
    managed.capability = Some(Capability::Mail);
    let managed = store.insert_target(managed).await.unwrap();
    assert!(managed.is_managed());
    assert_eq!(
        store.targets_of_account(account.id).await.unwrap(),
        vec![managed.clone()]
    );

    store.delete_connected_account(account.id).await.unwrap();
    assert!(matches!(
        store.target(managed.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_pages_are_newest_first_with_a_cursor() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let base = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let entries: Vec<AuditEntry> = (0..5)
        .map(|i| AuditEntry {
            id: Uuid::new_v4(),
            token_id: None,
            token_name: "agent".into(),
            target_id: None,
            target_slug: if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            },
            method: "GET".into(),
            path: format!("/gateway/x/{i}"),
            status_code: 200,
            client_ip: "127.0.0.1".into(),
            duration_ms: i,
            upstream_ms: Some(i),
            error: None,
            interface: gatehouse::domain::audit::Interface::Gateway,
            guard_action: None,
            approved_by: None,
            created_at: base + chrono::Duration::seconds(i as i64),
        })
        .collect();
    store.insert_audit_entries(entries.clone()).await.unwrap();

    let mut query = AuditQuery {
        limit: 2,
        ..AuditQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let (page, next) = store.audit_page(&query).await.unwrap();
        seen.extend(page.into_iter().map(|e| e.path));
        match next {
            Some(cursor) => query.before = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<String> = entries.iter().rev().map(|e| e.path.clone()).collect();
    assert_eq!(seen, expected);

    let (odd, _) = store
        .audit_page(&AuditQuery {
            target_slug: Some("odd".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(odd.len(), 2);
    assert_eq!(odd[0], entries[3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_batch_commits_rows_and_token_use_together_or_not_at_all() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let token = store
        .insert_agent_token(NewAgentToken {
            name: "agent".into(),
            hash: AgentToken::generate().hash(),
            allowed_ips: IpAllowlist::default(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let base = chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
    let entry = |i: usize, token_id: Uuid| AuditEntry {
        id: Uuid::now_v7(),
        token_id: Some(token_id),
        token_name: "agent".into(),
        target_id: None,
        target_slug: format!("slug-{}", i % 3),
        method: if i.is_multiple_of(2) { "GET" } else { "POST" }.into(),
        path: format!("/gateway/slug/{}", "x".repeat(i)),
        status_code: 200 + (i % 5) as u16,
        client_ip: "127.0.0.1".into(),
        duration_ms: i as u64,
        upstream_ms: (!i.is_multiple_of(4)).then_some(i as u64 + 1),
        error: (i.is_multiple_of(7)).then(|| format!("error_{i}")),
        interface: if i.is_multiple_of(3) {
            gatehouse::domain::audit::Interface::Mcp
        } else {
            gatehouse::domain::audit::Interface::Gateway
        },
        guard_action: None,
        approved_by: None,
        created_at: base + chrono::Duration::microseconds(i as i64),
    };
    let all = |store: gatehouse::store::Store| async move {
        let (rows, _) = store
            .audit_page(&AuditQuery {
                limit: 500,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        rows
    };

    // 150 rows of growing size: several statements in one transaction, every value intact.
    let used_at = base + chrono::Duration::seconds(1);
    let entries: Vec<AuditEntry> = (0..150).map(|i| entry(i, token.id)).collect();
    store
        .write_audit_batch(entries.clone(), &[(token.id, used_at)], 0)
        .await
        .unwrap();
    let mut stored = all(store.clone()).await;
    stored.reverse();
    assert_eq!(stored, entries);
    assert_eq!(
        store.agent_token(token.id).await.unwrap().last_used_at,
        Some(used_at)
    );

    // A row the database refuses (an unknown token) takes the whole batch with it.
    let mut refused: Vec<AuditEntry> = (0..100).map(|i| entry(i, token.id)).collect();
    refused.push(entry(100, Uuid::now_v7()));
    let later = used_at + chrono::Duration::seconds(1);
    assert!(matches!(
        store
            .write_audit_batch(refused, &[(token.id, later)], 0)
            .await,
        Err(StoreError::Conflict {
            constraint: "foreign key"
        })
    ));
    assert_eq!(all(store.clone()).await.len(), 150);
    assert_eq!(
        store.agent_token(token.id).await.unwrap().last_used_at,
        Some(used_at)
    );
}
