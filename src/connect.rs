//! The connect flow of SPEC §6: `start` (state, PKCE verifier, browser binding) and `finish`
//! (verify, exchange, profile, then insert the account with its managed targets — or
//! reconnect it in place).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use url::Url;
use uuid::Uuid;

use crate::change_feed::{ChangeEvent, ChangeFeed};
use crate::credentials::access_tokens::AccessTokens;
use crate::crypto::{SecretBox, SecretSlot};
use crate::domain::accounts::{ConnectedAccount, FlowOrigin};
use crate::domain::targets::{Capability, TargetSlug};
use crate::oauth::client::{OAuthClient, OAuthError};
use crate::oauth::providers::{Provider, Providers};
use crate::store::accounts::{FreshTokens, NewConnectedAccount};
use crate::store::oauth::OAuthState;
use crate::store::targets::NewTarget;
use crate::store::{Store, StoreError};

/// How long a started flow (and a connect link) stays usable.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Name of the cookie that binds a flow to the browser that started it.
pub const BINDING_COOKIE: &str = "gatehouse_oauth";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unknown provider")]
    UnknownProvider,
    #[error("provider is not configured: set {0}")]
    NotConfigured(&'static str),
    /// Missing, forged, expired, replayed state, or a cookie that does not match.
    #[error("invalid or expired state")]
    InvalidState,
    #[error("the provider refused: {0}")]
    Provider(OAuthError),
    #[error("the account's profile has no email address")]
    NoEmail,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored flow cannot be opened")]
    Crypto,
}

impl ConnectError {
    /// The short code put in `?error=` of the redirect to the UI.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::NotConfigured(_) => "provider_not_configured",
            Self::InvalidState => "invalid_state",
            Self::Provider(OAuthError::DeadGrant { .. }) => "invalid_grant",
            Self::Provider(_) => "provider_error",
            Self::NoEmail => "no_email",
            Self::Store(_) | Self::Crypto => "internal_error",
        }
    }
}

/// The end of a flow: who started it (`None` for an unknown or forged state) and its outcome.
pub struct Finished {
    pub origin: Option<FlowOrigin>,
    pub result: Result<ConnectedAccount, ConnectError>,
}

/// What `start` gives the HTTP layer: where to send the browser and the cookie to set.
pub struct Started {
    pub authorize_url: Url,
    /// `nonce.signature`; its hash is stored with the state.
    pub cookie_value: String,
}

#[derive(Clone)]
pub struct ConnectFlow {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
    pub providers: Arc<Providers>,
    pub oauth: OAuthClient,
    pub access_tokens: Arc<AccessTokens>,
    pub changes: ChangeFeed,
    /// `{admin.public_url}/oauth/callback`, never derived from a request.
    pub redirect_uri: Url,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn verifier_slot(state_id: Uuid) -> SecretSlot {
    SecretSlot {
        table: "oauth_states",
        column: "code_verifier",
        row_id: state_id,
    }
}

impl ConnectFlow {
    pub fn provider(&self, kind: &str) -> Result<&Provider, ConnectError> {
        let provider = self
            .providers
            .get(kind)
            .ok_or(ConnectError::UnknownProvider)?;
        if !provider.is_configured() {
            return Err(ConnectError::NotConfigured(provider.env_vars()[0]));
        }
        Ok(provider)
    }

    pub async fn start(&self, kind: &str, origin: FlowOrigin) -> Result<Started, ConnectError> {
        let provider = self.provider(kind)?;
        let request = self
            .oauth
            .authorization_request(provider, &self.redirect_uri)
            .map_err(ConnectError::Provider)?;
        let mut nonce = [0u8; 32];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        let id = Uuid::new_v4();
        self.store
            .insert_oauth_state(OAuthState {
                id,
                state_hash: sha256_hex(&request.state),
                provider_type: provider.kind.to_owned(),
                sealed_verifier: self
                    .secrets
                    .seal_str(&request.pkce_verifier, verifier_slot(id)),
                browser_binding: sha256_hex(&nonce),
                origin,
                expires_at: chrono::Utc::now() + FLOW_LIFETIME,
            })
            .await?;
        let signature = self.secrets.sign(nonce.as_bytes());
        Ok(Started {
            authorize_url: request.url,
            cookie_value: format!("{nonce}.{signature}"),
        })
    }

    /// Verify the state (single use) and the browser's cookie, then exchange and store. The
    /// flow's origin is known once the state was found, whatever happens next.
    pub async fn finish(&self, state: &str, code: &str, cookie: Option<&str>) -> Finished {
        let flow = match self.take_state(state, cookie).await {
            Ok(flow) => flow,
            Err(error) => {
                return Finished {
                    origin: None,
                    result: Err(error),
                };
            }
        };
        Finished {
            origin: Some(flow.origin),
            result: self.complete(flow, code).await,
        }
    }

    async fn complete(
        &self,
        flow: OAuthState,
        code: &str,
    ) -> Result<ConnectedAccount, ConnectError> {
        let provider = self.provider(&flow.provider_type)?;
        let verifier = self
            .secrets
            .open_string(&flow.sealed_verifier, verifier_slot(flow.id))
            .map_err(|_| ConnectError::Crypto)?;
        let tokens = self
            .oauth
            .exchange_code(provider, &self.redirect_uri, code, &verifier)
            .await
            .map_err(ConnectError::Provider)?;
        let profile = match self.oauth.profile(provider, &tokens.access_token).await {
            Ok(profile) => profile,
            Err(OAuthError::Unusable(_)) => return Err(ConnectError::NoEmail),
            Err(error) => return Err(ConnectError::Provider(error)),
        };
        let expires_at = tokens
            .expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| chrono::Utc::now() + d);
        let scopes = tokens
            .scopes
            .clone()
            .unwrap_or_else(|| provider.scopes.join(" "));
        let existing = self
            .store
            .connected_account_by_email(provider.kind, &profile.email)
            .await?;
        let account = match existing {
            Some(account) => {
                let fresh = FreshTokens {
                    sealed_access_token: self.secrets.seal_str(
                        &tokens.access_token,
                        SecretSlot::account_access_token(account.id),
                    ),
                    sealed_refresh_token: tokens.refresh_token.as_deref().map(|rt| {
                        self.secrets
                            .seal_str(rt, SecretSlot::account_refresh_token(account.id))
                    }),
                    token_expires_at: expires_at,
                };
                self.store
                    .reconnect_account(account.id, profile.display_name.clone(), &scopes, fresh)
                    .await?
            }
            None => {
                let id = Uuid::new_v4();
                let targets = provider
                    .capabilities()
                    .iter()
                    .map(|capability| managed_target(provider, &profile.email, *capability, id))
                    .collect();
                let new = NewConnectedAccount {
                    id,
                    provider_type: provider.kind.to_owned(),
                    email: profile.email.clone(),
                    display_name: profile.display_name.clone(),
                    sealed_access_token: self
                        .secrets
                        .seal_str(&tokens.access_token, SecretSlot::account_access_token(id)),
                    sealed_refresh_token: tokens.refresh_token.as_deref().map(|rt| {
                        self.secrets
                            .seal_str(rt, SecretSlot::account_refresh_token(id))
                    }),
                    token_expires_at: expires_at,
                    scopes,
                };
                self.store
                    .insert_account_with_targets(new, targets)
                    .await?
                    .0
            }
        };
        self.access_tokens.forget(account.id);
        self.changes
            .publish_and_wait(ChangeEvent::Account(account.id))
            .await;
        Ok(account)
    }

    async fn take_state(
        &self,
        state: &str,
        cookie: Option<&str>,
    ) -> Result<OAuthState, ConnectError> {
        if state.is_empty() {
            return Err(ConnectError::InvalidState);
        }
        // Taking the state consumes it even when the cookie then fails: a leaked state is dead.
        let flow = self
            .store
            .take_oauth_state(&sha256_hex(state))
            .await?
            .ok_or(ConnectError::InvalidState)?;
        let (nonce, signature) = cookie
            .and_then(|c| c.split_once('.'))
            .ok_or(ConnectError::InvalidState)?;
        if !self.secrets.verify(nonce.as_bytes(), signature)
            || sha256_hex(nonce) != flow.browser_binding
        {
            return Err(ConnectError::InvalidState);
        }
        Ok(flow)
    }
}

fn managed_target(
    provider: &Provider,
    email: &str,
    capability: Capability,
    account_id: Uuid,
) -> NewTarget {
    let label = match capability {
        Capability::Mail => "Mail",
        Capability::Calendar => "Calendar",
    };
    NewTarget {
        name: format!("{email} — {label}"),
        slug: TargetSlug::managed(email, capability, account_id),
        base_url: provider.base_url(capability).clone(),
        enabled: true,
        connected_account_id: Some(account_id),
        capability: Some(capability),
    }
}

/// A connect link's secret part: 256 random bits, base64url.
fn new_link_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A connected account with the targets it manages.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: ConnectedAccount,
    pub provider_name: String,
    pub targets: Vec<crate::domain::targets::Target>,
}

impl ConnectFlow {
    /// A one-time link (10 minutes) that starts the flow for `kind` in any browser.
    pub async fn create_connect_link(
        &self,
        kind: &str,
        public_url: &Url,
    ) -> Result<(Url, crate::domain::Timestamp), ConnectError> {
        let provider = self.provider(kind)?;
        let token = new_link_token();
        let expires_at = chrono::Utc::now() + FLOW_LIFETIME;
        self.store
            .insert_connect_link(&sha256_hex(&token), provider.kind, expires_at)
            .await?;
        let mut url = public_url
            .join("oauth/authorize")
            .map_err(|_| ConnectError::UnknownProvider)?;
        url.query_pairs_mut().append_pair("link", &token);
        Ok((url, expires_at))
    }

    /// Use a connect link (once) and return its provider.
    pub async fn redeem_connect_link(&self, token: &str) -> Result<String, ConnectError> {
        self.store
            .use_connect_link(&sha256_hex(token))
            .await?
            .ok_or(ConnectError::InvalidState)
    }

    /// Consume the state of a flow the provider ended with an error; nothing is stored.
    /// The provider ended the flow with an error: consume the state (nothing is stored) and
    /// say who started it, if it was ours.
    pub async fn abandon(&self, state: &str) -> Option<FlowOrigin> {
        if state.is_empty() {
            return None;
        }
        match self.store.take_oauth_state(&sha256_hex(state)).await {
            Ok(flow) => flow.map(|flow| flow.origin),
            Err(_) => None,
        }
    }

    pub async fn accounts(&self) -> Result<Vec<AccountView>, StoreError> {
        let mut views = Vec::new();
        for account in self.store.list_connected_accounts().await? {
            views.push(self.view(account).await?);
        }
        Ok(views)
    }

    pub async fn account(&self, id: Uuid) -> Result<AccountView, StoreError> {
        let account = self.store.connected_account(id).await?;
        self.view(account).await
    }

    async fn view(&self, account: ConnectedAccount) -> Result<AccountView, StoreError> {
        let targets = self.store.targets_of_account(account.id).await?;
        let provider_name = self
            .providers
            .get(&account.provider_type)
            .map_or_else(|| account.provider_type.clone(), |p| p.name.to_owned());
        Ok(AccountView {
            account,
            provider_name,
            targets,
        })
    }

    /// Delete the account (its managed targets and their permissions cascade) after a
    /// best-effort revocation of the grant at the provider.
    pub async fn disconnect(&self, id: Uuid) -> Result<(), StoreError> {
        let tokens = self.store.account_tokens(id).await?;
        if let (Some(provider), Some(sealed)) = (
            self.providers.get(&tokens.account.provider_type),
            &tokens.sealed_refresh_token,
        ) && let Ok(refresh_token) = self
            .secrets
            .open_string(sealed, SecretSlot::account_refresh_token(id))
        {
            self.oauth.revoke(provider, &refresh_token).await;
        }
        let targets = self.store.targets_of_account(id).await?;
        self.store.delete_connected_account(id).await?;
        self.access_tokens.forget(id);
        for target in targets {
            self.changes.publish(ChangeEvent::Target(target.id));
        }
        // One wait covers the events above: the reload that applies this one sees them all.
        self.changes
            .publish_and_wait(ChangeEvent::Account(id))
            .await;
        Ok(())
    }

    /// The ids of an existing account's managed targets (`NotFound` for an unknown account).
    async fn managed_target_ids(&self, id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        self.store.connected_account(id).await?;
        Ok(self
            .store
            .targets_of_account(id)
            .await?
            .iter()
            .map(|t| t.id)
            .collect())
    }

    /// Grant `token_id` every managed target of the account (idempotent).
    pub async fn grant_access(
        &self,
        id: Uuid,
        token_id: Uuid,
        read_only: bool,
    ) -> Result<usize, StoreError> {
        let targets = self.managed_target_ids(id).await?;
        self.store.agent_token(token_id).await?;
        self.store
            .upsert_permissions(token_id, &targets, read_only)
            .await?;
        self.changes
            .publish_and_wait(ChangeEvent::Permissions { token_id })
            .await;
        Ok(targets.len())
    }

    /// Remove `token_id`'s permissions on the account's managed targets.
    pub async fn revoke_access(&self, id: Uuid, token_id: Uuid) -> Result<u64, StoreError> {
        let targets = self.managed_target_ids(id).await?;
        let removed = self.store.delete_permissions(token_id, &targets).await?;
        self.changes
            .publish_and_wait(ChangeEvent::Permissions { token_id })
            .await;
        Ok(removed)
    }
}
