//! Keeps the access snapshot current: a full reload after every burst of change events, and
//! every `FULL_RELOAD_EVERY` as a safety net (e.g. for a lagged event channel).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::{AccessControl, SnapshotSource};
use crate::change_feed::ChangeFeed;

pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// `on_remote` runs when another replica changed something, before the reload (the app drops
/// cached access tokens there, so they are re-read).
pub fn spawn(
    access: Arc<AccessControl>,
    source: SnapshotSource,
    changes: &ChangeFeed,
    on_remote: impl Fn() + Send + 'static,
    metrics: Arc<crate::metrics::Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = changes.subscribe();
    changes.register_applier();
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut periodic = tokio::time::interval(FULL_RELOAD_EVERY);
        periodic.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = periodic.tick() => {}
                event = events.recv() => {
                    if matches!(event, Err(broadcast::error::RecvError::Closed)) {
                        break;
                    }
                    let mut remote = matches!(event, Ok(crate::change_feed::ChangeEvent::Remote));
                    // Coalesce a burst: everything already queued is covered by one reload.
                    while let Ok(event) = events.try_recv() {
                        remote |= event == crate::change_feed::ChangeEvent::Remote;
                    }
                    if remote {
                        on_remote();
                    }
                }
            }
            // Everything published so far committed before it was published, so this load sees it.
            let generation = changes.published();
            match source.load().await {
                Ok(snapshot) => {
                    snapshot.export_account_gauge(&metrics.connected_accounts);
                    access.replace(snapshot);
                    changes.mark_applied(generation);
                }
                Err(error) => {
                    tracing::warn!(%error, "access snapshot reload failed; serving the previous one")
                }
            }
        }
    })
}
