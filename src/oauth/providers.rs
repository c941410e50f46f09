//! The built-in provider registry: one entry per provider, as data. Endpoints and scopes can be
//! overridden per provider in the config file (`[providers.<type>]`); client credentials come
//! only from the environment.

use std::collections::BTreeMap;

use url::Url;

use crate::config::{ConfigError, OAuthClientCredentials, ProviderOverrides};
use crate::domain::targets::Capability;

/// A provider's built-in description.
struct Builtin {
    kind: &'static str,
    name: &'static str,
    authorize_url: &'static str,
    token_url: &'static str,
    revoke_url: Option<&'static str>,
    profile_url: &'static str,
    mail_base_url: &'static str,
    calendar_base_url: &'static str,
    scopes: &'static [&'static str],
    /// Extra parameters on the authorize URL (Google needs them to issue a refresh token).
    authorize_params: &'static [(&'static str, &'static str)],
    /// Profile fields holding the account's email, in order of preference.
    email_fields: &'static [&'static str],
    display_name_field: &'static str,
}

const BUILTINS: [Builtin; 2] = [
    Builtin {
        kind: "microsoft_365",
        name: "Microsoft 365",
        authorize_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        revoke_url: None,
        profile_url: "https://graph.microsoft.com/v1.0/me",
        mail_base_url: "https://graph.microsoft.com/v1.0",
        calendar_base_url: "https://graph.microsoft.com/v1.0",
        scopes: &[
            "offline_access",
            "User.Read",
            "Mail.ReadWrite",
            "Mail.ReadWrite.Shared",
            "Mail.Send",
            "Mail.Send.Shared",
            "Calendars.ReadWrite",
            "Calendars.ReadWrite.Shared",
        ],
        authorize_params: &[],
        email_fields: &["mail", "userPrincipalName"],
        display_name_field: "displayName",
    },
    Builtin {
        kind: "google_workspace",
        name: "Google Workspace",
        authorize_url: "https://accounts.google.com/o/oauth2/v2/auth",
        token_url: "https://oauth2.googleapis.com/token",
        revoke_url: Some("https://oauth2.googleapis.com/revoke"),
        profile_url: "https://openidconnect.googleapis.com/v1/userinfo",
        mail_base_url: "https://gmail.googleapis.com/gmail/v1",
        calendar_base_url: "https://www.googleapis.com/calendar/v3",
        scopes: &[
            "openid",
            "email",
            "profile",
            "https://www.googleapis.com/auth/gmail.modify",
            "https://www.googleapis.com/auth/calendar",
        ],
        authorize_params: &[("access_type", "offline")],
        email_fields: &["email"],
        display_name_field: "name",
    },
];

/// The provider types of the registry.
pub const KNOWN_PROVIDERS: [&str; 2] = [BUILTINS[0].kind, BUILTINS[1].kind];

/// A provider with its effective endpoints and, when configured, its client credentials.
#[derive(Clone)]
pub struct Provider {
    pub kind: &'static str,
    pub name: &'static str,
    pub authorize_url: Url,
    pub token_url: Url,
    pub revoke_url: Option<Url>,
    pub profile_url: Url,
    pub mail_base_url: Url,
    pub calendar_base_url: Url,
    pub scopes: Vec<String>,
    pub authorize_params: &'static [(&'static str, &'static str)],
    pub email_fields: &'static [&'static str],
    pub display_name_field: &'static str,
    pub client: Option<OAuthClientCredentials>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("token_url", &self.token_url.as_str())
            .field("configured", &self.client.is_some())
            .finish()
    }
}

impl Provider {
    pub fn capabilities(&self) -> [Capability; 2] {
        [Capability::Mail, Capability::Calendar]
    }

    pub fn base_url(&self, capability: Capability) -> &Url {
        match capability {
            Capability::Mail => &self.mail_base_url,
            Capability::Calendar => &self.calendar_base_url,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.client.is_some()
    }

    /// The environment variables that enable this provider.
    pub fn env_vars(&self) -> [&'static str; 2] {
        match self.kind {
            "google_workspace" => ["OAUTH_GOOGLE_CLIENT_ID", "OAUTH_GOOGLE_CLIENT_SECRET"],
            _ => ["OAUTH_MICROSOFT_CLIENT_ID", "OAUTH_MICROSOFT_CLIENT_SECRET"],
        }
    }
}

/// Every provider, in a fixed order.
#[derive(Debug, Clone)]
pub struct Providers(Vec<Provider>);

fn parse_builtin(url: &str) -> Url {
    match Url::parse(url) {
        Ok(url) => url,
        Err(_) => unreachable!("built-in provider URLs are valid"),
    }
}

impl Providers {
    /// The registry merged with config overrides and environment credentials. An override for
    /// an unknown provider type is a startup error naming it.
    pub fn new(
        overrides: &BTreeMap<String, ProviderOverrides>,
        clients: &BTreeMap<String, OAuthClientCredentials>,
    ) -> Result<Self, ConfigError> {
        if let Some(unknown) = overrides
            .keys()
            .find(|k| !BUILTINS.iter().any(|b| b.kind == k.as_str()))
        {
            return Err(ConfigError::new(
                format!("providers.{unknown}"),
                "unknown provider (known: microsoft_365, google_workspace)",
            ));
        }
        let providers = BUILTINS
            .iter()
            .map(|builtin| {
                let custom = overrides.get(builtin.kind).cloned().unwrap_or_default();
                Provider {
                    kind: builtin.kind,
                    name: builtin.name,
                    authorize_url: custom
                        .authorize_url
                        .unwrap_or_else(|| parse_builtin(builtin.authorize_url)),
                    token_url: custom
                        .token_url
                        .unwrap_or_else(|| parse_builtin(builtin.token_url)),
                    revoke_url: custom
                        .revoke_url
                        .or_else(|| builtin.revoke_url.map(parse_builtin)),
                    profile_url: custom
                        .profile_url
                        .unwrap_or_else(|| parse_builtin(builtin.profile_url)),
                    mail_base_url: custom
                        .mail_base_url
                        .unwrap_or_else(|| parse_builtin(builtin.mail_base_url)),
                    calendar_base_url: custom
                        .calendar_base_url
                        .unwrap_or_else(|| parse_builtin(builtin.calendar_base_url)),
                    scopes: custom.scopes.unwrap_or_else(|| {
                        builtin.scopes.iter().map(|s| (*s).to_owned()).collect()
                    }),
                    authorize_params: builtin.authorize_params,
                    email_fields: builtin.email_fields,
                    display_name_field: builtin.display_name_field,
                    client: clients.get(builtin.kind).cloned(),
                }
            })
            .collect();
        Ok(Self(providers))
    }

    pub fn get(&self, kind: &str) -> Option<&Provider> {
        self.0.iter().find(|p| p.kind == kind)
    }

    pub fn all(&self) -> &[Provider] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_data_and_overrides_apply() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "microsoft_365".to_owned(),
            ProviderOverrides {
                token_url: Some(Url::parse("http://127.0.0.1:9/token").unwrap()),
                scopes: Some(vec!["offline_access".to_owned()]),
                ..ProviderOverrides::default()
            },
        );
        let mut clients = BTreeMap::new();
        clients.insert(
            "google_workspace".to_owned(),
            OAuthClientCredentials {
                client_id: "id".to_owned(),
                client_secret: "secret".to_owned(),
            },
        );
        let providers = Providers::new(&overrides, &clients).unwrap();
        let microsoft = providers.get("microsoft_365").unwrap();
        assert_eq!(microsoft.token_url.as_str(), "http://127.0.0.1:9/token");
        assert_eq!(microsoft.scopes, vec!["offline_access"]);
        assert_eq!(
            microsoft.authorize_url.as_str(),
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
        );
        assert!(!microsoft.is_configured());
        let google = providers.get("google_workspace").unwrap();
        assert!(google.is_configured());
        assert_eq!(
            google.mail_base_url.as_str(),
            "https://gmail.googleapis.com/gmail/v1"
        );
        assert_eq!(google.authorize_params, &[("access_type", "offline")]);
        assert!(!format!("{google:?}").contains("secret"));
        assert!(providers.get("okta").is_none());
    }

    #[test]
    fn unknown_provider_override_is_named() {
        let mut overrides = BTreeMap::new();
        overrides.insert("okta".to_owned(), ProviderOverrides::default());
        let error = Providers::new(&overrides, &BTreeMap::new()).unwrap_err();
        assert_eq!(error.setting, "providers.okta");
    }
}
