//! Persistence. The only module that imports `sea_orm`; everything it returns is a domain type.
//!
//! One code path serves SQLite and PostgreSQL: queries are built with sea-orm / sea-query and
//! never use backend-only SQL (no `SELECT … FOR UPDATE`, no `RETURNING` reliance).

mod entities;

pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod change_counter;
pub mod guard;
pub mod oauth;
pub mod rate_windows;
pub mod stats;
pub mod targets;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_migrations::{Migrator, MigratorTrait as _};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

/// Why a store call failed. Callers map these to HTTP in `api_error`, nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// A unique or foreign-key constraint refused the write; `constraint` names it.
    #[error("conflict on {constraint}")]
    Conflict { constraint: &'static str },
    /// The database could not be reached or answered with an error.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row holds a value the domain cannot accept (e.g. an unknown status string).
    #[error("stored {entity} is invalid: {problem}")]
    Corrupt {
        entity: &'static str,
        problem: String,
    },
}

impl StoreError {
    fn not_found(entity: &'static str) -> Self {
        Self::NotFound { entity }
    }

    fn corrupt(entity: &'static str, problem: impl Into<String>) -> Self {
        Self::Corrupt {
            entity,
            problem: problem.into(),
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        classify(error, "unique")
    }
}

/// Map a database error, naming `constraint` when it is a unique-key violation.
fn classify(error: DbErr, constraint: &'static str) -> StoreError {
    match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict { constraint },
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::Conflict {
            constraint: "foreign key",
        },
        _ => StoreError::Unavailable(error.to_string()),
    }
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database: a connection pool, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Statements executed through this pool, for the "no SQL on the hot path" check.
    statements: Arc<AtomicU64>,
    /// The audit INSERT text for each row count, in this database's dialect.
    audit_sql: Arc<[String]>,
    /// Signalled after this pool wrote webhook deliveries, so this replica's dispatcher sends
    /// them at once instead of at its next poll.
    outbox: Arc<tokio::sync::Notify>,
}

impl Store {
    /// Connect and check the connection with one round trip. For SQLite files the parent
    /// folder is created, so the embedded default works in an empty directory.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::open(url, max_connections, connect_timeout, false).await
    }

    /// A pool whose commits on PostgreSQL do not wait for the WAL flush
    /// (`synchronous_commit = off`), for writes that may be lost in a database crash without
    /// harm: the rate-limit counters (a lost lease only lets a few more requests through), so a
    /// lease does not wait for the disk (docs/gateway.md "Rate limits"). The SQL is the same;
    /// SQLite in WAL mode with `synchronous = NORMAL` already commits so.
    pub async fn connect_relaxed(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::open(url, max_connections, connect_timeout, true).await
    }

    async fn open(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
        relaxed_commits: bool,
    ) -> Result<Self, StoreError> {
        if let Some(path) = sqlite_file_path(url)
            && let Some(parent) = std::path::Path::new(&path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(0)
            .connect_timeout(connect_timeout)
            .acquire_timeout(connect_timeout)
            .sqlx_logging(false)
            // WAL lets readers proceed while the audit writer commits; NORMAL sync is the WAL
            // recommendation (durable across crashes of the process, one fsync per checkpoint);
            // the busy timeout turns brief write contention into waiting, not errors.
            .map_sqlx_sqlite_opts(|opts| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
            });
        if relaxed_commits {
            options.map_sqlx_postgres_opts(|opts| opts.options([("synchronous_commit", "off")]));
        }
        let mut db = Database::connect(options)
            .await
            .map_err(|e| StoreError::Unavailable(sanitize(&e.to_string(), url)))?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let audit_sql = audit::insert_statements(db.get_database_backend())?.into();
        let store = Self {
            db,
            statements,
            audit_sql,
            outbox: Arc::new(tokio::sync::Notify::new()),
        };
        store.ping().await?;
        Ok(store)
    }

    /// How many SQL statements this store (and its clones) has executed so far.
    pub fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> Backend {
        match self.db.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }

    /// Apply every pending migration. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let pending = self.pending_migrations().await?;
        Migrator::up(&self.db, None).await?;
        if !pending.is_empty() {
            tracing::info!(applied = pending.len(), migrations = %pending.join(", "), "database migrated");
        }
        Ok(())
    }

    /// Names of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations(&self.db).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::from)
    }

    /// Reachable and fully migrated: what `/ready` reports.
    pub async fn is_ready(&self) -> bool {
        matches!(self.pending_migrations().await, Ok(pending) if pending.is_empty())
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }

    /// What the webhook dispatcher waits on besides its poll interval.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// Wake the local dispatcher when `written` deliveries were just committed.
    fn outbox_written(&self, written: usize) {
        if written > 0 {
            self.outbox.notify_one();
        }
    }

    fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A transaction that will write. On SQLite it takes the write lock at `BEGIN IMMEDIATE`:
    /// a deferred transaction that reads first and then writes fails at once (no busy wait)
    /// when another connection committed in between.
    async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        use sea_orm::TransactionTrait as _;
        let options = sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..sea_orm::TransactionOptions::default()
        };
        Ok(self.db.begin_with_options(options).await?)
    }
}

/// The file behind a `sqlite://path?…` URL, unless it is in memory.
fn sqlite_file_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Database errors may quote the URL; the URL may hold a password.
fn sanitize(message: &str, url: &str) -> String {
    if url.is_empty() {
        message.to_owned()
    } else {
        message.replace(url, "<database.url>")
    }
}

/// Current time truncated to microseconds, the precision both backends store, so a value
/// read back equals the value written.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound as _;
    chrono::Utc::now().trunc_subsecs(6)
}
