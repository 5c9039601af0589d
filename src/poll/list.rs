//! Step 1: which reports exist. The reports of the watched images are listed 200 images to a
//! call, and pinned reports by ID.

use std::collections::{HashMap, HashSet};

use super::bounded::bounded;
use super::target::{Target, TargetPoller};
use crate::aws::{ApiError, ReportSelector, Skipped};
use crate::config::MAX_IDS_PER_CALL;
use crate::report::Report;

/// The outcome of listing a target's reports.
#[derive(Default)]
pub(super) struct Listing {
    pub(super) by_image: HashMap<String, Vec<Report>>,
    /// Images whose reports could not be listed, with the reason.
    pub(super) failed: HashMap<String, ApiError>,
    skipped: Skipped,
}

impl TargetPoller {
    /// Lists the reports, then checks what the listing says against what the target remembers.
    pub(super) async fn list(&mut self, images: &[String]) -> Listing {
        let mut listing =
            list_reports(&self.target, images, &self.memory.pinned_images, self.settings.concurrency).await;
        // Pinned reports are listed by ID, before their image is known: another shard may own it.
        listing.by_image.retain(|image, _| self.target.owns(image));
        listing.failed.retain(|image, _| self.target.owns(image));
        self.note_skipped(&listing.skipped, "reports");
        self.remember_pinned(&listing);
        self.check_requested(&listing);
        listing
    }

    fn remember_pinned(&mut self, listing: &Listing) {
        let pinned: HashSet<&str> = self.target.report_ids.iter().map(String::as_str).collect();
        for report in listing.by_image.values().flatten().filter(|r| pinned.contains(r.id.as_str())) {
            self.memory.pinned_images.insert(report.id.clone(), report.image_id.clone());
        }
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
}

/// Lists the reports of a target's images (200 to a call) and its pinned reports.
///
/// Image batches are not split further for parallelism, unlike entry batches: every poll lists
/// every image, so smaller batches would cost more calls in every poll, while the pages of a
/// batch are few once superseded reports are deleted (one page of up to 1000 reports for 200
/// images with a serving and perhaps a pending report each).
async fn list_reports(
    target: &Target,
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
                listing.skipped.merge(skipped);
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
