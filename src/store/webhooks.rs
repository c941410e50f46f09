//! Webhook endpoints and the delivery outbox (SPEC §11).
//!
//! The replica that makes a change writes the delivery rows in the same transaction as the
//! change (`enqueue`, called by `store::accounts` and `store::tokens`). Any replica's dispatcher
//! then claims a due row with one conditional UPDATE on (id, pending, due, lease free or
//! expired) — the refresh lease's shape, the same SQL on SQLite and PostgreSQL — sends it, and
//! records the attempt guarded by its lease.

use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use url::Url;
use uuid::Uuid;

use super::entities::webhook_attempts::{self, Entity as Attempts};
use super::entities::webhook_deliveries::{self, Entity as Deliveries};
use super::entities::webhook_endpoints::{self, Entity as Endpoints};
use super::{Store, StoreError, now};
use crate::domain::Timestamp;
use crate::domain::webhooks::{
    AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus, EventType, WebhookEndpoint,
    WebhookEvent,
};

const ENDPOINT: &str = "webhook endpoint";
const DELIVERY: &str = "webhook delivery";
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 500;

/// An endpoint to store; its secret is sealed by the caller (bound to `id`).
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub id: Uuid,
    pub url: Url,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub sealed_secret: Vec<u8>,
}

/// Fields an admin may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointPatch {
    pub url: Option<Url>,
    pub events: Option<Vec<EventType>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// A delivery this replica holds the lease of, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// The JSON body, exactly as signed.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub url: String,
    pub sealed_secret: Vec<u8>,
}

/// The result of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub duration_ms: u64,
    /// When to try again; `None` ends the delivery (delivered, or failed for good).
    pub next_attempt_at: Option<Timestamp>,
}

impl Store {
    pub async fn insert_webhook_endpoint(
        &self,
        new: NewWebhookEndpoint,
    ) -> Result<WebhookEndpoint, StoreError> {
        let at = now();
        let model = webhook_endpoints::ActiveModel {
            id: Set(new.id),
            url: Set(new.url.to_string()),
            events: Set(events_json(&new.events)),
            description: Set(new.description),
            secret: Set(new.sealed_secret),
            enabled: Set(true),
            created_at: Set(at),
            updated_at: Set(at),
        };
        endpoint_from(model.insert(self.conn()).await?)
    }

    pub async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        Endpoints::find()
            .order_by_asc(webhook_endpoints::Column::CreatedAt)
            .order_by_asc(webhook_endpoints::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(endpoint_from)
            .collect()
    }

    pub async fn webhook_endpoint(&self, id: Uuid) -> Result<WebhookEndpoint, StoreError> {
        let model = Endpoints::find_by_id(id).one(self.conn()).await?;
        endpoint_from(model.ok_or(StoreError::not_found(ENDPOINT))?)
    }

    pub async fn update_webhook_endpoint(
        &self,
        id: Uuid,
        patch: WebhookEndpointPatch,
    ) -> Result<WebhookEndpoint, StoreError> {
        let mut update = Endpoints::update_many()
            .col_expr(webhook_endpoints::Column::UpdatedAt, Expr::value(now()))
            .filter(webhook_endpoints::Column::Id.eq(id));
        if let Some(url) = patch.url {
            update = update.col_expr(webhook_endpoints::Column::Url, Expr::value(url.to_string()));
        }
        if let Some(events) = patch.events {
            update = update.col_expr(
                webhook_endpoints::Column::Events,
                Expr::value(events_json(&events)),
            );
        }
        if let Some(description) = patch.description {
            update = update.col_expr(
                webhook_endpoints::Column::Description,
                Expr::value(description),
            );
        }
        if let Some(enabled) = patch.enabled {
            update = update.col_expr(webhook_endpoints::Column::Enabled, Expr::value(enabled));
        }
        if update.exec(self.conn()).await?.rows_affected == 0 {
            return Err(StoreError::not_found(ENDPOINT));
        }
        self.webhook_endpoint(id).await
    }

    /// Delete an endpoint; its deliveries and their attempts go with it (FK cascade).
    pub async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<(), StoreError> {
        let result = Endpoints::delete_by_id(id).exec(self.conn()).await?;
        if result.rows_affected == 0 {
            return Err(StoreError::not_found(ENDPOINT));
        }
        Ok(())
    }

    /// Queue `event` for every enabled endpoint subscribed to its type (for callers whose
    /// change is not a store transaction of its own). Returns how many deliveries were written.
    pub async fn enqueue_webhook_event(&self, event: &WebhookEvent) -> Result<usize, StoreError> {
        let written = enqueue(self.conn(), event, None).await?;
        self.outbox_written(written);
        Ok(written)
    }

    /// Queue `event` for one endpoint, whatever it subscribes to (the test event).
    pub async fn enqueue_webhook_for(
        &self,
        endpoint_id: Uuid,
        event: &WebhookEvent,
    ) -> Result<(), StoreError> {
        if enqueue(self.conn(), event, Some(endpoint_id)).await? == 0 {
            return Err(StoreError::not_found(ENDPOINT));
        }
        self.outbox_written(1);
        Ok(())
    }

    /// Ids of deliveries due now and not leased, oldest due first.
    pub async fn due_webhook_deliveries(&self, limit: u64) -> Result<Vec<Uuid>, StoreError> {
        let at = now();
        Ok(Deliveries::find()
            .select_only()
            .column(webhook_deliveries::Column::Id)
            .filter(webhook_deliveries::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(webhook_deliveries::Column::NextAttemptAt.lte(at))
            .filter(lease_free(at))
            .order_by_asc(webhook_deliveries::Column::NextAttemptAt)
            .limit(limit)
            .into_tuple::<Uuid>()
            .all(self.conn())
            .await?)
    }

    /// Claim a due delivery with one conditional UPDATE; `None` when another replica has it,
    /// it is no longer due, or it is gone.
    pub async fn claim_webhook_delivery(
        &self,
        id: Uuid,
        owner: &str,
        until: Timestamp,
    ) -> Result<Option<ClaimedDelivery>, StoreError> {
        let at = now();
        let claimed = Deliveries::update_many()
            .col_expr(webhook_deliveries::Column::LeaseOwner, Expr::value(owner))
            .col_expr(webhook_deliveries::Column::LeaseUntil, Expr::value(until))
            .filter(webhook_deliveries::Column::Id.eq(id))
            .filter(webhook_deliveries::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(webhook_deliveries::Column::NextAttemptAt.lte(at))
            .filter(lease_free(at))
            .exec(self.conn())
            .await?
            .rows_affected
            == 1;
        if !claimed {
            return Ok(None);
        }
        let Some(delivery) = Deliveries::find_by_id(id).one(self.conn()).await? else {
            return Ok(None);
        };
        let Some(endpoint) = Endpoints::find_by_id(delivery.endpoint_id)
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(ClaimedDelivery {
            id,
            endpoint_id: endpoint.id,
            event_id: delivery.event_id,
            payload: delivery.payload,
            attempts: u32::try_from(delivery.attempts).unwrap_or(0),
            url: endpoint.url,
            sealed_secret: endpoint.secret,
        }))
    }

    /// Record one attempt if `owner` still holds the lease: the delivery's new state and the
    /// attempt row, in one transaction. `false` when the lease was lost (nothing written).
    pub async fn record_webhook_attempt(
        &self,
        id: Uuid,
        owner: &str,
        record: AttemptRecord,
    ) -> Result<bool, StoreError> {
        let at = now();
        let (status, code, error) = match &record.outcome {
            AttemptOutcome::Delivered { status } => {
                (DeliveryStatus::Delivered, Some(*status), None)
            }
            AttemptOutcome::Rejected { status } => (
                pending_or_failed(&record),
                Some(*status),
                Some(format!("receiver answered {status}")),
            ),
            AttemptOutcome::Failed { error } => (
                pending_or_failed(&record),
                None,
                Some(error.chars().take(MAX_ERROR_CHARS).collect::<String>()),
            ),
        };
        let attempt = i32::try_from(record.attempt).unwrap_or(i32::MAX);
        let code = code.map(i32::from);
        let txn = self.begin_write().await?;
        let updated = Deliveries::update_many()
            .col_expr(
                webhook_deliveries::Column::Status,
                Expr::value(status.as_str()),
            )
            .col_expr(webhook_deliveries::Column::Attempts, Expr::value(attempt))
            .col_expr(
                webhook_deliveries::Column::NextAttemptAt,
                Expr::value(record.next_attempt_at.unwrap_or(at)),
            )
            .col_expr(
                webhook_deliveries::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                webhook_deliveries::Column::LeaseUntil,
                Expr::value(Option::<Timestamp>::None),
            )
            .col_expr(
                webhook_deliveries::Column::LastStatusCode,
                Expr::value(code),
            )
            .col_expr(
                webhook_deliveries::Column::LastError,
                Expr::value(error.clone()),
            )
            .col_expr(webhook_deliveries::Column::LastAttemptAt, Expr::value(at))
            .col_expr(webhook_deliveries::Column::UpdatedAt, Expr::value(at))
            .filter(webhook_deliveries::Column::Id.eq(id))
            .filter(webhook_deliveries::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if updated {
            webhook_attempts::ActiveModel {
                id: Set(Uuid::now_v7()),
                delivery_id: Set(id),
                attempt: Set(attempt),
                status_code: Set(code),
                error: Set(error),
                duration_ms: Set(i64::try_from(record.duration_ms).unwrap_or(i64::MAX)),
                attempted_at: Set(at),
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(updated)
    }

    /// The newest `limit` deliveries of an endpoint, each with its attempts (oldest first).
    pub async fn webhook_deliveries(
        &self,
        endpoint_id: Uuid,
        limit: u64,
    ) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
        self.webhook_endpoint(endpoint_id).await?;
        let deliveries = Deliveries::find()
            .filter(webhook_deliveries::Column::EndpointId.eq(endpoint_id))
            .order_by_desc(webhook_deliveries::Column::CreatedAt)
            .order_by_desc(webhook_deliveries::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?;
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
        let attempts = if ids.is_empty() {
            Vec::new()
        } else {
            Attempts::find()
                .filter(webhook_attempts::Column::DeliveryId.is_in(ids))
                .order_by_asc(webhook_attempts::Column::Attempt)
                .all(self.conn())
                .await?
        };
        deliveries
            .into_iter()
            .map(|model| {
                let own = attempts
                    .iter()
                    .filter(|a| a.delivery_id == model.id)
                    .map(attempt_from)
                    .collect();
                Ok((delivery_from(model)?, own))
            })
            .collect()
    }

    /// Delete finished deliveries: delivered ones last attempted before `delivered_before`,
    /// failed ones before `failed_before`. Returns how many rows went.
    pub async fn prune_webhook_deliveries(
        &self,
        delivered_before: Timestamp,
        failed_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let result = Deliveries::delete_many()
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(
                                webhook_deliveries::Column::Status
                                    .eq(DeliveryStatus::Delivered.as_str()),
                            )
                            .add(webhook_deliveries::Column::UpdatedAt.lt(delivered_before)),
                    )
                    .add(
                        Condition::all()
                            .add(
                                webhook_deliveries::Column::Status
                                    .eq(DeliveryStatus::Failed.as_str()),
                            )
                            .add(webhook_deliveries::Column::UpdatedAt.lt(failed_before)),
                    ),
            )
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected)
    }
}

fn pending_or_failed(record: &AttemptRecord) -> DeliveryStatus {
    if record.next_attempt_at.is_some() {
        DeliveryStatus::Pending
    } else {
        DeliveryStatus::Failed
    }
}

fn lease_free(at: Timestamp) -> Condition {
    Condition::any()
        .add(webhook_deliveries::Column::LeaseUntil.is_null())
        .add(webhook_deliveries::Column::LeaseUntil.lt(at))
}

/// Write one delivery row per endpoint that wants `event` (or for `only`, whatever it wants),
/// on `conn` — the caller's transaction, so the event exists exactly when its change does.
/// An endpoint row that cannot be read is skipped with a warning: a broken subscription must
/// not undo the change it would announce.
pub(super) async fn enqueue(
    conn: &impl ConnectionTrait,
    event: &WebhookEvent,
    only: Option<Uuid>,
) -> Result<usize, StoreError> {
    let mut query = Endpoints::find();
    query = match only {
        Some(id) => query.filter(webhook_endpoints::Column::Id.eq(id)),
        None => query.filter(webhook_endpoints::Column::Enabled.eq(true)),
    };
    let endpoints = query.all(conn).await?;
    let body = event.body();
    let at = now();
    let mut written = 0;
    for model in endpoints {
        let endpoint_id = model.id;
        let endpoint = match endpoint_from(model) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::warn!(%endpoint_id, %error, "skipping an unreadable webhook endpoint");
                continue;
            }
        };
        if only.is_none() && !endpoint.wants(event.kind) {
            continue;
        }
        webhook_deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            endpoint_id: Set(endpoint.id),
            event_id: Set(event.id),
            event_type: Set(event.kind.as_str().to_owned()),
            payload: Set(body.clone()),
            status: Set(DeliveryStatus::Pending.as_str().to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(at),
            lease_owner: Set(None),
            lease_until: Set(None),
            last_status_code: Set(None),
            last_error: Set(None),
            last_attempt_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(conn)
        .await?;
        written += 1;
    }
    Ok(written)
}

fn events_json(events: &[EventType]) -> serde_json::Value {
    serde_json::json!(events.iter().map(|e| e.as_str()).collect::<Vec<_>>())
}

fn endpoint_from(model: webhook_endpoints::Model) -> Result<WebhookEndpoint, StoreError> {
    let names: Vec<String> = serde_json::from_value(model.events)
        .map_err(|e| StoreError::corrupt(ENDPOINT, format!("events: {e}")))?;
    let events = names
        .iter()
        .map(|name| {
            EventType::parse_subscribable(name)
                .ok_or_else(|| StoreError::corrupt(ENDPOINT, format!("event {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let url =
        Url::parse(&model.url).map_err(|e| StoreError::corrupt(ENDPOINT, format!("url: {e}")))?;
    Ok(WebhookEndpoint {
        id: model.id,
        url,
        events,
        description: model.description,
        enabled: model.enabled,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn delivery_from(model: webhook_deliveries::Model) -> Result<Delivery, StoreError> {
    let status = DeliveryStatus::parse(&model.status)
        .ok_or_else(|| StoreError::corrupt(DELIVERY, format!("status {:?}", model.status)))?;
    Ok(Delivery {
        id: model.id,
        endpoint_id: model.endpoint_id,
        event_id: model.event_id,
        event_type: model.event_type,
        status,
        attempts: u32::try_from(model.attempts).unwrap_or(0),
        next_attempt_at: model.next_attempt_at,
        last_status_code: model.last_status_code.and_then(|c| u16::try_from(c).ok()),
        last_error: model.last_error,
        last_attempt_at: model.last_attempt_at,
        created_at: model.created_at,
    })
}

fn attempt_from(model: &webhook_attempts::Model) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt: u32::try_from(model.attempt).unwrap_or(0),
        status_code: model.status_code.and_then(|c| u16::try_from(c).ok()),
        error: model.error.clone(),
        duration_ms: u64::try_from(model.duration_ms).unwrap_or(0),
        attempted_at: model.attempted_at,
    }
}
