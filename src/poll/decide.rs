//! Step 2: per image, which report serves and whether a new one is due (the rules are the pure
//! functions of `report`); report problems seen for the first time are logged and counted once.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::list::Listing;
use super::target::TargetPoller;
use crate::report::{ImageReports, Report, ReportState, classify, client_token, needs_new_report};

/// An image whose report is due, and the token of the request.
pub(super) struct Due {
    pub(super) image: String,
    pub(super) token: String,
}

/// Per image, what this poll decided.
pub(super) struct Decision {
    pub(super) serving: Option<Report>,
    pub(super) pending_since: Option<SystemTime>,
    /// Consecutive failed reports of the image (0 when its latest report is fine).
    pub(super) failures: usize,
    /// Why the newest of them failed.
    pub(super) report_error: Option<String>,
}

/// Why a failed report failed: EC2's reason, or the state it stayed in too long (`None` for a
/// report that did not fail).
fn failure_reason(report: &Report) -> Option<String> {
    match &report.state {
        ReportState::Error { reason } => Some(reason.clone()),
        ReportState::Other(state) => Some(format!("stayed in state {state:?} past reports.pending_timeout")),
        ReportState::Pending | ReportState::Available => None,
    }
}

/// Report problems seen for the first time in a poll, to be logged and counted once.
#[derive(Default)]
struct NewProblems {
    errors: Vec<Report>,
    stuck: Vec<Report>,
    unknown: Vec<Report>,
}

impl TargetPoller {
    /// Chooses the report of each listed image and the images that need a new one; logs error,
    /// stuck and unknown reports (once each).
    pub(super) fn decide(
        &mut self,
        watched_images: &[String],
        listing: &Listing,
        now: SystemTime,
    ) -> (HashMap<String, Decision>, Vec<Due>) {
        let s = &self.settings;
        let pinned: HashSet<&str> = self.target.report_ids.iter().map(String::as_str).collect();
        let watched: HashSet<&str> = watched_images.iter().map(String::as_str).collect();
        let usable = |r: &Report| pinned.contains(r.id.as_str()) || !s.policy.create || r.params == s.wanted;

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
            let sorted: ImageReports<'_> = classify(reports, usable, now, s.policy.pending_timeout.get());
            self.find_new_problems(&sorted, now, &mut news);
            if watched.contains(image.as_str())
                && let Some(due) = self.due(image, &sorted, now)
            {
                to_create.push(due);
            }
            let failures = sorted.consecutive_failures();
            let decision = Decision {
                serving: sorted.newest_available.cloned(),
                pending_since: sorted.pending.map(|p| p.created),
                failures: failures.len(),
                report_error: failures.first().and_then(|r| failure_reason(r)),
            };
            decisions.insert(image.clone(), decision);
        }
        self.log_new_report_problems(news, listing);
        (decisions, to_create)
    }

    /// A new report for the image, if one is due and its request is worth making.
    fn due(&self, image: &str, sorted: &ImageReports<'_>, now: SystemTime) -> Option<Due> {
        let s = &self.settings;
        let memory = &self.memory;
        let max_age = s.policy.max_age.get();
        let due = s.policy.create
            && needs_new_report(sorted, now, max_age, s.poll_interval)
            && memory.create_backoff.get(image).is_none_or(|b| b.allows(now));
        if !due {
            return None;
        }
        let token = client_token(image, &s.wanted, now, max_age, sorted.newest.map(|r| r.id.as_str()));
        // A token whose report vanished would only name the vanished report again.
        memory.vanished.get(image).is_none_or(|v| v.token != token).then(|| Due { image: image.to_owned(), token })
    }

    fn find_new_problems(&self, sorted: &ImageReports<'_>, now: SystemTime, news: &mut NewProblems) {
        let memory = &self.memory;
        let pending_timeout = self.settings.policy.pending_timeout.get();
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
    }

    fn log_new_report_problems(&mut self, news: NewProblems, listing: &Listing) {
        let region = self.target.region.clone();
        let pending_timeout = &self.settings.policy.pending_timeout;
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
                    pending_timeout = %pending_timeout,
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
                pending_timeout = %pending_timeout,
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
}
