//! The poll schedule: one task per target, each polling on its own; their latest results
//! composed into the snapshot that is rendered and served; reloads that replace the tasks and
//! keep what they learned.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::targets::{build_target, build_targets, target_key};
use crate::aws;
use crate::config::Config;
use crate::http::WebState;
use crate::http::reload::{Reload, ReloadTicket};
use crate::poll::{PollStats, Poller, TargetPoller};
use crate::render::RenderOptions;
use crate::render::cache::RenderCache;
use crate::self_metrics::SelfMetrics;
use crate::shard::Shard;
use crate::snapshot::{ImageStatus, Snapshot, TargetStatus};

fn ticker(interval: Duration) -> Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Runs a poll, turning a panic into an error so one bad poll cannot take the exporter down.
async fn guarded<F: std::future::Future>(poll: F) -> Result<F::Output, String> {
    AssertUnwindSafe(poll).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

/// The poll loop and what it needs besides the poller.
pub(super) struct Schedule {
    pub(super) config_path: PathBuf,
    /// The same for every configuration: it comes from the flags.
    pub(super) shard: Shard,
    pub(super) metrics: SelfMetrics,
    pub(super) state: Arc<WebState>,
    pub(super) shutdown: CancellationToken,
}

/// A target's finished poll, as its task reports it.
struct Polled {
    generation: u64,
    key: String,
    /// `None` when the poll panicked: the target's previous images (and status) stay.
    images: Option<Vec<ImageStatus>>,
    target: Option<TargetStatus>,
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
        let mut live = Vec::new();
        for target in poller.into_targets() {
            keys.push(target.key().to_owned());
            live.push(target.live());
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
        schedule.state.watch_polls(live);
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
                        target: Some(poll.target),
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
                        target: None,
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
        target.replace_client(build_target(&self.config, configured, &shared, &self.metrics, target.shard()).await.api);
    }
}

/// The latest images of every target, from which each published snapshot is composed.
#[derive(Default)]
struct Latest {
    by_target: HashMap<String, Vec<ImageStatus>>,
    targets: HashMap<String, TargetStatus>,
    /// Targets that finished their first poll (succeeded, failed or panicked).
    finished: HashSet<String>,
}

impl Latest {
    fn snapshot(&self) -> Snapshot {
        Snapshot::composed(
            self.by_target.values().flatten().cloned().collect(),
            self.targets.values().cloned().collect(),
        )
    }

    /// Forgets targets that are no longer configured.
    fn retain(&mut self, keys: &[String]) {
        self.by_target.retain(|k, _| keys.contains(k));
        self.targets.retain(|k, _| keys.contains(k));
        self.finished.retain(|k| keys.contains(k));
    }
}

impl Schedule {
    /// Runs the target tasks and publishes what they find, each target's result as soon as it
    /// is in: the snapshot served is composed of the latest result of every target. A reload
    /// replaces the tasks (keeping what they learned), and the new ones poll at once.
    pub(super) async fn run(self, poller: Poller, config: Config, mut reloads: mpsc::Receiver<Reload>) {
        let mut config = Arc::new(config);
        let (results_tx, mut results) = mpsc::unbounded_channel();
        let mut generation = Generation::start(0, poller, &config, &self, &results_tx);
        let mut latest = Latest::default();
        let mut rendered = RenderCache::default();
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
                        if let Some(target) = polled.target.take() {
                            latest.targets.insert(polled.key.clone(), target);
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

    /// Renders and serves the composed snapshot: the exposition (the cache renders the usage
    /// part again only when a report or the options changed, see `render::cache`), and the
    /// snapshot itself, of which the status page is written when someone asks for it.
    async fn publish(&self, latest: &Latest, config: &Config, cache: &mut RenderCache) {
        let snapshot = Arc::new(latest.snapshot());
        let options = RenderOptions::from_config(config);
        match cache.prepare(Arc::clone(&snapshot), options.clone()).await {
            Ok(prepared) => self.state.publish(prepared),
            Err(error) => tracing::error!(%error, "rendering the metrics failed; the previous ones stay"),
        }
        self.state.publish_snapshot(snapshot, options);
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
        let mut fresh =
            Poller::new(&new, build_targets(&new, &shared, &self.metrics, self.shard).await, self.metrics.clone());
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

#[cfg(test)]
mod tests {
    use super::guarded;
    use std::sync::Arc;
    use std::time::Duration;

    /// A target with no images, so that a poll makes no call: what happens around the poll is
    /// what is under test.
    fn idle_target(
        metrics: &crate::self_metrics::SelfMetrics,
    ) -> (Arc<crate::config::Config>, crate::poll::TargetPoller) {
        let config = crate::config::Config::from_yaml(
            "poll_interval: 1s\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n",
        )
        .expect("valid");
        let sdk = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let api = crate::aws::Ec2Client::new(
            aws_sdk_ec2::Client::from_conf(sdk),
            crate::aws::CallCounter::new("us-east-1", metrics.api.clone()),
            1,
            5,
        );
        let target = crate::poll::Target {
            region: "us-east-1".into(),
            owner: None,
            key: "us-east-1 ".into(),
            api,
            images: Vec::new(),
            report_ids: Vec::new(),
            discovery: None,
            shard: crate::shard::Shard::default(),
            hash_owner: String::new(),
        };
        let poller = crate::poll::Poller::new(&config, vec![target], metrics.clone());
        (Arc::new(config), poller.into_targets().pop().expect("one target"))
    }

    #[tokio::test]
    async fn after_a_panic_the_target_starts_clean_and_the_previous_data_stays() {
        let metrics = crate::self_metrics::SelfMetrics::new("0", "r", false).expect("metrics");
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
