//! In-process "X changed" events. Every management write publishes one after it commits; the
//! proxy's caches subscribe and reload what changed. (Other replicas hear of changes through the
//! database with issue "Connected accounts": LISTEN/NOTIFY on PostgreSQL, a polled counter on
//! SQLite.)

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
