//! The `cerego` command: `serve` (the default) or `migrate`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cerego::app::{App, shutdown_signal};
use cerego::config::{self, DatabaseSettings, ParseError, Settings, SettingsArgs};
use cerego::{store, telemetry};

/// Sign-up and login service.
///
/// Every setting below is read from its environment variable (or a `.env` file in the working
/// directory; an empty value counts as unset) or from the flag of the same name, which wins.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "RUST_LOG sets the log filter (default: info,sqlx=warn). See .env.example."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations, say how many, and exit (needs no JWT_SECRET_KEY).
    Migrate,
    /// Exit 0 if the server on this host's PORT answers GET /healthz with 200 (for container
    /// HEALTHCHECKs, which have no curl in a distroless image).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before the command line: clap reads the variables when it builds the command.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("cerego: cannot read .env: {err}");
        return ExitCode::from(2);
    }
    let cli: Cli = match config::parse(Cli::command(), std::env::args_os()) {
        Ok(cli) => cli,
        Err(ParseError::Setting(err)) => return setting_error(&err),
        Err(ParseError::Usage(err)) => err.exit(),
    };
    let run = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => cli.settings.clone().into_settings().map(Run::Serve),
        Command::Migrate => cli.settings.database().map(Run::Migrate),
        Command::Healthcheck => Ok(Run::Healthcheck(cli.settings.port)),
    };
    let run = match run {
        Ok(run) => run,
        Err(err) => return setting_error(&err),
    };
    if let Err(err) = telemetry::init(cli.settings.log_format) {
        return setting_error(&err);
    }
    let result = match run {
        Run::Serve(settings) => serve(settings).await,
        Run::Migrate(database) => migrate(database).await,
        Run::Healthcheck(port) => healthcheck(port).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "cerego stopped");
            eprintln!("cerego: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command with the settings it needs, checked.
#[expect(
    clippy::large_enum_variant,
    reason = "one value, made once at start-up"
)]
enum Run {
    Serve(Settings),
    Migrate(DatabaseSettings),
    Healthcheck(u16),
}

/// A setting that cannot be used: one line naming it, and exit code 2 (as for a usage error).
fn setting_error(err: &config::ConfigError) -> ExitCode {
    eprintln!("cerego: {err}");
    ExitCode::from(2)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    App::build(settings).await?.run_until(shutdown).await
}

async fn migrate(database: DatabaseSettings) -> anyhow::Result<()> {
    let (db, _) = store::connect(&database)?;
    let done = store::migrate(&db).await?;
    tracing::info!(
        database = db.kind(),
        applied = done.applied,
        already_applied = done.already_applied,
        "migrations applied"
    );
    println!(
        "applied {} migration{} ({} already applied)",
        done.applied,
        if done.applied == 1 { "" } else { "s" },
        done.already_applied
    );
    db.report_unnormalised_emails().await?;
    db.close().await;
    Ok(())
}

async fn healthcheck(port: u16) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    let healthy = tokio::time::timeout(std::time::Duration::from_secs(3), check)
        .await
        .context("no answer within 3 s")?
        .with_context(|| format!("cannot reach 127.0.0.1:{port}"))?;
    anyhow::ensure!(healthy, "/healthz did not answer 200");
    Ok(())
}
