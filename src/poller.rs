//! One poll: for every Region, list the reports of the watched images, request new reports
//! where they are due, read the entries of reports not read before, and compose a snapshot.
//!
//! Cost is the design constraint. Reports are listed 200 images to a call; entries are read by
//! report ID, 200 reports to a call, and only for reports never read before (an available report
//! never changes), so a steady-state poll costs one DescribeImageUsageReports call per 200
//! images and nothing else. Failures are per batch of images: the images of a failed call keep
//! their last good data, marked by `ami_usage_image_poll_success 0`, while the others refresh.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::stream::{self, StreamExt};

use crate::config::{Config, EntryQuery, MAX_IDS_PER_CALL, ReportPolicy};
use crate::ec2::{ApiError, Ec2Reports, ReportSelector, Skipped};
use crate::metrics::SelfMetrics;
use crate::report::{ReportParams, ReportState, UsageReport, classify, client_token, needs_new_report};
use crate::snapshot::{Entry, ImageStatus, ReportUsage, Snapshot};

/// The images and pinned reports of one Region, with its client.
pub struct RegionTarget {
    pub region: Arc<str>,
    pub api: Ec2Reports,
    /// Images to watch; the exporter keeps their reports fresh when creation is on.
    pub images: Vec<String>,
    /// Reports made elsewhere, read as they are; never replaced by the exporter.
    pub report_ids: Vec<String>,
}

/// What one poll did, for the log line and the self metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    pub images: usize,
    pub failed_images: usize,
    pub reports_created: usize,
    pub reports_read: usize,
    pub series: usize,
}

/// The poller and what it remembers between polls.
pub struct Poller {
    targets: Vec<RegionTarget>,
    policy: ReportPolicy,
    entry_query: EntryQuery,
    wanted: ReportParams,
    concurrency: usize,
    metrics: SelfMetrics,
    /// Usage of every report currently serving an image, by report ID.
    cache: HashMap<String, Arc<ReportUsage>>,
    /// The last status of each image, served again when a later poll of the image fails.
    last: HashMap<(Arc<str>, String), ImageStatus>,
    /// Per Region, beside `targets`.
    memory: Vec<RegionMemory>,
}

/// What the poller remembers of one Region between polls.
#[derive(Default)]
struct RegionMemory {
    /// Error reports already logged, so each is logged and counted once.
    seen_errors: HashSet<String>,
    /// The image of each pinned report, for when listing the report fails.
    pinned_images: HashMap<String, String>,
}

/// The outcome of listing a Region's reports.
#[derive(Default)]
struct Listing {
    by_image: HashMap<String, Vec<UsageReport>>,
    /// Images whose reports could not be listed, with the reason.
    failed: HashMap<String, ApiError>,
    skipped: Skipped,
}

impl Poller {
    pub fn new(config: &Config, targets: Vec<RegionTarget>, metrics: SelfMetrics) -> Self {
        Self {
            memory: targets.iter().map(|_| RegionMemory::default()).collect(),
            targets,
            policy: config.reports.clone(),
            entry_query: config.entries.clone(),
            wanted: ReportParams::from_policy(&config.reports),
            concurrency: config.aws.max_concurrent_requests.get() as usize,
            metrics,
            cache: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Runs one poll of every Region and returns the new snapshot.
    pub async fn poll(&mut self, now: SystemTime) -> (Snapshot, PollStats) {
        let started = Instant::now();
        self.metrics.polls.inc();
        let mut stats = PollStats::default();
        let mut images = Vec::new();
        let mut serving = HashSet::new();
        for index in 0..self.targets.len() {
            let statuses = self.poll_region(index, now, &mut stats).await;
            for status in statuses {
                if let Some(report) = &status.report {
                    serving.insert(report.report_id.clone());
                }
                self.last.insert((status.region.clone(), status.image_id.to_string()), status.clone());
                images.push(status);
            }
        }
        // Reports no longer serving any image will not be read again: forget them.
        self.cache.retain(|id, _| serving.contains(id));
        let watched: HashSet<(Arc<str>, String)> =
            images.iter().map(|s| (s.region.clone(), s.image_id.to_string())).collect();
        self.last.retain(|key, _| watched.contains(key));

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
        let target = &self.targets[index];
        let region = target.region.clone();
        let listing = list_reports(target, &self.memory[index].pinned_images, self.concurrency).await;
        self.note_skipped(&region, &listing.skipped, "report");
        let pinned: HashSet<&str> = target.report_ids.iter().map(String::as_str).collect();
        for report in listing.by_image.values().flatten().filter(|r| pinned.contains(r.id.as_str())) {
            self.memory[index].pinned_images.insert(report.id.clone(), report.image_id.clone());
        }

        // Which report serves each image, and which images need a new one.
        let watched: HashSet<&str> = target.images.iter().map(String::as_str).collect();
        let mut chosen: HashMap<String, Option<UsageReport>> = HashMap::new();
        let mut to_create = Vec::new();
        let mut new_errors = Vec::new();
        for (image, reports) in &listing.by_image {
            let usable =
                |r: &UsageReport| pinned.contains(r.id.as_str()) || !self.policy.create || r.params == self.wanted;
            let sorted = classify(reports, usable);
            let seen = &self.memory[index].seen_errors;
            new_errors.extend(sorted.errors.iter().filter(|r| !seen.contains(&r.id)).map(|r| (*r).clone()));
            if self.policy.create
                && watched.contains(image.as_str())
                && needs_new_report(&sorted, now, self.policy.max_age.get())
            {
                to_create.push(image.clone());
            }
            chosen.insert(image.clone(), sorted.newest_available.cloned());
        }
        for image in &target.images {
            if !listing.failed.contains_key(image) && !chosen.contains_key(image) {
                // No report of any kind yet.
                chosen.insert(image.clone(), None);
                if self.policy.create {
                    to_create.push(image.clone());
                }
            }
        }
        self.log_error_reports(index, new_errors);
        if listing.failed.is_empty() {
            // Reports expire after 30 days; forget the ones EC2 no longer lists.
            let listed: HashSet<&str> = listing.by_image.values().flatten().map(|r| r.id.as_str()).collect();
            self.memory[index].seen_errors.retain(|id| listed.contains(id.as_str()));
        }

        stats.reports_created += self.create_reports(index, &to_create, now).await;

        // Read the entries of chosen reports that were never read.
        let target = &self.targets[index];
        let unread: Vec<&UsageReport> = {
            let mut seen = HashSet::new();
            chosen.values().flatten().filter(|r| !self.cache.contains_key(&r.id) && seen.insert(r.id.clone())).collect()
        };
        stats.reports_read += unread.len();
        let (read, failed_reports, skipped) =
            read_entries(&target.api, &unread, &self.entry_query, self.concurrency).await;
        self.note_skipped(&region, &skipped, "entry");
        for (id, usage) in read {
            self.cache.insert(id, Arc::new(usage));
        }

        // Compose the image statuses.
        let mut statuses = Vec::with_capacity(chosen.len() + listing.failed.len());
        for (image, report) in chosen {
            let failure = report.as_ref().and_then(|r| failed_reports.get(&r.id));
            let usage = report.as_ref().and_then(|r| self.cache.get(&r.id).cloned());
            statuses.push(match failure {
                Some(error) => self.stale(&region, &image, error),
                None => ImageStatus {
                    region: region.clone(),
                    image_id: image.as_str().into(),
                    poll_success: true,
                    last_success: Some(now),
                    report: usage,
                },
            });
        }
        for (image, error) in &listing.failed {
            statuses.push(self.stale(&region, image, error));
        }
        statuses
    }

    /// The last good status of an image that failed this poll, or an empty one.
    fn stale(&self, region: &Arc<str>, image: &str, error: &ApiError) -> ImageStatus {
        tracing::debug!(aws_region = %region, image_id = image, error = %error, "image not refreshed, serving its last good data");
        match self.last.get(&(region.clone(), image.to_owned())) {
            Some(last) => ImageStatus { poll_success: false, ..last.clone() },
            None => ImageStatus {
                region: region.clone(),
                image_id: image.into(),
                poll_success: false,
                last_success: None,
                report: None,
            },
        }
    }

    async fn create_reports(&self, index: usize, images: &[String], now: SystemTime) -> usize {
        let target = &self.targets[index];
        let max_age = self.policy.max_age.get();
        let calls: Vec<_> = images
            .iter()
            .map(|image| async move {
                let token = client_token(image, &self.wanted, now, max_age);
                (image.clone(), target.api.create_report(image, &self.policy, &token).await)
            })
            .collect();
        let results: Vec<(String, Result<String, ApiError>)> = bounded(calls, self.concurrency).await;
        let mut created = 0;
        for (image, result) in results {
            match result {
                Ok(report_id) => {
                    created += 1;
                    self.metrics.reports_created.with_label_values(&[&target.region]).inc();
                    tracing::info!(aws_region = %target.region, image_id = %image, report_id = %report_id, "requested a new usage report");
                }
                Err(error) => {
                    tracing::warn!(aws_region = %target.region, image_id = %image, error = %error, "cannot create a usage report; the previous report keeps serving");
                }
            }
        }
        created
    }

    fn log_error_reports(&mut self, index: usize, reports: Vec<UsageReport>) {
        let region = &*self.targets[index].region;
        for report in reports {
            if let ReportState::Error { reason } = &report.state {
                tracing::warn!(aws_region = region, image_id = %report.image_id, report_id = %report.id, reason = %reason, "usage report failed in EC2; it is ignored");
            }
            self.metrics.report_errors.with_label_values(&[region]).inc();
            self.memory[index].seen_errors.insert(report.id);
        }
    }

    fn note_skipped(&self, region: &str, skipped: &Skipped, what: &str) {
        if skipped.count == 0 {
            return;
        }
        if what == "entry" {
            self.metrics.invalid_entries.with_label_values(&[region]).inc_by(skipped.count);
        }
        tracing::warn!(
            aws_region = region,
            skipped = skipped.count,
            example = skipped.example.as_deref().unwrap_or(""),
            "skipped {what}s with missing or impossible fields"
        );
    }
}

/// Runs the calls with at most `limit` in flight; the futures are built beforehand because a
/// closure inside `Stream::map` trips the compiler's `Send` check for spawned tasks.
async fn bounded<F: std::future::Future>(calls: Vec<F>, limit: usize) -> Vec<F::Output> {
    stream::iter(calls).buffer_unordered(limit.max(1)).collect().await
}

/// Lists the reports of a Region's images (200 to a call) and its pinned reports.
async fn list_reports(target: &RegionTarget, pinned_images: &HashMap<String, String>, concurrency: usize) -> Listing {
    let image_batches = target.images.chunks(MAX_IDS_PER_CALL).map(|c| (c, true));
    let report_batches = target.report_ids.chunks(MAX_IDS_PER_CALL).map(|c| (c, false));
    let calls: Vec<_> = image_batches
        .chain(report_batches)
        .map(|(ids, by_image)| async move {
            let selector = if by_image { ReportSelector::Images(ids) } else { ReportSelector::Reports(ids) };
            (ids, by_image, target.api.describe_reports(selector).await)
        })
        .collect();
    let results = bounded(calls, concurrency).await;
    let mut listing = Listing::default();
    for (ids, by_image, result) in results {
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

/// Reads the entries of the given reports, 200 reports to a call; returns their usage, the
/// reports whose call failed, and what was skipped.
async fn read_entries(
    api: &Ec2Reports,
    reports: &[&UsageReport],
    query: &EntryQuery,
    concurrency: usize,
) -> (Vec<(String, ReportUsage)>, HashMap<String, ApiError>, Skipped) {
    let calls: Vec<_> = reports
        .chunks(MAX_IDS_PER_CALL)
        .map(|batch| async move {
            let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
            (batch, api.describe_entries(&ids, query).await)
        })
        .collect();
    let results = bounded(calls, concurrency).await;
    let (mut read, mut failed, mut skipped) = (Vec::new(), HashMap::new(), Skipped::default());
    for (batch, result) in results {
        match result {
            Ok((entries, batch_skipped)) => {
                skipped.count += batch_skipped.count;
                skipped.example = skipped.example.take().or(batch_skipped.example);
                let mut by_report: HashMap<&str, Vec<&Entry>> = HashMap::new();
                for entry in &entries {
                    by_report.entry(entry.report_id.as_str()).or_default().push(entry);
                }
                for report in batch {
                    let mine = by_report.remove(report.id.as_str()).unwrap_or_default();
                    read.push((report.id.clone(), ReportUsage::from_entries(&report.id, report.created, mine)));
                }
                let strays: usize = by_report.values().map(Vec::len).sum();
                if strays > 0 {
                    skipped.count += strays as u64;
                    skipped.example.get_or_insert_with(|| "entries of a report that was not asked for".to_owned());
                }
            }
            Err(error) => {
                tracing::warn!(reports = batch.len(), error = %error, "cannot read usage report entries");
                for report in batch {
                    failed.insert(report.id.clone(), error.clone());
                }
            }
        }
    }
    (read, failed, skipped)
}
