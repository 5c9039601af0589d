//! Start-up, the poll schedule, configuration reloads, and shutdown.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, parse_listen_address};
use crate::config::{Config, ConfigError};
use crate::ec2::Ec2Reports;
use crate::exposition::{Part, Prepared};
use crate::metrics::{RenderOptions, SelfMetrics, render_status, render_usage};
use crate::poller::{PollStats, Poller, RegionTarget, TargetPoller};
use crate::server::{Reload, ReloadTicket, ServerOptions, WebState, serve};
use crate::snapshot::{ImageStatus, ReportUsage, Snapshot};
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
    let poller = Poller::new(&config, build_targets(&config, &shared, &metrics).await, metrics.clone());
    let (reload_tx, reload_rx) = mpsc::channel(4);
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

/// Loads `--web.config.file` off the async threads: it hashes with bcrypt (up to about 2 s at
/// the highest cost it accepts), which would stall whatever else those threads run.
async fn load_web_config(path: Option<PathBuf>) -> Result<Option<Arc<crate::web_config::WebConfigSource>>, AppError> {
    let loaded =
        tokio::task::spawn_blocking(move || crate::web_config::WebConfigSource::from_flag(path.as_deref())).await;
    match loaded {
        Ok(outcome) => Ok(outcome?),
        Err(error) => Err(AppError::Startup(format!("loading the web configuration failed: {error}"))),
    }
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
    let mut targets = Vec::with_capacity(config.targets.len());
    for target in &config.targets {
        targets.push(build_target(config, target, shared, metrics).await);
    }
    targets
}

/// What identifies a target across reloads: its Region and role.
fn target_key(target: &crate::config::Target) -> String {
    format!("{} {}", target.region.as_str(), target.role_arn.as_ref().map_or("", |r| r.as_str()))
}

/// One target's client and watch list. Its IDs are unique: the configuration refuses repeats.
async fn build_target(
    config: &Config,
    target: &crate::config::Target,
    shared: &SdkConfig,
    metrics: &SelfMetrics,
) -> RegionTarget {
    let region = target.region.as_str();
    let sdk = aws::target_config(shared, target).await;
    RegionTarget {
        region: region.into(),
        owner: config.labels_owner().then(|| target.owner().unwrap_or_default().into()),
        key: target_key(target),
        api: region_api(config, &sdk, metrics, region),
        images: target.images.iter().map(|i| i.as_str().to_owned()).collect(),
        report_ids: target.report_ids.iter().map(|r| r.as_str().to_owned()).collect(),
        discovery: target.discover.clone(),
    }
}

fn region_api(config: &Config, shared: &SdkConfig, metrics: &SelfMetrics, region: &str) -> Ec2Reports {
    let client = aws::ec2_client(shared, region, metrics.api.clone());
    let concurrency = config.aws.max_concurrent_requests.get() as usize;
    Ec2Reports::new(client, region, metrics.api.clone(), concurrency, config.aws.page_size.get())
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

/// A target's finished poll, as its task reports it.
struct Polled {
    generation: u64,
    key: String,
    /// `None` when the poll panicked: the target's previous images stay.
    images: Option<Vec<ImageStatus>>,
    stats: PollStats,
    elapsed: Duration,
}

/// The target tasks of one configuration.
struct Generation {
    number: u64,
    keys: Vec<String>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<TargetPoller>>,
}

impl Generation {
    /// Starts one task per target. Each polls its target every poll interval, at once first;
    /// at most `aws.max_concurrent_targets` poll at the same time.
    fn start(
        number: u64,
        poller: Poller,
        config: &Arc<Config>,
        schedule: &Schedule,
        results: &mpsc::UnboundedSender<Polled>,
    ) -> Self {
        let permits = Arc::new(tokio::sync::Semaphore::new(poller.max_concurrent_targets().max(1)));
        let stop = schedule.shutdown.child_token();
        let mut keys = Vec::new();
        let mut tasks = Vec::new();
        for target in poller.into_targets() {
            keys.push(target.key().to_owned());
            let task = TargetTask {
                generation: number,
                config: Arc::clone(config),
                metrics: schedule.metrics.clone(),
                permits: Arc::clone(&permits),
                results: results.clone(),
                stop: stop.clone(),
            };
            tasks.push(tokio::spawn(task.run(target)));
        }
        Self { number, keys, stop, tasks }
    }

    /// Stops every task and returns its target. A target interrupted mid-poll comes back reset
    /// (see `TargetPoller::reset`).
    async fn stop(&mut self) -> Vec<TargetPoller> {
        self.stop.cancel();
        let mut targets = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.drain(..) {
            match task.await {
                Ok(target) => targets.push(target),
                Err(error) => tracing::error!(%error, "a target's poll task ended abnormally"),
            }
        }
        targets
    }
}

/// What one target's task needs besides its target.
struct TargetTask {
    generation: u64,
    config: Arc<Config>,
    metrics: SelfMetrics,
    permits: Arc<tokio::sync::Semaphore>,
    results: mpsc::UnboundedSender<Polled>,
    stop: CancellationToken,
}

impl TargetTask {
    /// Polls the target every poll interval until stopped. Polls of one target never overlap,
    /// and a poll that overruns delays its own schedule, nobody else's.
    async fn run(self, mut target: TargetPoller) -> TargetPoller {
        let mut schedule = ticker(self.config.poll_interval.get());
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return target,
                _ = schedule.tick() => {}
            }
            let permit = tokio::select! {
                biased;
                () = self.stop.cancelled() => return target,
                permit = Arc::clone(&self.permits).acquire_owned() => permit.ok(),
            };
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    // Its memory may be half-updated; the reports are in EC2, a cold read is safe.
                    target.reset();
                    return target;
                }
                outcome = guarded(target.poll(SystemTime::now())) => outcome,
            };
            drop(permit);
            let polled = match outcome {
                Ok(poll) => {
                    if poll.stats.credentials_failed {
                        self.rebuild_client(&mut target).await;
                    }
                    Polled {
                        generation: self.generation,
                        key: target.key().to_owned(),
                        images: Some(poll.images),
                        stats: poll.stats,
                        elapsed: started.elapsed(),
                    }
                }
                Err(panic) => {
                    self.metrics.poll_panics.inc();
                    tracing::error!(aws_region = target.region(), panic = %panic, "the poll panicked; the previous data keeps being served, and the next poll starts from a clean state");
                    target.reset();
                    Polled {
                        generation: self.generation,
                        key: target.key().to_owned(),
                        images: None,
                        stats: PollStats::default(),
                        elapsed: started.elapsed(),
                    }
                }
            };
            if self.results.send(polled).is_err() {
                return target;
            }
        }
    }

    /// The credential chain may have changed (a profile written, a token file mounted): build it
    /// anew so the next poll picks that up, no restart needed.
    async fn rebuild_client(&self, target: &mut TargetPoller) {
        let Some(configured) = self.config.targets.iter().find(|t| target_key(t) == target.key()) else { return };
        let shared = aws::shared_config(&self.config.aws).await;
        target.replace_client(build_target(&self.config, configured, &shared, &self.metrics).await.api);
    }
}

/// The latest images of every target, from which each published snapshot is composed.
#[derive(Default)]
struct Latest {
    by_target: HashMap<String, Vec<ImageStatus>>,
    /// Targets that finished their first poll (succeeded, failed or panicked).
    finished: HashSet<String>,
}

impl Latest {
    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.by_target.values().flatten().cloned().collect())
    }

    /// Forgets targets that are no longer configured.
    fn retain(&mut self, keys: &[String]) {
        self.by_target.retain(|k, _| keys.contains(k));
        self.finished.retain(|k| keys.contains(k));
    }
}

impl Schedule {
    /// Runs the target tasks and publishes what they find, each target's result as soon as it
    /// is in: the snapshot served is composed of the latest result of every target. A reload
    /// replaces the tasks (keeping what they learned), and the new ones poll at once.
    async fn run(self, poller: Poller, config: Config, mut reloads: mpsc::Receiver<Reload>) {
        let mut config = Arc::new(config);
        let (results_tx, mut results) = mpsc::unbounded_channel();
        let mut generation = Generation::start(0, poller, &config, &self, &results_tx);
        let mut latest = Latest::default();
        let mut rendered: Option<RenderedUsage> = None;
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(reload) = reloads.recv() => {
                    let claimed = reload.ticket.as_ref().is_none_or(ReloadTicket::claim);
                    if !claimed {
                        tracing::info!("a reload request was withdrawn before it was applied (it timed out); not applying it");
                        continue;
                    }
                    let outcome = self.reload(&mut generation, &mut config, &results_tx).await;
                    if outcome.is_ok() {
                        latest.retain(&generation.keys);
                        self.publish(&latest, &config, &mut rendered).await;
                    }
                    if let Some(ticket) = reload.ticket {
                        ticket.reply(outcome);
                    }
                }
                Some(first) = results.recv() => {
                    // Several targets may have finished meanwhile: publish them together.
                    let mut batch = vec![first];
                    while let Ok(more) = results.try_recv() {
                        batch.push(more);
                    }
                    let started = Instant::now();
                    for polled in &mut batch {
                        if polled.generation != generation.number {
                            continue;
                        }
                        latest.finished.insert(polled.key.clone());
                        if let Some(images) = polled.images.take() {
                            latest.by_target.insert(polled.key.clone(), images);
                        }
                    }
                    self.publish(&latest, &config, &mut rendered).await;
                    if generation.keys.iter().all(|k| latest.finished.contains(k)) {
                        self.state.mark_ready();
                    }
                    let render = started.elapsed();
                    for polled in batch.iter().filter(|p| p.generation == generation.number) {
                        self.log_poll(polled, render);
                    }
                }
            }
        }
        generation.stop().await;
    }

    /// Renders and serves the composed snapshot. The usage part is rendered (and compressed)
    /// again only when a report or the options changed; in a steady state only the few status
    /// lines per image are new, so a poll neither spends the render time nor churns the memory
    /// of the whole exposition.
    async fn publish(&self, latest: &Latest, config: &Config, last: &mut Option<RenderedUsage>) {
        let snapshot = latest.snapshot();
        let inputs = UsageInputs::of(&snapshot, RenderOptions::from_config(config));
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

    /// One line per target poll: `duration_ms` is the AWS part, `render_ms` what publishing took
    /// after it.
    fn log_poll(&self, polled: &Polled, rendered: Duration) {
        let stats = &polled.stats;
        tracing::info!(
            target = %polled.key.trim_end(),
            duration_ms = polled.elapsed.as_millis() as u64,
            render_ms = rendered.as_millis() as u64,
            images = stats.images,
            failed_images = stats.failed_images,
            series = stats.series,
            reports_created = stats.reports_created,
            reports_read = stats.reports_read,
            reports_deleted = stats.reports_deleted,
            regions_backing_off = stats.regions_backing_off,
            "poll finished"
        );
        if stats.credentials_failed {
            tracing::error!(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with \
                 an IAM role (IRSA, EKS Pod Identity, ECS task role, EC2 instance profile); retrying every poll"
            );
        }
    }

    /// Re-reads the configuration file. A bad file changes nothing but the reload metric; an
    /// unchanged one changes nothing at all (no new clients, no extra poll).
    async fn reload(
        &self,
        generation: &mut Generation,
        config: &mut Arc<Config>,
        results: &mpsc::UnboundedSender<Polled>,
    ) -> Result<(), String> {
        let new = match Config::load(&self.config_path) {
            Ok(new) => new,
            Err(error) => {
                self.metrics.reload_successful.set(0);
                tracing::error!(%error, "configuration reload failed; the previous configuration stays in use");
                return Err(error.to_string());
            }
        };
        self.note_reload_success();
        if new == **config {
            tracing::info!(path = %self.config_path.display(), "configuration unchanged; nothing to do");
            return Ok(());
        }
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        self.metrics.preset(&new);
        let shared = aws::shared_config(&new.aws).await;
        let mut fresh = Poller::new(&new, build_targets(&new, &shared, &self.metrics).await, self.metrics.clone());
        let number = generation.number + 1;
        fresh.inherit(generation.stop().await);
        *config = Arc::new(new);
        *generation = Generation::start(number, fresh, config, self, results);
        tracing::info!(path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    fn note_reload_success(&self) {
        self.metrics.reload_successful.set(1);
        self.metrics
            .reload_success_time
            .set(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
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
                    // Never awaited: a full queue must not keep this loop from seeing SIGTERM.
                    match reloads.try_send(Reload { ticket: None }) {
                        Ok(()) => tracing::info!("SIGHUP received, reloading the configuration"),
                        Err(_) => tracing::info!("SIGHUP received; a reload is already queued, which will read the file as it is now"),
                    }
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
            report_failures: 0,
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

    /// A target with no images, so that a poll makes no call: what happens around the poll is
    /// what is under test.
    fn idle_target(metrics: &crate::metrics::SelfMetrics) -> (Arc<crate::config::Config>, crate::poller::TargetPoller) {
        let config = crate::config::Config::from_yaml(
            "poll_interval: 1s\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n",
        )
        .expect("valid");
        let sdk = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let api =
            crate::ec2::Ec2Reports::new(aws_sdk_ec2::Client::from_conf(sdk), "us-east-1", metrics.api.clone(), 1, 5);
        let target = crate::poller::RegionTarget {
            region: "us-east-1".into(),
            owner: None,
            key: "us-east-1 ".into(),
            api,
            images: Vec::new(),
            report_ids: Vec::new(),
            discovery: None,
        };
        let poller = crate::poller::Poller::new(&config, vec![target], metrics.clone());
        (Arc::new(config), poller.into_targets().pop().expect("one target"))
    }

    #[tokio::test]
    async fn after_a_panic_the_target_starts_clean_and_the_previous_data_stays() {
        let metrics = crate::metrics::SelfMetrics::new("0", "r", false).expect("metrics");
        let (config, mut target) = idle_target(&metrics);
        target.panic_next_poll();
        let (results, mut polled) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = super::TargetTask {
            generation: 0,
            config,
            metrics: metrics.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(1)),
            results,
            stop: stop.clone(),
        };
        let running = tokio::spawn(task.run(target));
        let first = polled.recv().await.expect("the panicked poll is reported");
        assert!(first.images.is_none(), "the previous images stay");
        assert_eq!(metrics.poll_panics.get(), 1);
        let second =
            tokio::time::timeout(Duration::from_secs(5), polled.recv()).await.expect("polls on").expect("a poll");
        assert!(second.images.is_some(), "the next poll runs normally");
        stop.cancel();
        let target = running.await.expect("the task ends");
        assert!(target.memory_is_clean(), "nothing of the half-done poll is kept");
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
