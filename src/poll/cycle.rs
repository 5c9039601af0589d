//! One poll of a target: the steps in order (`list`, `decide`, `create`, `entries`, `delete`),
//! then each image's status, refreshed or its last good data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::decide::Decision;
use super::list::Listing;
use super::target::TargetPoller;
use crate::aws::{ApiError, Code};
use crate::report::Backoff;
use crate::snapshot::{ImageStatus, PollSummary, TargetStatus};

/// The longest a throttled Region waits between polls (or one poll interval, if longer).
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(3600);

/// What one poll of a target did, for the log line.
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

/// The images of one target after a poll, and what the poll did.
pub struct TargetPoll {
    pub images: Vec<ImageStatus>,
    pub target: TargetStatus,
    pub stats: PollStats,
}

impl TargetPoller {
    /// Runs one poll of the target.
    pub async fn poll(&mut self, now: SystemTime) -> TargetPoll {
        let started = Instant::now();
        self.progress.start(now);
        self.metrics.polls.inc();
        let mut stats = PollStats::default();
        #[cfg(test)]
        if std::mem::take(&mut self.panic_next) {
            // Half-way through: some memory written, the rest not.
            self.memory.seen_errors.insert("amiur-halfway".to_owned());
            panic!("injected panic half-way through a poll");
        }
        let mut images = self.poll_images(now, &mut stats).await;
        for image in &mut images {
            // Facts have their own schedule: the latest ones, whether or not this poll refreshed
            // the image's reports.
            image.facts = self.memory.facts.get(&*image.image_id).cloned();
            image.references = self.memory.references.get(&*image.image_id).cloned();
        }
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
        let duration = started.elapsed();
        self.progress.finish();
        self.metrics.poll_duration.with_label_values(&[&self.target.region]).set(duration.as_secs_f64());
        TargetPoll { images, target: self.status(now, duration), stats }
    }

    /// How the target stands after the poll that started at `now`.
    fn status(&self, now: SystemTime, duration: Duration) -> TargetStatus {
        let calls = self.target.api.take_calls();
        TargetStatus {
            region: self.target.region.clone(),
            owner: self.target.owner.clone(),
            last_poll: Some(PollSummary { started: now, duration, calls: calls.calls, errors: calls.errors }),
            backing_off_until: self.memory.throttled.map(|b| b.until()).filter(|until| *until > now),
            references_measured: self.memory.references_at.filter(|_| self.settings.references.enabled),
        }
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
        let discovered = self.discover(now, &mut errors).await;
        let images = self.watched_images();
        self.refresh_facts(&images, discovered.as_ref(), now, &mut errors).await;
        self.refresh_references(&images, now, &mut errors).await;
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
            let failed = decision.serving.as_ref().and_then(|r| failed_reports.get(&r.id));
            let status = if let Some(error) = failed {
                self.failed(&image, error, now)
            } else {
                ImageStatus {
                    region: self.target.region.clone(),
                    owner: self.target.owner.clone(),
                    image_id: image.as_str().into(),
                    poll_success: true,
                    last_success: Some(now),
                    pending_since: decision.pending_since,
                    report_failures: decision.failures,
                    report_error: decision.report_error.map(Arc::from),
                    poll_error: None,
                    report: decision.serving.as_ref().and_then(|r| self.cache.get(&r.id).cloned()),
                    facts: None,
                    references: None,
                }
            };
            statuses.push(status);
        }
        statuses.extend(listing.failed.iter().map(|(image, error)| self.failed(image, error, now)));
        statuses
    }

    /// The status of an image a failed call kept from refreshing, with that call's error.
    fn failed(&self, image: &str, error: &ApiError, now: SystemTime) -> ImageStatus {
        ImageStatus { poll_error: Some(error.to_string().into()), ..self.unrefreshed(image, now) }
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
        let target = &self.target;
        let memory = &self.memory;
        target
            .shard_images(target.images.iter().chain(&memory.discovered).chain(memory.pinned_images.values()).cloned())
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
            None => ImageStatus::unpolled(self.target.region.clone(), self.target.owner.clone(), image.into()),
        }
    }
}
