//! Putting the service together: settings → database → auth → router → bound listener, and
//! serving it until a shutdown signal, finishing requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;

use crate::auth::clock::{Clock, SystemClock};
use crate::auth::passwords::PasswordHasher;
use crate::auth::tokens::TokenKeys;
use crate::auth::{Auth, AuthError, admin};
use crate::config::{AdminAccount, Settings};
use crate::domain::UniqueField;
use crate::http::serve::{self, ConnectionLimits};
use crate::http::{self, AppState};
use crate::limits::Limiter;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::secret_file;
use crate::store::{self, Db};

/// A built service, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    db: Db,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    connections: ConnectionLimits,
    purge_interval: Duration,
    audit_retention: Option<Duration>,
    limiter: Arc<Limiter>,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    readiness: Readiness,
    shutdown_grace: Duration,
}

impl App {
    /// Connects the database (running migrations unless disabled), loads the signing key,
    /// ensures the `ADMIN_*` account and binds the listener. Fails with a message naming what
    /// is wrong.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with the auth service reading the time from `clock` (tests move it to
    /// check expiry without waiting).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let (db, sqlite_file) = store::connect(&settings.database)?;
        if settings.database.auto_migrate {
            store::migrate(&db)
                .await
                .context("cannot prepare the database (is DATABASE_URL reachable?)")?;
        }
        let secret: SecretString = match &settings.jwt.secret {
            Some(secret) => secret.clone(),
            None => secret_file::load_or_create(sqlite_file.as_deref())?,
        };
        let metrics = Arc::new(Metrics::new(db.kind()));
        let limiter = Arc::new(
            Limiter::new(
                &settings.limits,
                &derived_key(&secret, b"cerego rate-limit keys v1"),
                metrics.clone(),
            )
            .context("invalid REDIS_URL")?,
        );
        if !settings.limits.enabled {
            tracing::warn!("RATE_LIMIT_ENABLED=false: no rate limit and no login throttle applies");
        }
        let mailer = Arc::new(
            Mailer::new(
                &settings.mail,
                &settings.recovery,
                &derived_key(&secret, b"cerego mail outbox v1"),
                metrics.clone(),
            )
            .context("invalid SMTP_URL")?,
        );
        let hasher =
            PasswordHasher::new(settings.bcrypt_cost, settings.hash_queue, metrics.clone());
        if let Some(admin) = &settings.admin {
            bootstrap_admin(&db, &hasher, admin, clock.unix_now(), &metrics).await?;
        }
        let auth = Auth::new(
            db.clone(),
            hasher,
            TokenKeys::new(&settings.jwt, &secret)?,
            settings.sessions,
            metrics.clone(),
            limiter.clone(),
            mailer.clone(),
            settings.recovery.clone(),
        )
        .with_clock(clock.clone());
        let auth = Arc::new(auth);
        let discovery = auth.jwks().map(|jwks| {
            http::routes::discovery::Discovery::new(
                &jwks,
                auth.signing_algorithm(),
                &settings.public_base_url,
                settings.jwt.issuer.as_deref(),
            )
        });
        if let Some(kid) = auth.signing_kid() {
            tracing::info!(
                kid,
                algorithm = auth.signing_algorithm(),
                "signing access tokens"
            );
            if settings.public_base_url.contains("://localhost") {
                tracing::warn!(
                    public_base_url = settings.public_base_url,
                    "PUBLIC_BASE_URL is a localhost address: the discovery document sends other \
                     services there for the keys, and it is the tokens' issuer; set it to where \
                     they reach cerego"
                );
            }
        }
        let readiness = Readiness::new(db.clone(), settings.database.acquire_timeout);
        let state = AppState {
            auth: auth.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            limiter: limiter.clone(),
            discovery,
        };
        let router = http::router(
            state,
            http::client_ip::Proxies {
                trusted: settings.trusted_proxies.clone(),
                header: settings.trusted_proxy_header,
            },
            settings.request_timeout,
            settings.http.body_read_timeout,
        );
        let connections =
            ConnectionLimits::fitted(&settings.http, settings.database.max_connections);
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (HOST, PORT)"))?;
        Ok(Self {
            listener,
            router,
            db,
            auth,
            metrics,
            connections,
            purge_interval: settings.sessions.purge_interval,
            audit_retention: settings.audit_retention,
            limiter,
            mailer,
            clock,
            readiness,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The address actually bound (useful with `PORT=0`).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight finish
    /// and closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr()?, database = self.db.kind(), "listening");
        let purge = tokio::spawn(purge_sessions(
            self.auth.clone(),
            self.purge_interval,
            self.audit_retention,
        ));
        let reap = tokio::spawn(close_idle_connections(self.db.clone()));
        let sweep = tokio::spawn(sweep_limits(self.limiter.clone()));
        let mut mail = tokio::spawn(send_mail(
            self.mailer.clone(),
            self.db.clone(),
            self.clock.clone(),
        ));
        let readiness = self.readiness.clone();
        let shutdown = async move {
            shutdown.await;
            // /readyz answers 503 from now on, on connections still open.
            readiness.drain();
        };
        serve::serve(
            self.listener,
            self.router,
            self.connections,
            self.metrics,
            self.shutdown_grace,
            shutdown,
        )
        .await;
        purge.abort();
        reap.abort();
        sweep.abort();
        // The sender finishes what it is delivering (a few seconds at most) before the pool closes.
        self.mailer.stop();
        let grace = crate::mail::SHUTDOWN_GRACE + Duration::from_secs(2);
        if tokio::time::timeout(grace, &mut mail).await.is_err() {
            mail.abort();
        }
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// `ADMIN_EMAIL`, `ADMIN_USERNAME`, `ADMIN_PASSWORD`: the account exists and holds `admin`
/// before the service listens (see [`admin::ensure_admin`]; every replica may run it at once).
async fn bootstrap_admin(
    db: &Db,
    hasher: &PasswordHasher,
    admin: &AdminAccount,
    now: i64,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let source = admin::BootstrapSource::Environment;
    match admin::ensure_admin(db, hasher, admin, now, source, metrics).await {
        Ok(_) => Ok(()),
        Err(AuthError::Taken(UniqueField::Username)) => {
            anyhow::bail!("ADMIN_USERNAME is taken by another account")
        }
        Err(AuthError::UnverifiedAdminAddress) => anyhow::bail!(
            "ADMIN_EMAIL belongs to an account whose address is not verified, so it was not \
             made an admin (anyone can sign up with an address): confirm the address first (a \
             verification link or a password reset), or name another"
        ),
        Err(err) => Err(anyhow::Error::new(err).context("cannot ensure the ADMIN_EMAIL account")),
    }
}

/// A key for one purpose, derived from the token-signing secret (HMAC-SHA256 of the purpose), so
/// every replica (which must share that secret) derives the same keys:
/// - `cerego rate-limit keys v1` names rate-limit keys, so nobody without the secret can tell
///   from a Redis key which IP or login name it counts;
/// - `cerego mail outbox v1` seals what queued mail says (its links).
fn derived_key(secret: &SecretString, purpose: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    use secrecy::ExposeSecret;
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes())
    else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Runs the mail sender until it stops ([`Mailer::stop`]); a sender that panics is logged and
/// started again a second later, so mail never silently stops going out for the life of the
/// process. (Dropping this future aborts the sender with it.)
async fn send_mail(mailer: Arc<Mailer>, db: Db, clock: Arc<dyn Clock>) {
    loop {
        let mut sender = tokio::task::JoinSet::new();
        sender.spawn(mailer.clone().run(db.clone(), clock.clone()));
        match sender.join_next().await {
            Some(Err(err)) if err.is_panic() => {
                tracing::error!("the mail sender panicked; starting it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

/// Drops expired in-memory rate-limit entries once a minute.
async fn sweep_limits(limiter: Arc<Limiter>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        limiter.sweep();
    }
}

/// Closes database connections that have sat idle for long, once a minute.
async fn close_idle_connections(db: Db) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        db.close_idle().await;
    }
}

/// Deletes ended sessions every `interval`, so the session tables do not grow without bound.
async fn purge_sessions(auth: Arc<Auth>, interval: Duration, audit_retention: Option<Duration>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; start one interval after start-up
    loop {
        ticks.tick().await;
        match auth.purge_sessions().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "ended sessions purged"),
            Err(err) => tracing::warn!(error = %err, "purging ended sessions failed"),
        }
        if let Some(retention) = audit_retention
            && let Err(err) = auth.purge_audit_events(retention).await
        {
            tracing::warn!(error = %err, "purging audit events past their retention failed");
        }
    }
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives while the server is
/// still starting is not lost (nor does it kill the process outright).
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown signal received; finishing requests in flight");
    })
}
