//! The `cerego` command: `serve` (the default), `migrate`, `create-admin`, `audit verify`,
//! `keys generate` or `healthcheck`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroize};

use cerego::app::{App, shutdown_signal};
use cerego::auth::AuthError;
use cerego::auth::admin::{AdminBootstrap, BootstrapSource, ensure_admin};
use cerego::auth::clock::{Clock, SystemClock};
use cerego::auth::keys::{self, KeyAlgorithm};
use cerego::auth::passwords::PasswordHasher;
use cerego::config::{
    self, AdminAccount, DatabaseSettings, HashQueueSettings, ParseError, Settings, SettingsArgs,
};
use cerego::domain::{Email, NewPassword, NewUser, UniqueField, Username};
use cerego::metrics::Metrics;
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
    /// Ensure an admin account: give the admin role to the account with this email, or create
    /// the account (with the password read from standard input: prompted twice without echo
    /// on a terminal, else its first line). Needs only the database settings and BCRYPT_COST;
    /// exit 2 if the email, username or password is refused.
    CreateAdmin {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// The username, if the account is created.
        #[arg(long)]
        username: String,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signing keys for JWT_ALGORITHM EdDSA, ES256 or RS256.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new private key in a directory (created with mode 0700 if missing): a PKCS#8 PEM
    /// file of mode 0600 named by its creation time, never overwriting one; print its path and
    /// kid. Put it in every replica's JWT_KEYS_DIR, where, as the newest private key, it signs
    /// from the next start (docs/deployment.md: key rotation). Needs no other setting.
    Generate {
        /// EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA, 3072 bits).
        #[arg(long)]
        algorithm: KeyAlgorithm,
        /// The directory.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit trail's hash chain, from the oldest kept event to the newest: exit 0 if
    /// intact, 1 naming the first event that was altered, deleted or inserted out of chain, 2 if
    /// the database cannot be read. Needs only the database settings; reads, never migrates.
    Verify,
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
        Command::Audit(AuditCommand::Verify) => cli.settings.database().map(Run::AuditVerify),
        Command::Keys(KeysCommand::Generate { algorithm, out }) => {
            Ok(Run::KeysGenerate(algorithm, out))
        }
        Command::CreateAdmin { email, username } => cli.settings.database().map(|database| {
            Run::CreateAdmin(Box::new(AdminCommand {
                database,
                bcrypt_cost: cli.settings.bcrypt_cost,
                hash_queue: HashQueueSettings {
                    per_core: cli.settings.password_hash_queue_per_core,
                    full_wait: Duration::from_millis(cli.settings.password_hash_queue_full_wait_ms),
                },
                email,
                username,
            }))
        }),
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
        Run::CreateAdmin(command) => return create_admin(*command).await,
        Run::AuditVerify(database) => return audit_verify(database).await,
        Run::KeysGenerate(algorithm, out) => keys_generate(algorithm, &out),
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
    CreateAdmin(Box<AdminCommand>),
    AuditVerify(DatabaseSettings),
    KeysGenerate(KeyAlgorithm, std::path::PathBuf),
}

/// What `create-admin` needs: the database, the hasher's settings and the account's names.
struct AdminCommand {
    database: DatabaseSettings,
    bcrypt_cost: u32,
    hash_queue: HashQueueSettings,
    email: String,
    username: String,
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

/// `create-admin`: one line on standard output saying what it did; exit 2 (one line naming the
/// field) for a refused email, username or password, 1 for any other failure.
async fn create_admin(command: AdminCommand) -> ExitCode {
    let refused = |what: &str| {
        eprintln!("cerego: {what}");
        ExitCode::from(2)
    };
    let email = match Email::parse(&command.email) {
        Ok(email) => email,
        Err(rule) => return refused(&format!("email refused: {rule}")),
    };
    let username = match Username::parse(&command.username) {
        Ok(username) => username,
        Err(rule) => return refused(&format!("username refused: {rule}")),
    };
    let password = match read_password() {
        Ok(Some(password)) => password,
        Ok(None) => return refused("password refused: the two entries differ"),
        Err(err) => return failed(&anyhow::Error::new(err).context("cannot read the password")),
    };
    let password = match NewPassword::parse(password, &[email.as_str(), username.as_str()]) {
        Ok(password) => password,
        Err(rule) => return refused(&format!("password refused: {rule}")),
    };
    let name = username.as_str().to_owned();
    let admin = AdminAccount {
        account: NewUser { email, username },
        password,
    };
    match ensure_admin_in(&command, &admin).await {
        Ok(AdminBootstrap::Created(id)) => println!("created admin account {name} (id {id})"),
        Ok(AdminBootstrap::Granted(id)) => println!(
            "gave the admin role to the existing account with that email (id {id}); its \
             password is unchanged"
        ),
        Ok(AdminBootstrap::AlreadyAdmin(id)) => {
            println!("the account with that email (id {id}) is already an admin");
        }
        Err(AuthError::Taken(UniqueField::Username)) => {
            return refused("username is taken by another account");
        }
        Err(AuthError::UnverifiedAdminAddress) => {
            return refused(
                "email refused: it belongs to an account whose address is not verified (anyone \
                 can sign up with an address); confirm it first (a verification link or a \
                 password reset), or name another",
            );
        }
        Err(err) => return failed(&anyhow::Error::new(err)),
    }
    ExitCode::SUCCESS
}

/// Connects (migrating first if `DATABASE_AUTO_MIGRATE` allows) and runs [`ensure_admin`].
async fn ensure_admin_in(
    command: &AdminCommand,
    admin: &AdminAccount,
) -> Result<AdminBootstrap, AuthError> {
    let (db, _) = store::connect(&command.database)?;
    if command.database.auto_migrate {
        store::migrate(&db)
            .await
            .context("cannot prepare the database (is DATABASE_URL reachable?)")?;
    }
    let metrics = Arc::new(Metrics::new(db.kind()));
    let hasher = PasswordHasher::new(command.bcrypt_cost, command.hash_queue, metrics.clone());
    let done = ensure_admin(
        &db,
        &hasher,
        admin,
        SystemClock.unix_now(),
        BootstrapSource::Command,
        &metrics,
    )
    .await;
    db.close().await;
    done
}

/// The password from standard input: on a terminal, asked twice without echo (`None` if the
/// two differ); otherwise the first line, without its line ending.
fn read_password() -> std::io::Result<Option<SecretString>> {
    use std::io::{BufRead, IsTerminal};

    if std::io::stdin().is_terminal() {
        let first = SecretString::from(rpassword::prompt_password(
            "Password for the admin account: ",
        )?);
        let second = SecretString::from(rpassword::prompt_password("The same again: ")?);
        return Ok((first.expose_secret() == second.expose_secret()).then_some(first));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let password = SecretString::from(password.to_owned());
    // The buffer held the password too.
    line.zeroize();
    Ok(Some(password))
}

/// A failure that is not the input's: one line, exit 1.
fn failed(err: &anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{err:#}"), "create-admin failed");
    eprintln!("cerego: {err:#}");
    ExitCode::FAILURE
}

/// `audit verify`: one line on standard output when the chain is intact (exit 0); one line on
/// standard error naming the first broken row (exit 1), or saying why the trail could not be
/// read (exit 2, so a script tells "tampered" from "not checked", as `diff` and `cmp` do).
async fn audit_verify(database: DatabaseSettings) -> ExitCode {
    let verified = async {
        let db = store::connect_existing(&database)?;
        let report = db
            .verify_audit_chain()
            .await
            .context("cannot read the audit trail (is DATABASE_URL reachable and migrated?)");
        db.close().await;
        report
    };
    let report = match verified.await {
        Ok(report) => report,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "audit verify failed");
            eprintln!("cerego: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(broken) = report.broken {
        tracing::error!(checked = report.checked, %broken, "audit chain broken");
        eprintln!("audit chain broken: {broken}");
        return ExitCode::FAILURE;
    }
    match report.span {
        Some((first, last)) => println!(
            "audit chain intact: {} event{} (ids {first}..{last})",
            report.checked,
            if report.checked == 1 { "" } else { "s" }
        ),
        None => println!("audit chain intact: no events"),
    }
    // What retention took: whoever can delete rows can also move this mark, so it is worth a
    // look against AUDIT_RETENTION_DAYS and the log mirror.
    if let Some((id, at)) = report.purged_through {
        let at = at.map_or_else(|| "unknown".to_owned(), store::rfc3339_micros);
        println!("events up to id {id} (the newest occurred at {at}) were purged by retention");
    }
    ExitCode::SUCCESS
}

/// `keys generate`: one line on standard output with the new file and its `kid`.
fn keys_generate(algorithm: KeyAlgorithm, out: &std::path::Path) -> anyhow::Result<()> {
    let key = keys::generate(algorithm, out)?;
    println!("wrote {} (kid {})", key.path.display(), key.kid);
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
