//! Audit retention (`audit.retention`, default 30 days; `0s` keeps everything). Every
//! `audit.prune_interval` each replica tries to claim the `audit_retention` maintenance lease for
//! one interval; the one that holds it deletes audit rows, rollups and counters older than the
//! retention, the others skip the round — no double work. Deletes run in statements of at most
//! `PRUNE_BATCH` rows with a pause between, so no statement holds a lock for long and the audit
//! writer's transactions interleave with the pruning.
//!
//! The same round sweeps approvals (SPEC §12): undecided or unused ones past their deadline are
//! marked `expired`, and rows that expired more than [`APPROVALS_KEPT`] ago are deleted (the
//! audit rows keep what the guard did). That runs even when audit retention is off.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{Store, StoreError};

const LEASE: &str = "audit_retention";
/// Rows per delete statement.
const PRUNE_BATCH: u64 = 1_000;
/// Minutes of rollups per delete statement.
const ROLLUP_MINUTES: i64 = 60;
/// How long an approval stays listed after its deadline.
pub const APPROVALS_KEPT: Duration = Duration::from_secs(24 * 3600);
/// Between two delete statements: lets other writers in.
const PAUSE: Duration = Duration::from_millis(20);

pub struct Retention {
    pub store: Store,
    pub keep: Duration,
    pub every: Duration,
    /// This replica's lease owner id.
    pub owner: String,
}

/// Start the pruning loop (with `audit.retention` `0s` it only sweeps approvals).
pub fn spawn(retention: Retention, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention.every);
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
                _ = tick.tick() => {
                    if let Err(error) = retention.round(&shutdown).await {
                        tracing::warn!(%error, "audit retention round failed; retrying next interval");
                    }
                }
            }
        }
    })
}

impl Retention {
    /// One round: claim the lease, then prune until nothing older than the cutoff is left, the
    /// lease runs out or the app stops. Returns the rows deleted (0 when another replica holds
    /// the lease).
    pub async fn round(&self, shutdown: &watch::Receiver<bool>) -> Result<u64, StoreError> {
        let now = chrono::Utc::now();
        let (Ok(keep), Ok(lease), Ok(approvals_kept)) = (
            chrono::Duration::from_std(self.keep),
            chrono::Duration::from_std(self.every),
            chrono::Duration::from_std(APPROVALS_KEPT),
        ) else {
            return Ok(0);
        };
        // A retention or interval beyond the calendar's range keeps everything this round.
        let (Some(lease_until), Some(cutoff)) =
            (now.checked_add_signed(lease), now.checked_sub_signed(keep))
        else {
            return Ok(0);
        };
        if !self
            .store
            .claim_maintenance_lease(LEASE, &self.owner, lease_until)
            .await?
        {
            return Ok(0);
        }
        let (expired, swept) = self.store.sweep_approvals(now - approvals_kept).await?;
        if expired + swept > 0 {
            tracing::info!(expired, deleted = swept, "approvals swept");
        }
        if self.keep.is_zero() {
            return Ok(0);
        }
        let stop = || *shutdown.borrow() || chrono::Utc::now() >= lease_until;
        let mut deleted = 0;
        loop {
            let rows = self.store.prune_audit_rows(cutoff, PRUNE_BATCH).await?;
            deleted += rows;
            if rows < PRUNE_BATCH || stop() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        loop {
            let rows = self.store.prune_rollups(cutoff, ROLLUP_MINUTES).await?;
            deleted += rows;
            if rows == 0 || stop() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if deleted > 0 {
            tracing::info!(deleted, %cutoff, "audit retention pruned old rows");
        }
        Ok(deleted)
    }
}
