//! The in-memory view of tokens, targets, permissions and opened default credentials, built
//! in one pass from the store. Rebuilt whole on every change event and periodically.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use uuid::Uuid;

use crate::crypto::SecretBox;
use crate::domain::credential::{Credential, MethodRef};
use crate::domain::guard::{DefaultRules, GuardPolicy, GuardRule};
use crate::domain::ip_allowlist::IpAllowlist;
use crate::domain::targets::Target;
use crate::domain::tokens::TokenHash;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub id: Uuid,
    pub name: String,
    pub allowed_ips: IpAllowlist,
    pub revoked: bool,
    /// Requests per minute (`rate_limit`); `None` = unlimited, which costs nothing per request.
    pub rate_limit: Option<crate::domain::tokens::RateLimit>,
}

/// What to add to an upstream request for a target.
#[derive(Clone, PartialEq, Eq)]
pub enum Injection {
    /// No default auth method: forward without a credential.
    Nothing,
    /// Headers to set (name, value).
    Headers(Vec<(String, String)>),
    /// An already-encoded `name=value` pair for the query string.
    Query(String),
    /// The access token of a connected account, fetched per request from `AccessTokens`.
    Account(AccountRef),
    /// The access token of an `oauth2_refresh_token` auth method, from `AccessTokens`.
    RefreshedToken(MethodRef),
    /// The stored credential could not be opened; requests get 500.
    Broken,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nothing => write!(f, "Nothing"),
            Self::Headers(headers) => write!(
                f,
                "Headers({:?})",
                headers.iter().map(|(n, _)| n).collect::<Vec<_>>()
            ),
            Self::Query(_) => write!(f, "Query(…)"),
            Self::Account(account) => write!(f, "Account({})", account.id),
            Self::RefreshedToken(method) => write!(f, "RefreshedToken({})", method.method_id),
            Self::Broken => write!(f, "Broken"),
        }
    }
}

/// The connected account behind a managed target, as of the last snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    pub id: Uuid,
    pub provider: String,
    pub email: String,
    pub status: crate::domain::accounts::AccountStatus,
}

#[derive(Debug, Clone)]
pub struct TargetEntry {
    pub target: Target,
    pub injection: Injection,
    /// Secret strings that must never come back in a response header.
    pub secrets: Vec<String>,
    /// The upstream `Host` header, built once per snapshot instead of once per request;
    /// `None` if the base URL's host is not a valid header value (the request then fails).
    pub host_header: Option<http::HeaderValue>,
    /// The target's guard rules and its built-ins (SPEC §12), evaluated after step 5.
    pub guard: GuardPolicy,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    tokens: HashMap<TokenHash, Arc<TokenEntry>>,
    targets: HashMap<String, Arc<TargetEntry>>,
    /// (token id, target id) → read_only.
    permissions: HashMap<(Uuid, Uuid), bool>,
    /// Connected accounts by (provider, status), for the `gatehouse_connected_accounts` gauge.
    account_counts: HashMap<(String, &'static str), i64>,
}

impl Snapshot {
    pub fn token(&self, hash: &TokenHash) -> Option<Arc<TokenEntry>> {
        self.tokens.get(hash).cloned()
    }

    pub fn target(&self, slug: &str) -> Option<Arc<TargetEntry>> {
        self.targets.get(slug).cloned()
    }

    pub fn permission(&self, token_id: Uuid, target_id: Uuid) -> Option<bool> {
        self.permissions.get(&(token_id, target_id)).copied()
    }

    /// Publish the number of connected accounts per provider and status.
    pub fn export_account_gauge(&self, gauge: &prometheus::IntGaugeVec) {
        gauge.reset();
        for ((provider, status), count) in &self.account_counts {
            gauge
                .with_label_values(&[provider.as_str(), status])
                .set(*count);
        }
    }

    pub fn targets_of(&self, token_id: Uuid) -> Vec<Arc<TargetEntry>> {
        let mut targets: Vec<Arc<TargetEntry>> = self
            .targets
            .values()
            .filter(|t| t.target.enabled && self.permissions.contains_key(&(token_id, t.target.id)))
            .cloned()
            .collect();
        targets.sort_by(|a, b| a.target.slug.cmp(&b.target.slug));
        targets
    }
}

/// Builds snapshots from the store, opening credentials with the secret box.
#[derive(Clone)]
pub struct SnapshotSource {
    pub store: Store,
    pub secrets: Arc<SecretBox>,
}

impl SnapshotSource {
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let tokens = self.store.list_agent_tokens().await?;
        let targets = self.store.list_targets().await?;
        let credentials = self.store.default_credentials().await?;
        let permissions = self.store.all_permissions().await?;
        let mut rules: HashMap<Uuid, Vec<GuardRule>> = HashMap::new();
        for rule in self.store.all_guard_rules().await? {
            rules.entry(rule.target_id).or_default().push(rule);
        }
        let accounts: HashMap<Uuid, AccountRef> = self
            .store
            .list_connected_accounts()
            .await?
            .into_iter()
            .map(|a| {
                let account = AccountRef {
                    id: a.id,
                    provider: a.provider_type,
                    email: a.email,
                    status: a.status,
                };
                (a.id, account)
            })
            .collect();

        let mut by_target: HashMap<Uuid, (Injection, Vec<String>)> = HashMap::new();
        for sealed in credentials {
            let opened = self
                .secrets
                .open_string(
                    &sealed.sealed,
                    crate::crypto::SecretSlot::auth_method_credential(sealed.method_id),
                )
                .ok()
                .and_then(|text| Credential::from_stored(sealed.kind, &text).ok());
            let method = MethodRef {
                method_id: sealed.method_id,
                target_id: sealed.target_id,
            };
            let entry = match opened {
                Some(credential) => injection_for(&credential, method),
                None => {
                    tracing::error!(target_id = %sealed.target_id, "stored credential cannot be opened");
                    (Injection::Broken, Vec::new())
                }
            };
            by_target.insert(sealed.target_id, entry);
        }

        let mut account_counts = HashMap::new();
        for account in accounts.values() {
            *account_counts
                .entry((account.provider.clone(), account.status.as_str()))
                .or_insert(0) += 1;
        }
        Ok(Snapshot {
            account_counts,
            tokens: tokens
                .into_iter()
                .map(|t| {
                    let entry = TokenEntry {
                        id: t.id,
                        revoked: t.is_revoked(),
                        name: t.name,
                        allowed_ips: t.allowed_ips,
                        rate_limit: t.rate_limit,
                    };
                    (t.hash, Arc::new(entry))
                })
                .collect(),
            targets: targets
                .into_iter()
                .map(|target| {
                    let (injection, secrets) = if let Some(account_id) = target.connected_account_id
                    {
                        match accounts.get(&account_id) {
                            Some(account) => (Injection::Account(account.clone()), Vec::new()),
                            None => (Injection::Broken, Vec::new()),
                        }
                    } else {
                        by_target
                            .remove(&target.id)
                            .unwrap_or((Injection::Nothing, Vec::new()))
                    };
                    let slug = target.slug.as_str().to_owned();
                    let host_header = http::HeaderValue::try_from(target.host_header()).ok();
                    let guard = GuardPolicy {
                        rules: rules.remove(&target.id).unwrap_or_default(),
                        defaults: target
                            .guard_defaults
                            .then(|| DefaultRules::for_target(target.capability)),
                    };
                    (
                        slug,
                        Arc::new(TargetEntry {
                            target,
                            injection,
                            secrets,
                            host_header,
                            guard,
                        }),
                    )
                })
                .collect(),
            permissions: permissions
                .into_iter()
                .map(|p| ((p.token_id, p.target_id), p.read_only))
                .collect(),
        })
    }
}

/// How a credential goes on the wire, and the strings that would reveal it.
fn injection_for(credential: &Credential, method: MethodRef) -> (Injection, Vec<String>) {
    let mut secrets: Vec<String> = credential
        .secret_values()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let injection = match credential {
        Credential::Bearer(token) => Injection::Headers(vec![(
            "authorization".to_owned(),
            format!("Bearer {token}"),
        )]),
        Credential::Basic { user, password } => {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            secrets.push(encoded.clone());
            Injection::Headers(vec![(
                "authorization".to_owned(),
                format!("Basic {encoded}"),
            )])
        }
        Credential::CustomHeaders(headers) => Injection::Headers(
            headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
                .collect(),
        ),
        Credential::QueryParam { name, value } => {
            let pair: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(name, value)
                .finish();
            Injection::Query(pair)
        }
        // The access token comes from `AccessTokens`, per request.
        Credential::OAuth2RefreshToken(_) => Injection::RefreshedToken(method),
    };
    // Short secrets would match unrelated header values; only scrub distinctive ones.
    secrets.retain(|s| s.len() >= 8);
    (injection, secrets)
}
