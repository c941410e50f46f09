//! `AuditSink`: the proxy hands each audit event to a bounded channel and moves on; a writer
//! task batches events into the store (and the tokens' `last_used_at`). A full channel drops
//! the event and counts it — the reply is never delayed by auditing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::AuditConfig;
use crate::domain::Timestamp;
use crate::domain::audit::AuditEntry;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AuditSink {
    sender: mpsc::Sender<AuditEntry>,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    /// Queue an event without waiting.
    pub fn record(&self, entry: AuditEntry) {
        if self.sender.try_send(entry).is_err() {
            self.metrics.audit_dropped.inc();
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
    let writer = Writer {
        store,
        batch_size: config.batch_size,
        flush_interval: config.flush_interval,
    };
    let task = tokio::spawn(writer.run(receiver, shutdown));
    (AuditSink { sender, metrics }, task)
}

struct Writer {
    store: Store,
    batch_size: usize,
    flush_interval: Duration,
}

impl Writer {
    async fn run(
        self,
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
            // Collect more until the batch is full or the interval since the first has passed.
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(entry)) => batch.push(entry),
                    Ok(None) | Err(_) => break,
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

    async fn write(&self, batch: &mut Vec<AuditEntry>) {
        if batch.is_empty() {
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
        if let Err(error) = self.store.insert_audit_entries(entries).await {
            tracing::error!(%error, count, "audit batch lost");
        }
        let uses: Vec<(Uuid, Timestamp)> = last_used.into_iter().collect();
        if let Err(error) = self.store.touch_agent_tokens(&uses).await {
            tracing::warn!(%error, "could not record token use");
        }
    }
}
