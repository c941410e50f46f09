//! `TestDb`: a fresh SQLite file in a temp dir, or — when `GATEHOUSE_TEST_DATABASE_URL` is set —
//! a fresh PostgreSQL database created on that server for this test alone.

use gatehouse::store::Store;
use sea_orm::{ConnectionTrait as _, Database};

pub struct TestDb {
    pub url: String,
    /// Keeps the SQLite file (and any key files) alive for the test.
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match std::env::var("GATEHOUSE_TEST_DATABASE_URL") {
            Ok(server_url) if !server_url.is_empty() => fresh_postgres_database(&server_url).await,
            _ => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("gatehouse.db").display()
            ),
        };
        Self { url, dir }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 5, std::time::Duration::from_secs(5))
            .await
            .expect("test database reachable");
        store.migrate().await.expect("migrations apply");
        store
    }
}

/// Create `gh_test_<uuid>` on the server and return its URL. A server that cannot be reached
/// fails the test: a configured PostgreSQL is never skipped silently.
async fn fresh_postgres_database(server_url: &str) -> String {
    let name = format!("gh_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(server_url).await.unwrap_or_else(|e| {
        panic!("GATEHOUSE_TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
    });
    // Parallel tests create databases at once; the server may refuse one for a moment (too
    // many connections, template1 busy). A few bounded retries, then the error itself.
    let mut attempt = 0;
    loop {
        match admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
        {
            Ok(_) => break,
            Err(error) if attempt < 5 => {
                attempt += 1;
                eprintln!("CREATE DATABASE {name} failed ({error}); retry {attempt}");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(error) => panic!("create test database {name}: {error}"),
        }
    }
    let _ = admin.close().await;
    let mut url = url::Url::parse(server_url).expect("GATEHOUSE_TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}
