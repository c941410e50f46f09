//! Configuration: typed sections, one loader, one error type.
//!
//! Layering (lowest first): built-in defaults < TOML file < `GATEHOUSE__SECTION__KEY`
//! < the well-known variables of SPEC §2 (`DATABASE_URL`, `GATEHOUSE_ENCRYPTION_KEY`, …).
//! Parsing is validation: every section denies unknown keys and every field is typed, so a
//! `Config` value that exists is usable. Only this module and `cli` read the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

/// Most webhook attempts one replica may have in flight (`webhooks.max_concurrent`).
const MAX_WEBHOOK_SENDS: usize = 1000;

/// Path read by `serve` when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/gatehouse.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub upstream: UpstreamConfig,
    pub secrets: SecretsConfig,
    pub audit: AuditConfig,
    pub mcp: McpConfig,
    pub webhooks: WebhooksConfig,
    pub rate_limit: RateLimitConfig,
    pub guard: GuardConfig,
    pub log: LogConfig,
    /// Per-provider overrides of the built-in endpoints and scopes, keyed by provider type.
    pub providers: BTreeMap<String, ProviderOverrides>,
    /// Secrets that only come from the environment; never read from or written to a file.
    #[serde(skip)]
    pub env: EnvSecrets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Worker threads of the proxy listener; 0 means one per CPU core.
    pub threads: usize,
    /// Agent-facing base URL, printed in agent set-up snippets (`{public_url}/mcp`).
    pub public_url: Url,
    /// Longest time for a client to send a whole request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest idle time between requests on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest gap between two reads of a request body (a stalled upload).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; may carry a password, so it is never printed.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub allow_private: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a resolved upstream host name is reused; 0 resolves on every request.
    #[serde(with = "humantime_serde")]
    pub dns_cache_ttl: Duration,
    /// A PEM bundle trusted for upstream TLS in addition to the system roots. Read once at
    /// startup (`proxy::UpstreamRoots`); unset trusts the system roots only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Where the generated encryption key lives when `GATEHOUSE_ENCRYPTION_KEY` is unset.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub queue_capacity: usize,
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Audit rows (and the dashboard's rollups) older than this are deleted; zero keeps all.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often one replica prunes.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// The largest upstream body an `api_request` tool result carries before it is cut.
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Longest time one delivery attempt may take (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most attempts in flight at once on this replica.
    pub max_concurrent: usize,
    /// How often the dispatcher looks for due deliveries written by other replicas (its own
    /// are sent at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The first wait of the retry schedule; the others are fixed multiples of it (5 s gives
    /// 5 s, 30 s, 2 min, 10 min, 1 h, 2 h, 4 h, 8 h, 8 h). Only tests change it.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// How long transient refresh failures of an account last before `account.refresh_failing`.
    #[serde(with = "humantime_serde")]
    pub refresh_failing_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Into how many leases a token's per-minute budget is cut: each replica leases
    /// `rate_limit / leases_per_window` (at least 1) at a time from the shared counter. More
    /// leases = a tighter bound across replicas, more counter writes (docs/gateway.md).
    pub leases_per_window: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// How long an approval may be decided and then used (SPEC §12: 15 minutes).
    #[serde(with = "humantime_serde")]
    pub approval_ttl: Duration,
    /// How long an MCP `api_request` waits for the person's answer to an elicitation before it
    /// returns the approval to decide elsewhere; `0s` never elicits. Below the 60 s request
    /// timeout MCP clients commonly use.
    #[serde(with = "humantime_serde")]
    pub elicitation_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `gatehouse=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderOverrides {
    pub authorize_url: Option<Url>,
    pub token_url: Option<Url>,
    pub revoke_url: Option<Url>,
    pub profile_url: Option<Url>,
    pub mail_base_url: Option<Url>,
    pub calendar_base_url: Option<Url>,
    pub scopes: Option<Vec<String>>,
}

/// Values read only from well-known environment variables. `Debug` never shows them.
#[derive(Clone, Default, PartialEq)]
pub struct EnvSecrets {
    /// Decoded `GATEHOUSE_ENCRYPTION_KEY` (32 bytes).
    pub encryption_key: Option<[u8; 32]>,
    /// Decoded `GATEHOUSE_ENCRYPTION_OLD_KEYS` (comma-separated), still accepted for opening.
    pub old_encryption_keys: Vec<[u8; 32]>,
    /// `GATEHOUSE_ADMIN_TOKEN`, an `sga_…` token accepted by the admin API.
    pub admin_token: Option<String>,
    /// OAuth client credentials by provider type.
    pub oauth_clients: BTreeMap<String, OAuthClientCredentials>,
}

#[derive(Clone, PartialEq)]
pub struct OAuthClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSecrets")
            .field("encryption_key", &self.encryption_key.map(|_| "<set>"))
            .field("old_encryption_keys", &self.old_encryption_keys.len())
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field(
                "oauth_clients",
                &self.oauth_clients.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            shutdown_grace: Duration::from_secs(10),
            threads: 0,
            public_url: constant_url("http://127.0.0.1:8080"),
            header_read_timeout: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            public_url: constant_url("http://127.0.0.1:8081"),
            max_body_bytes: 64 * 1024,
        }
    }
}

fn constant_url(url: &str) -> Url {
    // A constant that parses; `Url` has no const constructor.
    match Url::parse(url) {
        Ok(url) => url,
        Err(_) => unreachable!("constant URL parses"),
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/gatehouse.db?mode=rwc".to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            dns_cache_ttl: Duration::from_secs(30),
            extra_ca_file: None,
        }
    }
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("data/secret.key"),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            batch_size: 256,
            flush_interval: Duration::from_millis(500),
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            prune_interval: Duration::from_secs(10 * 60),
        }
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            max_response_bytes: 1024 * 1024,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_concurrent: 8,
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(5),
            refresh_failing_after: Duration::from_secs(15 * 60),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            leases_per_window: 40,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            approval_ttl: Duration::from_secs(15 * 60),
            elicitation_wait: Duration::from_secs(45),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A startup error naming the setting that failed. Its `Display` is one line and never
/// contains the value of the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// Source of environment variables, so the loader can be fed without touching the process env.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
    /// Every `(name, value)` pair; used for the `GATEHOUSE__…` layer.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed map of variables, for tests and embedding.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl EnvSource for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Which file to read. An explicit path must exist; the default path may be absent.
#[derive(Debug, Clone)]
pub enum ConfigFile {
    Explicit(PathBuf),
    DefaultIfPresent,
    None,
}

/// Load the layered configuration and validate it.
pub fn load(file: ConfigFile, env: &dyn EnvSource) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match file {
        ConfigFile::Explicit(path) => {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        ConfigFile::DefaultIfPresent => {
            let path = Path::new(DEFAULT_CONFIG_PATH);
            if path.is_file() {
                figment = figment.merge(Toml::file_exact(path));
            }
        }
        ConfigFile::None => {}
    }
    figment = figment.merge(Serialized::defaults(prefixed_env_layer(env)));
    if let Some(url) = env.var("DATABASE_URL") {
        figment = figment.merge(Serialized::default("database.url", url));
    }

    let mut config: Config = figment.extract().map_err(figment_error)?;
    config.env = read_env_secrets(env)?;
    config.validate()?;
    Ok(config)
}

/// A browser- or agent-facing base URL: absolute http(s) with a host.
fn check_public_url(setting: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(setting, "must be an http(s) URL"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(ConfigError::new(
            setting,
            "must be an absolute URL with a host",
        ));
    }
    Ok(())
}

impl Config {
    /// Cross-field rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        check_public_url("admin.public_url", &self.admin.public_url)?;
        check_public_url("proxy.public_url", &self.proxy.public_url)?;
        for (setting, value) in [
            ("proxy.header_read_timeout", self.proxy.header_read_timeout),
            ("proxy.keepalive_timeout", self.proxy.keepalive_timeout),
            ("proxy.body_read_timeout", self.proxy.body_read_timeout),
            ("audit.prune_interval", self.audit.prune_interval),
            ("guard.approval_ttl", self.guard.approval_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(setting, "must be longer than 0s"));
            }
        }
        if self
            .upstream
            .extra_ca_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError::new(
                "upstream.extra_ca_file",
                "must be a file path; leave it out to trust the system roots only",
            ));
        }
        // A retention shorter than a minute would delete the rows the overview is drawing.
        if !self.audit.retention.is_zero() && self.audit.retention < Duration::from_secs(60) {
            return Err(ConfigError::new(
                "audit.retention",
                "must be 0s (keep everything) or at least 1m",
            ));
        }
        if self.mcp.max_response_bytes == 0 {
            return Err(ConfigError::new(
                "mcp.max_response_bytes",
                "must be at least 1",
            ));
        }
        for (setting, value) in [
            ("webhooks.timeout", self.webhooks.timeout),
            ("webhooks.poll_interval", self.webhooks.poll_interval),
            ("webhooks.retry_base", self.webhooks.retry_base),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(setting, "must be longer than 0s"));
            }
        }
        if !(1..=MAX_WEBHOOK_SENDS).contains(&self.webhooks.max_concurrent) {
            return Err(ConfigError::new(
                "webhooks.max_concurrent",
                format!("must be between 1 and {MAX_WEBHOOK_SENDS}"),
            ));
        }
        // The claim lease is the timeout plus a margin; the schedule multiplies retry_base by
        // up to 5760. Bounds keep both meaningful.
        for (setting, value, most) in [
            (
                "webhooks.timeout",
                self.webhooks.timeout,
                Duration::from_secs(600),
            ),
            (
                "webhooks.retry_base",
                self.webhooks.retry_base,
                Duration::from_secs(3600),
            ),
        ] {
            if value > most {
                return Err(ConfigError::new(
                    setting,
                    format!("must be at most {}", humantime::format_duration(most)),
                ));
            }
        }
        if !(1..=1000).contains(&self.rate_limit.leases_per_window) {
            return Err(ConfigError::new(
                "rate_limit.leases_per_window",
                "must be from 1 to 1000",
            ));
        }
        if self.audit.queue_capacity == 0 || self.audit.batch_size == 0 {
            return Err(ConfigError::new(
                "audit",
                "queue_capacity and batch_size must be at least 1",
            ));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(ConfigError::new("log.level", "not a valid tracing filter"));
        }
        Ok(())
    }
}

/// `GATEHOUSE__SECTION__KEY=value` pairs as one nested dictionary. Values are parsed the way
/// figment's own `Env` provider parses them (booleans, numbers, arrays, else strings).
fn prefixed_env_layer(env: &dyn EnvSource) -> figment::value::Dict {
    let mut layer = figment::value::Dict::new();
    for (name, raw) in env.vars() {
        let Some(rest) = name.strip_prefix("GATEHOUSE__") else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let value: figment::value::Value = match raw.parse() {
            Ok(value) => value,
            Err(never) => match never {},
        };
        if let Some(nested) = figment::util::nest(&key, value).into_dict() {
            layer = merge_dicts(layer, nested);
        }
    }
    layer
}

fn merge_dicts(
    mut base: figment::value::Dict,
    other: figment::value::Dict,
) -> figment::value::Dict {
    use figment::value::Value;
    for (key, value) in other {
        let merged = match (base.remove(&key), value) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, value) => value,
        };
        base.insert(key, merged);
    }
    base
}

fn read_env_secrets(env: &dyn EnvSource) -> Result<EnvSecrets, ConfigError> {
    let encryption_key = env
        .var("GATEHOUSE_ENCRYPTION_KEY")
        .map(|v| decode_key(&v).ok_or_else(|| key_error("GATEHOUSE_ENCRYPTION_KEY")))
        .transpose()?;
    let old_encryption_keys = match env.var("GATEHOUSE_ENCRYPTION_OLD_KEYS") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| decode_key(k).ok_or_else(|| key_error("GATEHOUSE_ENCRYPTION_OLD_KEYS")))
            .collect::<Result<_, _>>()?,
    };
    let admin_token = env.var("GATEHOUSE_ADMIN_TOKEN");
    if let Some(token) = &admin_token
        && crate::domain::tokens::AdminToken::parse(token).is_none()
    {
        return Err(ConfigError::new(
            "GATEHOUSE_ADMIN_TOKEN",
            "must be an admin token: sga_ followed by 43 to 256 URL-safe characters (A-Z a-z 0-9 - _)",
        ));
    }
    let mut oauth_clients = BTreeMap::new();
    for (provider, prefix) in [
        ("microsoft_365", "OAUTH_MICROSOFT"),
        ("google_workspace", "OAUTH_GOOGLE"),
    ] {
        let id_var = format!("{prefix}_CLIENT_ID");
        let secret_var = format!("{prefix}_CLIENT_SECRET");
        match (env.var(&id_var), env.var(&secret_var)) {
            (Some(client_id), Some(client_secret)) => {
                oauth_clients.insert(
                    provider.to_owned(),
                    OAuthClientCredentials {
                        client_id,
                        client_secret,
                    },
                );
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    secret_var,
                    "must be set with its client id",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    id_var,
                    "must be set with its client secret",
                ));
            }
        }
    }
    Ok(EnvSecrets {
        encryption_key,
        old_encryption_keys,
        admin_token,
        oauth_clients,
    })
}

fn key_error(name: &str) -> ConfigError {
    ConfigError::new(name, "must be the base64 encoding of exactly 32 bytes")
}

/// Decode a base64 (standard or URL-safe, padded or not) 32-byte key.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
}

/// Render a figment error as one line naming the key, without echoing any value.
fn figment_error(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let error = match error.into_iter().next() {
        Some(first) => first,
        None => return ConfigError::new("config", "could not be read"),
    };
    let mut setting = error.path.join(".");
    let problem = match &error.kind {
        Kind::Message(message) => message.clone(),
        Kind::InvalidType(_, expected) => format!("expected {expected}"),
        Kind::InvalidValue(_, expected) => format!("expected {expected}"),
        Kind::InvalidLength(_, expected) => format!("expected {expected}"),
        Kind::UnknownVariant(_, expected) => format!("expected one of {}", expected.join(", ")),
        Kind::UnknownField(field, _) => {
            if !setting.ends_with(field.as_str()) {
                setting = join_key(&setting, field);
            }
            "unknown key".to_owned()
        }
        Kind::MissingField(field) => {
            setting = join_key(&setting, field);
            "missing".to_owned()
        }
        Kind::DuplicateField(field) => {
            setting = join_key(&setting, field);
            "given twice".to_owned()
        }
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "number out of range".to_owned(),
        Kind::Unsupported(_) | Kind::UnsupportedKey(_, _) => "unsupported value".to_owned(),
    };
    if setting.is_empty() {
        // A TOML syntax error has no key path; say which file and where, but not the content.
        setting = error
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| s.to_string())
            .unwrap_or_else(|| "config".to_owned());
    }
    // Messages from value parsers (URLs, durations, addresses) describe the rule, not the input,
    // except for the database URL, which may hold a password: never pass its parser's words on.
    let problem = if setting == "database.url" {
        "invalid value".to_owned()
    } else {
        problem.lines().next().unwrap_or("invalid value").to_owned()
    };
    ConfigError::new(setting, problem)
}

fn join_key(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests;
