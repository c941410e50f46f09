//! Cached OAuth access tokens of connected accounts with single-flight refresh.
//!
//! - Fresh (expires more than 60 s from now): served from memory, no database read.
//! - Otherwise one refresh per account at a time in this process (a shared future that every
//!   waiting request joins) and one across replicas (the lease of `store::accounts`: one
//!   conditional UPDATE claims it; losers wait and re-read the row).
//! - A rotated refresh token is written in the same UPDATE as the new access token, before the
//!   access token is handed to anyone.
//! - `invalid_grant`/`interaction_required` → re-read, then `disconnected`; `invalid_client`/
//!   `unauthorized_client` → `error`; anything else is transient: status stays, the error is
//!   recorded, requests get 503 with `Retry-After` and retries back off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use dashmap::DashMap;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use uuid::Uuid;

use crate::change_feed::{ChangeEvent, ChangeFeed};
use crate::crypto::{SecretBox, SecretSlot};
use crate::domain::Timestamp;
use crate::domain::accounts::AccountStatus;
use crate::domain::credential::{Credential, MethodRef};
use crate::domain::stats::Counter;
use crate::metrics::Metrics;
use crate::oauth::client::{OAuthClient, OAuthError};
use crate::oauth::providers::Providers;
use crate::store::Store;
use crate::store::accounts::{AccountTokens, FreshTokens};

/// A token this close to expiry is refreshed before use.
pub const REQUEST_MIN_VALIDITY: Duration = Duration::from_secs(60);
/// The background task refreshes tokens expiring within this window.
pub const BACKGROUND_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Accounts not refreshed for this long are refreshed anyway (Microsoft refresh tokens die
/// after 90 days unused).
pub const MAX_REFRESH_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often the background refresher looks for accounts due.
pub const BACKGROUND_INTERVAL: Duration = Duration::from_secs(30);
/// How long a claimed lease lasts; a crashed holder's lease expires after this.
const LEASE: Duration = Duration::from_secs(30);
/// How long a request waits for another replica's refresh before giving up (503).
const WAIT_FOR_OTHER_REPLICA: Duration = Duration::from_secs(15);
/// Used when the provider does not say how long a token lives.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Who an access token belongs to, for 503 bodies and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub provider: String,
    pub email: String,
    pub status: AccountStatus,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The account is `disconnected` or `error`: a human must act; no provider call is made.
    #[error("account {} is {}: {message}", account.email, account.status.as_str())]
    Unavailable {
        account: AccountInfo,
        message: String,
    },
    /// The refresh failed for a reason that may pass; try again after `retry_after`.
    #[error("refreshing the access token of {} failed; retry later", account.email)]
    Transient {
        account: AccountInfo,
        retry_after: Duration,
    },
    #[error("connected account not found")]
    NotFound,
    /// An `oauth2_refresh_token` auth method's grant is dead or its client is rejected.
    #[error("the target's OAuth credential was refused: {0}")]
    CredentialRefused(String),
    /// An `oauth2_refresh_token` auth method could not be refreshed right now.
    #[error("refreshing the target's OAuth credential failed; retry later")]
    CredentialTransient { retry_after: Duration },
    #[error("access token store failed: {0}")]
    Internal(String),
}

#[derive(Clone)]
struct CachedToken {
    access_token: Arc<str>,
    expires_at: Timestamp,
}

type Flight = Shared<BoxFuture<'static, Result<CachedToken, TokenError>>>;

pub struct AccessTokens {
    store: Store,
    secrets: Arc<SecretBox>,
    providers: Arc<Providers>,
    oauth: OAuthClient,
    metrics: Arc<Metrics>,
    /// This replica's lease owner id.
    owner: String,
    cache: DashMap<Uuid, CachedToken>,
    flights: DashMap<Uuid, Flight>,
    /// Accounts a human must fix; answered at once without reading the database.
    unavailable: DashMap<Uuid, (AccountInfo, String)>,
    /// Transient failures: (consecutive failures, no new attempt before).
    backoff: DashMap<Uuid, (u32, Instant)>,
    /// Status changes are published so snapshots and other replicas follow.
    changes: ChangeFeed,
    /// Access tokens of `oauth2_refresh_token` auth methods, by method id.
    method_cache: DashMap<Uuid, CachedToken>,
    method_flights: DashMap<Uuid, Flight>,
    method_backoff: DashMap<Uuid, (u32, Instant)>,
    /// How long transient failures must last before `account.refresh_failing` is sent
    /// (`webhooks.refresh_failing_after`).
    refresh_failing_after: Duration,
}

fn account_info(tokens: &AccountTokens) -> AccountInfo {
    AccountInfo {
        provider: tokens.account.provider_type.clone(),
        email: tokens.account.email.clone(),
        status: tokens.account.status,
    }
}

fn backoff_for(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

impl AccessTokens {
    /// Count a refresh outcome in the metric and, for the dashboard, in the shared database —
    /// in the background: a refresh answer is never held up by the count.
    fn count_refresh(&self, provider: &str, outcome: &'static str) {
        self.metrics
            .token_refresh
            .with_label_values(&[provider, outcome])
            .inc();
        let store = self.store.clone();
        let label = format!("{provider}:{outcome}");
        tokio::spawn(async move {
            if let Err(error) = store.count(Counter::TokenRefresh, &label, 1).await {
                tracing::warn!(%error, "refresh outcome not counted for the dashboard");
            }
        });
    }

    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        providers: Arc<Providers>,
        oauth: OAuthClient,
        metrics: Arc<Metrics>,
        changes: ChangeFeed,
        refresh_failing_after: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            refresh_failing_after,
            changes,
            store,
            secrets,
            providers,
            oauth,
            metrics,
            owner: format!("replica-{}", Uuid::new_v4().simple()),
            cache: DashMap::new(),
            flights: DashMap::new(),
            unavailable: DashMap::new(),
            backoff: DashMap::new(),
            method_cache: DashMap::new(),
            method_flights: DashMap::new(),
            method_backoff: DashMap::new(),
        })
    }

    /// Forget what is known of an account (after reconnect, disconnect or a status change).
    pub fn forget(&self, account_id: Uuid) {
        self.cache.remove(&account_id);
        self.unavailable.remove(&account_id);
        self.backoff.remove(&account_id);
    }

    /// Forget every account (another replica changed something; re-read on next use).
    pub fn forget_all(&self) {
        self.cache.clear();
        self.unavailable.clear();
        self.backoff.clear();
    }

    /// An access token valid for at least `REQUEST_MIN_VALIDITY`.
    pub async fn access_token(self: &Arc<Self>, account_id: Uuid) -> Result<Arc<str>, TokenError> {
        if let Some(entry) = self.unavailable.get(&account_id) {
            let (account, message) = entry.value().clone();
            return Err(TokenError::Unavailable { account, message });
        }
        if let Some(cached) = self.cache.get(&account_id)
            && cached.expires_at > Utc::now() + REQUEST_MIN_VALIDITY
        {
            self.metrics.token_cache.with_label_values(&["hit"]).inc();
            return Ok(cached.access_token.clone());
        }
        self.metrics.token_cache.with_label_values(&["miss"]).inc();
        self.join_flight(account_id, REQUEST_MIN_VALIDITY)
            .await
            .map(|t| t.access_token)
    }

    /// Refresh ahead of time when the token expires within `min_validity` (background task).
    pub async fn ensure_fresh(
        self: &Arc<Self>,
        account_id: Uuid,
        min_validity: Duration,
    ) -> Result<(), TokenError> {
        self.join_flight(account_id, min_validity).await.map(|_| ())
    }

    async fn join_flight(
        self: &Arc<Self>,
        account_id: Uuid,
        min_validity: Duration,
    ) -> Result<CachedToken, TokenError> {
        let flight = match self.flights.entry(account_id) {
            dashmap::Entry::Occupied(existing) => {
                self.metrics.token_refresh_waiters.inc();
                existing.get().clone()
            }
            dashmap::Entry::Vacant(slot) => {
                let this = self.clone();
                let flight = async move {
                    let result = this.refresh_flow(account_id, min_validity).await;
                    this.flights.remove(&account_id);
                    result
                }
                .boxed()
                .shared();
                slot.insert(flight.clone());
                flight
            }
        };
        flight.await
    }

    async fn refresh_flow(
        &self,
        account_id: Uuid,
        min_validity: Duration,
    ) -> Result<CachedToken, TokenError> {
        let waited_since = Instant::now();
        loop {
            let row = match self.store.account_tokens(account_id).await {
                Ok(row) => row,
                Err(crate::store::StoreError::NotFound { .. }) => return Err(TokenError::NotFound),
                Err(error) => return Err(TokenError::Internal(error.to_string())),
            };
            let account = account_info(&row);
            if row.account.status != AccountStatus::Connected {
                let message = row.account.status_message.clone().unwrap_or_default();
                self.unavailable
                    .insert(account_id, (account.clone(), message.clone()));
                return Err(TokenError::Unavailable { account, message });
            }
            // Fresh enough already (another replica may just have refreshed it)?
            if let (Some(expires_at), Some(sealed)) =
                (row.account.token_expires_at, &row.sealed_access_token)
                && expires_at > Utc::now() + min_validity
            {
                return self.cache_opened(account_id, sealed, expires_at);
            }
            if let Some((failures, not_before)) = self.backoff.get(&account_id).map(|e| *e.value())
                && Instant::now() < not_before
            {
                let _ = failures;
                return Err(TokenError::Transient {
                    account,
                    retry_after: not_before
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1)),
                });
            }
            let version = row.account.token_version;
            let until = Utc::now() + LEASE;
            let claimed = self
                .store
                .claim_refresh_lease(account_id, version, &self.owner, until)
                .await
                .map_err(|e| TokenError::Internal(e.to_string()))?;
            if !claimed {
                // Another replica holds the lease (or just bumped the version): wait, re-read.
                if waited_since.elapsed() > WAIT_FOR_OTHER_REPLICA {
                    return Err(TokenError::Transient {
                        account,
                        retry_after: Duration::from_secs(1),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match self.refresh_with_lease(account_id, &row, version).await? {
                Some(token) => return Ok(token),
                // Lost the lease while refreshing (it expired): read again.
                None => continue,
            }
        }
    }

    /// Holding the lease on `version`: call the provider and record the outcome.
    async fn refresh_with_lease(
        &self,
        account_id: Uuid,
        row: &AccountTokens,
        version: i64,
    ) -> Result<Option<CachedToken>, TokenError> {
        let account = account_info(row);
        let outcome = self.call_provider(account_id, row).await;
        let provider_label = account.provider.clone();
        match outcome {
            Ok(set) => {
                let expires_at = Utc::now()
                    + chrono::Duration::from_std(set.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME))
                        .unwrap_or_else(|_| chrono::Duration::hours(1));
                let sealed_access = self.secrets.seal_str(
                    &set.access_token,
                    SecretSlot::account_access_token(account_id),
                );
                let sealed_refresh = set.refresh_token.as_deref().map(|rt| {
                    self.secrets
                        .seal_str(rt, SecretSlot::account_refresh_token(account_id))
                });
                let saved = self
                    .store
                    .save_refreshed_tokens(
                        account_id,
                        &self.owner,
                        version,
                        FreshTokens {
                            sealed_access_token: sealed_access,
                            sealed_refresh_token: sealed_refresh,
                            token_expires_at: Some(expires_at),
                        },
                    )
                    .await
                    .map_err(|e| TokenError::Internal(e.to_string()))?;
                if !saved {
                    tracing::warn!(%account_id, "refresh lease lost before saving; the new tokens are discarded");
                    return Ok(None);
                }
                self.count_refresh(provider_label.as_str(), "success");
                self.backoff.remove(&account_id);
                let token = CachedToken {
                    access_token: Arc::from(set.access_token.as_str()),
                    expires_at,
                };
                self.cache.insert(account_id, token.clone());
                Ok(Some(token))
            }
            Err(error) => {
                // A dead grant needs re-consent and a rejected app needs fixing: both need a
                // human. Anything else is transient.
                let human = match &error {
                    OAuthError::DeadGrant { code, message } => {
                        Some((AccountStatus::Disconnected, format!("{code}: {message}")))
                    }
                    OAuthError::Misconfigured { code, message } => {
                        Some((AccountStatus::Error, format!("{code}: {message}")))
                    }
                    _ => None,
                };
                let outcome = if human.is_some() {
                    "invalid_grant"
                } else {
                    "transient"
                };
                self.count_refresh(provider_label.as_str(), outcome);
                let text = human
                    .as_ref()
                    .map_or_else(|| error.to_string(), |(_, text)| text.clone());
                self.fail(account_id, version, human, &text, account).await
            }
        }
    }

    async fn call_provider(
        &self,
        account_id: Uuid,
        row: &AccountTokens,
    ) -> Result<crate::oauth::client::TokenSet, OAuthError> {
        let provider = self
            .providers
            .get(&row.account.provider_type)
            .ok_or_else(|| OAuthError::Misconfigured {
                code: "unknown_provider".to_owned(),
                message: row.account.provider_type.clone(),
            })?;
        let credentials = provider
            .client
            .as_ref()
            .ok_or_else(|| OAuthError::Misconfigured {
                code: "not_configured".to_owned(),
                message: format!("set {}", provider.env_vars().join(" and ")),
            })?;
        let refresh_token = match &row.sealed_refresh_token {
            Some(sealed) => self
                .secrets
                .open_string(sealed, SecretSlot::account_refresh_token(account_id))
                .map_err(|_| {
                    OAuthError::Transient("stored refresh token cannot be opened".to_owned())
                })?,
            None => {
                return Err(OAuthError::DeadGrant {
                    code: "no_refresh_token".to_owned(),
                    message: "the provider issued no refresh token".to_owned(),
                });
            }
        };
        self.oauth
            .refresh(credentials, &provider.token_url, &refresh_token, None)
            .await
    }

    /// Record a failed refresh and answer the waiting requests.
    async fn fail(
        &self,
        account_id: Uuid,
        version: i64,
        status: Option<(AccountStatus, String)>,
        error: &str,
        mut account: AccountInfo,
    ) -> Result<Option<CachedToken>, TokenError> {
        // A dead grant may only look dead because another replica rotated the token under an
        // expired lease of ours: if the version moved, start over with the new row.
        if status.is_some()
            && let Ok(again) = self.store.account_tokens(account_id).await
            && again.account.token_version != version
        {
            return Ok(None);
        }
        let recorded = self
            .store
            .record_refresh_failure(
                account_id,
                &self.owner,
                version,
                status.clone(),
                error,
                self.refresh_failing_after,
            )
            .await
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        if !recorded {
            return Ok(None);
        }
        match status {
            Some((status, message)) => {
                account.status = status;
                tracing::warn!(%account_id, status = status.as_str(), "connected account needs an admin");
                self.cache.remove(&account_id);
                self.unavailable
                    .insert(account_id, (account.clone(), message.clone()));
                self.changes.publish(ChangeEvent::Account(account_id));
                Err(TokenError::Unavailable { account, message })
            }
            None => {
                let failures = self.backoff.get(&account_id).map_or(0, |e| e.value().0) + 1;
                let retry_after = backoff_for(failures);
                self.backoff
                    .insert(account_id, (failures, Instant::now() + retry_after));
                tracing::warn!(%account_id, failures, "access token refresh failed; will retry");
                Err(TokenError::Transient {
                    account,
                    retry_after,
                })
            }
        }
    }

    fn cache_opened(
        &self,
        account_id: Uuid,
        sealed: &[u8],
        expires_at: Timestamp,
    ) -> Result<CachedToken, TokenError> {
        let access_token = self
            .secrets
            .open_string(sealed, SecretSlot::account_access_token(account_id))
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        let token = CachedToken {
            access_token: Arc::from(access_token.as_str()),
            expires_at,
        };
        self.cache.insert(account_id, token.clone());
        Ok(token)
    }

    /// The access token of an `oauth2_refresh_token` auth method: cached, refreshed once at a
    /// time per method in this process; a rotated refresh token is written back (compare and
    /// swap on the row's `updated_at`) before the access token is used. These rows have no
    /// lease columns, so two replicas may each refresh once when a token expires.
    pub async fn method_token(
        self: &Arc<Self>,
        method: &MethodRef,
    ) -> Result<Arc<str>, TokenError> {
        if let Some(cached) = self.method_cache.get(&method.method_id)
            && cached.expires_at > Utc::now() + REQUEST_MIN_VALIDITY
        {
            self.metrics.token_cache.with_label_values(&["hit"]).inc();
            return Ok(cached.access_token.clone());
        }
        self.metrics.token_cache.with_label_values(&["miss"]).inc();
        let flight = match self.method_flights.entry(method.method_id) {
            dashmap::Entry::Occupied(existing) => {
                self.metrics.token_refresh_waiters.inc();
                existing.get().clone()
            }
            dashmap::Entry::Vacant(slot) => {
                let this = self.clone();
                let method = method.clone();
                let flight = async move {
                    let result = this.refresh_method(&method).await;
                    this.method_flights.remove(&method.method_id);
                    result
                }
                .boxed()
                .shared();
                slot.insert(flight.clone());
                flight
            }
        };
        flight.await.map(|t| t.access_token)
    }

    async fn refresh_method(&self, method: &MethodRef) -> Result<CachedToken, TokenError> {
        if let Some((_, not_before)) = self
            .method_backoff
            .get(&method.method_id)
            .map(|e| *e.value())
            && Instant::now() < not_before
        {
            return Err(TokenError::CredentialTransient {
                retry_after: not_before
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            });
        }
        let internal = |e: crate::store::StoreError| TokenError::Internal(e.to_string());
        let (sealed, version) = self
            .store
            .sealed_credential(method.method_id)
            .await
            .map_err(internal)?;
        let slot = SecretSlot::auth_method_credential(method.method_id);
        let text = self
            .secrets
            .open_string(&sealed.sealed, slot)
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        let Ok(Credential::OAuth2RefreshToken(mut config)) =
            Credential::from_stored(sealed.kind, &text)
        else {
            return Err(TokenError::Internal(
                "auth method is not an oauth2_refresh_token".to_owned(),
            ));
        };
        let client = crate::config::OAuthClientCredentials {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        };
        let label = "oauth2_refresh_token";
        match self
            .oauth
            .refresh(
                &client,
                &config.token_url,
                &config.refresh_token,
                config.scope.as_deref(),
            )
            .await
        {
            Ok(set) => {
                if let Some(rotated) = set.refresh_token.filter(|rt| *rt != config.refresh_token) {
                    config.refresh_token = rotated;
                    let credential = Credential::OAuth2RefreshToken(config);
                    let sealed_new = self.secrets.seal_str(&credential.to_stored(), slot);
                    let written = self
                        .store
                        .swap_credential(method.method_id, version, sealed_new, credential.hint())
                        .await
                        .map_err(internal)?;
                    if !written {
                        return Err(TokenError::CredentialTransient {
                            retry_after: Duration::from_secs(1),
                        });
                    }
                    self.changes.publish(ChangeEvent::Target(method.target_id));
                }
                self.count_refresh(label, "success");
                self.method_backoff.remove(&method.method_id);
                let expires_at = Utc::now()
                    + chrono::Duration::from_std(set.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME))
                        .unwrap_or_else(|_| chrono::Duration::hours(1));
                let token = CachedToken {
                    access_token: Arc::from(set.access_token.as_str()),
                    expires_at,
                };
                self.method_cache.insert(method.method_id, token.clone());
                Ok(token)
            }
            Err(
                OAuthError::DeadGrant { code, message }
                | OAuthError::Misconfigured { code, message },
            ) => {
                self.count_refresh(label, "invalid_grant");
                Err(TokenError::CredentialRefused(format!("{code}: {message}")))
            }
            Err(_) => {
                self.count_refresh(label, "transient");
                let failures = self
                    .method_backoff
                    .get(&method.method_id)
                    .map_or(0, |e| e.value().0)
                    + 1;
                let retry_after = backoff_for(failures);
                self.method_backoff
                    .insert(method.method_id, (failures, Instant::now() + retry_after));
                Err(TokenError::CredentialTransient { retry_after })
            }
        }
    }

    /// One pass of the background refresher: accounts expiring soon or not refreshed for a day.
    /// `scan` is the store to list due accounts from (the app passes its background pool).
    pub async fn refresh_due(self: &Arc<Self>, scan: &Store) {
        let now = Utc::now();
        let due = scan
            .accounts_due_for_refresh(
                now + BACKGROUND_WINDOW,
                now - chrono::Duration::from_std(MAX_REFRESH_AGE)
                    .unwrap_or_else(|_| chrono::Duration::days(1)),
            )
            .await;
        match due {
            Ok(due) => {
                for (id, expires_at) in due {
                    // Due only for its age (token still valid beyond the window): force the
                    // refresh by asking for more validity than any token has.
                    let window = if expires_at.is_some_and(|e| e > now + BACKGROUND_WINDOW) {
                        Duration::from_secs(365 * 24 * 3600)
                    } else {
                        BACKGROUND_WINDOW
                    };
                    if let Err(error) = self.ensure_fresh(id, window).await {
                        tracing::debug!(%id, %error, "background refresh did not succeed");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list accounts due for refresh"),
        }
    }
}

/// Run `refresh_due` every `every` until shutdown.
pub fn spawn_refresher(
    tokens: Arc<AccessTokens>,
    scan: Store,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                // The watch guard must not live across the refresh's awaits.
                _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
                _ = tick.tick() => tokens.refresh_due(&scan).await,
            }
        }
    })
}
