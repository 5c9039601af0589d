//! Polls: for every target (a Region of an owner account), list the reports of the watched
//! images, request new reports where they are due, read the entries of reports not read before,
//! and tell the images' status.
//!
//! Cost is the design constraint. Reports are listed 200 images to a call; entries are read by
//! report ID, up to 200 reports to a call, and only for reports never read before (an available
//! report never changes); the exporter deletes its own reports once a newer one serves, so an
//! image lists one or two reports, not 30 days of them. A steady-state poll therefore costs one
//! DescribeImageUsageReports call (one page) per 200 images and nothing else.
//!
//! Failure is contained. Each target is polled on its own (`TargetPoller`), so a hung Region
//! holds back no other. The images of a failed call keep their last good data, marked by
//! `ami_usage_image_poll_success 0`, for `staleness_limit`; the others refresh. An entry chain
//! that fails part-way resumes at the failed page at the next poll. A Region that EC2 throttles
//! is polled less and less often until it answers again; an image whose reports keep failing,
//! or whose report cannot be created, waits longer and longer before the next request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use crate::config::{Config, Discovery, EntryQuery, MAX_IDS_PER_CALL, ReportPolicy};
use crate::ec2::{ApiError, Ec2Reports, EntryChain, ReportSelector, Skipped, is_denied};
use crate::intern::Interner;
use crate::metrics::SelfMetrics;
use crate::report::{
    Backoff, ImageReports, ReportParams, ReportState, UsageReport, classify, client_token, needs_new_report, superseded,
};
use crate::snapshot::{Entry, ImageStatus, ReportUsage};

/// EC2's code for throttling.
const THROTTLED: &str = "RequestLimitExceeded";
/// The longest a throttled Region waits between polls (or one poll interval, if longer).
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(3600);
/// At most this many superseded reports are deleted per Region and poll: the 30 days of reports
/// an upgrade finds are cleared over a few polls instead of in one burst of calls.
pub const MAX_DELETIONS_PER_POLL: usize = 1000;
/// The longest wait before trying to delete again after EC2 refused the permission (or one poll
/// interval, if longer).
const MAX_DELETE_BACKOFF: Duration = Duration::from_secs(3600);

/// The images and pinned reports of one Region of one owner account, with its client.
pub struct RegionTarget {
    pub region: Arc<str>,
    /// Set when several owner accounts are configured: the value of the `owner_account_id` label.
    pub owner: Option<Arc<str>>,
    /// Identifies the target across reloads: Region and role.
    pub key: String,
    pub api: Ec2Reports,
    /// Images to watch; the exporter keeps their reports fresh when creation is on.
    pub images: Vec<String>,
    /// Reports made elsewhere, read as they are; never replaced by the exporter.
    pub report_ids: Vec<String>,
    /// More images to watch, found with DescribeImages.
    pub discovery: Option<Discovery>,
}

/// What one poll did, for the log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    pub images: usize,
    pub failed_images: usize,
    pub reports_created: usize,
    pub reports_read: usize,
    pub reports_deleted: usize,
    pub series: usize,
    /// Targets skipped because EC2 throttled them recently.
    pub regions_backing_off: usize,
    /// Whether some call failed because no credentials could be loaded.
    pub credentials_failed: bool,
}

/// The settings a poll needs, taken from the configuration.
struct Settings {
    policy: ReportPolicy,
    entry_query: EntryQuery,
    wanted: ReportParams,
    concurrency: usize,
    poll_interval: Duration,
    staleness_limit: Duration,
}

/// A create whose answer named a report that the next listing did not show (deleted elsewhere,
/// or expired): the same request would get the same answer, so it is not repeated until the
/// image's token changes.
struct Vanished {
    token: String,
    report_id: String,
}

/// What the poller remembers of one target between polls.
#[derive(Default)]
struct Memory {
    /// Error reports already logged, so each is logged and counted once.
    seen_errors: HashSet<String>,
    /// Pending reports already reported as stuck.
    seen_stuck: HashSet<String>,
    /// Reports in a state this version does not know, already logged.
    seen_unknown: HashSet<String>,
    /// The image of each pinned report, for when listing the report fails.
    pinned_images: HashMap<String, String>,
    /// Images whose last report creation failed, and when to try again.
    create_backoff: HashMap<String, Backoff>,
    /// Reports requested at the last poll, by image, with their token: the next listing must
    /// show them.
    requested: HashMap<String, Vanished>,
    /// Per image, a token whose report vanished.
    vanished: HashMap<String, Vanished>,
    /// Entry chains that failed part-way, by the reports they read; the next poll resumes them.
    chains: HashMap<Vec<String>, EntryChain>,
    /// Set while EC2 refuses DeleteImageUsageReport (a missing IAM permission).
    delete_backoff: Option<Backoff>,
    /// Set while EC2 throttles the Region.
    throttled: Option<Backoff>,
    /// Images found by discovery, and when.
    discovered: Vec<String>,
    discovered_at: Option<SystemTime>,
}

/// One target and everything the exporter knows about it: its client, what it remembers between
/// polls, the usage of its serving reports and the last status of its images. Targets share
/// nothing but the settings, the metrics and the string interner, so each can be polled on its
/// own schedule.
pub struct TargetPoller {
    target: RegionTarget,
    memory: Memory,
    settings: Arc<Settings>,
    metrics: SelfMetrics,
    /// Usage of every report currently serving an image, by report ID.
    cache: HashMap<String, Arc<ReportUsage>>,
    /// The account IDs, resource types and report IDs of the entries read, one copy of each
    /// (see `intern`); shared by all targets, and what no report holds is forgotten.
    strings: Arc<Interner>,
    /// The last status of each image, served again when a later poll of the image fails.
    last: HashMap<String, ImageStatus>,
    /// Makes the next poll panic half-way, for the tests of what follows a panic.
    #[cfg(test)]
    panic_next: bool,
}

/// The outcome of listing a target's reports.
#[derive(Default)]
struct Listing {
    by_image: HashMap<String, Vec<UsageReport>>,
    /// Images whose reports could not be listed, with the reason.
    failed: HashMap<String, ApiError>,
    skipped: Skipped,
}

/// An image whose report is due, and the token of the request.
struct Due {
    image: String,
    token: String,
}

/// Per image, what this poll decided.
struct Decision {
    serving: Option<UsageReport>,
    pending_since: Option<SystemTime>,
    /// Consecutive failed reports of the image (0 when its latest report is fine).
    failures: usize,
}

/// The images of one target after a poll, and what the poll did.
pub struct TargetPoll {
    pub images: Vec<ImageStatus>,
    pub stats: PollStats,
}

/// All targets of a configuration.
pub struct Poller {
    targets: Vec<TargetPoller>,
    max_concurrent_targets: usize,
}

impl Poller {
    pub fn new(config: &Config, targets: Vec<RegionTarget>, metrics: SelfMetrics) -> Self {
        let settings = Arc::new(Settings {
            policy: config.reports.clone(),
            entry_query: config.entries.clone(),
            wanted: ReportParams::from_policy(&config.reports),
            concurrency: config.aws.max_concurrent_requests.get() as usize,
            poll_interval: config.poll_interval.get(),
            staleness_limit: config.staleness_limit.get(),
        });
        let strings = Arc::new(Interner::new());
        let targets = targets
            .into_iter()
            .map(|target| TargetPoller {
                target,
                memory: Memory::default(),
                settings: Arc::clone(&settings),
                metrics: metrics.clone(),
                cache: HashMap::new(),
                strings: Arc::clone(&strings),
                last: HashMap::new(),
                #[cfg(test)]
                panic_next: false,
            })
            .collect();
        Self { targets, max_concurrent_targets: config.aws.max_concurrent_targets.get() as usize }
    }

    /// Takes over what the targets of a previous configuration learned, after a reload: the
    /// last good data of every image and the memory of targets still configured, and the report
    /// cache if the new configuration reads reports the same way.
    pub fn inherit(&mut self, previous: Vec<TargetPoller>) {
        // The strings the inherited usage holds: new entries share them too.
        if let Some(first) = previous.first() {
            for target in &mut self.targets {
                target.strings = Arc::clone(&first.strings);
            }
        }
        for old in previous {
            if let Some(new) = self.targets.iter_mut().find(|t| t.target.key == old.target.key) {
                new.inherit(old);
            }
        }
    }

    /// The targets, each to be polled on its own.
    pub fn into_targets(self) -> Vec<TargetPoller> {
        self.targets
    }

    pub fn max_concurrent_targets(&self) -> usize {
        self.max_concurrent_targets
    }
}

impl TargetPoller {
    /// Identifies the target across reloads.
    pub fn key(&self) -> &str {
        &self.target.key
    }

    pub fn region(&self) -> &str {
        &self.target.region
    }

    /// Keeps what `old` (the same target under the previous configuration) learned.
    fn inherit(&mut self, mut old: TargetPoller) {
        self.last = std::mem::take(&mut old.last);
        if old.settings.entry_query == self.settings.entry_query {
            self.cache = std::mem::take(&mut old.cache);
        }
        let rediscover = old.target.discovery != self.target.discovery;
        self.memory = std::mem::take(&mut old.memory);
        if rediscover {
            self.memory.discovered_at = None;
        }
    }

    /// Starts over from what EC2 holds, after a poll that panicked and may have left the memory
    /// half-updated. The last statuses stay (they are replaced whole at the end of a poll, so a
    /// panic cannot have touched them); everything else is read again from EC2.
    pub fn reset(&mut self) {
        self.memory = Memory::default();
        self.cache.clear();
        self.strings.forget_unused();
    }

    #[cfg(test)]
    pub(crate) fn panic_next_poll(&mut self) {
        self.panic_next = true;
    }

    #[cfg(test)]
    pub(crate) fn memory_is_clean(&self) -> bool {
        self.memory.seen_errors.is_empty() && self.memory.chains.is_empty() && self.cache.is_empty()
    }

    /// Gives the target a new client (after the credentials changed), keeping all state.
    pub fn replace_client(&mut self, api: Ec2Reports) {
        self.target.api = api;
    }

    /// Runs one poll of the target.
    pub async fn poll(&mut self, now: SystemTime) -> TargetPoll {
        let started = Instant::now();
        self.metrics.polls.inc();
        let mut stats = PollStats::default();
        #[cfg(test)]
        if std::mem::take(&mut self.panic_next) {
            // Half-way through: some memory written, the rest not.
            self.memory.seen_errors.insert("amiur-halfway".to_owned());
            panic!("injected panic half-way through a poll");
        }
        let images = self.poll_images(now, &mut stats).await;
        let serving: HashSet<&str> =
            images.iter().filter_map(|s| s.report.as_ref()).map(|r| r.report_id.as_str()).collect();
        // Reports no longer serving any image will not be read again: forget them.
        self.cache.retain(|id, _| serving.contains(id.as_str()));
        self.strings.forget_unused();
        self.last = images.iter().map(|s| (s.image_id.to_string(), s.clone())).collect();

        stats.images = images.len();
        stats.failed_images = images.iter().filter(|s| !s.poll_success).count();
        stats.series = images.iter().filter_map(|i| i.report.as_ref()).map(|r| r.usage.len()).sum();
        if stats.failed_images > 0 {
            self.metrics.poll_failures.inc();
        }
        self.metrics.poll_duration.with_label_values(&[&self.target.region]).set(started.elapsed().as_secs_f64());
        TargetPoll { images, stats }
    }

    async fn poll_images(&mut self, now: SystemTime, stats: &mut PollStats) -> Vec<ImageStatus> {
        let region = self.target.region.clone();
        if let Some(backoff) = self.memory.throttled.filter(|b| !b.allows(now)) {
            stats.regions_backing_off += 1;
            tracing::debug!(aws_region = %region, failures = backoff.failures(), "EC2 throttled this Region; skipping it this poll");
            return self.known_images().iter().map(|image| self.stale(image, now)).collect();
        }
        let mut errors: Vec<ApiError> = Vec::new();
        let images = self.refresh_images(now, &mut errors).await;

        let listing = list_reports(&self.target, &images, &self.memory.pinned_images, self.settings.concurrency).await;
        errors.extend(listing.failed.values().cloned());
        self.note_skipped(&listing.skipped, "reports");
        self.remember_pinned(&listing);
        self.check_requested(&listing);

        let (decisions, to_create) = self.decide(&images, &listing, now);
        let created = self.create_reports(&to_create, now).await;
        stats.reports_created += created.iter().filter(|r| r.is_ok()).count();
        errors.extend(created.into_iter().filter_map(Result::err));

        // Read the entries of chosen reports that were never read.
        let unread: Vec<UsageReport> = {
            let mut seen = HashSet::new();
            decisions
                .values()
                .filter_map(|d| d.serving.as_ref())
                .filter(|r| !self.cache.contains_key(&r.id) && seen.insert(r.id.as_str()))
                .cloned()
                .collect()
        };
        stats.reports_read += unread.len();
        let (read, failed_reports) = self.read_entries(&unread).await;
        errors.extend(failed_reports.values().cloned());
        for (id, usage) in read {
            self.cache.insert(id, Arc::new(usage));
        }
        stats.reports_deleted += self.delete_superseded(&listing, &decisions, now).await;

        self.note_throttling(&errors, now);
        // Missing or rejected credentials: a rebuilt chain may find new ones (a rotated key, a
        // refreshed token file).
        stats.credentials_failed |=
            errors.iter().any(|e| e.code == crate::aws::CREDENTIALS_ERROR || e.code == "AuthFailure");

        let mut statuses = Vec::with_capacity(decisions.len() + listing.failed.len());
        for (image, decision) in decisions {
            let failed = decision.serving.as_ref().is_some_and(|r| failed_reports.contains_key(&r.id));
            let status = if failed {
                self.stale(&image, now)
            } else {
                ImageStatus {
                    region: region.clone(),
                    owner: self.target.owner.clone(),
                    image_id: image.as_str().into(),
                    poll_success: true,
                    last_success: Some(now),
                    pending_since: decision.pending_since,
                    report_failures: decision.failures,
                    report: decision.serving.as_ref().and_then(|r| self.cache.get(&r.id).cloned()),
                }
            };
            statuses.push(status);
        }
        statuses.extend(listing.failed.keys().map(|image| self.stale(image, now)));
        statuses
    }

    /// The target's images: the configured ones and those discovery found, refreshed when its
    /// interval has passed. A failed refresh keeps the previous selection.
    async fn refresh_images(&mut self, now: SystemTime, errors: &mut Vec<ApiError>) -> Vec<String> {
        let target = &self.target;
        let memory = &mut self.memory;
        if let Some(discovery) = &target.discovery {
            let due = memory
                .discovered_at
                .is_none_or(|at| now.duration_since(at).map_or(true, |age| age >= discovery.refresh_interval.get()));
            if due {
                match target.api.describe_images(&discovery.owners, &discovery.filters).await {
                    Ok(found) => {
                        if found != memory.discovered {
                            tracing::info!(aws_region = %target.region, images = found.len(), "discovered images");
                        }
                        memory.discovered = found;
                        memory.discovered_at = Some(now);
                    }
                    Err(error) => {
                        tracing::warn!(aws_region = %target.region, %error, "cannot discover images; keeping the previous selection");
                        errors.push(error);
                    }
                }
            }
        }
        let mut images = target.images.clone();
        images.extend(memory.discovered.iter().cloned());
        images.sort();
        images.dedup();
        images
    }

    /// Reports requested at the last poll must be listed now. One that is not (deleted
    /// elsewhere, or expired) is counted and logged, and its token is not sent again: EC2 would
    /// answer it with the same vanished report, every poll.
    fn check_requested(&mut self, listing: &Listing) {
        let requested = std::mem::take(&mut self.memory.requested);
        for (image, request) in requested {
            if listing.failed.contains_key(&image) {
                continue;
            }
            let listed = listing.by_image.get(&image).is_some_and(|r| r.iter().any(|r| r.id == request.report_id));
            if !listed {
                self.metrics.reports_vanished.with_label_values(&[&self.target.region]).inc();
                tracing::warn!(
                    aws_region = %self.target.region,
                    image_id = %image,
                    report_id = %request.report_id,
                    "EC2 created a usage report that it does not list (deleted elsewhere?); not asking again until the refresh window or the image's reports change"
                );
                self.memory.vanished.insert(image, request);
            }
        }
    }

    /// Chooses the report of each listed image and the images that need a new one; logs error,
    /// stuck and unknown reports (once each).
    fn decide(
        &mut self,
        watched_images: &[String],
        listing: &Listing,
        now: SystemTime,
    ) -> (HashMap<String, Decision>, Vec<Due>) {
        let target = &self.target;
        let memory = &self.memory;
        let s = &self.settings;
        let pinned: HashSet<&str> = target.report_ids.iter().map(String::as_str).collect();
        let watched: HashSet<&str> = watched_images.iter().map(String::as_str).collect();
        let usable = |r: &UsageReport| pinned.contains(r.id.as_str()) || !s.policy.create || r.params == s.wanted;
        let (max_age, pending_timeout) = (s.policy.max_age.get(), s.policy.pending_timeout.get());

        let mut decisions = HashMap::new();
        let mut to_create = Vec::new();
        let mut news = NewProblems::default();
        let no_reports = Vec::new();
        // Every listed image, and every watched image whose listing did not fail (it may have
        // no report at all yet).
        let images = listing.by_image.keys().chain(
            watched_images.iter().filter(|i| !listing.failed.contains_key(*i) && !listing.by_image.contains_key(*i)),
        );
        for image in images {
            let reports = listing.by_image.get(image).unwrap_or(&no_reports);
            let sorted: ImageReports<'_> = classify(reports, usable, now, pending_timeout);
            news.errors.extend(
                sorted
                    .errors
                    .iter()
                    .filter(|r| matches!(r.state, ReportState::Error { .. }) && !memory.seen_errors.contains(&r.id))
                    .map(|r| (*r).clone()),
            );
            news.unknown
                .extend(sorted.unknown.iter().filter(|r| !memory.seen_unknown.contains(&r.id)).map(|r| (*r).clone()));
            if let Some(p) = sorted.pending.filter(|p| {
                matches!(p.state, ReportState::Pending)
                    && now.duration_since(p.created).is_ok_and(|age| age > pending_timeout)
                    && !memory.seen_stuck.contains(&p.id)
            }) {
                news.stuck.push(p.clone());
            }
            let due = s.policy.create
                && watched.contains(image.as_str())
                && needs_new_report(&sorted, now, max_age, s.poll_interval)
                && memory.create_backoff.get(image).is_none_or(|b| b.allows(now));
            if due {
                let token = client_token(image, &s.wanted, now, max_age, sorted.newest.map(|r| r.id.as_str()));
                if memory.vanished.get(image).is_none_or(|v| v.token != token) {
                    to_create.push(Due { image: image.clone(), token });
                }
            }
            let decision = Decision {
                serving: sorted.newest_available.cloned(),
                pending_since: sorted.pending.map(|p| p.created),
                failures: sorted.consecutive_failures().len(),
            };
            decisions.insert(image.clone(), decision);
        }
        self.log_new_report_problems(news, listing);
        (decisions, to_create)
    }

    fn log_new_report_problems(&mut self, news: NewProblems, listing: &Listing) {
        let region = self.target.region.clone();
        let memory = &mut self.memory;
        for report in news.errors {
            if let ReportState::Error { reason } = &report.state {
                tracing::warn!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, reason = %reason, "usage report failed in EC2; it is ignored");
            }
            self.metrics.report_errors.with_label_values(&[&region]).inc();
            memory.seen_errors.insert(report.id);
        }
        for report in news.unknown {
            if let ReportState::Other(state) = &report.state {
                tracing::warn!(
                    aws_region = %region,
                    image_id = %report.image_id,
                    report_id = %report.id,
                    state = %state,
                    pending_timeout = %self.settings.policy.pending_timeout,
                    "usage report in a state this version does not know; treated as pending until reports.pending_timeout, then as failed"
                );
            }
            memory.seen_unknown.insert(report.id);
        }
        for report in news.stuck {
            tracing::warn!(
                aws_region = %region,
                image_id = %report.image_id,
                report_id = %report.id,
                pending_timeout = %self.settings.policy.pending_timeout,
                "usage report is still pending after reports.pending_timeout; the previous report keeps serving"
            );
            self.metrics.reports_stuck.with_label_values(&[&region]).inc();
            memory.seen_stuck.insert(report.id);
        }
        if listing.failed.is_empty() {
            // Reports expire after 30 days; forget the ones EC2 no longer lists.
            let listed: HashSet<&str> = listing.by_image.values().flatten().map(|r| r.id.as_str()).collect();
            memory.seen_errors.retain(|id| listed.contains(id.as_str()));
            memory.seen_stuck.retain(|id| listed.contains(id.as_str()));
            memory.seen_unknown.retain(|id| listed.contains(id.as_str()));
        }
    }

    fn remember_pinned(&mut self, listing: &Listing) {
        let pinned: HashSet<&str> = self.target.report_ids.iter().map(String::as_str).collect();
        for report in listing.by_image.values().flatten().filter(|r| pinned.contains(r.id.as_str())) {
            self.memory.pinned_images.insert(report.id.clone(), report.image_id.clone());
        }
    }

    /// Throttling that outlasted the SDK's retries pushes the target's next poll back, so that
    /// the exporter's request rate falls while EC2 is overloaded; a clean poll resets it.
    fn note_throttling(&mut self, errors: &[ApiError], now: SystemTime) {
        let memory = &mut self.memory;
        if errors.iter().any(|e| e.code == THROTTLED) {
            let cap = MAX_THROTTLE_BACKOFF.max(self.settings.poll_interval);
            let backoff = Backoff::after_failure(memory.throttled, now, self.settings.poll_interval, cap);
            tracing::warn!(
                aws_region = %self.target.region,
                failures = backoff.failures(),
                "EC2 throttled the exporter; polling this Region less often until it answers"
            );
            memory.throttled = Some(backoff);
        } else {
            memory.throttled = None;
        }
    }

    /// Every image the target is known to serve: the watched ones, the discovered ones and those
    /// of pinned reports.
    fn known_images(&self) -> Vec<String> {
        let mut images: Vec<String> = self.target.images.clone();
        images.extend(self.memory.discovered.iter().cloned());
        images.extend(self.memory.pinned_images.values().cloned());
        images.sort();
        images.dedup();
        images
    }

    /// The status of an image that was not refreshed: its last data, with its usage while the
    /// last success is within the staleness limit, then its status series alone.
    fn stale(&self, image: &str, now: SystemTime) -> ImageStatus {
        let fresh_enough =
            |t: SystemTime| now.duration_since(t).map_or(true, |age| age <= self.settings.staleness_limit);
        match self.last.get(image) {
            Some(last) => ImageStatus {
                poll_success: false,
                report: last.report.clone().filter(|_| last.last_success.is_some_and(fresh_enough)),
                ..last.clone()
            },
            None => ImageStatus {
                region: self.target.region.clone(),
                owner: self.target.owner.clone(),
                image_id: image.into(),
                poll_success: false,
                last_success: None,
                pending_since: None,
                report_failures: 0,
                report: None,
            },
        }
    }

    async fn create_reports(&mut self, due: &[Due], now: SystemTime) -> Vec<Result<String, ApiError>> {
        let target = &self.target;
        let s = &self.settings;
        let calls: Vec<_> = due
            .iter()
            .map(|Due { image, token }| async move {
                (image.clone(), token.clone(), target.api.create_report(image, &s.policy, token).await)
            })
            .collect();
        let results = bounded(calls, s.concurrency).await;
        let region = target.region.clone();
        let mut outcomes = Vec::with_capacity(results.len());
        for (image, token, result) in results {
            let memory = &mut self.memory;
            match &result {
                Ok(report_id) => {
                    memory.create_backoff.remove(&image);
                    memory.vanished.remove(&image);
                    memory.requested.insert(image.clone(), Vanished { token, report_id: report_id.clone() });
                    self.metrics.reports_created.with_label_values(&[&region]).inc();
                    tracing::info!(aws_region = %region, image_id = %image, report_id = %report_id, "requested a new usage report");
                }
                Err(error) => {
                    let backoff = Backoff::after_failure(
                        memory.create_backoff.get(&image).copied(),
                        now,
                        s.poll_interval,
                        s.policy.max_age.get(),
                    );
                    memory.create_backoff.insert(image.clone(), backoff);
                    let retry_in = backoff.until().duration_since(now).unwrap_or_default();
                    tracing::warn!(
                        aws_region = %region,
                        image_id = %image,
                        error = %error,
                        retry_in = %humantime::format_duration(retry_in),
                        "cannot create a usage report; the previous report keeps serving"
                    );
                }
            }
            outcomes.push(result);
        }
        outcomes
    }

    /// Reads the entries of the given reports. Chains that failed part-way at an earlier poll
    /// are resumed first, as the same calls; the other reports are split as `entry_batches`
    /// says. Returns the usage of every report whose chain finished, and the reports whose
    /// chain failed (kept, to resume at the next poll).
    async fn read_entries(
        &mut self,
        unread: &[UsageReport],
    ) -> (Vec<(String, ReportUsage)>, HashMap<String, ApiError>) {
        let by_id: HashMap<&str, &UsageReport> = unread.iter().map(|r| (r.id.as_str(), r)).collect();
        // A saved chain is resumed while every report it reads is still to be read.
        let mut saved = std::mem::take(&mut self.memory.chains);
        saved.retain(|ids, _| ids.iter().all(|id| by_id.contains_key(id.as_str())));
        let resumed: HashSet<&str> = saved.keys().flatten().map(String::as_str).collect();
        let fresh: Vec<&UsageReport> = unread.iter().filter(|r| !resumed.contains(r.id.as_str())).collect();
        let mut calls: Vec<(Vec<(String, SystemTime)>, EntryChain)> = Vec::new();
        for (ids, chain) in saved {
            let wanted =
                ids.iter().filter_map(|id| by_id.get(id.as_str())).map(|r| (r.id.clone(), r.created)).collect();
            calls.push((wanted, chain));
        }
        for batch in entry_batches(&fresh, self.settings.concurrency) {
            calls.push((batch.iter().map(|r| (r.id.clone(), r.created)).collect(), EntryChain::default()));
        }
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(wanted, mut chain)| {
                let (api, query, strings) =
                    (self.target.api.clone(), self.settings.entry_query.clone(), Arc::clone(&self.strings));
                async move {
                    let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
                    let outcome = api.describe_entries(&ids, &query, &strings, &mut chain).await;
                    (wanted, chain, outcome)
                }
            })
            .collect();
        let (mut read, mut failed, mut skipped) = (Vec::new(), HashMap::new(), Skipped::default());
        for (_, result) in bounded_tasks(tasks, self.settings.concurrency).await {
            let (wanted, chain, outcome) = match result {
                Ok(done) => done,
                // A panic stays a panic of the poll (caught, counted and logged by the schedule).
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled (shutdown): nothing to keep.
                Err(_) => continue,
            };
            match outcome {
                Ok(()) => {
                    let Some((entries, chain_skipped)) = chain.finish() else { continue };
                    let (usage, chain_skipped) = fold_entries(&wanted, &entries, chain_skipped);
                    skipped.count += chain_skipped.count;
                    skipped.example = skipped.example.take().or(chain_skipped.example);
                    read.extend(usage);
                }
                Err(error) => {
                    tracing::warn!(aws_region = %self.target.region, reports = wanted.len(), pages_read = chain.pages(), error = %error, "cannot read usage report entries; the next poll resumes at the failed page");
                    for (id, _) in &wanted {
                        failed.insert(id.clone(), error.clone());
                    }
                    self.memory.chains.insert(wanted.into_iter().map(|(id, _)| id).collect(), chain);
                }
            }
        }
        self.note_skipped(&skipped, "entries");
        (read, failed)
    }
    /// Deletes the exporter's own reports that a newer one replaced (`report::superseded`), for
    /// the images whose serving report has been read. At most `MAX_DELETIONS_PER_POLL`, oldest
    /// first. A failed deletion marks nothing failed: the report is still listed at the next poll
    /// and tried again then. Deletions stop for the poll at the first throttling or refusal, and
    /// a refusal (missing permission) waits a doubling interval before the next attempt. Returns
    /// how many reports were deleted.
    async fn delete_superseded(
        &mut self,
        listing: &Listing,
        decisions: &HashMap<String, Decision>,
        now: SystemTime,
    ) -> usize {
        let s = Arc::clone(&self.settings);
        if !(s.policy.create && s.policy.delete_superseded)
            || self.memory.delete_backoff.is_some_and(|b| !b.allows(now))
        {
            return 0;
        }
        let target = &self.target;
        let pinned: HashSet<&str> = target.report_ids.iter().map(String::as_str).collect();
        let usable = |r: &UsageReport| r.params == s.wanted;
        let mut seen = HashSet::new();
        let mut doomed: Vec<&UsageReport> = Vec::new();
        for (image, decision) in decisions {
            // Only once the serving report's usage is in hand: until then an older report may
            // still be what the image shows.
            let Some(serving) = decision.serving.as_ref().filter(|r| self.cache.contains_key(&r.id)) else { continue };
            let Some(reports) = listing.by_image.get(image) else { continue };
            let found = superseded(reports, serving, usable, |id| pinned.contains(id));
            doomed.extend(found.into_iter().filter(|r| seen.insert(r.id.as_str())));
        }
        if doomed.is_empty() {
            return 0;
        }
        doomed.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        if doomed.len() > MAX_DELETIONS_PER_POLL {
            tracing::debug!(aws_region = %target.region, superseded = doomed.len(), limit = MAX_DELETIONS_PER_POLL, "more superseded reports than one poll deletes; the rest follow in the next polls");
            doomed.truncate(MAX_DELETIONS_PER_POLL);
        }

        let stop = AtomicBool::new(false);
        let calls: Vec<_> = doomed
            .iter()
            .map(|report| {
                let stop = &stop;
                async move {
                    if stop.load(Ordering::Relaxed) {
                        return (*report, None);
                    }
                    let result = target.api.delete_report(&report.id).await;
                    if result.as_ref().is_err_and(|e| e.code == THROTTLED || is_denied(&e.code)) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    (*report, Some(result))
                }
            })
            .collect();
        let results = bounded(calls, s.concurrency).await;

        let region = target.region.clone();
        let (mut deleted, mut failures, mut refused) = (0, Vec::new(), None);
        for (report, result) in results {
            match result {
                None => {}
                Some(Ok(())) => {
                    deleted += 1;
                    self.metrics.reports_deleted.with_label_values(&[&region]).inc();
                    tracing::debug!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, "deleted a superseded usage report");
                }
                Some(Err(error)) => {
                    tracing::debug!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, error = %error, "cannot delete a superseded usage report");
                    if is_denied(&error.code) {
                        refused = Some(error.clone());
                    }
                    failures.push(error);
                }
            }
        }
        if deleted > 0 {
            tracing::info!(aws_region = %region, deleted, "deleted superseded usage reports");
        }
        let memory = &mut self.memory;
        if let Some(error) = refused {
            let cap = MAX_DELETE_BACKOFF.max(s.poll_interval);
            let backoff = Backoff::after_failure(memory.delete_backoff, now, s.poll_interval, cap);
            memory.delete_backoff = Some(backoff);
            let retry_in = backoff.until().duration_since(now).unwrap_or_default();
            tracing::warn!(
                aws_region = %region,
                error = %error,
                retry_in = %humantime::format_duration(retry_in),
                "cannot delete superseded usage reports: allow ec2:DeleteImageUsageReport, or set reports.delete_superseded: false"
            );
        } else {
            memory.delete_backoff = None;
            if let Some(error) = failures.first() {
                tracing::warn!(aws_region = %region, failed = failures.len(), error = %error, "cannot delete some superseded usage reports; they are tried again at the next poll");
            }
        }
        deleted
    }

    fn note_skipped(&self, skipped: &Skipped, what: &str) {
        if skipped.count == 0 {
            return;
        }
        let region = &*self.target.region;
        if what == "entries" {
            self.metrics.invalid_entries.with_label_values(&[region]).inc_by(skipped.count);
        }
        tracing::warn!(
            aws_region = region,
            skipped = skipped.count,
            example = skipped.example.as_deref().unwrap_or(""),
            "skipped {what} with missing or impossible fields"
        );
    }
}

/// Report problems seen for the first time in a poll, to be logged and counted once.
#[derive(Default)]
struct NewProblems {
    errors: Vec<UsageReport>,
    stuck: Vec<UsageReport>,
    unknown: Vec<UsageReport>,
}

/// Runs the calls with at most `limit` in flight; the futures are built beforehand because a
/// closure inside `Stream::map` trips the compiler's `Send` check for spawned tasks.
async fn bounded<F: std::future::Future>(calls: Vec<F>, limit: usize) -> Vec<F::Output> {
    stream::iter(calls).buffer_unordered(limit.max(1)).collect().await
}

/// Lists the reports of a Region's images (200 to a call) and its pinned reports.
///
/// Image batches are not split further for parallelism, unlike entry batches: every poll lists
/// every image, so smaller batches would cost more calls in every poll, while the pages of a
/// batch are few once superseded reports are deleted (one page of up to 1000 reports for 200
/// images with a serving and perhaps a pending report each).
async fn list_reports(
    target: &RegionTarget,
    images: &[String],
    pinned_images: &HashMap<String, String>,
    concurrency: usize,
) -> Listing {
    let image_batches = images.chunks(MAX_IDS_PER_CALL).map(|c| (c, true));
    let report_batches = target.report_ids.chunks(MAX_IDS_PER_CALL).map(|c| (c, false));
    let calls: Vec<_> = image_batches
        .chain(report_batches)
        .map(|(ids, by_image)| async move {
            let selector = if by_image { ReportSelector::Images(ids) } else { ReportSelector::Reports(ids) };
            (ids, by_image, target.api.describe_reports(selector).await)
        })
        .collect();
    let mut listing = Listing::default();
    for (ids, by_image, result) in bounded(calls, concurrency).await {
        match result {
            Ok((reports, skipped)) => {
                listing.skipped.count += skipped.count;
                listing.skipped.example = listing.skipped.example.take().or(skipped.example);
                for report in reports {
                    listing.by_image.entry(report.image_id.clone()).or_default().push(report);
                }
            }
            Err(error) => {
                tracing::warn!(aws_region = %target.region, ids = ids.len(), error = %error, "cannot list usage reports");
                let images: Vec<String> = if by_image {
                    ids.to_vec()
                } else {
                    ids.iter().filter_map(|id| pinned_images.get(id).cloned()).collect()
                };
                for image in images {
                    listing.failed.insert(image, error.clone());
                }
            }
        }
    }
    // An image whose listing failed in one batch is failed, even if another batch listed a
    // pinned report of it: half the picture would hide the newest report.
    for image in listing.failed.keys() {
        listing.by_image.remove(image);
    }
    listing
}

/// The fewest reports a call is split down to (see `entry_batches`).
const MIN_REPORTS_PER_SPLIT: usize = 50;

/// Splits the reports to read into DescribeImageUsageReportEntries calls of at most 200 reports
/// (EC2's limit), sizes differing by one at most, and as many calls as request slots
/// (`concurrency`), or a multiple of it, whenever there are that many reports.
///
/// The pages of one call follow one another. 200 unread reports in one call of 40 pages take 40
/// page latencies while 3 of the 4 slots idle; 1000 in 5 calls of 200 take 80 (4 calls side by
/// side, then the fifth alone). In 4 calls of 50, or 8 calls of 125, every slot works to the end:
/// 10 and 50 latencies, the ideal of pages / slots. It matters when many reports are new at
/// once: a cold start, or a refresh of every image.
///
/// Calls are not split below `MIN_REPORTS_PER_SPLIT` reports: 50 reports of 20 entries (10
/// accounts, 2 resource types) already fill a 1000-entry page, so a split costs at most one
/// partly filled page per call, while splitting 10 small reports four ways would turn one call
/// into four.
pub fn entry_batches<T>(reports: &[T], concurrency: usize) -> Vec<&[T]> {
    if reports.is_empty() {
        return Vec::new();
    }
    let slots = concurrency.max(1);
    let fewest = reports.len().div_ceil(MAX_IDS_PER_CALL);
    let worth_splitting = (reports.len() / MIN_REPORTS_PER_SPLIT).max(fewest);
    let count = fewest.div_ceil(slots).saturating_mul(slots).min(worth_splitting);
    let (size, larger) = (reports.len() / count, reports.len() % count);
    let mut rest = reports;
    (0..count)
        .map(|i| {
            let (batch, tail) = rest.split_at(size + usize::from(i < larger));
            rest = tail;
            batch
        })
        .collect()
}

/// Groups a call's entries by report into usage counts, one per report asked for (a report
/// without entries is read as no usage); entries of reports not asked for are skipped.
fn fold_entries(
    wanted: &[(String, SystemTime)],
    entries: &[Entry],
    mut skipped: Skipped,
) -> (Vec<(String, ReportUsage)>, Skipped) {
    let mut by_report: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in entries {
        by_report.entry(&entry.report_id).or_default().push(entry);
    }
    let usage = wanted
        .iter()
        .map(|(id, created)| {
            let mine = by_report.remove(id.as_str()).unwrap_or_default();
            (id.clone(), ReportUsage::from_entries(id, *created, mine))
        })
        .collect();
    let strays: usize = by_report.values().map(Vec::len).sum();
    if strays > 0 {
        skipped.count += strays as u64;
        skipped.example.get_or_insert_with(|| "entries of a report that was not asked for".to_owned());
    }
    (usage, skipped)
}

/// Runs the calls as tasks of their own, at most `limit` at a time, and returns each outcome
/// with the index of its call. `bounded` polls all its futures in the poll's task, so on one
/// thread at a time; reading entries is CPU work (the SDK's XML parsing is most of a cold
/// poll's CPU time, BENCHMARKS.md), which spreads over the runtime's threads this way. The
/// tasks are aborted if the poll is dropped (shutdown).
async fn bounded_tasks<F>(calls: Vec<F>, limit: usize) -> Vec<(usize, Result<F::Output, tokio::task::JoinError>)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    stream::iter(calls.into_iter().enumerate())
        .map(|(index, call)| {
            let task = AbortOnDropHandle::new(tokio::spawn(call));
            async move { (index, task.await) }
        })
        .buffer_unordered(limit.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(unread: usize, concurrency: usize) -> Vec<usize> {
        let reports: Vec<usize> = (0..unread).collect();
        let split = entry_batches(&reports, concurrency);
        assert_eq!(split.concat(), reports, "every report once, in order");
        split.iter().map(|b| b.len()).collect()
    }

    #[test]
    fn entry_batches_give_every_request_slot_work() {
        assert_eq!(batches(200, 4), [50; 4], "not one call of 200 with three slots idle");
        assert_eq!(batches(800, 4), [200; 4]);
        assert_eq!(batches(1000, 4), [125; 8], "two full rounds, not four calls and then one alone");
        assert_eq!(batches(1000, 16), [63, 63, 63, 63, 63, 63, 63, 63, 62, 62, 62, 62, 62, 62, 62, 62]);
        assert_eq!(batches(1000, 1), [200; 5], "never more than EC2's 200 IDs per call");
        assert_eq!(batches(120, 4), [60, 60], "no call under 50 reports");
        assert_eq!(batches(10, 4), [10], "a few reports: one call");
        assert_eq!(batches(1, 4), [1]);
        assert!(batches(0, 4).is_empty());
        assert_eq!(batches(9, 0), [9], "a zero limit is treated as one");
        for unread in 1..=1200 {
            for concurrency in 1..=16 {
                let b = batches(unread, concurrency);
                let fewest = unread.div_ceil(MAX_IDS_PER_CALL);
                assert!(b.len() >= fewest && b.len() < fewest + concurrency, "{unread}/{concurrency}: {b:?}");
                if b.len() > fewest {
                    assert!(b.iter().all(|n| *n >= MIN_REPORTS_PER_SPLIT), "{unread}/{concurrency}: {b:?}");
                }
                if unread >= MIN_REPORTS_PER_SPLIT * concurrency {
                    assert_eq!(b.len() % concurrency, 0, "whole rounds: {unread}/{concurrency}: {b:?}");
                }
                assert!(b.iter().all(|n| (1..=MAX_IDS_PER_CALL).contains(n)), "{unread}/{concurrency}: {b:?}");
                assert!(b.iter().max().unwrap_or(&0) - b.iter().min().unwrap_or(&0) <= 1, "balanced: {b:?}");
            }
        }
    }
}
