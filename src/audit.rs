//! `AuditSink`: the proxy hands each audit event to a bounded channel and moves on; a writer
//! task batches events into the store (and the tokens' `last_used_at`). A full channel drops
//! the event and counts it — the reply is never delayed by auditing.
//!
//! The writer is not woken per event: once a batch has begun it sleeps for the flush interval
//! without polling the queue (so `try_send` has no task to wake), and is woken early only when
//! a full batch is waiting. Under load that is one wake-up per batch, not one per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

use crate::config::AuditConfig;
use crate::domain::Timestamp;
use crate::domain::audit::AuditEntry;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AuditSink {
    sender: mpsc::Sender<AuditEntry>,
    /// Wakes the writer before its interval ends once a full batch is queued.
    batch_ready: Arc<Notify>,
    batch_size: usize,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    /// Queue an event without waiting.
    pub fn record(&self, entry: AuditEntry) {
        if self.sender.try_send(entry).is_err() {
            self.metrics.audit_dropped.inc();
            return;
        }
        // The sleeping writer already holds the batch's first event.
        let queued = self.sender.max_capacity() - self.sender.capacity();
        if queued + 1 >= self.batch_size {
            // Cheap when a wake-up is already pending: one atomic compare-and-swap.
            self.batch_ready.notify_one();
        }
    }
}

/// Start the writer; it drains the queue and exits once `shutdown` turns true.
pub fn start(
    store: Store,
    config: &AuditConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (AuditSink, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(config.queue_capacity);
    let batch_ready = Arc::new(Notify::new());
    // A batch can never be larger than the queue, or "a full batch is waiting" would never hold.
    let batch_size = config.batch_size.clamp(1, config.queue_capacity.max(1));
    let writer = Writer {
        store,
        batch_size,
        flush_interval: config.flush_interval,
        batch_ready: batch_ready.clone(),
        metrics: metrics.clone(),
        dropped_stored: 0,
    };
    let task = tokio::spawn(writer.run(receiver, shutdown));
    let sink = AuditSink {
        sender,
        batch_ready,
        batch_size,
        metrics,
    };
    (sink, task)
}

struct Writer {
    store: Store,
    batch_size: usize,
    flush_interval: Duration,
    batch_ready: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// How much of this process's drop counter is already in the shared `stat_counters`.
    dropped_stored: u64,
}

impl Writer {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<AuditEntry>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            let first = tokio::select! {
                entry = receiver.recv() => entry,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            // Let the batch fill until the interval has passed or a full batch is queued,
            // without polling the queue meanwhile (see the module comment).
            if receiver.len() + 1 < self.batch_size {
                tokio::select! {
                    _ = tokio::time::sleep(self.flush_interval) => {}
                    _ = self.batch_ready.notified() => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            }
            while batch.len() < self.batch_size {
                match receiver.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            self.write(&mut batch).await;
        }
        // Shutting down: write what is already queued, then stop.
        receiver.close();
        while let Ok(entry) = receiver.try_recv() {
            batch.push(entry);
            if batch.len() >= self.batch_size {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
    }

    async fn write(&mut self, batch: &mut Vec<AuditEntry>) {
        let dropped = self
            .metrics
            .audit_dropped
            .get()
            .saturating_sub(self.dropped_stored);
        if batch.is_empty() && dropped == 0 {
            return;
        }
        let mut last_used: HashMap<Uuid, Timestamp> = HashMap::new();
        for entry in batch.iter() {
            if let Some(token_id) = entry.token_id {
                let at = last_used.entry(token_id).or_insert(entry.created_at);
                *at = (*at).max(entry.created_at);
            }
        }
        let entries = std::mem::take(batch);
        let count = entries.len();
        let uses: Vec<(Uuid, Timestamp)> = last_used.into_iter().collect();
        // Rows, rollups and last-use times commit together: one transaction per batch.
        match self.store.write_audit_batch(entries, &uses, dropped).await {
            Ok(()) => self.dropped_stored += dropped,
            Err(error) => tracing::error!(%error, count, "audit batch lost"),
        }
    }
}
