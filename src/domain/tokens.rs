//! Agent tokens (`sg_…`) and admin tokens (`sga_…`): 256 random bits, base64url without
//! padding, stored only as a SHA-256 hash.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Length of 32 bytes in unpadded base64url.
const SECRET_CHARS: usize = 43;

/// Longest secret accepted in a hand-made admin token (`GATEHOUSE_ADMIN_TOKEN`).
const MAX_ADMIN_SECRET_CHARS: usize = 256;

/// SHA-256 of a token's plaintext, lowercase hex. The only form in which tokens are stored.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(plaintext: &str) -> Self {
        Self(hex::encode(Sha256::digest(plaintext.as_bytes())))
    }

    /// Wrap a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form keeps logs readable.
        write!(f, "TokenHash({}…)", self.0.get(..8).unwrap_or(""))
    }
}

macro_rules! bearer_token {
    ($name:ident, $prefix:literal, $secret_chars:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new token from the operating system's random generator.
            pub fn generate() -> Self {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                Self(format!("{}{}", $prefix, URL_SAFE_NO_PAD.encode(bytes)))
            }

            /// Accept the prefix and a secret of URL-safe characters whose length is in the
            /// type's range; anything else is `None`.
            pub fn parse(text: &str) -> Option<Self> {
                let secret = text.strip_prefix($prefix)?;
                let well_formed = ($secret_chars).contains(&secret.len())
                    && secret
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                well_formed.then(|| Self(text.to_owned()))
            }

            pub fn hash(&self) -> TokenHash {
                TokenHash::of(&self.0)
            }

            /// The plaintext, for showing once to whoever created the token.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), $prefix)
            }
        }
    };
}

// Agent tokens are only ever generated here: exactly the generated shape.
bearer_token!(
    AgentToken,
    "sg_",
    SECRET_CHARS..=SECRET_CHARS,
    "An agent's bearer token for the proxy listener."
);
// Admin tokens may be made by hand for `GATEHOUSE_ADMIN_TOKEN` (`sga_` + `openssl rand -hex
// 32`): at least as long as a generated one (256 bits), bounded above.
bearer_token!(
    AdminToken,
    "sga_",
    SECRET_CHARS..=MAX_ADMIN_SECRET_CHARS,
    "A bearer token for the admin API."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_differ() {
        let a = AgentToken::generate();
        let b = AgentToken::generate();
        assert_ne!(a, b);
        assert_eq!(AgentToken::parse(a.expose()), Some(a.clone()));
        assert_eq!(a.expose().len(), 3 + SECRET_CHARS);
        let admin = AdminToken::generate();
        assert_eq!(AdminToken::parse(admin.expose()), Some(admin.clone()));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = AgentToken::generate();
        let secret = &good.expose()[3..];
        for bad in [
            String::new(),
            "sg_".to_owned(),
            format!("sga_{secret}"),
            format!("sg_{}", &secret[1..]),
            format!("sg_{secret}x"),
            format!("sg_{}!", &secret[1..]),
            format!("SG_{secret}"),
        ] {
            assert_eq!(AgentToken::parse(&bad), None, "{bad:?} must not parse");
        }
        assert_eq!(AdminToken::parse(good.expose()), None);
    }

    #[test]
    fn admin_tokens_made_by_hand_are_accepted() {
        // `sga_$(openssl rand -hex 32)`: 64 hex characters.
        let hex = format!("sga_{}", "0123456789abcdef".repeat(4));
        assert!(AdminToken::parse(&hex).is_some(), "{hex}");
        let long = format!("sga_{}", "A-_z".repeat(40));
        assert!(AdminToken::parse(&long).is_some());
        for bad in [
            format!("sga_{}", "a".repeat(SECRET_CHARS - 1)),
            format!("sga_{}", "a".repeat(MAX_ADMIN_SECRET_CHARS + 1)),
            format!("sga_{}!", "a".repeat(SECRET_CHARS)),
        ] {
            assert_eq!(AdminToken::parse(&bad), None, "{bad:?} must not parse");
        }
        // Agent tokens are only ever generated here: their exact shape stays required.
        assert_eq!(AgentToken::parse(&format!("sg_{}", "ab".repeat(32))), None);
    }

    #[test]
    fn hash_is_sha256_hex_and_debug_hides_secrets() {
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = AgentToken::generate();
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.expose()[3..]), "{shown}");
    }

    #[test]
    fn rate_limits_are_whole_positive_and_bounded() {
        assert_eq!(RateLimit::parse("rate_limit", 1).unwrap().per_minute(), 1);
        assert_eq!(
            RateLimit::parse("rate_limit", i64::from(RateLimit::MAX))
                .unwrap()
                .per_minute(),
            RateLimit::MAX
        );
        for bad in [0, -1, i64::from(RateLimit::MAX) + 1, i64::MAX, i64::MIN] {
            let error = RateLimit::parse("rate_limit", bad).unwrap_err();
            assert_eq!(error.field, "rate_limit", "{bad}");
        }
    }
}

/// Requests per minute a token may make (SPEC §3 `tokens.rate_limit`); no value = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit(std::num::NonZeroU32);

impl RateLimit {
    /// The highest accepted limit: 1 000 000 per minute (~16 700 per second) is already more
    /// than one replica serves; anything above is a typo, not a policy.
    pub const MAX: u32 = 1_000_000;

    /// A limit from untrusted input, naming `field` when it is out of range.
    pub fn parse(field: &str, value: i64) -> Result<Self, super::validation::ValidationError> {
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= Self::MAX)
            .and_then(std::num::NonZeroU32::new)
            .map(Self)
            .ok_or_else(|| {
                super::validation::ValidationError::new(
                    field,
                    format!(
                        "must be a whole number of requests per minute from 1 to {}, or null for no limit",
                        Self::MAX
                    ),
                )
            })
    }

    pub fn per_minute(self) -> u32 {
        self.0.get()
    }
}

/// An agent token as stored (the plaintext is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTokenRecord {
    pub id: uuid::Uuid,
    pub name: String,
    pub hash: TokenHash,
    pub allowed_ips: super::ip_allowlist::IpAllowlist,
    pub rate_limit: Option<RateLimit>,
    pub created_at: super::Timestamp,
    pub updated_at: super::Timestamp,
    pub revoked_at: Option<super::Timestamp>,
    pub last_used_at: Option<super::Timestamp>,
}

impl AgentTokenRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// An admin token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRecord {
    pub id: uuid::Uuid,
    pub name: String,
    pub created_at: super::Timestamp,
    pub revoked_at: Option<super::Timestamp>,
}
