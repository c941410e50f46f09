//! `App::build(Config)` wires the store, secrets, services and the three listeners of SPEC §1;
//! `RunningApp` holds the bound addresses and shuts everything down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use std::sync::atomic::AtomicUsize;

use crate::access::reload;
use crate::access::{AccessControl, SnapshotSource};
use crate::admin::{self, AdminState};
use crate::audit;
use crate::change_feed::{self, ChangeFeed};
use crate::config::{Config, ConfigError};
use crate::connect::ConnectFlow;
use crate::credentials::AccessTokens;
use crate::crypto::{self, CryptoError, KeyOrigin, SecretBox};
use crate::domain::audit::Interface;
use crate::domain::tokens::AdminToken;
use crate::egress::EgressPolicy;
use crate::manage::Management;
use crate::mcp::GatehouseTools;
use crate::metrics::Metrics;
use crate::oauth::client::OAuthClient;
use crate::oauth::providers::Providers;
use crate::proxy::GatewayProxy;
use crate::proxy::{self, ProxyHandle};
use crate::rate_limit::RateLimiter;
use crate::store::{Store, StoreError};
use crate::webhooks;

/// Why `serve` could not start. One line each, naming the setting; never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database.url: {0}")]
    Database(StoreError),
    #[error("secrets.key_file: {0}")]
    Key(#[from] CryptoError),
    #[error("{setting}: cannot listen on {addr}: {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http client: {0}")]
    Http(String),
    #[error("upstream.extra_ca_file: {0}")]
    UpstreamCa(#[from] proxy::UpstreamCaError),
    #[error("rate limits: {0}")]
    RateLimit(#[from] crate::rate_limit::StartError),
}

/// Open the database named by the config and bring its schema up to date.
pub async fn open_store(config: &Config) -> Result<Store, StartupError> {
    let store = Store::connect(
        &config.database.url,
        config.database.max_connections,
        config.database.connect_timeout,
    )
    .await
    .map_err(StartupError::Database)?;
    store.migrate().await.map_err(StartupError::Database)?;
    Ok(store)
}

/// The current encryption key (from the environment, the key file, or generated into it).
pub fn load_secret_box(config: &Config) -> Result<SecretBox, StartupError> {
    let (key, origin) =
        crypto::load_or_generate_key(config.env.encryption_key, &config.secrets.key_file)?;
    if origin == KeyOrigin::Generated {
        tracing::warn!(
            key_file = %config.secrets.key_file.display(),
            "GATEHOUSE_ENCRYPTION_KEY is not set: generated a new encryption key into the key file; \
             back it up, or every stored secret is lost with it"
        );
    }
    Ok(SecretBox::new(&key, &config.env.old_encryption_keys))
}

/// The management services on their own, for CLI commands that share the admin API's rules.
pub async fn management(config: &Config) -> Result<Management, StartupError> {
    let store = open_store(config).await?;
    let secret_box = load_secret_box(config)?;
    let approvals = crate::guard::Approvals::new(
        store.clone(),
        &config.admin.public_url,
        config.guard.approval_ttl,
    );
    Ok(Management::new(
        store,
        Arc::new(secret_box),
        EgressPolicy::new(config.upstream.allow_private),
        ChangeFeed::default(),
        approvals,
    ))
}

pub struct App;

impl App {
    /// Connect, migrate, bind the three listeners and start serving.
    pub async fn build(config: Config) -> Result<RunningApp, StartupError> {
        // Bind all three first: a taken port fails fast, before any other work, and leaves
        // nothing half started.
        let proxy_listener = bind_std("proxy.listen", config.proxy.listen)?;
        let admin_listener = bind_tokio("admin.listen", config.admin.listen)?;
        let metrics_listener = bind_tokio("metrics.listen", config.metrics.listen)?;
        let admin_addr = local_addr(
            "admin.listen",
            config.admin.listen,
            admin_listener.local_addr(),
        )?;
        let metrics_addr = local_addr(
            "metrics.listen",
            config.metrics.listen,
            metrics_listener.local_addr(),
        )?;
        // Before the database: a bad CA file is a configuration mistake, reported as one.
        let upstream_roots = upstream_roots(&config)?;

        let store = open_store(&config).await?;
        let secret_box = load_secret_box(&config)?;
        let generated_admin_token = bootstrap_admin_token(&store, &config).await?;
        let metrics = Arc::new(Metrics::new()?);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let changes = ChangeFeed::default();
        let secret_box = Arc::new(secret_box);
        let approvals = crate::guard::Approvals::new(
            store.clone(),
            &config.admin.public_url,
            config.guard.approval_ttl,
        );
        let management = Management::new(
            store.clone(),
            secret_box.clone(),
            EgressPolicy::new(config.upstream.allow_private),
            changes.clone(),
            approvals.clone(),
        );
        let providers = Arc::new(Providers::new(
            &config.providers,
            &config.env.oauth_clients,
        )?);
        let oauth = OAuthClient::new().map_err(|e| StartupError::Http(e.to_string()))?;
        let access_tokens = AccessTokens::new(
            store.clone(),
            secret_box.clone(),
            providers.clone(),
            oauth.clone(),
            metrics.clone(),
            changes.clone(),
            config.webhooks.refresh_failing_after,
        );
        let accounts = ConnectFlow {
            store: store.clone(),
            secrets: secret_box.clone(),
            providers: providers.clone(),
            oauth,
            access_tokens: access_tokens.clone(),
            changes: changes.clone(),
            redirect_uri: config
                .admin
                .public_url
                .join("oauth/callback")
                .map_err(|_| ConfigError::new("admin.public_url", "cannot be a base URL"))?,
        };
        let admin_state = AdminState {
            management,
            configured_admin_token: config
                .env
                .admin_token
                .as_deref()
                .and_then(AdminToken::parse)
                .map(|t| t.hash()),
            max_body_bytes: config.admin.max_body_bytes,
            providers,
            accounts,
            public_url: config.admin.public_url.clone(),
            proxy_public_url: config.proxy.public_url.clone(),
        };
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            admin::router(admin_state),
            shutdown_rx.clone(),
        ));
        let metrics_task = tokio::spawn(admin::serve(
            metrics_listener,
            admin::metrics_router(metrics.clone()),
            shutdown_rx,
        ));
        // Periodic background work (snapshot reloads, the due-refresh scan, the replication
        // poll) runs on a small pool of its own, so the main pool's statement counter measures
        // only what requests and admin calls cause.
        let background_store =
            Store::connect(&config.database.url, 2, config.database.connect_timeout)
                .await
                .map_err(StartupError::Database)?;
        let snapshot_source = SnapshotSource {
            store: background_store.clone(),
            secrets: secret_box.clone(),
        };
        let snapshot = snapshot_source
            .load()
            .await
            .map_err(StartupError::Database)?;
        snapshot.export_account_gauge(&metrics.connected_accounts);
        let access = Arc::new(AccessControl::new(snapshot));
        // Background work stops only after the proxy has drained, so late requests still audit.
        let (background_stop, _) = watch::channel(false);
        let (audit_sink, audit_task) = audit::start(
            store.clone(),
            &config.audit,
            metrics.clone(),
            background_stop.subscribe(),
        );
        let reload_task = reload::spawn(
            access.clone(),
            snapshot_source,
            &changes,
            {
                let access_tokens = access_tokens.clone();
                move || access_tokens.forget_all()
            },
            metrics.clone(),
            background_stop.subscribe(),
        );
        // A pool of its own for the replication poll, so it never counts against requests.
        let replication = change_feed::replicate(
            background_store.clone(),
            changes.clone(),
            background_stop.subscribe(),
        );
        // Rate-limit leases: a thread and a small pool of their own (`rate_limit`).
        let rate_limits = RateLimiter::start(
            &config.database.url,
            config.database.connect_timeout,
            config.rate_limit.leases_per_window,
            rate_limited_announcer(store.clone()),
        )
        .await?;
        let rate_pruner =
            crate::rate_limit::spawn_pruner(&rate_limits, background_stop.subscribe());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let heap_trimmer =
            crate::memory::spawn_heap_trimmer(in_flight.clone(), background_stop.subscribe());
        let mut gateway = GatewayProxy {
            access: access.clone(),
            audit: audit_sink,
            metrics: metrics.clone(),
            egress: EgressPolicy::new(config.upstream.allow_private),
            resolver: Arc::new(proxy::Resolver::new(config.upstream.dns_cache_ttl)),
            upstream: config.upstream.clone(),
            in_flight,
            access_tokens: access_tokens.clone(),
            rate_limits,
            approvals: approvals.clone(),
            elicitation_wait: config.guard.elicitation_wait,
            interface: Interface::Gateway,
            mcp: None,
            upstream_roots,
        };
        gateway.mcp = Some(
            GatehouseTools::new(
                access,
                Arc::new(gateway.internal_gateway()),
                config.mcp.max_response_bytes,
            )
            .into_http_service(),
        );
        let dispatcher = webhooks::Dispatcher::new(
            background_store.clone(),
            secret_box.clone(),
            EgressPolicy::new(config.upstream.allow_private),
            metrics.clone(),
            &config.webhooks,
        )
        .map_err(|e| StartupError::Http(e.to_string()))?;
        let webhook_dispatcher = webhooks::spawn(
            dispatcher,
            store.outbox_signal(),
            background_stop.subscribe(),
        );
        let refresher = crate::credentials::access_tokens::spawn_refresher(
            access_tokens,
            background_store.clone(),
            crate::credentials::access_tokens::BACKGROUND_INTERVAL,
            background_stop.subscribe(),
        );
        let retention = crate::retention::spawn(
            crate::retention::Retention {
                store: background_store,
                keep: config.audit.retention,
                every: config.audit.prune_interval,
                owner: format!("replica-{}", uuid::Uuid::new_v4().simple()),
            },
            background_stop.subscribe(),
        );
        let proxy_threads = match config.proxy.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let limits = proxy::ClientLimits::new(&config.proxy, &metrics);
        let proxy =
            proxy::start(proxy_listener, gateway, proxy_threads, limits).map_err(|source| {
                StartupError::Bind {
                    setting: "proxy.listen",
                    addr: config.proxy.listen,
                    source,
                }
            })?;
        tracing::info!(
            proxy = %proxy.local_addr,
            admin = %admin_addr,
            metrics = %metrics_addr,
            backend = ?store.backend(),
            key_id = %secret_box.key_id(),
            "gatehouse is serving"
        );
        Ok(RunningApp {
            proxy_addr: proxy.local_addr,
            admin_addr,
            metrics_addr,
            generated_admin_token,
            store,
            proxy,
            shutdown,
            background_stop,
            servers: vec![admin_task, metrics_task],
            background: vec![
                audit_task,
                reload_task,
                refresher,
                replication,
                heap_trimmer,
                webhook_dispatcher,
                rate_pruner,
                retention,
            ],
            grace: config.proxy.shutdown_grace,
        })
    }
}

/// A serving instance.
pub struct RunningApp {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Set when this start created the first admin token; show it once, then drop it.
    pub generated_admin_token: Option<AdminToken>,
    store: Store,
    proxy: ProxyHandle,
    shutdown: watch::Sender<bool>,
    background_stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    /// The audit writer (drains its queue on shutdown) and the snapshot reloader.
    background: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl RunningApp {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stop accepting on every listener, let in-flight requests finish within the grace
    /// period, then close the database pool.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let mut proxy = self.proxy;
        let unfinished = proxy.shutdown(self.grace).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "grace period over; dropping unfinished proxy requests"
            );
        }
        for task in self.servers {
            let _ = tokio::time::timeout(self.grace, task).await;
        }
        // The proxy is done, so no more audit events come; let the writer flush what it holds.
        let _ = self.background_stop.send(true);
        for task in self.background {
            let _ = tokio::time::timeout(self.grace, task).await;
        }
        self.store.close().await;
        proxy.stop_workers().await;
        tracing::info!("gatehouse stopped");
    }
}

/// `token.rate_limited` (SPEC §11): the limiter calls this on the request path, at most once per
/// token and minute on a replica; the announcement (at most one per token per hour across
/// replicas) is written by a task on the main runtime, so the request never waits for it.
fn rate_limited_announcer(store: Store) -> crate::rate_limit::LimitedHook {
    const QUIET: Duration = Duration::from_secs(60 * 60);
    let runtime = tokio::runtime::Handle::current();
    Arc::new(move |token_id| {
        let store = store.clone();
        runtime.spawn(async move {
            if let Err(error) = store.announce_rate_limited(token_id, QUIET).await {
                tracing::warn!(%error, %token_id, "token.rate_limited not queued");
            }
        });
    })
}

/// The combined CA bundle when `upstream.extra_ca_file` is set; built once, so a changed file
/// is seen on the next start.
fn upstream_roots(config: &Config) -> Result<Option<Arc<proxy::UpstreamRoots>>, StartupError> {
    let Some(path) = config.upstream.extra_ca_file.as_deref() else {
        return Ok(None);
    };
    let roots = proxy::UpstreamRoots::build(path)?;
    tracing::info!(
        extra_ca_file = %path.display(),
        extra = roots.extra,
        system = roots.platform,
        "upstream TLS trusts the system roots and upstream.extra_ca_file"
    );
    Ok(Some(Arc::new(roots)))
}

/// With no admin token configured and none stored, create the first one.
async fn bootstrap_admin_token(
    store: &Store,
    config: &Config,
) -> Result<Option<AdminToken>, StartupError> {
    if config.env.admin_token.is_some() {
        return Ok(None);
    }
    if store
        .count_active_admin_tokens()
        .await
        .map_err(StartupError::Database)?
        > 0
    {
        return Ok(None);
    }
    let token = AdminToken::generate();
    store
        .insert_admin_token("initial", &token.hash())
        .await
        .map_err(StartupError::Database)?;
    Ok(Some(token))
}

fn bind_std(
    setting: &'static str,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, StartupError> {
    std::net::TcpListener::bind(addr).map_err(|source| StartupError::Bind {
        setting,
        addr,
        source,
    })
}

fn bind_tokio(
    setting: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, StartupError> {
    let listener = bind_std(setting, addr)?;
    let bind_error = |source| StartupError::Bind {
        setting,
        addr,
        source,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    tokio::net::TcpListener::from_std(listener).map_err(|source| StartupError::Bind {
        setting,
        addr,
        source,
    })
}

fn local_addr(
    setting: &'static str,
    addr: SocketAddr,
    result: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, StartupError> {
    result.map_err(|source| StartupError::Bind {
        setting,
        addr,
        source,
    })
}
