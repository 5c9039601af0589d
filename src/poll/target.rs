//! One target and everything the exporter knows about it, in one value: its client, what it
//! remembers between polls, the usage of its serving reports and the last status of its images.
//! Targets share nothing but the settings, the metrics and the string interner, so each can be
//! polled on its own schedule.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::create::Vanished;
use super::decide::Decision;
use super::list::Listing;
use super::{PollStats, Settings};
use crate::aws::{ApiError, Code, Ec2Client, EntryChain, Skipped};
use crate::config::Discovery;
use crate::intern::Interner;
use crate::report::Backoff;
use crate::self_metrics::SelfMetrics;
use crate::snapshot::{ImageStatus, ReportUsage};

/// The longest a throttled Region waits between polls (or one poll interval, if longer).
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(3600);

/// What a target is: the images and pinned reports of one Region of one owner account, with
/// its client.
pub struct Target {
    pub region: Arc<str>,
    /// Set when several owner accounts are configured: the value of the `owner_account_id` label.
    pub owner: Option<Arc<str>>,
    /// Identifies the target across reloads: Region and role.
    pub key: String,
    pub api: Ec2Client,
    /// Images to watch; the exporter keeps their reports fresh when creation is on.
    pub images: Vec<String>,
    /// Reports made elsewhere, read as they are; never replaced by the exporter.
    pub report_ids: Vec<String>,
    /// More images to watch, found with DescribeImages.
    pub discovery: Option<Discovery>,
}

/// What the poller remembers of one target between polls. All of it can be rebuilt from what
/// EC2 holds (`TargetPoller::reset`); it only saves calls and repeated log lines.
#[derive(Default)]
pub(super) struct Memory {
    /// Error reports already logged, so each is logged and counted once.
    pub(super) seen_errors: HashSet<String>,
    /// Pending reports already reported as stuck.
    pub(super) seen_stuck: HashSet<String>,
    /// Reports in a state this version does not know, already logged.
    pub(super) seen_unknown: HashSet<String>,
    /// The image of each pinned report, for when listing the report fails.
    pub(super) pinned_images: HashMap<String, String>,
    /// Images whose last report creation failed, and when to try again.
    pub(super) create_backoff: HashMap<String, Backoff>,
    /// Reports requested at the last poll, by image, with their token: the next listing must
    /// show them.
    pub(super) requested: HashMap<String, Vanished>,
    /// Per image, a token whose report vanished.
    pub(super) vanished: HashMap<String, Vanished>,
    /// Entry chains that failed part-way, by the reports they read; the next poll resumes them.
    pub(super) chains: HashMap<Vec<String>, EntryChain>,
    /// Set while EC2 refuses DeleteImageUsageReport (a missing IAM permission).
    pub(super) delete_backoff: Option<Backoff>,
    /// Set while EC2 throttles the Region.
    throttled: Option<Backoff>,
    /// Images found by discovery, and when.
    discovered: Vec<String>,
    discovered_at: Option<SystemTime>,
}

/// A target, its memory and its last results.
pub struct TargetPoller {
    pub(super) target: Target,
    pub(super) memory: Memory,
    pub(super) settings: Arc<Settings>,
    pub(super) metrics: SelfMetrics,
    /// Usage of every report currently serving an image, by report ID.
    pub(super) cache: HashMap<String, Arc<ReportUsage>>,
    /// The account IDs, resource types and report IDs of the entries read, one copy of each
    /// (see `intern`); shared by all targets, and what no report holds is forgotten.
    pub(super) strings: Arc<Interner>,
    /// The last status of each image, served again when a later poll of the image fails.
    last: HashMap<String, ImageStatus>,
    /// Makes the next poll panic half-way, for the tests of what follows a panic.
    #[cfg(test)]
    panic_next: bool,
}

/// The images of one target after a poll, and what the poll did.
pub struct TargetPoll {
    pub images: Vec<ImageStatus>,
    pub stats: PollStats,
}

impl TargetPoller {
    pub(super) fn new(target: Target, settings: Arc<Settings>, metrics: SelfMetrics, strings: Arc<Interner>) -> Self {
        Self {
            target,
            memory: Memory::default(),
            settings,
            metrics,
            cache: HashMap::new(),
            strings,
            last: HashMap::new(),
            #[cfg(test)]
            panic_next: false,
        }
    }

    /// Identifies the target across reloads.
    pub fn key(&self) -> &str {
        &self.target.key
    }

    pub fn region(&self) -> &str {
        &self.target.region
    }

    /// Uses the strings `other` interns, so that inherited usage and new entries share them.
    pub(super) fn share_strings(&mut self, other: &TargetPoller) {
        self.strings = Arc::clone(&other.strings);
    }

    /// Keeps what `old` (the same target under the previous configuration) learned.
    pub(super) fn inherit(&mut self, mut old: TargetPoller) {
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
    pub fn replace_client(&mut self, api: Ec2Client) {
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

    /// The steps of a poll, in order; each failed call is collected in `errors`, which decide
    /// about throttling and credentials at the end.
    async fn poll_images(&mut self, now: SystemTime, stats: &mut PollStats) -> Vec<ImageStatus> {
        if let Some(backoff) = self.memory.throttled.filter(|b| !b.allows(now)) {
            stats.regions_backing_off += 1;
            tracing::debug!(aws_region = %self.target.region, failures = backoff.failures(), "EC2 throttled this Region; skipping it this poll");
            return self.known_images().iter().map(|image| self.unrefreshed(image, now)).collect();
        }
        let mut errors: Vec<ApiError> = Vec::new();
        let images = self.refresh_images(now, &mut errors).await;
        let listing = self.list(&images).await;
        errors.extend(listing.failed.values().cloned());

        let (decisions, due) = self.decide(&images, &listing, now);
        let created = self.create_reports(&due, now).await;
        stats.reports_created += created.iter().filter(|r| r.is_ok()).count();
        errors.extend(created.into_iter().filter_map(Result::err));

        let (read, failed_reports) = self.read_serving(&decisions).await;
        stats.reports_read += read;
        errors.extend(failed_reports.values().cloned());
        stats.reports_deleted += self.delete_superseded(&listing, &decisions, now).await;

        self.note_throttling(&errors, now);
        // Missing or rejected credentials: a rebuilt chain may find new ones (a rotated key, a
        // refreshed token file).
        stats.credentials_failed |= errors.iter().any(|e| e.code.is_credentials_problem());
        self.statuses(decisions, &listing, &failed_reports, now)
    }

    /// Each image's status after the poll: refreshed, or its last data where a call it needed
    /// failed.
    fn statuses(
        &self,
        decisions: HashMap<String, Decision>,
        listing: &Listing,
        failed_reports: &HashMap<String, ApiError>,
        now: SystemTime,
    ) -> Vec<ImageStatus> {
        let mut statuses = Vec::with_capacity(decisions.len() + listing.failed.len());
        for (image, decision) in decisions {
            let failed = decision.serving.as_ref().is_some_and(|r| failed_reports.contains_key(&r.id));
            let status = if failed {
                self.unrefreshed(&image, now)
            } else {
                ImageStatus {
                    region: self.target.region.clone(),
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
        statuses.extend(listing.failed.keys().map(|image| self.unrefreshed(image, now)));
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

    /// Throttling that outlasted the SDK's retries pushes the target's next poll back, so that
    /// the exporter's request rate falls while EC2 is overloaded; a clean poll resets it.
    fn note_throttling(&mut self, errors: &[ApiError], now: SystemTime) {
        let memory = &mut self.memory;
        if errors.iter().any(|e| e.code == Code::RequestLimitExceeded) {
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

    /// The status of an image that this poll did not refresh: its last data, with its usage
    /// while the last success is within the staleness limit, then its status series alone.
    fn unrefreshed(&self, image: &str, now: SystemTime) -> ImageStatus {
        let within_limit =
            |t: SystemTime| now.duration_since(t).map_or(true, |age| age <= self.settings.staleness_limit);
        match self.last.get(image) {
            Some(last) => ImageStatus {
                poll_success: false,
                report: last.report.clone().filter(|_| last.last_success.is_some_and(within_limit)),
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

    /// Counts (entries only) and logs what an answer held that could not be used.
    pub(super) fn note_skipped(&self, skipped: &Skipped, what: &str) {
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
