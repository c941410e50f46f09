//! "X changed" events. Every management write publishes one after it commits; the proxy's
//! caches subscribe and reload. Other replicas hear of it through the database: `replicate`
//! bumps a shared counter for every local event and polls it, turning a move made by someone
//! else into a local `ChangeEvent::Remote` — the same code on SQLite and PostgreSQL (SPEC §7
//! allows "a short poll of a change counter"; LISTEN/NOTIFY would shave the poll interval).

use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    /// A token was created, renamed, re-keyed, restricted, revoked or deleted.
    Token(Uuid),
    /// A target or one of its auth methods changed (or it was deleted).
    Target(Uuid),
    /// A token's permissions changed.
    Permissions { token_id: Uuid },
    /// A connected account changed (status, tokens, or deleted with its targets).
    Account(Uuid),
    /// Another replica changed something (the shared change counter moved): reload everything.
    Remote,
}

/// Cheap to clone; a lagging subscriber loses events and must reload everything.
///
/// Read your writes: every event gets a generation number, and the cache that applies events
/// (the proxy's snapshot reloader) reports the generation it has applied, so a management write
/// can wait until its change is live on this replica before it answers.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<ChangeEvent>,
    published: std::sync::Arc<std::sync::atomic::AtomicU64>,
    applied: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Set once something applies events; without it (CLI commands) nobody waits.
    applier: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a write waits for its change to be applied before answering anyway.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ChangeFeed {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            published: Default::default(),
            applied: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            applier: Default::default(),
        }
    }

    /// Publish without waiting; returns the event's generation.
    pub fn publish(&self, event: ChangeEvent) -> u64 {
        use std::sync::atomic::Ordering;
        let generation = self.published.fetch_add(1, Ordering::AcqRel) + 1;
        // No subscriber is fine: nothing caches yet.
        let _ = self.sender.send(event);
        generation
    }

    /// Publish and wait (at most 2 s) until this replica's caches have applied the change, so
    /// the caller's next request already sees it.
    pub async fn publish_and_wait(&self, event: ChangeEvent) {
        let generation = self.publish(event);
        if !self.applier.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut applied = self.applied.subscribe();
        let _ =
            tokio::time::timeout(APPLY_WAIT, applied.wait_for(|done| *done >= generation)).await;
    }

    /// The generation of the latest published event (taken by an applier before it reloads).
    pub fn published(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the applier after a reload that started once `generation` was published.
    pub fn mark_applied(&self, generation: u64) {
        self.applier
            .store(true, std::sync::atomic::Ordering::Release);
        self.applied.send_if_modified(|done| {
            let newer = generation > *done;
            if newer {
                *done = generation;
            }
            newer
        });
    }

    /// Declare that an applier exists (the reloader, at start).
    pub fn register_applier(&self) {
        self.applier
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.sender.subscribe()
    }
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new(1024)
    }
}

/// How often replicas poll the shared change counter (SPEC §7: changes reach every replica
/// within 2 s).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Mirror local events into the shared counter and turn its foreign moves into
/// `ChangeEvent::Remote`. `store` should be a pool of its own, so polling is not counted
/// against the request path.
pub fn replicate(
    store: crate::store::Store,
    changes: ChangeFeed,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = changes.subscribe();
    tokio::spawn(async move {
        let mut last_seen = store.change_counter().await.ok();
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
                event = events.recv() => match event {
                    Ok(ChangeEvent::Remote) => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Err(error) = store.bump_change_counter().await {
                            tracing::warn!(%error, "could not tell other replicas about a change");
                        }
                        // Our own bump is not news.
                        last_seen = store.change_counter().await.ok().or(last_seen);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = poll.tick() => {
                    let current = store.change_counter().await.ok();
                    if current.is_some() && current != last_seen {
                        last_seen = current;
                        changes.publish(ChangeEvent::Remote);
                    }
                }
            }
        }
    })
}
