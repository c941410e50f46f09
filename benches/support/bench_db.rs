//! Shared by the database benches (`#[path]`-included): knobs from the environment and a
//! throwaway migrated store — a SQLite file in a temp dir, or a fresh PostgreSQL database on
//! `GATEHOUSE_TEST_DATABASE_URL`'s server that `finish` drops.

use std::time::Duration;

use gatehouse::store::Store;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use uuid::Uuid;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct BenchDb {
    pub url: String,
    pub store: Store,
    /// PostgreSQL: the server connection and the database's name, to drop it.
    server: Option<(DatabaseConnection, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        let store = migrated(&url).await;
        Self {
            url,
            store,
            server: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres(server_url: &str) -> Self {
        let name = format!("gh_bench_{}", Uuid::new_v4().simple());
        let server = Database::connect(server_url)
            .await
            .expect("GATEHOUSE_TEST_DATABASE_URL reachable");
        server
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create bench database");
        let mut url = url::Url::parse(server_url).expect("database URL");
        url.set_path(&name);
        let store = migrated(url.as_str()).await;
        Self {
            url: url.to_string(),
            store,
            server: Some((server, name)),
            _dir: None,
        }
    }

    /// The PostgreSQL database's name.
    pub fn database_name(&self) -> Option<&str> {
        self.server.as_ref().map(|(_, name)| name.as_str())
    }

    pub async fn finish(self) {
        self.store.close().await;
        if let Some((server, name)) = self.server {
            let _ = server
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            let _ = server.close().await;
        }
    }
}

async fn migrated(url: &str) -> Store {
    let store = Store::connect(url, 10, Duration::from_secs(5))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}
