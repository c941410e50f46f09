//! `ApiError`: every layer's error on its way to a client, and the ONE table that maps each to
//! an HTTP status and a public message. Renderers (admin JSON, proxy) call `status()`,
//! `public_message()` and `field()`; nothing else decides a status.

use http::StatusCode;

use crate::access::AccessError;
use crate::connect::ConnectError;
use crate::credentials::TokenError;
use crate::crypto::CryptoError;
use crate::domain::validation::ValidationError;
use crate::guard::GuardError;
use crate::store::StoreError;

pub const MANAGED_TARGET_MESSAGE: &str =
    "cannot modify a managed target — change it through its connected account";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Admin authentication failed; one body for every cause.
    #[error("unauthorized")]
    Unauthorized,
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A managed target (or its auth methods) was asked to change.
    #[error("{MANAGED_TARGET_MESSAGE}")]
    ManagedTarget,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Proxy steps 1–4.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// Proxy step 5.
    #[error("invalid path")]
    InvalidPath,
    /// Proxy step 6: the target's stored credential cannot be opened.
    #[error("stored credential cannot be opened")]
    CredentialBroken,
    /// Proxy step 7: the upstream resolved to an address the egress policy refuses.
    #[error("upstream address refused by egress policy")]
    EgressDenied,
    #[error("upstream request failed")]
    UpstreamUnreachable,
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// After proxy step 2: the token's `rate_limit` for this minute is used up (SPEC §11).
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// The connect flow failed (SPEC §6).
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    /// Proxy step 6: the connected account cannot give an access token.
    #[error(transparent)]
    AccountToken(#[from] crate::credentials::TokenError),
    /// After proxy step 5: a guard rule blocked the request or holds it for approval (SPEC §12).
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// An admin decided an approval that is no longer pending; names its state.
    #[error("approval is {0}")]
    ApprovalClosed(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored secret failed to open: the key is wrong or the row was tampered with.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::ManagedTarget => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Access(error) => match error {
                AccessError::MissingToken
                | AccessError::MalformedToken
                | AccessError::UnknownToken
                | AccessError::RevokedToken => StatusCode::UNAUTHORIZED,
                AccessError::IpNotAllowed | AccessError::Forbidden | AccessError::ReadOnly => {
                    StatusCode::FORBIDDEN
                }
                AccessError::TargetNotFound => StatusCode::NOT_FOUND,
            },
            Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::CredentialBroken => StatusCode::INTERNAL_SERVER_ERROR,
            Self::EgressDenied | Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Connect(error) => match error {
                ConnectError::UnknownProvider
                | ConnectError::InvalidState
                | ConnectError::NoEmail => StatusCode::BAD_REQUEST,
                ConnectError::NotConfigured(_) => StatusCode::CONFLICT,
                ConnectError::Provider(_) => StatusCode::BAD_GATEWAY,
                ConnectError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                ConnectError::Store(_) | ConnectError::Crypto => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::AccountToken(error) => match error {
                TokenError::Unavailable { .. }
                | TokenError::Transient { .. }
                | TokenError::CredentialRefused(_)
                | TokenError::CredentialTransient { .. } => StatusCode::SERVICE_UNAVAILABLE,
                TokenError::NotFound | TokenError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Store(error) => Self::store_status(error),
            Self::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Guard(GuardError::BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Guard(GuardError::Store(error)) => Self::store_status(error),
            Self::Guard(_) => StatusCode::FORBIDDEN,
            Self::ApprovalClosed(_) => StatusCode::CONFLICT,
        }
    }

    fn store_status(error: &StoreError) -> StatusCode {
        match error {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. 5xx never carry their cause (it is logged instead).
    pub fn public_message(&self) -> String {
        match self {
            Self::Store(StoreError::NotFound { entity }) => format!("{entity} not found"),
            Self::Store(StoreError::Conflict { constraint }) => match *constraint {
                "targets.slug" => "slug already exists".to_owned(),
                "connected_accounts.provider_type_email" => "account already connected".to_owned(),
                "foreign key" => "a referenced row does not exist".to_owned(),
                _ => "conflicts with an existing row".to_owned(),
            },
            Self::Store(StoreError::Unavailable(_))
            | Self::Guard(GuardError::Store(StoreError::Unavailable(_))) => {
                "database unavailable".to_owned()
            }
            Self::Guard(GuardError::Store(_)) => "internal error".to_owned(),
            Self::Store(StoreError::Corrupt { .. }) | Self::Crypto(_) | Self::CredentialBroken => {
                "internal error".to_owned()
            }
            // One body for every token failure (SPEC §4 step 1).
            Self::Access(
                AccessError::MissingToken
                | AccessError::MalformedToken
                | AccessError::UnknownToken
                | AccessError::RevokedToken,
            ) => "unauthorized".to_owned(),
            Self::EgressDenied => "upstream request failed".to_owned(),
            Self::Connect(ConnectError::Store(_) | ConnectError::Crypto) => {
                "internal error".to_owned()
            }
            Self::Connect(ConnectError::Provider(_)) => {
                "the provider refused the request".to_owned()
            }
            Self::AccountToken(TokenError::Unavailable { account, message }) => {
                let detail = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                format!(
                    "connected account {} is {}{detail}",
                    account.email,
                    account.status.as_str()
                )
            }
            Self::AccountToken(TokenError::Transient { account, .. }) => {
                format!(
                    "could not refresh the access token of {}; retry later",
                    account.email
                )
            }
            Self::AccountToken(TokenError::NotFound | TokenError::Internal(_)) => {
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The input field a 4xx is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Validation(error) => Some(&error.field),
            Self::Store(StoreError::Conflict {
                constraint: "targets.slug",
            }) => Some("slug"),
            _ => None,
        }
    }

    /// The short code recorded in an audit row's `error` column.
    pub fn audit_code(&self) -> &'static str {
        match self {
            Self::Access(error) => error.audit_code(),
            Self::InvalidPath => "invalid_path",
            Self::CredentialBroken | Self::Crypto(_) => "credential_error",
            Self::EgressDenied => "egress_denied",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Validation(_) => "validation",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotFound(_) => "not_found",
            Self::ManagedTarget => "managed_target",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Connect(error) => error.code(),
            Self::AccountToken(TokenError::Unavailable { .. }) => "account_unavailable",
            Self::AccountToken(
                TokenError::Transient { .. } | TokenError::CredentialTransient { .. },
            ) => "token_refresh_failed",
            Self::AccountToken(TokenError::CredentialRefused(_)) => "credential_refused",
            Self::AccountToken(_) => "credential_error",
            Self::Store(_) | Self::Guard(GuardError::Store(_)) => "store_error",
            Self::Guard(GuardError::Blocked { .. }) => "guard_blocked",
            Self::Guard(GuardError::ApprovalRequired { .. } | GuardError::Pending { .. }) => {
                "approval_required"
            }
            Self::Guard(GuardError::Denied { .. }) => "approval_denied",
            Self::Guard(GuardError::Mismatch) => "approval_mismatch",
            Self::Guard(GuardError::Used) => "approval_used",
            Self::Guard(GuardError::Expired) => "approval_expired",
            Self::Guard(GuardError::Unknown) => "approval_unknown",
            Self::Guard(GuardError::BodyTooLarge) => "payload_too_large",
            Self::ApprovalClosed(_) => "approval_closed",
        }
    }

    /// The extra JSON of a connected-account 503 (SPEC §7): the account and what to do.
    pub fn account_details(&self) -> Option<serde_json::Value> {
        let account = match self {
            Self::AccountToken(
                TokenError::Unavailable { account, .. } | TokenError::Transient { account, .. },
            ) => account,
            _ => return None,
        };
        let action = match account.status {
            crate::domain::accounts::AccountStatus::Connected => {
                "retry later; if this persists, ask an admin to check the account"
            }
            _ => "ask an admin to reconnect this account",
        };
        Some(serde_json::json!({
            "account": {"provider": account.provider, "email": account.email, "status": account.status.as_str()},
            "action": action,
        }))
    }

    /// The JSON body every agent-facing renderer writes: `{"error": …}`, plus the account and
    /// the action for connected-account problems, and the field for validation errors.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({"error": self.public_message()});
        if let Some(object) = body.as_object_mut() {
            if let Some(serde_json::Value::Object(details)) = self.account_details() {
                object.extend(details);
            }
            if let Some(field) = self.field() {
                object.insert("field".to_owned(), field.into());
            }
            if let Self::Guard(guard) = self {
                if let Some(reason) = guard.reason() {
                    object.insert("reason".to_owned(), reason.into());
                }
                if let Some(ticket) = guard.ticket() {
                    object.insert("approval".to_owned(), ticket.json());
                }
            }
        }
        body
    }

    /// Seconds for `Retry-After`, for errors that pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::AccountToken(
                TokenError::Transient { retry_after, .. }
                | TokenError::CredentialTransient { retry_after },
            ) => Some(retry_after.as_secs().max(1)),
            Self::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            _ => None,
        }
    }

    /// Unexpected errors are logged once, where they are rendered.
    pub fn is_server_error(&self) -> bool {
        self.status().is_server_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::accounts::AccountStatus;

    #[test]
    fn every_variant_has_its_status_and_message() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ValidationError::new("slug", "must be lowercase").into(),
                400,
                "slug: must be lowercase",
            ),
            (ApiError::PayloadTooLarge, 413, "request body too large"),
            (
                ApiError::HeadersTooLarge,
                431,
                "request header fields too large",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "content type must be application/json",
            ),
            (ApiError::NotFound("token"), 404, "token not found"),
            (ApiError::ManagedTarget, 409, MANAGED_TARGET_MESSAGE),
            (
                StoreError::NotFound { entity: "target" }.into(),
                404,
                "target not found",
            ),
            (
                StoreError::Conflict {
                    constraint: "targets.slug",
                }
                .into(),
                409,
                "slug already exists",
            ),
            (
                StoreError::Conflict {
                    constraint: "other",
                }
                .into(),
                409,
                "conflicts with an existing row",
            ),
            (
                StoreError::Unavailable("connection refused to db.internal".into()).into(),
                503,
                "database unavailable",
            ),
            (
                StoreError::Corrupt {
                    entity: "token",
                    problem: "allowed_ips".into(),
                }
                .into(),
                500,
                "internal error",
            ),
            (CryptoError::Authentication.into(), 500, "internal error"),
            (ApiError::MethodNotAllowed, 405, "method not allowed"),
            (AccessError::MissingToken.into(), 401, "unauthorized"),
            (AccessError::MalformedToken.into(), 401, "unauthorized"),
            (AccessError::UnknownToken.into(), 401, "unauthorized"),
            (AccessError::RevokedToken.into(), 401, "unauthorized"),
            (AccessError::IpNotAllowed.into(), 403, "ip not allowed"),
            (AccessError::TargetNotFound.into(), 404, "target not found"),
            (AccessError::Forbidden.into(), 403, "forbidden"),
            (AccessError::ReadOnly.into(), 403, "read-only access"),
            (ApiError::InvalidPath, 400, "invalid path"),
            (
                TokenError::Unavailable {
                    account: ada(AccountStatus::Disconnected),
                    message: "invalid_grant: revoked".into(),
                }
                .into(),
                503,
                "connected account ada@example.com is disconnected: invalid_grant: revoked",
            ),
            (
                TokenError::Transient {
                    account: ada(AccountStatus::Connected),
                    retry_after: std::time::Duration::from_secs(4),
                }
                .into(),
                503,
                "could not refresh the access token of ada@example.com; retry later",
            ),
            (
                TokenError::CredentialTransient {
                    retry_after: std::time::Duration::from_secs(2),
                }
                .into(),
                503,
                "refreshing the target's OAuth credential failed; retry later",
            ),
            (
                TokenError::Internal("x".into()).into(),
                500,
                "internal error",
            ),
            (
                ConnectError::InvalidState.into(),
                400,
                "invalid or expired state",
            ),
            (
                ConnectError::NotConfigured("OAUTH_X").into(),
                409,
                "provider is not configured: set OAUTH_X",
            ),
            (ConnectError::Crypto.into(), 500, "internal error"),
            (ApiError::CredentialBroken, 500, "internal error"),
            (ApiError::EgressDenied, 502, "upstream request failed"),
            (
                ApiError::UpstreamUnreachable,
                502,
                "upstream request failed",
            ),
            (ApiError::UpstreamTimeout, 504, "upstream timed out"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 12,
                },
                429,
                "rate limit exceeded",
            ),
        ];
        for (error, status, message) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.public_message(), message, "{error:?}");
        }
    }

    fn ada(status: AccountStatus) -> crate::credentials::AccountInfo {
        crate::credentials::AccountInfo {
            provider: "microsoft_365".into(),
            email: "ada@example.com".into(),
            status,
        }
    }

    #[test]
    fn connected_account_errors_carry_the_account_action_and_retry_after() {
        let transient: ApiError = TokenError::Transient {
            account: ada(AccountStatus::Connected),
            retry_after: std::time::Duration::from_millis(1500),
        }
        .into();
        assert_eq!(transient.retry_after(), Some(1));
        let details = transient.account_details().unwrap();
        assert_eq!(details["account"]["email"], "ada@example.com");
        assert_eq!(details["account"]["status"], "connected");
        let dead: ApiError = TokenError::Unavailable {
            account: ada(AccountStatus::Disconnected),
            message: String::new(),
        }
        .into();
        assert_eq!(dead.retry_after(), None);
        assert_eq!(
            dead.account_details().unwrap()["action"],
            "ask an admin to reconnect this account"
        );
        assert_eq!(ApiError::InvalidPath.account_details(), None);
        let limited = ApiError::RateLimited {
            retry_after_secs: 0,
        };
        assert_eq!(limited.retry_after(), Some(1), "never Retry-After: 0");
        assert_eq!(limited.audit_code(), "rate_limited");
    }

    #[test]
    fn fields_are_named_for_validation_and_slug_conflicts() {
        assert_eq!(
            ApiError::from(ValidationError::new("base_url", "x")).field(),
            Some("base_url")
        );
        assert_eq!(
            ApiError::from(StoreError::Conflict {
                constraint: "targets.slug"
            })
            .field(),
            Some("slug")
        );
        assert_eq!(ApiError::Unauthorized.field(), None);
    }
}
