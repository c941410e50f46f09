//! Migrations create the schema from empty and are a no-op the second time, on both backends.

use crate::support::TestDb;

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_from_empty_then_are_a_no_op() {
    let db = TestDb::new().await;
    let store = gatehouse::store::Store::connect(&db.url, 2, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        store.pending_migrations().await.unwrap().len(),
        <gatehouse_migrations::Migrator as gatehouse_migrations::MigratorTrait>::migrations().len(),
        "fresh database has every migration pending"
    );
    assert!(!store.is_ready().await, "not ready before migrating");

    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    assert!(store.is_ready().await);

    // A second run (a restart, or `gatehouse migrate` twice) changes nothing and does not fail.
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    // The schema is usable: every table answers a query.
    assert!(store.list_agent_tokens().await.unwrap().is_empty());
    assert!(store.list_targets().await.unwrap().is_empty());
    assert!(store.list_connected_accounts().await.unwrap().is_empty());
    assert!(store.all_permissions().await.unwrap().is_empty());
    assert_eq!(store.count_active_admin_tokens().await.unwrap(), 0);
}
