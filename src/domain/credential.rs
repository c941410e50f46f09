//! Credentials of standard targets: parsed from admin input, validated once, stored sealed as
//! their canonical text, and applied to outgoing requests by the proxy.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::targets::AuthMethodKind;
use super::validation::ValidationError;

/// An `oauth2_refresh_token` auth method as the proxy knows it; its credential is re-read from
/// the store when it is refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodRef {
    pub method_id: uuid::Uuid,
    pub target_id: uuid::Uuid,
}

/// Most custom headers one auth method may set.
const MAX_CUSTOM_HEADERS: usize = 10;

/// Headers a credential may never set: they belong to the connection or to the gateway.
const FORBIDDEN_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "cookie",
];

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2RefreshConfig {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub token_url: url::Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A validated credential. `Debug` never shows secret parts.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    Basic { user: String, password: String },
    CustomHeaders(Vec<HeaderPair>),
    QueryParam { name: String, value: String },
    OAuth2RefreshToken(OAuth2RefreshConfig),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential::{}({})", self.kind().as_str(), self.hint())
    }
}

fn invalid(rule: impl Into<String>) -> ValidationError {
    ValidationError::new("credential", rule)
}

/// Printable ASCII or any non-control Unicode, and no leading/trailing whitespace; what an HTTP
/// header value can carry safely.
fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.trim() == value && !value.chars().any(char::is_control)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Credential {
    /// Parse admin input. `input` is a JSON string for the text kinds; for `custom_header` and
    /// `oauth2_refresh_token` it may be the JSON value itself or a string holding it.
    pub fn parse(kind: AuthMethodKind, input: &serde_json::Value) -> Result<Self, ValidationError> {
        match kind {
            AuthMethodKind::Bearer => {
                let token = as_text(input)?;
                if !header_safe(token) || token.contains(char::is_whitespace) {
                    return Err(invalid(
                        "must be a non-empty token without whitespace or control characters",
                    ));
                }
                Ok(Self::Bearer(token.to_owned()))
            }
            AuthMethodKind::Basic => {
                let text = as_text(input)?;
                let (user, password) = text
                    .split_once(':')
                    .ok_or_else(|| invalid("must be user:password"))?;
                if user.is_empty() || !header_safe(user) || password.chars().any(char::is_control) {
                    return Err(invalid(
                        "must be user:password with a non-empty user and no control characters",
                    ));
                }
                Ok(Self::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                })
            }
            AuthMethodKind::QueryParam => {
                let text = as_text(input)?;
                let (name, value) = text
                    .split_once(':')
                    .ok_or_else(|| invalid("must be name:value"))?;
                if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(invalid(
                        "must be name:value with a non-empty name without whitespace",
                    ));
                }
                if value.chars().any(char::is_control) {
                    return Err(invalid("value must not contain control characters"));
                }
                Ok(Self::QueryParam {
                    name: name.to_owned(),
                    value: value.to_owned(),
                })
            }
            AuthMethodKind::CustomHeader => {
                let headers: Vec<HeaderPair> =
                    from_json(input, "must be a JSON list of {name, value}")?;
                if headers.is_empty() || headers.len() > MAX_CUSTOM_HEADERS {
                    return Err(invalid(format!(
                        "must hold 1 to {MAX_CUSTOM_HEADERS} headers"
                    )));
                }
                for header in &headers {
                    if header.name.is_empty() || !header.name.bytes().all(is_token_char) {
                        return Err(invalid(format!(
                            "{:?} is not a valid header name",
                            header.name
                        )));
                    }
                    if FORBIDDEN_HEADERS.contains(&header.name.to_ascii_lowercase().as_str()) {
                        return Err(invalid(format!(
                            "header {} cannot be set by a credential",
                            header.name
                        )));
                    }
                    if !header_safe(&header.value) {
                        return Err(invalid(format!(
                            "value of {} must be non-empty without control characters",
                            header.name
                        )));
                    }
                }
                Ok(Self::CustomHeaders(headers))
            }
            AuthMethodKind::OAuth2RefreshToken => {
                let config: OAuth2RefreshConfig = from_json(
                    input,
                    "must be a JSON object {client_id, client_secret, refresh_token, token_url, scope?}",
                )?;
                for (name, value) in [
                    ("client_id", &config.client_id),
                    ("client_secret", &config.client_secret),
                    ("refresh_token", &config.refresh_token),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(format!("{name} must not be empty")));
                    }
                }
                Ok(Self::OAuth2RefreshToken(config))
            }
        }
    }

    /// Parse the canonical text written by [`Credential::to_stored`].
    pub fn from_stored(kind: AuthMethodKind, stored: &str) -> Result<Self, ValidationError> {
        match kind {
            AuthMethodKind::CustomHeader | AuthMethodKind::OAuth2RefreshToken => {
                let value: serde_json::Value = serde_json::from_str(stored)
                    .map_err(|_| invalid("stored credential is not JSON"))?;
                Self::parse(kind, &value)
            }
            _ => Self::parse(kind, &serde_json::Value::String(stored.to_owned())),
        }
    }

    /// The canonical text that gets sealed.
    pub fn to_stored(&self) -> String {
        match self {
            Self::Bearer(token) => token.clone(),
            Self::Basic { user, password } => format!("{user}:{password}"),
            Self::QueryParam { name, value } => format!("{name}:{value}"),
            Self::CustomHeaders(headers) => serde_json::to_string(headers).unwrap_or_default(),
            Self::OAuth2RefreshToken(config) => serde_json::to_string(config).unwrap_or_default(),
        }
    }

    pub fn kind(&self) -> AuthMethodKind {
        match self {
            Self::Bearer(_) => AuthMethodKind::Bearer,
            Self::Basic { .. } => AuthMethodKind::Basic,
            Self::CustomHeaders(_) => AuthMethodKind::CustomHeader,
            Self::QueryParam { .. } => AuthMethodKind::QueryParam,
            Self::OAuth2RefreshToken(_) => AuthMethodKind::OAuth2RefreshToken,
        }
    }

    /// Enough to recognise the credential, never enough to use it.
    pub fn hint(&self) -> String {
        match self {
            Self::Bearer(token) => {
                let chars: Vec<char> = token.chars().collect();
                if chars.len() < 12 {
                    "…".to_owned()
                } else {
                    format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
                }
            }
            Self::Basic { user, .. } => format!("{user}:…"),
            Self::QueryParam { name, .. } => format!("{name}=…"),
            Self::CustomHeaders(headers) => headers
                .iter()
                .map(|h| format!("{}: …", h.name))
                .collect::<Vec<_>>()
                .join(", "),
            Self::OAuth2RefreshToken(config) => format!(
                "{} @ {}",
                config.client_id,
                config.token_url.host_str().unwrap_or("?")
            ),
        }
    }

    /// Every secret string this credential injects, for scrubbing responses that echo it.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            Self::Bearer(token) => vec![token.as_str()],
            Self::Basic { password, .. } => vec![password.as_str()],
            Self::QueryParam { value, .. } => vec![value.as_str()],
            Self::CustomHeaders(headers) => headers.iter().map(|h| h.value.as_str()).collect(),
            Self::OAuth2RefreshToken(config) => {
                vec![config.client_secret.as_str(), config.refresh_token.as_str()]
            }
        }
    }
}

fn as_text(input: &serde_json::Value) -> Result<&str, ValidationError> {
    input.as_str().ok_or_else(|| invalid("must be a string"))
}

fn from_json<T: serde::de::DeserializeOwned>(
    input: &serde_json::Value,
    rule: &str,
) -> Result<T, ValidationError> {
    let parsed = match input {
        serde_json::Value::String(text) => serde_json::from_str(text),
        other => serde_json::from_value(other.clone()),
    };
    parsed.map_err(|_| invalid(rule))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(kind: AuthMethodKind, input: serde_json::Value, hint: &str) {
        let credential = Credential::parse(kind, &input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(credential.hint(), hint, "{input}");
        let stored = credential.to_stored();
        assert_eq!(
            Credential::from_stored(kind, &stored).unwrap(),
            credential,
            "round trip {stored}"
        );
    }

    fn bad(kind: AuthMethodKind, input: serde_json::Value) {
        let error = Credential::parse(kind, &input).unwrap_err();
        assert_eq!(error.field, "credential", "{input}");
    }

    #[test]
    fn each_kind_parses_hints_and_round_trips() {
        use AuthMethodKind::*;
        ok(Bearer, json!("ghp_0123456789abcdef"), "…cdef");
        ok(Bearer, json!("short"), "…");
        ok(Basic, json!("alice:s3cr:et"), "alice:…");
        ok(Basic, json!("alice:"), "alice:…");
        ok(QueryParam, json!("api_key:abc123"), "api_key=…");
        ok(
            CustomHeader,
            json!([{"name": "X-Api-Key", "value": "k1"}]),
            "X-Api-Key: …",
        );
        ok(
            CustomHeader,
            json!("[{\"name\":\"X-A\",\"value\":\"1\"},{\"name\":\"X-B\",\"value\":\"2\"}]"),
            "X-A: …, X-B: …",
        );
        ok(
            OAuth2RefreshToken,
            json!({"client_id": "cid", "client_secret": "cs", "refresh_token": "rt", "token_url": "https://auth.example.com/token"}),
            "cid @ auth.example.com",
        );
    }

    #[test]
    fn bad_input_is_refused_naming_the_credential() {
        use AuthMethodKind::*;
        bad(Bearer, json!(""));
        bad(Bearer, json!("two words"));
        bad(Bearer, json!("line\nbreak"));
        bad(Bearer, json!(42));
        bad(Basic, json!("no-colon"));
        bad(Basic, json!(":password"));
        bad(QueryParam, json!("novalue"));
        bad(QueryParam, json!(":v"));
        bad(CustomHeader, json!([]));
        bad(CustomHeader, json!([{"name": "Bad Name", "value": "v"}]));
        bad(CustomHeader, json!([{"name": "Host", "value": "evil"}]));
        bad(CustomHeader, json!([{"name": "X-A", "value": ""}]));
        bad(
            CustomHeader,
            json!([{"name": "X-A", "value": "v", "extra": 1}]),
        );
        bad(CustomHeader, json!("not json"));
        bad(
            OAuth2RefreshToken,
            json!({"client_id": "c", "client_secret": "s", "token_url": "https://x"}),
        );
        bad(
            OAuth2RefreshToken,
            json!({"client_id": "c", "client_secret": "s", "refresh_token": " ", "token_url": "https://x"}),
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let credential =
            Credential::parse(AuthMethodKind::Basic, &json!("bob:hunter2-canary")).unwrap();
        assert!(!format!("{credential:?}").contains("hunter2"));
        assert_eq!(credential.secret_values(), vec!["hunter2-canary"]);
    }
}
