//! The token client: authorization URLs with PKCE, code exchange, refresh, profile and
//! revocation, on the `oauth2` crate over a reqwest client that never follows redirects.
//! Token-endpoint errors are classified on the OAuth `error` field (SPEC §7).

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    TokenResponse as _, TokenUrl,
};
use url::Url;

use super::providers::Provider;
use crate::config::OAuthClientCredentials;

/// Longest wait for any provider call.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// How a failed token request is to be treated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_grant` / `interaction_required`: the grant is dead, a human must re-consent.
    #[error("grant is no longer valid ({code}): {message}")]
    DeadGrant { code: String, message: String },
    /// `invalid_client` / `unauthorized_client`: the app registration is wrong.
    #[error("the provider rejected the app ({code}): {message}")]
    Misconfigured { code: String, message: String },
    /// Network error, timeout, 5xx, 429, a non-JSON body, `temporarily_unavailable`…
    #[error("provider temporarily unavailable: {0}")]
    Transient(String),
    /// The provider answered, but without what we need (e.g. no email in the profile).
    #[error("{0}")]
    Unusable(String),
    #[error("provider is not configured: set {0}")]
    NotConfigured(&'static str),
}

/// Tokens from a successful exchange or refresh. `Debug` hides them.
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
    pub scopes: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What we keep of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: String,
    pub display_name: Option<String>,
}

type ConfiguredClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// An authorization request: the URL to send the browser to, and what to keep for the callback.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: String,
    pub pkce_verifier: String,
}

#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
}

impl OAuthClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(Self { http })
    }

    fn client(
        credentials: &OAuthClientCredentials,
        auth_url: &Url,
        token_url: &Url,
        redirect: Option<&Url>,
    ) -> ConfiguredClient {
        let mut client = BasicClient::new(ClientId::new(credentials.client_id.clone()))
            .set_client_secret(ClientSecret::new(credentials.client_secret.clone()))
            .set_auth_uri(AuthUrl::from_url(auth_url.clone()))
            .set_token_uri(TokenUrl::from_url(token_url.clone()));
        if let Some(redirect) = redirect {
            client = client.set_redirect_uri(RedirectUrl::from_url(redirect.clone()));
        }
        client
    }

    fn provider_client(
        provider: &Provider,
        redirect: Option<&Url>,
    ) -> Result<ConfiguredClient, OAuthError> {
        let credentials = provider
            .client
            .as_ref()
            .ok_or(OAuthError::NotConfigured(provider.env_vars()[0]))?;
        Ok(Self::client(
            credentials,
            &provider.authorize_url,
            &provider.token_url,
            redirect,
        ))
    }

    /// A new authorization URL with a random state and a PKCE S256 challenge.
    pub fn authorization_request(
        &self,
        provider: &Provider,
        redirect: &Url,
    ) -> Result<AuthorizationRequest, OAuthError> {
        let client = Self::provider_client(provider, Some(redirect))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(provider.scopes.iter().cloned().map(Scope::new))
            .add_extra_param("prompt", "consent")
            .set_pkce_challenge(challenge);
        for (name, value) in provider.authorize_params {
            request = request.add_extra_param(*name, *value);
        }
        let (url, state) = request.url();
        Ok(AuthorizationRequest {
            url,
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    pub async fn exchange_code(
        &self,
        provider: &Provider,
        redirect: &Url,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<TokenSet, OAuthError> {
        let client = Self::provider_client(provider, Some(redirect))?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        Ok(token_set(&response))
    }

    /// Refresh with explicit endpoint and client (connected accounts pass their provider's,
    /// `oauth2_refresh_token` auth methods their own).
    pub async fn refresh(
        &self,
        credentials: &OAuthClientCredentials,
        token_url: &Url,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<TokenSet, OAuthError> {
        let client = Self::client(credentials, token_url, token_url, None);
        let refresh_token = RefreshToken::new(refresh_token.to_owned());
        let mut request = client.exchange_refresh_token(&refresh_token);
        if let Some(scope) = scope {
            request =
                request.add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_owned())));
        }
        let response = request.request_async(&self.http).await.map_err(classify)?;
        Ok(token_set(&response))
    }

    /// Read the account's profile; the email is the first non-empty of the provider's fields.
    pub async fn profile(
        &self,
        provider: &Provider,
        access_token: &str,
    ) -> Result<Profile, OAuthError> {
        let response = self
            .http
            .get(provider.profile_url.clone())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| {
                OAuthError::Transient(format!("profile request failed: {}", e.without_url()))
            })?;
        if !response.status().is_success() {
            return Err(OAuthError::Transient(format!(
                "profile request answered {}",
                response.status()
            )));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| OAuthError::Transient("profile is not JSON".to_owned()))?;
        let field = |name: &str| {
            body.get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let email = provider
            .email_fields
            .iter()
            .find_map(|name| field(name))
            .ok_or_else(|| {
                OAuthError::Unusable("the account's profile has no email address".to_owned())
            })?;
        Ok(Profile {
            email,
            display_name: field(provider.display_name_field),
        })
    }

    /// Best effort: revoke a refresh token at the provider, when it has a revocation endpoint.
    pub async fn revoke(&self, provider: &Provider, refresh_token: &str) {
        let (Some(url), Some(credentials)) = (&provider.revoke_url, &provider.client) else {
            return;
        };
        let result = self
            .http
            .post(url.clone())
            .basic_auth(&credentials.client_id, Some(&credentials.client_secret))
            .form(&[
                ("token", refresh_token),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await;
        if let Err(error) = result {
            tracing::warn!(provider = provider.kind, error = %error.without_url(), "revocation at the provider failed");
        }
    }
}

fn token_set(response: &oauth2::basic::BasicTokenResponse) -> TokenSet {
    TokenSet {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        expires_in: response.expires_in(),
        scopes: response.scopes().map(|scopes| {
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }),
    }
}

type TokenRequestError = RequestTokenError<
    oauth2::HttpClientError<reqwest::Error>,
    oauth2::StandardErrorResponse<BasicErrorResponseType>,
>;

/// SPEC §7: classify on the OAuth `error` field; everything else is transient.
fn classify(error: TokenRequestError) -> OAuthError {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = response.error().as_ref().to_owned();
            let message = response.error_description().cloned().unwrap_or_default();
            match code.as_str() {
                "invalid_grant" | "interaction_required" => OAuthError::DeadGrant { code, message },
                "invalid_client" | "unauthorized_client" => {
                    OAuthError::Misconfigured { code, message }
                }
                _ => OAuthError::Transient(format!("{code}: {message}")),
            }
        }
        RequestTokenError::Request(error) => {
            OAuthError::Transient(format!("token request failed: {}", request_error(&error)))
        }
        RequestTokenError::Parse(_, _) => {
            OAuthError::Transient("token endpoint answered with an unexpected body".to_owned())
        }
        RequestTokenError::Other(message) => OAuthError::Transient(message),
    }
}

fn request_error(error: &oauth2::HttpClientError<reqwest::Error>) -> String {
    match error {
        oauth2::HttpClientError::Reqwest(inner) => {
            if inner.is_timeout() {
                "timed out".to_owned()
            } else {
                inner.to_string()
            }
        }
        other => other.to_string(),
    }
}
