//! Guard rules and approvals (SPEC §12): which requests a target blocks or holds for a
//! person's approval, and the approval that binds a decision to one exact request.

use std::borrow::Cow;

use http::Method;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::Timestamp;
use super::targets::Capability;
use super::validation::ValidationError;

/// The longest body a guarded request may carry: it is read whole and hashed before anything
/// goes upstream, and Pingora replays at most this much of a body it has already read.
pub const MAX_GUARDED_BODY_BYTES: usize = 64 * 1024;

/// Characters of the body shown to the person who decides.
const PREVIEW_CHARS: usize = 2_000;

/// Longest rule path and reason.
const MAX_PATH_LEN: usize = 1_000;
const MAX_REASON_LEN: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Equals,
    Prefix,
    Contains,
}

impl PathMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::Prefix => "prefix",
            Self::Contains => "contains",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Equals, Self::Prefix, Self::Contains]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Allow,
    Block,
    ApprovalRequired,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Block => "block",
            Self::ApprovalRequired => "approval_required",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Allow, Self::Block, Self::ApprovalRequired]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// What the guard did to a request, as the audit row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardOutcome {
    /// A rule matched and allowed it (no row is marked when no rule matched).
    Allow,
    Block,
    ApprovalRequired,
    /// It carried an approval a person gave; it passed.
    Approved,
    /// It carried an approval a person refused.
    Denied,
}

impl GuardOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Block => "block",
            Self::ApprovalRequired => "approval_required",
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Allow,
            Self::Block,
            Self::ApprovalRequired,
            Self::Approved,
            Self::Denied,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// The matching part of a rule: method (or any), how the path matches, and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// `None` matches every method.
    pub method: Option<Method>,
    pub path_match: PathMatch,
    /// Stored as given; compared case-insensitively (see [`normalized_path`]).
    pub path: String,
    /// `path` normalized once, as request paths are per request.
    needle: String,
}

impl RuleMatch {
    /// Parse an admin's rule; `method` is `"*"`/`"ANY"`/absent for any method.
    pub fn parse(
        method: Option<&str>,
        path_match: &str,
        path: &str,
    ) -> Result<Self, ValidationError> {
        let method = match method.map(str::trim) {
            None | Some("" | "*") => None,
            Some(text) if text.eq_ignore_ascii_case("any") => None,
            Some(text) => {
                let upper = text.to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .map_err(|_| ValidationError::new("method", "not an HTTP method"))?;
                Some(method)
            }
        };
        let path_match = PathMatch::parse(path_match).ok_or_else(|| {
            ValidationError::new("path_match", "must be equals, prefix or contains")
        })?;
        if path.is_empty() {
            return Err(ValidationError::new("path", "must not be empty"));
        }
        if path.len() > MAX_PATH_LEN || path.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "path",
                "must be at most 1000 characters, without control characters",
            ));
        }
        Ok(Self {
            method,
            path_match,
            needle: normalized_path(path).into_owned(),
            path: path.to_owned(),
        })
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let needle = self.needle.as_str();
        match self.path_match {
            PathMatch::Equals => path == needle,
            PathMatch::Prefix => path.starts_with(needle),
            PathMatch::Contains => path.contains(needle),
        }
    }
}

/// A reason shown to the agent: trimmed, non-empty, bounded.
pub fn parse_reason(text: &str) -> Result<String, ValidationError> {
    let reason = text.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "reason",
            "must be 1–500 characters, without control characters",
        ));
    }
    Ok(reason.to_owned())
}

/// A rule an admin set on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRule {
    pub id: Uuid,
    pub target_id: Uuid,
    pub position: i32,
    pub matcher: RuleMatch,
    pub action: RuleAction,
    pub reason: String,
    pub created_at: Timestamp,
}

/// Which built-in rules a target gets when its `guard_defaults` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRules {
    /// Destructive methods and paths (SPEC §12).
    Standard,
    /// A managed mail target: sending mail.
    Mail,
    /// A managed target that cannot act (calendar reads).
    None,
}

impl DefaultRules {
    pub fn for_target(capability: Option<Capability>) -> Self {
        match capability {
            None => Self::Standard,
            Some(Capability::Mail) => Self::Mail,
            Some(Capability::Calendar) => Self::None,
        }
    }
}

/// The path words the built-in standard rules hold for approval.
pub const DESTRUCTIVE_PATH_WORDS: [&str; 12] = [
    "/delete",
    "/remove",
    "/destroy",
    "/drop",
    "/purge",
    "/reset",
    "/wipe",
    "/deploy",
    "/restart",
    "/stop",
    "/shutdown",
    "/rollback",
];

/// Paths of a mail API that send: Graph `/sendMail`, `/messages/{id}/send`, `/reply`,
/// `/replyAll`, `/forward`; Gmail `/messages/send`, `/drafts/send`.
const MAIL_SENDING_PATH_WORDS: [&str; 3] = ["/send", "/reply", "/forward"];

/// The rule set of one target: its own rules by position, then the built-ins if on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPolicy {
    pub rules: Vec<GuardRule>,
    pub defaults: Option<DefaultRules>,
}

/// The first matching rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: RuleAction,
    pub reason: String,
}

impl GuardPolicy {
    /// The verdict for `method` on `path` (the path below the target, without the query), or
    /// `None` when no rule matches (the request passes). First match wins.
    pub fn evaluate(&self, method: &Method, path: &str) -> Option<Verdict> {
        let path = normalized_path(path);
        if let Some(rule) = self.rules.iter().find(|r| r.matcher.matches(method, &path)) {
            return Some(Verdict {
                action: rule.action,
                reason: rule.reason.clone(),
            });
        }
        let hold = |reason: String| {
            Some(Verdict {
                action: RuleAction::ApprovalRequired,
                reason,
            })
        };
        match self.defaults? {
            DefaultRules::Standard => {
                if method == Method::DELETE {
                    return hold("DELETE needs a person's approval".to_owned());
                }
                let word = DESTRUCTIVE_PATH_WORDS
                    .iter()
                    .find(|word| path.contains(**word))?;
                hold(format!(
                    "a path containing {word} needs a person's approval"
                ))
            }
            DefaultRules::Mail => {
                let sends = method == Method::POST
                    && MAIL_SENDING_PATH_WORDS.iter().any(|w| path.contains(*w));
                if sends {
                    hold("sending mail needs a person's approval".to_owned())
                } else {
                    None
                }
            }
            DefaultRules::None => None,
        }
    }
}

/// Headers some APIs (Google's among them) read as the real method of a POST.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The method the upstream may act on: a method-override header's value when there is a valid
/// one (so `POST` + `X-HTTP-Method-Override: DELETE` is guarded as the `DELETE` it is), else
/// the request's own.
pub fn effective_method<'a>(method: &Method, overrides: impl Iterator<Item = &'a [u8]>) -> Method {
    overrides
        .filter_map(|value| {
            Method::from_bytes(value.trim_ascii().to_ascii_uppercase().as_slice()).ok()
        })
        .next()
        .unwrap_or_else(|| method.clone())
}

/// The path rules compare: percent-decoded until nothing changes (so `/dele%74e` and
/// `/dele%2574e` are `/delete`; at most three rounds) and ASCII lower-cased (so `/DELETE` is
/// too). Bytes that do not decode to UTF-8 are kept lossily.
pub fn normalized_path(path: &str) -> Cow<'_, str> {
    // The common case costs no allocation: nothing to decode, nothing to lower.
    if !path.bytes().any(|b| b == b'%' || b.is_ascii_uppercase()) {
        return Cow::Borrowed(path);
    }
    let mut path = path.to_owned();
    for _ in 0..3 {
        let decoded = percent_encoding::percent_decode_str(&path)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == path {
            break;
        }
        path = decoded;
    }
    Cow::Owned(path.to_ascii_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Used,
    Expired,
}

impl ApprovalStatus {
    /// The status as of `now` for an approval due at `expires_at`: a pending or approved one
    /// past its deadline is `expired`, whatever the sweep wrote yet.
    pub fn at(self, expires_at: Timestamp, now: Timestamp) -> Self {
        match self {
            Self::Pending | Self::Approved if expires_at <= now => Self::Expired,
            status => status,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Denied,
            Self::Used,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The request an approval is bound to: method, path below the target, raw query, body hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedRequest {
    pub token_id: Uuid,
    pub target_id: Uuid,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body_sha256: String,
    pub body_size: u64,
}

impl GuardedRequest {
    pub fn new(
        token_id: Uuid,
        target_id: Uuid,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Self {
        Self {
            token_id,
            target_id,
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            query: query.filter(|q| !q.is_empty()).map(str::to_owned),
            body_sha256: hex::encode(Sha256::digest(body)),
            body_size: body.len() as u64,
        }
    }
}

/// A stored approval, with the names the pages show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: Uuid,
    pub request: GuardedRequest,
    pub token_name: String,
    pub target_slug: String,
    pub body_preview: Option<String>,
    pub reason: String,
    /// As stored; see [`Approval::effective_status`].
    pub status: ApprovalStatus,
    /// The person was asked through the agent's MCP client (elicitation).
    pub elicited: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

impl Approval {
    /// `expired` once the deadline passed undecided or unused, whatever the sweep wrote yet.
    pub fn effective_status(&self, now: Timestamp) -> ApprovalStatus {
        self.status.at(self.expires_at, now)
    }
}

/// Who may decide: an admin any approval; the agent's MCP client only one it was asked about,
/// of its own token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    Admin,
    Elicitation { token_id: Uuid },
}

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn status(self) -> ApprovalStatus {
        match self {
            Self::Approve => ApprovalStatus::Approved,
            Self::Deny => ApprovalStatus::Denied,
        }
    }
}

/// What the person sees of a body: valid UTF-8 text cut to 2 000 characters, every secret of
/// the target replaced by `[redacted]`; `None` for an empty or binary body.
pub fn body_preview(body: &[u8], secrets: &[String]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut preview = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        preview = preview.replace(secret.as_str(), "[redacted]");
    }
    if let Some((cut, _)) = preview.char_indices().nth(PREVIEW_CHARS) {
        preview.truncate(cut);
        preview.push('…');
    }
    Some(preview)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: Option<&str>, path_match: &str, path: &str, action: RuleAction) -> GuardRule {
        GuardRule {
            id: Uuid::new_v4(),
            target_id: Uuid::nil(),
            position: 0,
            matcher: RuleMatch::parse(method, path_match, path).unwrap(),
            action,
            reason: format!("{} {path}", action.as_str()),
            created_at: chrono::Utc::now(),
        }
    }

    fn action(policy: &GuardPolicy, method: Method, path: &str) -> Option<RuleAction> {
        policy.evaluate(&method, path).map(|v| v.action)
    }

    #[test]
    fn standard_defaults_hold_destructive_requests() {
        let policy = GuardPolicy {
            rules: Vec::new(),
            defaults: Some(DefaultRules::Standard),
        };
        let held = Some(RuleAction::ApprovalRequired);
        assert_eq!(action(&policy, Method::DELETE, "/repos/x"), held);
        for word in DESTRUCTIVE_PATH_WORDS {
            assert_eq!(action(&policy, Method::POST, &format!("/a{word}/b")), held);
        }
        // Encoding and case do not hide a word.
        assert_eq!(action(&policy, Method::POST, "/v1/dele%74e"), held);
        assert_eq!(action(&policy, Method::POST, "/v1/dele%2574e"), held);
        assert_eq!(action(&policy, Method::GET, "/v1/DROP"), held);
        assert_eq!(action(&policy, Method::GET, "/repos/x/issues"), None);
        let off = GuardPolicy {
            rules: Vec::new(),
            defaults: None,
        };
        assert_eq!(action(&off, Method::DELETE, "/repos/x"), None);
    }

    #[test]
    fn method_overrides_are_guarded_as_the_method_they_name() {
        let post = Method::POST;
        assert_eq!(
            effective_method(&post, [&b" delete "[..]].into_iter()),
            Method::DELETE
        );
        assert_eq!(effective_method(&post, std::iter::empty()), Method::POST);
        assert_eq!(
            effective_method(&post, [&b"no method"[..]].into_iter()),
            Method::POST
        );
    }

    #[test]
    fn first_matching_rule_wins_before_the_defaults() {
        let policy = GuardPolicy {
            rules: vec![
                rule(Some("delete"), "prefix", "/tmp/", RuleAction::Allow),
                rule(None, "equals", "/admin", RuleAction::Block),
                rule(None, "contains", "/admin", RuleAction::ApprovalRequired),
            ],
            defaults: Some(DefaultRules::Standard),
        };
        assert_eq!(
            action(&policy, Method::DELETE, "/tmp/x"),
            Some(RuleAction::Allow)
        );
        assert_eq!(
            action(&policy, Method::DELETE, "/data/x"),
            Some(RuleAction::ApprovalRequired),
            "not the allow rule's method and prefix: the defaults"
        );
        assert_eq!(
            action(&policy, Method::GET, "/ADMIN"),
            Some(RuleAction::Block)
        );
        assert_eq!(
            action(&policy, Method::GET, "/x/admin/y"),
            Some(RuleAction::ApprovalRequired)
        );
        let verdict = policy.evaluate(&Method::GET, "/admin").unwrap();
        assert_eq!(verdict.reason, "block /admin");
    }

    #[test]
    fn mail_defaults_hold_sending_only() {
        let policy = GuardPolicy {
            rules: Vec::new(),
            defaults: Some(DefaultRules::for_target(Some(Capability::Mail))),
        };
        let held = Some(RuleAction::ApprovalRequired);
        assert_eq!(action(&policy, Method::POST, "/sendMail"), held);
        assert_eq!(action(&policy, Method::POST, "/messages/send"), held);
        assert_eq!(
            action(&policy, Method::POST, "/messages/AAM=/replyAll"),
            held
        );
        assert_eq!(action(&policy, Method::GET, "/messages"), None);
        assert_eq!(action(&policy, Method::DELETE, "/messages/1"), None);
        let calendar = GuardPolicy {
            rules: Vec::new(),
            defaults: Some(DefaultRules::for_target(Some(Capability::Calendar))),
        };
        assert_eq!(action(&calendar, Method::POST, "/events/delete"), None);
    }

    #[test]
    fn rule_input_is_validated() {
        assert!(
            RuleMatch::parse(Some("*"), "prefix", "/x")
                .unwrap()
                .method
                .is_none()
        );
        assert_eq!(
            RuleMatch::parse(Some("post"), "prefix", "/x")
                .unwrap()
                .method,
            Some(Method::POST)
        );
        assert_eq!(
            RuleMatch::parse(Some("PO ST"), "prefix", "/x")
                .unwrap_err()
                .field,
            "method"
        );
        assert_eq!(
            RuleMatch::parse(None, "regex", "/x").unwrap_err().field,
            "path_match"
        );
        assert_eq!(
            RuleMatch::parse(None, "prefix", "").unwrap_err().field,
            "path"
        );
        assert_eq!(parse_reason("  ").unwrap_err().field, "reason");
        assert_eq!(parse_reason(" why ").unwrap(), "why");
    }

    #[test]
    fn requests_bind_method_path_query_and_body() {
        let a = GuardedRequest::new(Uuid::nil(), Uuid::nil(), &Method::POST, "/x", None, b"1");
        let b = GuardedRequest::new(
            Uuid::nil(),
            Uuid::nil(),
            &Method::POST,
            "/x",
            Some(""),
            b"1",
        );
        assert_eq!(a, b, "an empty query is no query");
        let c = GuardedRequest::new(Uuid::nil(), Uuid::nil(), &Method::POST, "/x", None, b"2");
        assert_ne!(a.body_sha256, c.body_sha256);
        assert_eq!(a.body_sha256.len(), 64);
    }

    #[test]
    fn previews_are_cut_and_masked() {
        let secrets = vec!["sk_live_1".to_owned()];
        assert_eq!(
            body_preview(br#"{"key":"sk_live_1"}"#, &secrets).unwrap(),
            r#"{"key":"[redacted]"}"#
        );
        assert_eq!(body_preview(b"", &secrets), None);
        assert_eq!(body_preview(&[0xff, 0xfe], &secrets), None);
        let long = "é".repeat(3_000);
        let preview = body_preview(long.as_bytes(), &secrets).unwrap();
        assert_eq!(preview.chars().count(), 2_001);
    }

    #[test]
    fn undecided_approvals_expire() {
        let now = chrono::Utc::now();
        let mut approval = Approval {
            id: Uuid::nil(),
            request: GuardedRequest::new(
                Uuid::nil(),
                Uuid::nil(),
                &Method::DELETE,
                "/x",
                None,
                b"",
            ),
            token_name: "t".into(),
            target_slug: "s".into(),
            body_preview: None,
            reason: "r".into(),
            status: ApprovalStatus::Approved,
            elicited: false,
            decided_by: None,
            decided_at: None,
            expires_at: now,
            created_at: now,
        };
        assert_eq!(approval.effective_status(now), ApprovalStatus::Expired);
        approval.status = ApprovalStatus::Used;
        assert_eq!(approval.effective_status(now), ApprovalStatus::Used);
    }
}
