//! The application: start-up, wiring, and the commands. It is the only module that knows all
//! the others: it loads the configuration, builds the targets' clients (`targets`), starts the
//! poll schedule (`schedule`), the HTTP server and the signal handlers (`signals`), and stops
//! them in order.

mod schedule;
mod signals;
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::aws::dry_run::Preflight;

use crate::aws::dry_run::{self, Finding, Needs};
use crate::cli::{Cli, parse_listen_address};
use crate::config::{Config, ConfigError};
use crate::http::web_config::{WebConfig, WebConfigError, WebConfigSource};
use crate::http::{ServerOptions, WebState, reload, serve};
use crate::poll::Poller;
use crate::self_metrics::SelfMetrics;
use crate::shard::Shard;
use crate::{REVISION, VERSION, aws};
use schedule::Schedule;
use targets::build_targets;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Flag(String),
    #[error("invalid --web.listen-address: {0}")]
    ListenAddress(String),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    #[error("{0}")]
    Startup(String),
}

/// Runs the exporter until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> Result<(), AppError> {
    run_on(cli, None).await
}

/// Binds every `--web.listen-address` and logs each bound address (`listening`); port 0 becomes
/// the port the system picked.
pub async fn bind(cli: &Cli) -> Result<Vec<TcpListener>, AppError> {
    let mut listeners = Vec::new();
    for text in &cli.listen_addresses {
        let address = parse_listen_address(text).map_err(AppError::ListenAddress)?;
        let listener = TcpListener::bind(address).await.map_err(|source| AppError::Bind { address, source })?;
        let bound = listener.local_addr().map_err(|source| AppError::Bind { address, source })?;
        tracing::info!(address = %bound, telemetry_path = %cli.telemetry_path, version = crate::VERSION_LINE, "listening");
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Like `run`, serving on `listeners` from `bind` when given (the demo binds first, to print the
/// bound addresses), else on the flags' addresses, bound after the configuration is loaded.
pub async fn run_on(cli: Cli, listeners: Option<Vec<TcpListener>>) -> Result<(), AppError> {
    let shard = cli.shard().map_err(AppError::Flag)?;
    let config = Config::load(&cli.config_file)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listeners = match listeners {
        Some(listeners) => listeners,
        None => bind(&cli).await?,
    };

    let metrics = SelfMetrics::new(VERSION, REVISION, !cli.disable_exporter_metrics)?;
    let shared = aws::shared_config(&config.aws).await;
    metrics.preset(&config);
    metrics.set_shard(shard);
    let poller = Poller::new(&config, build_targets(&config, &shared, &metrics, shard).await, metrics.clone());
    let (reload_tx, reload_rx) = reload::channel();
    let options = ServerOptions {
        telemetry_path: cli.telemetry_path.clone(),
        max_requests: cli.max_requests,
        max_connections: cli.max_connections,
        header_timeout: cli.header_timeout,
        web_config: load_web_config(cli.web_config_file.clone()).await?,
        lifecycle: cli.enable_lifecycle,
    };
    let state = Arc::new(WebState::new(options, metrics.clone(), Some(reload_tx.clone())));
    let shutdown = CancellationToken::new();
    tokio::spawn(signals::watch_signals(shutdown.clone(), reload_tx));
    let schedule = Schedule {
        config_path: cli.config_file.clone(),
        shard,
        metrics,
        state: Arc::clone(&state),
        shutdown: shutdown.clone(),
    };
    let polling = tokio::spawn(schedule.run(poller, config, reload_rx));
    serve(listeners, state, shutdown.clone()).await;
    shutdown.cancel();
    // The poll loop stops at its next await point; an in-flight AWS call is simply dropped.
    if let Err(error) = polling.await {
        tracing::error!(%error, "the poll loop ended abnormally");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads `--web.config.file` off the async threads: it hashes with bcrypt (deliberately slow, see
/// `MAX_BCRYPT_COST`), which would stall whatever else those threads run.
async fn load_web_config(path: Option<PathBuf>) -> Result<Option<Arc<WebConfigSource>>, AppError> {
    let loaded = tokio::task::spawn_blocking(move || WebConfigSource::from_flag(path.as_deref())).await;
    match loaded {
        Ok(outcome) => Ok(outcome?),
        Err(error) => Err(AppError::Startup(format!("loading the web configuration failed: {error}"))),
    }
}

/// Checks the IAM permissions of every target with `DryRun` calls (`--check-permissions`).
/// Creating a report is tried on the first image the target names.
pub async fn check_permissions(config_path: &Path) -> Result<Preflight, AppError> {
    let config = Config::load(config_path)?;
    let metrics = SelfMetrics::new(VERSION, REVISION, false)?;
    let shared = aws::shared_config(&config.aws).await;
    let mut findings = Vec::new();
    for target in build_targets(&config, &shared, &metrics, Shard::default()).await {
        let needs = Needs {
            image: target.images.first().map(String::as_str),
            policy: &config.reports,
            describe_images: target.discovery.is_some() || config.images.facts,
            references: config.references.enabled,
        };
        for (operation, permission) in dry_run::check(&target.api, &needs).await {
            findings.push(Finding {
                region: target.region.to_string(),
                owner: target.owner.as_ref().map(|o| o.to_string()),
                operation,
                permission,
            });
        }
    }
    Ok(Preflight { findings })
}

/// `--check-config`: validates the configuration file, and the web configuration file when
/// given. Returns the configuration's warnings.
pub fn check_config(config_file: &Path, web_config_file: Option<&Path>) -> Result<Vec<String>, AppError> {
    let config = Config::load(config_file)?;
    if let Some(path) = web_config_file {
        WebConfig::load(path)?;
    }
    Ok(config.warnings())
}
