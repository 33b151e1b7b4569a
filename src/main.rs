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
    App::build(settings)
        .await?
        .run_until(shutdown_signal())
        .await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let (db, _) = store::connect(&settings.database)?;
    store::migrate(&db).await?;
    tracing::info!(database = db.kind(), "migrations applied");
    db.close().await;
    Ok(())
}
