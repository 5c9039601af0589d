//! Start-up, the poll schedule, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, parse_listen_address};
use crate::config::{Config, ConfigError};
use crate::ec2::Ec2Reports;
use crate::metrics::{SelfMetrics, render_snapshot};
use crate::poller::{Poller, RegionTarget};
use crate::server::{WebState, serve};
use crate::{REVISION, VERSION, aws};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid --web.listen-address: {0}")]
    ListenAddress(String),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the exporter until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> Result<(), AppError> {
    let config = Config::load(&cli.config_file)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let address = parse_listen_address(&cli.listen_address).map_err(AppError::ListenAddress)?;
    let listener = TcpListener::bind(address).await.map_err(|source| AppError::Bind { address, source })?;
    let bound = listener.local_addr().map_err(|source| AppError::Bind { address, source })?;
    tracing::info!(address = %bound, telemetry_path = %cli.telemetry_path, version = crate::VERSION_LINE, "listening");

    let metrics = SelfMetrics::new(VERSION, REVISION)?;
    let poller = build_poller(&config, metrics.clone()).await;
    let state = Arc::new(WebState::new(cli.telemetry_path.clone(), metrics.clone()));
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let polling =
        tokio::spawn(poll_forever(poller, config.poll_interval.get(), Arc::clone(&state), metrics, shutdown.clone()));
    serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    // The poll loop stops at its next await point; an in-flight AWS call is simply dropped.
    if let Err(error) = polling.await {
        tracing::error!(%error, "the poll loop ended abnormally");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn build_poller(config: &Config, metrics: SelfMetrics) -> Poller {
    let shared = aws::shared_config(&config.aws).await;
    let targets = config
        .targets
        .iter()
        .map(|target| {
            let client = aws::ec2_client(&shared, &target.region, metrics.api.clone());
            RegionTarget {
                region: target.region.as_str().into(),
                api: Ec2Reports::new(
                    client,
                    config.aws.max_concurrent_requests.get() as usize,
                    config.aws.page_size.get(),
                ),
                images: dedup(target.images.iter().map(|i| i.as_str().to_owned())),
                report_ids: dedup(target.report_ids.iter().map(|r| r.as_str().to_owned())),
            }
        })
        .collect();
    Poller::new(config, targets, metrics)
}

fn dedup(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Polls now and then every `interval`. Polls never overlap: the next starts only after the
/// previous one ended, and a poll that overruns delays the schedule instead of stacking up.
async fn poll_forever(
    mut poller: Poller,
    interval: Duration,
    state: Arc<WebState>,
    metrics: SelfMetrics,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let requests_before = metrics.api.total_requests();
        let (snapshot, stats) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            outcome = poller.poll(SystemTime::now()) => outcome,
        };
        // Rendering 100k series takes a while; keep it off the threads that serve scrapes.
        match tokio::task::spawn_blocking(move || render_snapshot(&snapshot)).await {
            Ok(text) => state.publish(Bytes::from(text)),
            Err(error) => tracing::error!(%error, "rendering the metrics failed; the previous ones stay"),
        }
        tracing::info!(
            duration_ms = started.elapsed().as_millis() as u64,
            images = stats.images,
            failed_images = stats.failed_images,
            series = stats.series,
            reports_created = stats.reports_created,
            reports_read = stats.reports_read,
            api_requests = metrics.api.total_requests() - requests_before,
            "poll finished"
        );
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
    shutdown.cancel();
}
