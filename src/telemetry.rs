//! Logging: one `tracing` subscriber; the `log` records of dependencies (Pingora) are bridged
//! into it. Pingora's own targets are clamped to `warn` whatever the configured level, because
//! at debug/trace they print request headers — and headers carry agent tokens. The MCP SDK's
//! targets are clamped the same way: at debug/trace `rmcp` prints whole JSON-RPC messages and
//! HTTP request parts (tool arguments, headers, session ids).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Targets that may print request data at verbose levels; never more verbose than `warn`.
pub const CLAMPED_TARGETS: [&str; 7] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "h2",
    "hyper",
    "rmcp",
];

/// Chatty dependencies: one line per migration step, PostgreSQL notices ("already exists,
/// skipping"); `store` logs a summary instead.
const QUIET_TARGETS: [&str; 2] = ["sea_orm_migration", "sqlx"];

/// The filter for a configured level, with the clamps applied last so they win.
pub fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in QUIET_TARGETS {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    for target in CLAMPED_TARGETS {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Install the global subscriber. A second call (tests) is a no-op.
pub fn init(config: &LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&config.level))
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
