//! Logging: JSON lines for collectors or pretty lines for people, filtered by `RUST_LOG`.
//!
//! What never reaches a log: passwords, hashes, tokens and the signing key. Handlers log ids,
//! routes and outcomes; request spans carry the route template, not the URI.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, LogFormat};

/// What `RUST_LOG` defaults to.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber. Fails if `RUST_LOG` is set but cannot be parsed.
pub fn init(format: LogFormat) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|err| ConfigError {
                var: "RUST_LOG",
                reason: err.to_string(),
            })?
        }
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
    Ok(())
}
