//! Per-token rate limits across replicas (SPEC §11): fixed wall-clock-minute windows, a shared
//! counter row per token and minute (`store::rate_windows`), and on each replica a local budget
//! per token that leases shares of the minute's budget from that row in the background.
//!
//! The request path is a `DashMap` lookup and a short uncontended lock, never a database
//! call; tokens without a limit never get here. Leases run on a thread (a one-worker runtime)
//! of their own with a pool of their own: a lease that waits behind busy tasks lets a replica
//! refuse requests early, so it must not queue on the main runtime. See docs/gateway.md "Rate
//! limits" for the error bound, the minute boundary and the failure modes.

mod budget;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::tokens::RateLimit;
use crate::store::{Store, StoreError};
use budget::{Admission, Budget, Lease};

/// Seconds in a window.
const WINDOW_SECS: u64 = 60;

/// How often old counter rows and idle budgets are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Told, on the request path, that a token was refused for its rate limit: at most once per
/// token per window on each replica. Must be cheap (a `try_send`, a flag); the webhooks of
/// SPEC §11 (`token.rate_limited`) hook in here.
pub type LimitedHook = Arc<dyn Fn(Uuid) + Send + Sync>;

/// A refused request: come back after `retry_after_secs` — the start of the next window, or 1
/// when this replica is only waiting for a lease to land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

/// Why the rate limiter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the lease thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
    /// Owns the lease thread; lease tasks hold only `inner`, so the runtime is never dropped
    /// from one of its own tasks.
    _thread: Arc<LeaseThread>,
}

struct Inner {
    budgets: DashMap<Uuid, Mutex<Budget>>,
    /// Where the shared counters live: a pool of its own, opened on the lease thread.
    store: Store,
    /// The lease thread's runtime.
    runtime: tokio::runtime::Handle,
    leases_per_window: u32,
    on_limited: LimitedHook,
}

struct LeaseThread(Option<tokio::runtime::Runtime>);

impl Drop for LeaseThread {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code; this does not wait.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RateLimiter {
    /// Start the lease thread and open the counters' pool (2 connections, commits not waiting
    /// for the WAL flush: `Store::connect_relaxed`) on it.
    pub async fn start(
        database_url: &str,
        connect_timeout: Duration,
        leases_per_window: u32,
        on_limited: LimitedHook,
    ) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gatehouse-rate-limit")
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
        let handle = runtime.handle().clone();
        let thread = LeaseThread(Some(runtime));
        let url = database_url.to_owned();
        let store = handle
            .spawn(async move { Store::connect_relaxed(&url, 2, connect_timeout).await })
            .await
            .map_err(|_| StoreError::Unavailable("the lease thread stopped".to_owned()))??;
        Ok(Self {
            inner: Arc::new(Inner {
                budgets: DashMap::new(),
                store,
                runtime: handle,
                leases_per_window: leases_per_window.max(1),
                on_limited,
            }),
            _thread: Arc::new(thread),
        })
    }

    /// Admit one request of `token_id`, or say when to come back.
    pub fn check(&self, token_id: Uuid, limit: RateLimit) -> Result<(), Limited> {
        let now = unix_secs();
        let window = i64::try_from(now / WINDOW_SECS).unwrap_or(i64::MAX);
        let limit = limit.per_minute();
        let lease_size = lease_size(limit, self.inner.leases_per_window);
        let admission = match self.inner.budgets.get(&token_id) {
            Some(budget) => budget.lock().admit(window, limit, lease_size),
            None => self
                .inner
                .budgets
                .entry(token_id)
                .or_insert_with(|| Mutex::new(Budget::new(window)))
                .lock()
                .admit(window, limit, lease_size),
        };
        match admission {
            Admission::Admit(lease) => {
                if let Some(lease) = lease {
                    self.start_lease(token_id, lease);
                }
                Ok(())
            }
            Admission::Limited {
                first,
                lease,
                waiting,
            } => {
                if let Some(lease) = lease {
                    self.start_lease(token_id, lease);
                }
                if first {
                    (self.inner.on_limited)(token_id);
                }
                let retry_after_secs = if waiting {
                    1
                } else {
                    (WINDOW_SECS - now % WINDOW_SECS).max(1)
                };
                Err(Limited { retry_after_secs })
            }
        }
    }

    /// Lease in the background until the budget needs no more (each answer may ask for the
    /// next: what was admitted while it was in flight).
    fn start_lease(&self, token_id: Uuid, lease: Lease) {
        let inner = self.inner.clone();
        self.inner.runtime.spawn(async move {
            let mut next = Some(lease);
            while let Some(lease) = next.take() {
                let result = take(&inner.store, token_id, lease).await;
                let Some(budget) = inner.budgets.get(&token_id) else {
                    return;
                };
                match result {
                    Ok(granted) => {
                        let lease_size = lease_size(lease.limit, inner.leases_per_window);
                        next = budget.lock().leased(lease, granted, lease_size);
                    }
                    Err(error) => {
                        tracing::warn!(
                            token_id = %token_id,
                            error = %error,
                            "rate limit counter unreachable; this replica enforces the limit alone until the minute ends"
                        );
                        budget.lock().lease_failed(lease);
                    }
                }
            }
        });
    }

    /// Drop counter rows of windows before the previous one, and budgets idle for as long.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.inner.prune().await
    }
}

impl Inner {
    async fn prune(&self) -> Result<u64, StoreError> {
        let window = i64::try_from(unix_secs() / WINDOW_SECS).unwrap_or(i64::MAX);
        self.budgets
            .retain(|_, budget| budget.get_mut().window() >= window - 1);
        self.store.prune_rate_windows(window - 1).await
    }
}

/// A lease is `limit / leases_per_window`, rounded up: the knob between database writes
/// (about `leases_per_window` per busy token and minute, cluster-wide) and the error bound.
fn lease_size(limit: u32, leases_per_window: u32) -> u32 {
    limit.div_ceil(leases_per_window).max(1)
}

/// Take `lease.amount` from the counter, or, when less is left, as much of it as there is:
/// halves down to 1, each taken if it still fits (at most 1 + log2(amount) statements, only
/// at the end of a window's budget).
async fn take(store: &Store, token_id: Uuid, lease: Lease) -> Result<u32, StoreError> {
    let Lease {
        window,
        amount,
        limit,
    } = lease;
    if store
        .lease_rate_budget(token_id, window, amount, limit)
        .await?
    {
        return Ok(amount);
    }
    let mut granted = 0;
    let mut piece = amount.next_power_of_two() / 2;
    while piece > 0 {
        if store
            .lease_rate_budget(token_id, window, piece, limit)
            .await?
        {
            granted += piece;
        }
        piece /= 2;
    }
    Ok(granted)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prune every `PRUNE_INTERVAL` until `stop`, on the lease thread (holding the budgets, not the
/// thread itself).
pub fn spawn_pruner(limiter: &RateLimiter, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let inner = limiter.inner.clone();
    limiter.inner.runtime.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = inner.prune().await {
                        tracing::warn!(error = %error, "pruning rate limit counters failed");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}
