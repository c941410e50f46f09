//! Subcommands: `serve` (default), `migrate`, `admin-token`. Reads the process environment
//! (through `config::load`) and hands typed values to the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::config::{self, Config, ConfigFile, ProcessEnv};
use crate::domain::tokens::AdminToken;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Credential gateway for AI agents"
)]
pub struct Cli {
    /// Configuration file (default: config/gatehouse.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy, admin and metrics listeners (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create a new admin token and print it once.
    AdminToken {
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Agent tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an agent token, grant it the given targets, and print it once.
    Create {
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Slug of a target the token may use; repeat for more.
        #[arg(long = "target", value_name = "SLUG")]
        targets: Vec<String>,
        /// Grant read-only access (GET, HEAD, OPTIONS).
        #[arg(long)]
        read_only: bool,
        /// Requests per minute the token may make (1 to 1000000); no limit when absent.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        rate_limit: Option<i64>,
        /// After the token, print the set-up of an MCP client that uses it (the default when
        /// stdout is a terminal; piped, only the token is printed).
        #[arg(long)]
        with_setup: bool,
    },
}

/// Run the parsed command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let file = match cli.config {
        Some(path) => ConfigFile::Explicit(path),
        None => ConfigFile::DefaultIfPresent,
    };
    let config = config::load(file, &ProcessEnv)?;
    crate::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::Migrate => runtime.block_on(migrate(config)),
        Command::AdminToken { name } => runtime.block_on(admin_token(config, &name)),
        Command::Token(TokenCommand::Create {
            name,
            targets,
            read_only,
            rate_limit,
            with_setup,
        }) => {
            use std::io::IsTerminal as _;
            let setup = with_setup || std::io::stdout().is_terminal();
            let request = TokenRequest {
                name: &name,
                targets: &targets,
                read_only,
                rate_limit,
            };
            runtime.block_on(token_create(config, request, setup))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    if let Some(token) = &app.generated_admin_token {
        println!(
            "No admin token existed, so one was created. It is shown this once:\n{}",
            token.expose()
        );
    }
    wait_for_stop_signal().await?;
    tracing::info!("stop signal received; draining");
    app.shutdown().await;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    println!("database is migrated");
    store.close().await;
    Ok(())
}

async fn admin_token(config: Config, name: &str) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    let token = AdminToken::generate();
    store.insert_admin_token(name, &token.hash()).await?;
    println!("{}", token.expose());
    store.close().await;
    Ok(())
}

/// What `token create` asks for.
struct TokenRequest<'a> {
    name: &'a str,
    targets: &'a [String],
    read_only: bool,
    rate_limit: Option<i64>,
}

async fn token_create(
    config: Config,
    request: TokenRequest<'_>,
    with_setup: bool,
) -> anyhow::Result<()> {
    let management = app::management(&config).await?;
    let result = management
        .create_token_for_targets(
            request.name,
            request.targets,
            request.read_only,
            request.rate_limit,
        )
        .await;
    management.store().clone().close().await;
    let (_, plaintext) = result.map_err(|error| anyhow::anyhow!(error.public_message()))?;
    // The token alone on the first line; scripts that pipe stdout get nothing else. The set-up
    // lines carry the token too, so they go to stdout as well, never to stderr (often logged).
    println!("{}", plaintext.expose());
    if with_setup {
        let url = &config.proxy.public_url;
        println!(
            "\nConnect an MCP client (Claude Code):\n  {}\n\nor add this to the client's MCP configuration:\n{}",
            crate::mcp::setup::claude_command(url, plaintext.expose()),
            crate::mcp::setup::mcp_servers_json(url, plaintext.expose()),
        );
    }
    Ok(())
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
