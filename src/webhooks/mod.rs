//! The webhook dispatcher (SPEC §11): a background task per replica that sends due deliveries
//! of the outbox (`store::webhooks`), signed the Standard Webhooks way, with a bounded number of
//! attempts in flight and a timeout on each, and records every attempt. A slow or dead
//! receiver only ever holds one of this task's permits — never a request of the proxy.
//!
//! Once across replicas: a delivery is sent only by the replica whose conditional UPDATE
//! claimed its lease; the lease outlives an attempt (`LEASE_MARGIN` past the timeout), so it
//! expires only when the holder died, and then another replica sends it again.

mod egress_resolver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::WebhooksConfig;
use crate::crypto::{SecretBox, SecretSlot};
use crate::domain::webhooks::{AttemptOutcome, RetrySchedule, WebhookSecret};
use crate::egress::EgressPolicy;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::webhooks::{AttemptRecord, ClaimedDelivery};

/// How much longer than one attempt's timeout a claimed lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Delivered rows are kept this long for the delivery log, failed ones longer.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
pub const KEEP_FAILED: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often old rows are pruned (any replica may; the DELETE is idempotent).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("webhook http client: {0}")]
    Http(String),
}

pub struct Dispatcher {
    store: Store,
    secrets: Arc<SecretBox>,
    egress: EgressPolicy,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    /// This replica's lease owner id.
    owner: String,
    schedule: RetrySchedule,
    timeout: Duration,
    poll_interval: Duration,
    max_concurrent: usize,
    permits: Arc<Semaphore>,
}

impl Dispatcher {
    /// `store` should be a pool of its own (the background pool), so polling never counts
    /// against requests.
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        egress: EgressPolicy,
        metrics: Arc<Metrics>,
        config: &WebhooksConfig,
    ) -> Result<Arc<Self>, DispatcherError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Environment proxies would connect on our behalf to an address we never checked.
            .no_proxy()
            .dns_resolver(Arc::new(egress_resolver::EgressResolver { egress }))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("gatehouse-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DispatcherError::Http(e.to_string()))?;
        Ok(Arc::new(Self {
            store,
            secrets,
            egress,
            metrics,
            http,
            owner: format!("webhooks-{}", Uuid::new_v4().simple()),
            schedule: RetrySchedule {
                base: config.retry_base,
            },
            timeout: config.timeout,
            poll_interval: config.poll_interval,
            max_concurrent: config.max_concurrent,
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
        }))
    }

    /// Claim and start every due delivery, as many at a time as there are permits.
    async fn dispatch_due(self: &Arc<Self>) {
        let batch = u64::try_from(self.max_concurrent.saturating_mul(2)).unwrap_or(u64::MAX);
        loop {
            let due = match self.store.due_webhook_deliveries(batch).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "could not list due webhook deliveries");
                    return;
                }
            };
            let full = due.len() as u64 == batch;
            let mut started = 0;
            for id in due {
                // All permits busy (slow receivers): the rest waits for the next round, and
                // this loop never blocks on a receiver.
                let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                    return;
                };
                let until = Utc::now()
                    + chrono::Duration::from_std(self.timeout + LEASE_MARGIN)
                        .unwrap_or_else(|_| chrono::Duration::minutes(1));
                match self
                    .store
                    .claim_webhook_delivery(id, &self.owner, until)
                    .await
                {
                    Ok(Some(claimed)) => {
                        started += 1;
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.attempt(claimed).await;
                            drop(permit);
                        });
                    }
                    // Another replica took it, or it is gone.
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "could not claim a webhook delivery"),
                }
            }
            // A full batch may have more behind it; a batch claimed entirely by others ends the
            // round (they are sending them).
            if !full || started == 0 {
                return;
            }
        }
    }

    /// One attempt of a claimed delivery, recorded under the lease.
    async fn attempt(&self, claimed: ClaimedDelivery) {
        let attempt = claimed.attempts + 1;
        let started = Instant::now();
        let outcome = self.send(&claimed).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (next_attempt_at, label) = match &outcome {
            AttemptOutcome::Delivered { .. } => (None, "delivered"),
            _ => match self.schedule.delay_after(attempt) {
                Some(delay) => (
                    Some(
                        Utc::now()
                            + chrono::Duration::from_std(delay)
                                .unwrap_or_else(|_| chrono::Duration::hours(1)),
                    ),
                    "retry",
                ),
                None => (None, "failed"),
            },
        };
        self.metrics
            .webhook_deliveries
            .with_label_values(&[label])
            .inc();
        if label != "delivered" {
            tracing::info!(delivery = %claimed.id, attempt, outcome = ?outcome, "webhook attempt failed");
        }
        let record = AttemptRecord {
            attempt,
            outcome,
            duration_ms,
            next_attempt_at,
        };
        match self
            .store
            .record_webhook_attempt(claimed.id, &self.owner, record)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %claimed.id, "webhook lease lost before the attempt was recorded");
            }
            Err(error) => {
                tracing::warn!(delivery = %claimed.id, %error, "could not record a webhook attempt");
            }
        }
    }

    async fn send(&self, claimed: &ClaimedDelivery) -> AttemptOutcome {
        let failed = |error: &str| AttemptOutcome::Failed {
            error: error.to_owned(),
        };
        let secret = match self.secrets.open(
            &claimed.sealed_secret,
            SecretSlot::webhook_secret(claimed.endpoint_id),
        ) {
            Ok(bytes) => WebhookSecret::from_bytes(bytes),
            Err(_) => return failed("the endpoint's signing secret cannot be opened"),
        };
        let Ok(url) = url::Url::parse(&claimed.url) else {
            return failed("the endpoint's url is invalid");
        };
        // Checked again at delivery: the policy may be stricter than when the URL was stored.
        // Host names are checked on their resolved addresses by `EgressResolver`.
        if let Err(error) = self.egress.check_url(&url) {
            return failed(&format!("url refused by egress policy: {error}"));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && self.egress.check_ip(ip).is_err()
        {
            return failed("address refused by egress policy");
        }
        let message_id = claimed.event_id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = secret.signature(&message_id, timestamp, &claimed.payload);
        let response = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.payload.clone())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => AttemptOutcome::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => AttemptOutcome::Rejected {
                status: response.status().as_u16(),
            },
            Err(error) => failed(&describe(&error, self.timeout)),
        }
    }
}

/// A short, URL-free description of a failed send, with its causes.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut text = if error.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Run the dispatcher until `shutdown`: at once when this replica wrote deliveries (`wake`),
/// else every `poll_interval`; prune finished rows hourly. On shutdown, attempts in flight get
/// up to one timeout to finish and record themselves.
pub fn spawn(
    dispatcher: Arc<Dispatcher>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_prune: Option<Instant> = None;
        loop {
            // First round at once: deliveries left pending by a stopped replica go out now.
            dispatcher.dispatch_due().await;
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                prune(&dispatcher.store).await;
            }
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(dispatcher.poll_interval) => {}
            }
        }
        let all = u32::try_from(dispatcher.max_concurrent).unwrap_or(u32::MAX);
        let _ =
            tokio::time::timeout(dispatcher.timeout, dispatcher.permits.acquire_many(all)).await;
    })
}

async fn prune(store: &Store) {
    let now = Utc::now();
    let before = |keep: Duration| {
        now - chrono::Duration::from_std(keep).unwrap_or_else(|_| chrono::Duration::days(7))
    };
    match store
        .prune_webhook_deliveries(before(KEEP_DELIVERED), before(KEEP_FAILED))
        .await
    {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, "pruned finished webhook deliveries"),
        Err(error) => tracing::warn!(%error, "could not prune webhook deliveries"),
    }
}
