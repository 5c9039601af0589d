//! Start-up, the poll schedule, configuration reloads, and shutdown.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, parse_listen_address};
use crate::config::{Config, ConfigError};
use crate::ec2::Ec2Reports;
use crate::exposition::{Part, Prepared};
use crate::metrics::{RenderOptions, SelfMetrics, render_status, render_usage};
use crate::poller::{PollStats, Poller, RegionTarget};
use crate::server::{ServerOptions, WebState, serve};
use crate::snapshot::{ReportUsage, Snapshot};
use crate::{REVISION, VERSION, aws, preflight};

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
    #[error(transparent)]
    WebConfig(#[from] crate::web_config::WebConfigError),
}

/// A request to re-read the configuration file; the HTTP endpoint waits for the outcome.
pub struct Reload {
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
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
    let poller = Poller::new(&config, build_targets(&config, &shared, &metrics).await, metrics.clone());
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let options = ServerOptions {
        telemetry_path: cli.telemetry_path.clone(),
        max_requests: cli.max_requests,
        max_connections: cli.max_connections,
        header_timeout: cli.header_timeout,
        web_config: crate::web_config::WebConfigSource::from_flag(cli.web_config_file.as_deref())?,
    };
    let state = Arc::new(WebState::new(options, metrics.clone(), Some(reload_tx.clone())));
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
    let schedule = Schedule {
        config_path: cli.config_file.clone(),
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

/// Checks the IAM permissions of every target with `DryRun` calls (`--check-permissions`).
pub async fn check_permissions(config_path: &std::path::Path) -> Result<Vec<preflight::Finding>, AppError> {
    let config = Config::load(config_path)?;
    let metrics = SelfMetrics::new(VERSION, REVISION, false)?;
    let shared = aws::shared_config(&config.aws).await;
    let targets = build_targets(&config, &shared, &metrics).await;
    Ok(preflight::check(&targets, &config.reports).await)
}

/// One client per target (Region and owner account), with the target's credentials.
async fn build_targets(config: &Config, shared: &SdkConfig, metrics: &SelfMetrics) -> Vec<RegionTarget> {
    let labels_owner = config.labels_owner();
    let mut targets = Vec::with_capacity(config.targets.len());
    for target in &config.targets {
        let region = target.region.as_str();
        let sdk = aws::target_config(shared, target).await;
        targets.push(RegionTarget {
            region: region.into(),
            owner: labels_owner.then(|| target.owner().unwrap_or_default().into()),
            key: format!("{region} {}", target.role_arn.as_ref().map_or("", |r| r.as_str())),
            api: region_api(config, &sdk, metrics, region),
            images: dedup(target.images.iter().map(|i| i.as_str().to_owned())),
            report_ids: dedup(target.report_ids.iter().map(|r| r.as_str().to_owned())),
            discovery: target.discover.clone(),
        });
    }
    targets
}

fn region_api(config: &Config, shared: &SdkConfig, metrics: &SelfMetrics, region: &str) -> Ec2Reports {
    let client = aws::ec2_client(shared, region, metrics.api.clone());
    let concurrency = config.aws.max_concurrent_requests.get() as usize;
    Ec2Reports::new(client, region, metrics.api.clone(), concurrency, config.aws.page_size.get())
}

fn dedup(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.collect();
    ids.sort();
    ids.dedup();
    ids
}

fn ticker(interval: Duration) -> Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Runs a poll, turning a panic into an error so one bad poll cannot take the exporter down.
pub async fn guarded<F: std::future::Future>(poll: F) -> Result<F::Output, String> {
    AssertUnwindSafe(poll).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

/// What the usage part of the exposition is made of: which report serves each image (by
/// identity: a cached report is the same `Arc` from poll to poll) and the render options.
#[derive(PartialEq)]
struct UsageInputs {
    images: Vec<ServedImage>,
    options: RenderOptions,
}

/// Region, owner, image, and the report serving it.
type ServedImage = (Arc<str>, Option<Arc<str>>, Arc<str>, Option<ReportRef>);

/// A report compared by identity, not by content: equal pointers mean the very same report.
struct ReportRef(Arc<ReportUsage>);

impl PartialEq for ReportRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl UsageInputs {
    fn of(snapshot: &Snapshot, options: RenderOptions) -> Self {
        let images = snapshot
            .images
            .iter()
            .map(|i| (i.region.clone(), i.owner.clone(), i.image_id.clone(), i.report.clone().map(ReportRef)))
            .collect();
        Self { images, options }
    }
}

/// The usage part last published, and what it was rendered from.
struct RenderedUsage {
    inputs: UsageInputs,
    part: Arc<Part>,
}

/// The poll loop and what it needs besides the poller.
struct Schedule {
    config_path: PathBuf,
    metrics: SelfMetrics,
    state: Arc<WebState>,
    shutdown: CancellationToken,
}

impl Schedule {
    /// Polls now and then every poll interval. Polls never overlap: the next starts only after
    /// the previous one ended, and a poll that overruns delays the schedule instead of stacking
    /// up. A reload replaces the poller (keeping what it learned) and polls at once.
    async fn run(self, mut poller: Poller, mut config: Config, mut reloads: mpsc::Receiver<Reload>) {
        let mut schedule = ticker(config.poll_interval.get());
        let mut rendered: Option<RenderedUsage> = None;
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                Some(reload) = reloads.recv() => {
                    let outcome = self.reload(&mut poller, &mut config).await;
                    if outcome.is_ok() {
                        schedule = ticker(config.poll_interval.get());
                    }
                    if let Some(reply) = reload.reply {
                        let _ = reply.send(outcome);
                    }
                    continue;
                }
                _ = schedule.tick() => {}
            }
            let started = Instant::now();
            let requests_before = self.metrics.api.total_requests();
            let outcome = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                outcome = guarded(poller.poll(SystemTime::now())) => outcome,
            };
            match outcome {
                Ok((snapshot, stats)) => {
                    let polled = started.elapsed();
                    self.publish(snapshot, RenderOptions::from_config(&config), &mut rendered).await;
                    self.log_poll(&stats, polled, started.elapsed() - polled, requests_before);
                    if stats.credentials_failed {
                        // The credential chain may have changed (a profile written, a token file
                        // mounted): build it anew so the next poll picks that up, no restart needed.
                        let shared = aws::shared_config(&config.aws).await;
                        let fresh = build_targets(&config, &shared, &self.metrics).await;
                        poller.replace_clients(fresh.into_iter().map(|t| (t.key, t.api)).collect());
                    }
                }
                Err(panic) => {
                    self.metrics.poll_panics.inc();
                    tracing::error!(panic = %panic, "the poll panicked; the previous data keeps being served");
                }
            }
        }
    }

    /// Renders and serves a poll's snapshot. The usage part is rendered (and compressed) again
    /// only when a report or the options changed; in a steady state only the few status lines
    /// per image are new, so a poll neither spends the render time nor churns the memory of
    /// the whole exposition.
    async fn publish(&self, snapshot: Snapshot, options: RenderOptions, last: &mut Option<RenderedUsage>) {
        let inputs = UsageInputs::of(&snapshot, options);
        let reusable = last.as_ref().filter(|l| l.inputs == inputs).map(|l| Arc::clone(&l.part));
        // Rendering 100k series takes a while; keep it off the threads that serve scrapes.
        let rendered = tokio::task::spawn_blocking(move || {
            let usage = match reusable {
                Some(part) => part,
                None => Arc::new(Part::new(render_usage(&snapshot, &inputs.options))),
            };
            let status = Part::new(render_status(&snapshot));
            (Prepared::from_parts(Arc::clone(&usage), status), RenderedUsage { inputs, part: usage })
        })
        .await;
        match rendered {
            Ok((prepared, usage)) => {
                self.state.publish(prepared);
                *last = Some(usage);
            }
            Err(error) => tracing::error!(%error, "rendering the metrics failed; the previous ones stay"),
        }
    }

    /// One line per poll: `duration_ms` is the AWS part, `render_ms` what publishing took after it.
    fn log_poll(&self, stats: &PollStats, polled: Duration, rendered: Duration, requests_before: u64) {
        tracing::info!(
            duration_ms = polled.as_millis() as u64,
            render_ms = rendered.as_millis() as u64,
            images = stats.images,
            failed_images = stats.failed_images,
            series = stats.series,
            reports_created = stats.reports_created,
            reports_read = stats.reports_read,
            reports_deleted = stats.reports_deleted,
            regions_backing_off = stats.regions_backing_off,
            api_requests = self.metrics.api.total_requests().saturating_sub(requests_before),
            "poll finished"
        );
        if stats.credentials_failed {
            tracing::error!(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with \
                 an IAM role (IRSA, EKS Pod Identity, ECS task role, EC2 instance profile); retrying every poll"
            );
        }
    }

    /// Re-reads the configuration file. A bad file changes nothing but the reload metric.
    async fn reload(&self, poller: &mut Poller, config: &mut Config) -> Result<(), String> {
        let new = match Config::load(&self.config_path) {
            Ok(new) => new,
            Err(error) => {
                self.metrics.reload_successful.set(0);
                tracing::error!(%error, "configuration reload failed; the previous configuration stays in use");
                return Err(error.to_string());
            }
        };
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        let shared = aws::shared_config(&new.aws).await;
        let fresh = Poller::new(&new, build_targets(&new, &shared, &self.metrics).await, self.metrics.clone());
        let previous = std::mem::replace(poller, fresh);
        poller.inherit(previous);
        *config = new;
        self.metrics.reload_successful.set(1);
        self.metrics
            .reload_success_time
            .set(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        tracing::info!(path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }
}

/// SIGTERM and SIGINT stop the exporter; SIGHUP reloads the configuration.
async fn watch_signals(shutdown: CancellationToken, reloads: mpsc::Sender<Reload>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!("cannot install signal handlers; stop the exporter with SIGKILL");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received, shutting down"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received, shutting down"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received, reloading the configuration");
                    let _ = reloads.send(Reload { reply: None }).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloads;
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupt received, shutting down");
        }
    }
    shutdown.cancel();
    // Shutdown is bounded whatever hangs: a second signal, or the deadline, ends the process.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                () = tokio::time::sleep(SHUTDOWN_DEADLINE) => {}
            }
            tracing::warn!("shutdown did not finish in time; exiting now");
            std::process::exit(1);
        }
    }
}

/// The longest a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::{UsageInputs, guarded};
    use crate::metrics::RenderOptions;
    use crate::snapshot::{ImageStatus, ReportUsage, Snapshot};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn snapshot(report: &Arc<ReportUsage>, polled: SystemTime) -> Snapshot {
        Snapshot::new(vec![ImageStatus {
            region: "us-east-1".into(),
            owner: None,
            image_id: "ami-12345678".into(),
            poll_success: true,
            last_success: Some(polled),
            pending_since: None,
            report: Some(Arc::clone(report)),
        }])
    }

    /// The usage part is reused exactly while the same reports serve the same images under the
    /// same options; the status of a poll (its time) does not matter.
    #[test]
    fn usage_inputs_change_with_reports_and_options_only() {
        let report = Arc::new(ReportUsage::from_entries("amiur-1", UNIX_EPOCH, &[]));
        let t = UNIX_EPOCH + Duration::from_secs(100);
        let first = UsageInputs::of(&snapshot(&report, t), RenderOptions::default());
        let later = UsageInputs::of(&snapshot(&report, t + Duration::from_secs(60)), RenderOptions::default());
        assert!(first == later, "a later poll with the same report");
        let same_content = Arc::new(ReportUsage::from_entries("amiur-1", UNIX_EPOCH, &[]));
        assert!(first != UsageInputs::of(&snapshot(&same_content, t), RenderOptions::default()), "another report");
        let mut no_report = snapshot(&report, t);
        no_report.images[0].report = None;
        assert!(first != UsageInputs::of(&no_report, RenderOptions::default()), "the report went stale");
        let config = crate::config::Config::from_yaml(
            "cardinality:\n  sum_accounts: true\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n",
        )
        .expect("valid");
        let summed = RenderOptions::from_config(&config);
        assert!(first != UsageInputs::of(&snapshot(&report, t), summed), "other options");
    }

    #[tokio::test]
    async fn a_panicking_poll_becomes_an_error() {
        let outcome = guarded(async {
            if std::hint::black_box(true) {
                panic!("boom in a poll");
            }
            1
        })
        .await;
        assert_eq!(outcome, Err("boom in a poll".to_owned()));
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let formatted = guarded(async {
            let n = std::hint::black_box(3);
            if n == 3 {
                panic!("formatted {n}");
            }
        })
        .await;
        assert_eq!(formatted, Err("formatted 3".to_owned()));
    }
}
