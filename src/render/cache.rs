//! The render cache: the usage part of the exposition is rendered (and compressed) again only
//! when a report or the options changed. In a steady state only the few status lines per image
//! are new, so a poll neither spends the render time nor churns the memory of the whole
//! exposition.

use std::sync::Arc;

use super::exposition::{Part, Prepared};
use super::series::{RenderOptions, render_status, render_usage};
use crate::snapshot::{ReportUsage, Snapshot};

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

/// The usage part last rendered, and what it was rendered from.
struct RenderedUsage {
    inputs: UsageInputs,
    part: Arc<Part>,
}

/// Renders snapshots into expositions, reusing the last usage part while it still holds.
#[derive(Default)]
pub struct RenderCache {
    last: Option<RenderedUsage>,
}

impl RenderCache {
    /// The exposition of `snapshot`. Rendering 100k series takes a while, so it runs off the
    /// threads that serve scrapes. On failure (a panic while rendering) the cache is unchanged.
    pub async fn prepare(
        &mut self,
        snapshot: Arc<Snapshot>,
        options: RenderOptions,
    ) -> Result<Prepared, tokio::task::JoinError> {
        let inputs = UsageInputs::of(&snapshot, options);
        let reusable = self.last.as_ref().filter(|l| l.inputs == inputs).map(|l| Arc::clone(&l.part));
        let (prepared, usage) = tokio::task::spawn_blocking(move || {
            let usage = match reusable {
                Some(part) => part,
                None => Arc::new(Part::new(render_usage(&snapshot, &inputs.options))),
            };
            let status = Part::new(render_status(&snapshot));
            (Prepared::from_parts(Arc::clone(&usage), status), RenderedUsage { inputs, part: usage })
        })
        .await?;
        self.last = Some(usage);
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ImageStatus;
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
            report_error: None,
            poll_error: None,
            report: Some(Arc::clone(report)),
            facts: None,
            references: None,
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

    #[tokio::test]
    async fn the_usage_part_is_reused_until_a_report_changes() {
        let report = Arc::new(ReportUsage::from_entries("amiur-1", UNIX_EPOCH, &[]));
        let mut cache = RenderCache::default();
        let t = UNIX_EPOCH + Duration::from_secs(100);
        let first = cache.prepare(Arc::new(snapshot(&report, t)), RenderOptions::default()).await.expect("renders");
        let later =
            cache.prepare(Arc::new(snapshot(&report, t + Duration::from_secs(5))), RenderOptions::default()).await;
        assert!(first.shares_usage_with(&later.expect("renders")), "the same part, not a copy");
        let other = Arc::new(ReportUsage::from_entries("amiur-2", UNIX_EPOCH, &[]));
        let changed = cache.prepare(Arc::new(snapshot(&other, t)), RenderOptions::default()).await.expect("renders");
        assert!(!first.shares_usage_with(&changed));
    }
}
