//! `TestApp`: the real Gatehouse (all three listeners) in this process, on 127.0.0.1 ports
//! chosen by the kernel, with a fixed admin token and encryption key.

use std::collections::BTreeMap;

use gatehouse::app::{App, RunningApp};
use gatehouse::config::{Config, EnvSecrets};
use gatehouse::domain::tokens::AdminToken;

use super::TestDb;

pub struct TestApp {
    pub running: Option<RunningApp>,
    pub admin_token: AdminToken,
    pub encryption_key: [u8; 32],
    pub http: reqwest::Client,
    pub db: TestDb,
    /// Requests to `/gateway/{slug}/…` answered through [`TestApp::call`]; each is counted in
    /// the proxy's metrics once its logging phase ran, which is just after the answer went out.
    pub gateway_answers: std::sync::atomic::AtomicU64,
}

impl TestApp {
    /// The test configuration: loopback, ephemeral ports, loopback upstreams allowed.
    pub fn config(db: &TestDb, admin_token: &AdminToken, key: [u8; 32]) -> Config {
        let mut config = Config::default();
        config.proxy.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.metrics.listen = "127.0.0.1:0".parse().unwrap();
        config.proxy.shutdown_grace = std::time::Duration::from_secs(2);
        config.database.url = db.url.clone();
        config.database.max_connections = 5;
        config.upstream.allow_private = true;
        // Short enough that tests polling for audit rows finish quickly.
        config.audit.flush_interval = std::time::Duration::from_millis(50);
        config.secrets.key_file = db.dir.path().join("secret.key");
        // Webhook retries in tenths of a second (100 ms, 600 ms, 2.4 s, …) and a short poll,
        // so retry and replica tests finish quickly.
        config.webhooks.retry_base = std::time::Duration::from_millis(100);
        config.webhooks.poll_interval = std::time::Duration::from_millis(100);
        config.env = EnvSecrets {
            encryption_key: Some(key),
            old_encryption_keys: Vec::new(),
            admin_token: Some(admin_token.expose().to_owned()),
            oauth_clients: BTreeMap::new(),
        };
        config
    }

    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::new().await).await
    }

    pub async fn spawn_on(db: TestDb) -> Self {
        let admin_token = AdminToken::generate();
        let encryption_key = rand_key();
        let config = Self::config(&db, &admin_token, encryption_key);
        Self::spawn_with(db, admin_token, encryption_key, config).await
    }

    pub async fn spawn_with(
        db: TestDb,
        admin_token: AdminToken,
        encryption_key: [u8; 32],
        config: Config,
    ) -> Self {
        let running = App::build(config).await.expect("gatehouse starts");
        Self::from_running(db, admin_token, encryption_key, running)
    }

    /// A `TestApp` around an app already started.
    pub fn from_running(
        db: TestDb,
        admin_token: AdminToken,
        encryption_key: [u8; 32],
        running: RunningApp,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            running: Some(running),
            admin_token,
            encryption_key,
            http,
            db,
            gateway_answers: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn running(&self) -> &RunningApp {
        self.running.as_ref().expect("app is running")
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().proxy_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().metrics_addr)
    }

    /// A second replica: another app on the same database, with the same admin token and
    /// encryption key (the token-only setup; `accounts::spawn_replica` adds OAuth providers).
    pub async fn spawn_replica(&self) -> TestApp {
        let db = TestDb {
            url: self.db.url.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        let config = Self::config(&db, &self.admin_token, self.encryption_key);
        Self::spawn_with(db, self.admin_token.clone(), self.encryption_key, config).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

pub fn rand_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, byte) in uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .enumerate()
    {
        key[i] = *byte;
    }
    key
}
