//! One poll: for every Region, list the reports of the watched images, request new reports
//! where they are due, read the entries of reports not read before, and compose a snapshot.
//!
//! Cost is the design constraint. Reports are listed 200 images to a call; entries are read by
//! report ID, up to 200 reports to a call, and only for reports never read before (an available
//! report never changes); the exporter deletes its own reports once a newer one serves, so an
//! image lists one or two reports, not 30 days of them. A steady-state poll therefore costs one
//! DescribeImageUsageReports call (one page) per 200 images and nothing else.
//!
//! Failure is contained. The images of a failed call keep their last good data, marked by
//! `ami_usage_image_poll_success 0`, for `staleness_limit`; the others refresh. A Region that
//! EC2 throttles is polled less and less often until it answers again; an image whose report
//! cannot be created waits longer and longer before the next attempt.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use crate::config::{Config, Discovery, EntryQuery, MAX_IDS_PER_CALL, ReportPolicy};
use crate::ec2::{ApiError, Ec2Reports, ReportSelector, Skipped, is_denied};
use crate::intern::Interner;
use crate::metrics::SelfMetrics;
use crate::report::{
    Backoff, ImageReports, ReportParams, ReportState, UsageReport, classify, client_token, failed_in_window,
    needs_new_report, superseded,
};
use crate::snapshot::{Entry, ImageStatus, ReportUsage, Snapshot};

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
    /// Regions skipped because EC2 throttled them recently.
    pub regions_backing_off: usize,
    /// Whether some call failed because no credentials could be loaded.
    pub credentials_failed: bool,
}

/// The settings a poll needs, taken from the configuration.
#[derive(Clone)]
struct Settings {
    policy: ReportPolicy,
    entry_query: EntryQuery,
    wanted: ReportParams,
    concurrency: usize,
    poll_interval: Duration,
    staleness_limit: Duration,
}

/// What the poller remembers of one Region between polls.
#[derive(Default)]
struct RegionMemory {
    /// Error reports already logged, so each is logged and counted once.
    seen_errors: HashSet<String>,
    /// Pending reports already reported as stuck.
    seen_stuck: HashSet<String>,
    /// The image of each pinned report, for when listing the report fails.
    pinned_images: HashMap<String, String>,
    /// Images whose last report creation failed, and when to try again.
    create_backoff: HashMap<String, Backoff>,
    /// Set while EC2 refuses DeleteImageUsageReport (a missing IAM permission).
    delete_backoff: Option<Backoff>,
    /// Set while EC2 throttles the Region.
    throttled: Option<Backoff>,
    /// Images found by discovery, and when.
    discovered: Vec<String>,
    discovered_at: Option<SystemTime>,
}

/// The poller and what it remembers between polls.
pub struct Poller {
    targets: Vec<RegionTarget>,
    /// Per Region, beside `targets`.
    memory: Vec<RegionMemory>,
    settings: Settings,
    metrics: SelfMetrics,
    /// Usage of every report currently serving an image, by report ID.
    cache: HashMap<String, Arc<ReportUsage>>,
    /// The account IDs, resource types and report IDs of the entries read, one copy of each
    /// (see `intern`); what the cache no longer holds is forgotten after every poll.
    strings: Arc<Interner>,
    /// The last status of each image, served again when a later poll of the image fails.
    last: HashMap<(Arc<str>, String), ImageStatus>,
}

/// The outcome of listing a Region's reports.
#[derive(Default)]
struct Listing {
    by_image: HashMap<String, Vec<UsageReport>>,
    /// Images whose reports could not be listed, with the reason.
    failed: HashMap<String, ApiError>,
    skipped: Skipped,
}

/// An image whose report is due, and how many of its reports failed in this refresh window.
struct Due {
    image: String,
    attempt: usize,
}

/// Per image, what this poll decided.
struct Decision {
    serving: Option<UsageReport>,
    pending_since: Option<SystemTime>,
}

impl Poller {
    pub fn new(config: &Config, targets: Vec<RegionTarget>, metrics: SelfMetrics) -> Self {
        Self {
            memory: targets.iter().map(|_| RegionMemory::default()).collect(),
            targets,
            settings: Settings {
                policy: config.reports.clone(),
                entry_query: config.entries.clone(),
                wanted: ReportParams::from_policy(&config.reports),
                concurrency: config.aws.max_concurrent_requests.get() as usize,
                poll_interval: config.poll_interval.get(),
                staleness_limit: config.staleness_limit.get(),
            },
            metrics,
            cache: HashMap::new(),
            strings: Arc::new(Interner::new()),
            last: HashMap::new(),
        }
    }

    /// Takes over what `previous` learned, after a configuration reload: the last good data of
    /// every image, the per-Region memory of Regions still configured, and the report cache,
    /// if the new configuration reads reports the same way.
    pub fn inherit(&mut self, mut previous: Poller) {
        self.last = std::mem::take(&mut previous.last);
        // The strings the inherited usage holds: new entries share them too.
        self.strings = previous.strings.clone();
        if previous.settings.entry_query == self.settings.entry_query {
            self.cache = std::mem::take(&mut previous.cache);
        }
        for (target, mut memory) in previous.targets.iter().zip(previous.memory) {
            if let Some(i) = self.targets.iter().position(|t| t.key == target.key) {
                if self.targets[i].discovery != target.discovery {
                    memory.discovered_at = None;
                }
                self.memory[i] = memory;
            }
        }
    }

    /// Gives each target a new client (after the credentials changed), keeping all state.
    pub fn replace_clients(&mut self, mut clients: HashMap<String, Ec2Reports>) {
        for target in &mut self.targets {
            if let Some(api) = clients.remove(&target.key) {
                target.api = api;
            }
        }
    }

    /// Runs one poll of every Region and returns the new snapshot.
    pub async fn poll(&mut self, now: SystemTime) -> (Snapshot, PollStats) {
        let started = Instant::now();
        self.metrics.polls.inc();
        let mut stats = PollStats::default();
        let mut images = Vec::new();
        for index in 0..self.targets.len() {
            images.extend(self.poll_region(index, now, &mut stats).await);
        }
        let serving: HashSet<&str> =
            images.iter().filter_map(|s| s.report.as_ref()).map(|r| r.report_id.as_str()).collect();
        // Reports no longer serving any image will not be read again: forget them.
        self.cache.retain(|id, _| serving.contains(id.as_str()));
        self.strings.forget_unused();
        self.last = images.iter().map(|s| ((s.region.clone(), s.image_id.to_string()), s.clone())).collect();

        stats.images = images.len();
        stats.failed_images = images.iter().filter(|s| !s.poll_success).count();
        let snapshot = Snapshot::new(images);
        stats.series = snapshot.series_count();
        if stats.failed_images > 0 {
            self.metrics.poll_failures.inc();
        }
        self.metrics.poll_duration.set(started.elapsed().as_secs_f64());
        (snapshot, stats)
    }

    async fn poll_region(&mut self, index: usize, now: SystemTime, stats: &mut PollStats) -> Vec<ImageStatus> {
        let region = self.targets[index].region.clone();
        if let Some(backoff) = self.memory[index].throttled.filter(|b| !b.allows(now)) {
            stats.regions_backing_off += 1;
            tracing::debug!(aws_region = %region, failures = backoff.failures(), "EC2 throttled this Region; skipping it this poll");
            return self.known_images(index).iter().map(|image| self.stale(index, image, now)).collect();
        }
        let mut errors: Vec<ApiError> = Vec::new();
        let images = self.refresh_images(index, now, &mut errors).await;

        let listing =
            list_reports(&self.targets[index], &images, &self.memory[index].pinned_images, self.settings.concurrency)
                .await;
        errors.extend(listing.failed.values().cloned());
        self.note_skipped(&region, &listing.skipped, "reports");
        self.remember_pinned(index, &listing);

        let (decisions, to_create) = self.decide(index, &images, &listing, now);
        let created = self.create_reports(index, &to_create, now).await;
        stats.reports_created += created.iter().filter(|r| r.is_ok()).count();
        errors.extend(created.into_iter().filter_map(Result::err));

        // Read the entries of chosen reports that were never read.
        let unread: Vec<&UsageReport> = {
            let mut seen = HashSet::new();
            decisions
                .values()
                .filter_map(|d| d.serving.as_ref())
                .filter(|r| !self.cache.contains_key(&r.id) && seen.insert(r.id.as_str()))
                .collect()
        };
        stats.reports_read += unread.len();
        let target = &self.targets[index];
        let (read, failed_reports, skipped) =
            read_entries(target, &unread, &self.settings.entry_query, self.settings.concurrency, &self.strings).await;
        errors.extend(failed_reports.values().cloned());
        self.note_skipped(&region, &skipped, "entries");
        for (id, usage) in read {
            self.cache.insert(id, Arc::new(usage));
        }
        stats.reports_deleted += self.delete_superseded(index, &listing, &decisions, now).await;

        self.note_throttling(index, &errors, now);
        stats.credentials_failed |= errors.iter().any(|e| e.code == crate::aws::CREDENTIALS_ERROR);

        let mut statuses = Vec::with_capacity(decisions.len() + listing.failed.len());
        for (image, decision) in decisions {
            let failed = decision.serving.as_ref().is_some_and(|r| failed_reports.contains_key(&r.id));
            let status = if failed {
                self.stale(index, &image, now)
            } else {
                ImageStatus {
                    region: region.clone(),
                    owner: self.targets[index].owner.clone(),
                    image_id: image.as_str().into(),
                    poll_success: true,
                    last_success: Some(now),
                    pending_since: decision.pending_since,
                    report: decision.serving.as_ref().and_then(|r| self.cache.get(&r.id).cloned()),
                }
            };
            statuses.push(status);
        }
        statuses.extend(listing.failed.keys().map(|image| self.stale(index, image, now)));
        statuses
    }

    /// The Region's images: the configured ones and those discovery found, refreshed when its
    /// interval has passed. A failed refresh keeps the previous selection.
    async fn refresh_images(&mut self, index: usize, now: SystemTime, errors: &mut Vec<ApiError>) -> Vec<String> {
        let target = &self.targets[index];
        let memory = &mut self.memory[index];
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

    /// Chooses the report of each listed image and the images that need a new one; logs error
    /// and stuck reports (once each).
    fn decide(
        &mut self,
        index: usize,
        watched_images: &[String],
        listing: &Listing,
        now: SystemTime,
    ) -> (HashMap<String, Decision>, Vec<Due>) {
        let target = &self.targets[index];
        let memory = &self.memory[index];
        let s = &self.settings;
        let pinned: HashSet<&str> = target.report_ids.iter().map(String::as_str).collect();
        let watched: HashSet<&str> = watched_images.iter().map(String::as_str).collect();
        let usable = |r: &UsageReport| pinned.contains(r.id.as_str()) || !s.policy.create || r.params == s.wanted;

        let mut decisions = HashMap::new();
        let mut to_create = Vec::new();
        let (mut new_errors, mut new_stuck) = (Vec::new(), Vec::new());
        let no_reports = Vec::new();
        // Every listed image, and every watched image whose listing did not fail (it may have
        // no report at all yet).
        let images = listing.by_image.keys().chain(
            watched_images.iter().filter(|i| !listing.failed.contains_key(*i) && !listing.by_image.contains_key(*i)),
        );
        for image in images {
            let reports = listing.by_image.get(image).unwrap_or(&no_reports);
            let sorted: ImageReports<'_> = classify(reports, usable);
            new_errors
                .extend(sorted.errors.iter().filter(|r| !memory.seen_errors.contains(&r.id)).map(|r| (*r).clone()));
            if let Some(p) = sorted.pending.filter(|p| {
                now.duration_since(p.created).is_ok_and(|age| age > s.policy.pending_timeout.get())
                    && !memory.seen_stuck.contains(&p.id)
            }) {
                new_stuck.push(p.clone());
            }
            let due = s.policy.create
                && watched.contains(image.as_str())
                && needs_new_report(&sorted, now, s.policy.max_age.get())
                && memory.create_backoff.get(image).is_none_or(|b| b.allows(now));
            if due {
                to_create.push(Due {
                    image: image.clone(),
                    attempt: failed_in_window(&sorted, now, s.policy.max_age.get()),
                });
            }
            let decision = Decision {
                serving: sorted.newest_available.cloned(),
                pending_since: sorted.pending.map(|p| p.created),
            };
            decisions.insert(image.clone(), decision);
        }
        self.log_new_report_problems(index, new_errors, new_stuck, listing);
        (decisions, to_create)
    }

    fn log_new_report_problems(
        &mut self,
        index: usize,
        errors: Vec<UsageReport>,
        stuck: Vec<UsageReport>,
        listing: &Listing,
    ) {
        let region = self.targets[index].region.clone();
        let memory = &mut self.memory[index];
        for report in errors {
            if let ReportState::Error { reason } = &report.state {
                tracing::warn!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, reason = %reason, "usage report failed in EC2; it is ignored");
            }
            self.metrics.report_errors.with_label_values(&[&region]).inc();
            memory.seen_errors.insert(report.id);
        }
        for report in stuck {
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
        }
    }

    fn remember_pinned(&mut self, index: usize, listing: &Listing) {
        let pinned: HashSet<&str> = self.targets[index].report_ids.iter().map(String::as_str).collect();
        for report in listing.by_image.values().flatten().filter(|r| pinned.contains(r.id.as_str())) {
            self.memory[index].pinned_images.insert(report.id.clone(), report.image_id.clone());
        }
    }

    /// Throttling that outlasted the SDK's retries pushes the Region's next poll back, so that
    /// the exporter's request rate falls while EC2 is overloaded; a clean poll resets it.
    fn note_throttling(&mut self, index: usize, errors: &[ApiError], now: SystemTime) {
        let memory = &mut self.memory[index];
        if errors.iter().any(|e| e.code == THROTTLED) {
            let cap = MAX_THROTTLE_BACKOFF.max(self.settings.poll_interval);
            let backoff = Backoff::after_failure(memory.throttled, now, self.settings.poll_interval, cap);
            tracing::warn!(
                aws_region = %self.targets[index].region,
                failures = backoff.failures(),
                "EC2 throttled the exporter; polling this Region less often until it answers"
            );
            memory.throttled = Some(backoff);
        } else {
            memory.throttled = None;
        }
    }

    /// Every image the Region is known to serve: the watched ones, the discovered ones and those
    /// of pinned reports.
    fn known_images(&self, index: usize) -> Vec<String> {
        let mut images: Vec<String> = self.targets[index].images.clone();
        images.extend(self.memory[index].discovered.iter().cloned());
        images.extend(self.memory[index].pinned_images.values().cloned());
        images.sort();
        images.dedup();
        images
    }

    /// The status of an image that was not refreshed: its last good data while younger than the
    /// staleness limit, then its status series alone.
    fn stale(&self, index: usize, image: &str, now: SystemTime) -> ImageStatus {
        let region = &self.targets[index].region;
        let last = self.last.get(&(region.clone(), image.to_owned()));
        let fresh_enough =
            |t: SystemTime| now.duration_since(t).map_or(true, |age| age <= self.settings.staleness_limit);
        match last {
            Some(last) => ImageStatus {
                poll_success: false,
                report: last.report.clone().filter(|_| last.last_success.is_some_and(fresh_enough)),
                ..last.clone()
            },
            None => ImageStatus {
                region: region.clone(),
                owner: self.targets[index].owner.clone(),
                image_id: image.into(),
                poll_success: false,
                last_success: None,
                pending_since: None,
                report: None,
            },
        }
    }

    async fn create_reports(&mut self, index: usize, due: &[Due], now: SystemTime) -> Vec<Result<String, ApiError>> {
        let target = &self.targets[index];
        let s = &self.settings;
        let calls: Vec<_> = due
            .iter()
            .map(|Due { image, attempt }| async move {
                let token = client_token(image, &s.wanted, now, s.policy.max_age.get(), *attempt);
                (image.clone(), target.api.create_report(image, &s.policy, &token).await)
            })
            .collect();
        let results = bounded(calls, s.concurrency).await;
        let region = target.region.clone();
        let mut outcomes = Vec::with_capacity(results.len());
        for (image, result) in results {
            let backoffs = &mut self.memory[index].create_backoff;
            match &result {
                Ok(report_id) => {
                    backoffs.remove(&image);
                    self.metrics.reports_created.with_label_values(&[&region]).inc();
                    tracing::info!(aws_region = %region, image_id = %image, report_id = %report_id, "requested a new usage report");
                }
                Err(error) => {
                    let backoff = Backoff::after_failure(
                        backoffs.get(&image).copied(),
                        now,
                        s.poll_interval,
                        s.policy.max_age.get(),
                    );
                    backoffs.insert(image.clone(), backoff);
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

    /// Deletes the exporter's own reports that a newer one replaced (`report::superseded`), for
    /// the images whose serving report has been read. At most `MAX_DELETIONS_PER_POLL`, oldest
    /// first. A failed deletion marks nothing failed: the report is still listed at the next poll
    /// and tried again then. Deletions stop for the poll at the first throttling or refusal, and
    /// a refusal (missing permission) waits a doubling interval before the next attempt. Returns
    /// how many reports were deleted.
    async fn delete_superseded(
        &mut self,
        index: usize,
        listing: &Listing,
        decisions: &HashMap<String, Decision>,
        now: SystemTime,
    ) -> usize {
        let s = &self.settings;
        if !(s.policy.create && s.policy.delete_superseded)
            || self.memory[index].delete_backoff.is_some_and(|b| !b.allows(now))
        {
            return 0;
        }
        let target = &self.targets[index];
        let pinned: HashSet<&str> = target.report_ids.iter().map(String::as_str).collect();
        let usable = |r: &UsageReport| r.params == s.wanted;
        let mut seen = HashSet::new();
        let mut doomed: Vec<&UsageReport> = Vec::new();
        for (image, decision) in decisions {
            // Only once the serving report's usage is in hand: until then an older report may
            // still be what the image shows.
            let Some(serving) = decision.serving.as_ref().filter(|r| self.cache.contains_key(&r.id)) else { continue };
            let Some(reports) = listing.by_image.get(image) else { continue };
            let found = superseded(reports, serving, usable, |id| pinned.contains(id), now, s.policy.max_age.get());
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
        let memory = &mut self.memory[index];
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

    fn note_skipped(&self, region: &str, skipped: &Skipped, what: &str) {
        if skipped.count == 0 {
            return;
        }
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

/// Reads the entries of the given reports, in the calls `entry_batches` splits them into;
/// returns their usage, the reports whose call failed, and what was skipped.
async fn read_entries(
    target: &RegionTarget,
    reports: &[&UsageReport],
    query: &EntryQuery,
    concurrency: usize,
    strings: &Arc<Interner>,
) -> (Vec<(String, ReportUsage)>, HashMap<String, ApiError>, Skipped) {
    let batches = entry_batches(reports, concurrency);
    let calls: Vec<_> = batches
        .iter()
        .map(|batch| {
            let wanted: Vec<(String, SystemTime)> = batch.iter().map(|r| (r.id.clone(), r.created)).collect();
            let (api, query, strings) = (target.api.clone(), query.clone(), Arc::clone(strings));
            async move {
                let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
                let (entries, skipped) = api.describe_entries(&ids, &query, &strings).await?;
                Ok::<_, ApiError>(fold_entries(&wanted, &entries, skipped))
            }
        })
        .collect();
    let (mut read, mut failed, mut skipped) = (Vec::new(), HashMap::new(), Skipped::default());
    for (index, result) in bounded_tasks(calls, concurrency).await {
        let batch = batches[index];
        let result = match result {
            Ok(outcome) => outcome,
            // A panic stays a panic of the poll (caught, counted and logged by the schedule).
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(ApiError::cancelled("DescribeImageUsageReportEntries", error.to_string())),
        };
        match result {
            Ok((usage, batch_skipped)) => {
                skipped.count += batch_skipped.count;
                skipped.example = skipped.example.take().or(batch_skipped.example);
                read.extend(usage);
            }
            Err(error) => {
                tracing::warn!(aws_region = %target.region, reports = batch.len(), error = %error, "cannot read usage report entries");
                for report in batch {
                    failed.insert(report.id.clone(), error.clone());
                }
            }
        }
    }
    (read, failed, skipped)
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
