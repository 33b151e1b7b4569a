//! The `cerego` command: `serve` (the default) or `migrate`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cerego::app::{App, shutdown_signal};
use cerego::config::Settings;
use cerego::{store, telemetry};

/// Sign-up and login service. Settings come from the environment and `.env` (see .env.example).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Exit 0 if the server on this host's PORT answers GET /healthz with 200 (for container
    /// HEALTHCHECKs, which have no curl in a distroless image).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("cerego: cannot read .env: {err}");
        return ExitCode::from(2);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("cerego: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init(settings.log_format) {
        eprintln!("cerego: {err}");
        return ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Healthcheck => healthcheck(settings.port).await,
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    App::build(settings).await?.run_until(shutdown).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let (db, _) = store::connect(&settings.database)?;
    store::migrate(&db).await?;
    tracing::info!(database = db.kind(), "migrations applied");
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
