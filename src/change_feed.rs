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
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<ChangeEvent>,
}

impl ChangeFeed {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    pub fn publish(&self, event: ChangeEvent) {
        // No subscriber is fine: nothing caches yet.
        let _ = self.sender.send(event);
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
