//! Per-token rate limits across replicas (SPEC §11): fixed wall-clock-minute windows, a shared
//! counter row per token and minute (`store::rate_windows`), and on each replica a local budget
//! per token that leases shares of the minute's budget from that row in the background.
//!
//! The request path is a `DashMap` lookup and a short uncontended lock, never a database
//! call; tokens without a limit never get here. See docs/gateway.md "Rate limits" for the error
//! bound, the minute boundary and the failure modes.

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

/// A refused request: come back after `retry_after_secs` (the start of the next window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    budgets: DashMap<Uuid, Mutex<Budget>>,
    /// Where the shared counters live; a pool of its own, so leases never queue behind
    /// requests' or the audit writer's statements.
    store: Store,
    /// The runtime leases run on (not the proxy's).
    runtime: tokio::runtime::Handle,
    leases_per_window: u32,
    on_limited: LimitedHook,
}

impl RateLimiter {
    pub fn new(
        store: Store,
        runtime: tokio::runtime::Handle,
        leases_per_window: u32,
        on_limited: LimitedHook,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                budgets: DashMap::new(),
                store,
                runtime,
                leases_per_window: leases_per_window.max(1),
                on_limited,
            }),
        }
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
            Admission::Limited { first, lease } => {
                if let Some(lease) = lease {
                    self.start_lease(token_id, lease);
                }
                if first {
                    (self.inner.on_limited)(token_id);
                }
                Err(Limited {
                    retry_after_secs: (WINDOW_SECS - now % WINDOW_SECS).max(1),
                })
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
        let window = i64::try_from(unix_secs() / WINDOW_SECS).unwrap_or(i64::MAX);
        self.inner
            .budgets
            .retain(|_, budget| budget.get_mut().window() >= window - 1);
        self.inner.store.prune_rate_windows(window - 1).await
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

/// Prune every `PRUNE_INTERVAL` until `stop`.
pub fn spawn_pruner(limiter: RateLimiter, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(error) = limiter.prune().await {
                        tracing::warn!(error = %error, "pruning rate limit counters failed");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}
