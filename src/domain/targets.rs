//! Targets (upstream APIs), their auth methods and the permissions tokens hold on them.

use std::fmt;

use uuid::Uuid;

use super::Timestamp;

/// A target's URL-safe name: `a-z0-9-`, 1–63 characters, no leading/trailing/double `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetSlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slug must be 1-63 characters of a-z, 0-9 and single '-' between them")]
pub struct InvalidSlug;

impl TargetSlug {
    pub const MAX_LEN: usize = 63;

    pub fn parse(text: &str) -> Result<Self, InvalidSlug> {
        let ok = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-')
            && !text.contains("--");
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidSlug)
        }
    }

    /// Lowercase, runs of anything else collapsed to one `-`, trimmed, cut to the limit.
    pub fn from_name(name: &str) -> Result<Self, InvalidSlug> {
        let mut slug = String::with_capacity(name.len());
        for ch in name.chars().flat_map(char::to_lowercase) {
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                slug.push(ch);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.truncate(Self::MAX_LEN);
        let slug = slug.trim_end_matches('-');
        Self::parse(slug)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A managed target's slug: `{slugified-email}-{capability}-{first 6 hex of the account id}`
    /// (SPEC §6), the email part shortened so the whole fits the limit.
    pub fn managed(email: &str, capability: Capability, account_id: Uuid) -> Self {
        let suffix = format!(
            "-{}-{}",
            capability.as_str(),
            &account_id.simple().to_string()[..6]
        );
        let email_part = Self::from_name(email)
            .map(|s| s.0)
            .unwrap_or_else(|_| "account".to_owned());
        let room = Self::MAX_LEN - suffix.len();
        let email_part = email_part[..email_part.len().min(room)].trim_end_matches('-');
        Self(format!("{email_part}{suffix}"))
    }
}

impl fmt::Display for TargetSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a managed target gives access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Mail,
    Calendar,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mail => "mail",
            Self::Calendar => "calendar",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mail" => Some(Self::Mail),
            "calendar" => Some(Self::Calendar),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: Uuid,
    pub name: String,
    pub slug: TargetSlug,
    pub base_url: url::Url,
    pub enabled: bool,
    pub connected_account_id: Option<Uuid>,
    pub capability: Option<Capability>,
    /// The built-in guard rules apply (SPEC §12).
    pub guard_defaults: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Target {
    /// Managed targets belong to a connected account and change only through it.
    pub fn is_managed(&self) -> bool {
        self.connected_account_id.is_some()
    }

    /// The `Host` header for the upstream: host, plus the port when it is not the scheme's
    /// default (`Url::port` is `None` then).
    pub fn host_header(&self) -> String {
        let host = self.base_url.host_str().unwrap_or_default();
        match self.base_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

/// The kinds of credential a standard target can hold (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethodKind {
    Bearer,
    Basic,
    CustomHeader,
    QueryParam,
    OAuth2RefreshToken,
}

impl AuthMethodKind {
    pub const ALL: [Self; 5] = [
        Self::Bearer,
        Self::Basic,
        Self::CustomHeader,
        Self::QueryParam,
        Self::OAuth2RefreshToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::CustomHeader => "custom_header",
            Self::QueryParam => "query_param",
            Self::OAuth2RefreshToken => "oauth2_refresh_token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// An auth method as shown to admins: never the credential, only its hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMethod {
    pub id: Uuid,
    pub target_id: Uuid,
    pub label: String,
    pub kind: AuthMethodKind,
    pub credential_hint: String,
    pub is_default: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub id: Uuid,
    pub token_id: Uuid,
    pub target_id: Uuid,
    pub read_only: bool,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_from_names() {
        for (name, slug) in [
            ("GitHub API", "github-api"),
            ("  Stripe -- Payments!! ", "stripe-payments"),
            ("ops@example.com — Mail", "ops-example-com-mail"),
            ("Ünïcode Straße", "n-code-stra-e"),
        ] {
            assert_eq!(
                TargetSlug::from_name(name).unwrap().as_str(),
                slug,
                "{name}"
            );
        }
        assert_eq!(TargetSlug::from_name("!!!"), Err(InvalidSlug));
        assert_eq!(
            TargetSlug::from_name(&"a".repeat(100))
                .unwrap()
                .as_str()
                .len(),
            63
        );
    }

    #[test]
    fn managed_slugs() {
        let id = Uuid::parse_str("abcdef12-0000-0000-0000-000000000000").unwrap();
        let slug = TargetSlug::managed("Ada.Lovelace@Example.com", Capability::Mail, id);
        assert_eq!(slug.as_str(), "ada-lovelace-example-com-mail-abcdef");
        assert!(TargetSlug::parse(slug.as_str()).is_ok());
        let long = TargetSlug::managed(
            &format!("{}@example.com", "x".repeat(80)),
            Capability::Calendar,
            id,
        );
        assert!(long.as_str().len() <= TargetSlug::MAX_LEN);
        assert!(long.as_str().ends_with("-calendar-abcdef"));
        assert!(TargetSlug::parse(long.as_str()).is_ok());
    }

    #[test]
    fn slug_rules() {
        for good in ["a", "github", "a-b-9"] {
            assert!(TargetSlug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "A",
            "a_b",
            "a b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(TargetSlug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for kind in AuthMethodKind::ALL {
            assert_eq!(AuthMethodKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AuthMethodKind::parse("Bearer"), None);
    }
}
