//! Step 5: delete the exporter's own reports that a newer one replaced (`report::superseded`),
//! so that an image lists one or two reports, not 30 days of them, and listing stays one call
//! per 200 images.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::bounded::bounded;
use super::decide::Decision;
use super::list::Listing;
use super::target::TargetPoller;
use crate::aws::{ApiError, Code};
use crate::report::{Backoff, Report, superseded};

/// At most this many superseded reports are deleted per target and poll: the 30 days of reports
/// an upgrade finds are cleared over a few polls instead of in one burst of calls.
const MAX_DELETIONS_PER_POLL: usize = 1000;
/// The longest wait before trying to delete again after EC2 refused the permission (or one poll
/// interval, if longer).
const MAX_DELETE_BACKOFF: Duration = Duration::from_secs(3600);

/// What the deletions of one poll came to.
#[derive(Default)]
struct Deletions {
    deleted: usize,
    failures: Vec<ApiError>,
    /// A refusal (missing permission): deletions pause.
    refused: Option<ApiError>,
}

impl TargetPoller {
    /// Deletes the superseded reports of the images whose serving report has been read, at most
    /// `MAX_DELETIONS_PER_POLL`, oldest first. A failed deletion marks nothing failed: the
    /// report is still listed at the next poll and tried again then. Deletions stop for the
    /// poll at the first throttling or refusal, and a refusal waits a doubling interval before
    /// the next attempt. Returns how many reports were deleted.
    pub(super) async fn delete_superseded(
        &mut self,
        listing: &Listing,
        decisions: &HashMap<String, Decision>,
        now: SystemTime,
    ) -> usize {
        let policy = &self.settings.policy;
        if !(policy.create && policy.delete_superseded) || self.memory.delete_backoff.is_some_and(|b| !b.allows(now)) {
            return 0;
        }
        let doomed = self.doomed(listing, decisions);
        if doomed.is_empty() {
            return 0;
        }
        let outcome = self.delete_all(&doomed).await;
        self.note_deletions(&outcome, now);
        outcome.deleted
    }

    /// The reports to delete this poll, oldest first.
    fn doomed<'a>(&self, listing: &'a Listing, decisions: &HashMap<String, Decision>) -> Vec<&'a Report> {
        let pinned: HashSet<&str> = self.target.report_ids.iter().map(String::as_str).collect();
        let usable = |r: &Report| r.params == self.settings.wanted;
        let mut seen = HashSet::new();
        let mut doomed: Vec<&Report> = Vec::new();
        for (image, decision) in decisions {
            // Only once the serving report's usage is in hand: until then an older report may
            // still be what the image shows.
            let Some(serving) = decision.serving.as_ref().filter(|r| self.cache.contains_key(&r.id)) else { continue };
            let Some(reports) = listing.by_image.get(image) else { continue };
            let found = superseded(reports, serving, usable, |id| pinned.contains(id));
            doomed.extend(found.into_iter().filter(|r| seen.insert(r.id.as_str())));
        }
        doomed.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        if doomed.len() > MAX_DELETIONS_PER_POLL {
            tracing::debug!(aws_region = %self.target.region, superseded = doomed.len(), limit = MAX_DELETIONS_PER_POLL, "more superseded reports than one poll deletes; the rest follow in the next polls");
            doomed.truncate(MAX_DELETIONS_PER_POLL);
        }
        doomed
    }

    /// Deletes the reports, stopping at the first throttling or refusal.
    async fn delete_all(&self, doomed: &[&Report]) -> Deletions {
        let target = &self.target;
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
                    if result.as_ref().is_err_and(|e| e.code == Code::RequestLimitExceeded || e.code.is_denied()) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    (*report, Some(result))
                }
            })
            .collect();
        let region = &target.region;
        let mut outcome = Deletions::default();
        for (report, result) in bounded(calls, self.settings.concurrency).await {
            match result {
                None => {}
                Some(Ok(())) => {
                    outcome.deleted += 1;
                    self.metrics.reports_deleted.with_label_values(&[region]).inc();
                    tracing::debug!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, "deleted a superseded usage report");
                }
                Some(Err(error)) => {
                    tracing::debug!(aws_region = %region, image_id = %report.image_id, report_id = %report.id, error = %error, "cannot delete a superseded usage report");
                    if error.code.is_denied() {
                        outcome.refused = Some(error.clone());
                    }
                    outcome.failures.push(error);
                }
            }
        }
        outcome
    }

    /// Logs the outcome, and pauses deletions while EC2 refuses them.
    fn note_deletions(&mut self, outcome: &Deletions, now: SystemTime) {
        let region = &self.target.region;
        if outcome.deleted > 0 {
            tracing::info!(aws_region = %region, deleted = outcome.deleted, "deleted superseded usage reports");
        }
        let poll_interval = self.settings.poll_interval;
        let memory = &mut self.memory;
        if let Some(error) = &outcome.refused {
            let cap = MAX_DELETE_BACKOFF.max(poll_interval);
            let backoff = Backoff::after_failure(memory.delete_backoff, now, poll_interval, cap);
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
            if let Some(error) = outcome.failures.first() {
                tracing::warn!(aws_region = %region, failed = outcome.failures.len(), error = %error, "cannot delete some superseded usage reports; they are tried again at the next poll");
            }
        }
    }
}
