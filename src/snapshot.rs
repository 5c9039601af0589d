//! What one poll learned: per image, the usage counts of the report that serves it and whether
//! the image could be refreshed. A snapshot is built whole and never changed, so `/metrics`
//! always shows one consistent poll, and series of accounts or images that are gone vanish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// No account runs a billion resources from one AMI (EC2 quotas are in the thousands); a larger
/// count is a broken answer, and exporting it would wreck every sum built on it.
pub const MAX_PLAUSIBLE_USAGE: u64 = 1_000_000_000;

/// One row of a report: an account's use of the image through one resource type.
///
/// The strings are shared (`intern::Interner`): a batch of reports holds tens of thousands of
/// entries that name the same few accounts, resource types and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub report_id: Arc<str>,
    pub account_id: Arc<str>,
    pub resource_type: Arc<str>,
    pub usage_count: u64,
}

/// The labels of one usage series. Shared strings: every cached series holds its account and
/// resource type for as long as its report serves, and both repeat across all images.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageKey {
    pub account_id: Arc<str>,
    pub resource_type: Arc<str>,
}

/// The usage counts of one available report. Reports never change once available, so this is
/// computed once per report and shared (through `Arc`) by every later snapshot that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportUsage {
    pub report_id: String,
    pub created: SystemTime,
    pub usage: BTreeMap<UsageKey, u64>,
}

impl ReportUsage {
    /// Folds a report's entries into one count per (account, resource type).
    ///
    /// A report has one entry per account and resource type; if the API repeats an entry (for
    /// instance on two pages), it is the same fact told twice, so it is kept once, not summed.
    /// Entries of other reports are ignored: reading by report ID must never mix reports.
    pub fn from_entries<'a>(
        report_id: &str,
        created: SystemTime,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Self {
        let usage = entries
            .into_iter()
            .filter(|e| &*e.report_id == report_id)
            .map(|e| {
                let key = UsageKey { account_id: e.account_id.clone(), resource_type: e.resource_type.clone() };
                (key, e.usage_count)
            })
            .collect();
        Self { report_id: report_id.to_owned(), created, usage }
    }
}

/// What DescribeImages says about an image. Facts change rarely, so one value is shared by every
/// poll until the next refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub name: String,
    /// EC2's `imageState` (`available`, `disabled`, ...), or `deregistered` once DescribeImages
    /// stops returning the image.
    pub state: String,
    pub public: bool,
    pub created: Option<SystemTime>,
    /// `None`: the image never launched an instance (or EC2 has not told yet).
    pub last_launched: Option<SystemTime>,
    /// `None`: no deprecation is set.
    pub deprecation: Option<SystemTime>,
}

impl ImageFacts {
    /// The state of an image DescribeImages no longer returns.
    pub const DEREGISTERED: &'static str = "deregistered";

    /// The same facts, marked deregistered.
    pub fn deregistered(&self) -> Self {
        Self { state: Self::DEREGISTERED.to_owned(), ..self.clone() }
    }
}

/// The state of one watched image after a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageStatus {
    pub region: Arc<str>,
    /// The owner account, when several are configured (it becomes a label).
    pub owner: Option<Arc<str>>,
    pub image_id: Arc<str>,
    /// Whether this poll refreshed the image. When it did not, `report` is the last good one.
    pub poll_success: bool,
    pub last_success: Option<SystemTime>,
    /// When the image's pending report was requested, while one is pending.
    pub pending_since: Option<SystemTime>,
    /// The image's consecutive failed reports since its newest available one (0 when its
    /// latest report is fine).
    pub report_failures: usize,
    /// Why the newest of those failed, in EC2's words (its `stateReason`).
    pub report_error: Option<Arc<str>>,
    /// The failed call that kept this poll from refreshing the image (`poll_success` false).
    pub poll_error: Option<Arc<str>>,
    /// `None` while the image has no usable available report (none yet, or still pending).
    pub report: Option<Arc<ReportUsage>>,
    /// `None` until DescribeImages has told (or when it may not be called).
    pub facts: Option<Arc<ImageFacts>>,
    /// `None` when references are not measured (`references.enabled: false`) or not yet read.
    pub references: Option<Arc<References>>,
}

impl ImageStatus {
    /// An image that no poll has refreshed yet: nothing known but its name.
    pub fn unpolled(region: Arc<str>, owner: Option<Arc<str>>, image_id: Arc<str>) -> Self {
        Self {
            region,
            owner,
            image_id,
            poll_success: false,
            last_success: None,
            pending_since: None,
            report_failures: 0,
            report_error: None,
            poll_error: None,
            report: None,
            facts: None,
            references: None,
        }
    }
}

/// How many of the caller's own resources reference an image, by resource type, as of the last
/// complete DescribeImageReferences refresh of its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct References {
    /// Every configured resource type, 0 included: "none" differs from "not measured".
    pub counts: BTreeMap<String, u64>,
    pub measured: SystemTime,
}

/// What the latest poll of one target did, and how the target stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    pub region: Arc<str>,
    /// As in `ImageStatus::owner`.
    pub owner: Option<Arc<str>>,
    /// `None` until the target's first poll finished.
    pub last_poll: Option<PollSummary>,
    /// While EC2 throttles the Region: when it is polled again.
    pub backing_off_until: Option<SystemTime>,
    /// When the in-account references were last counted completely; `None` when they are not
    /// measured (or not yet).
    pub references_measured: Option<SystemTime>,
}

/// One finished poll of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSummary {
    pub started: SystemTime,
    pub duration: Duration,
    /// HTTP attempts to EC2, retries included.
    pub calls: u64,
    /// Failed attempts by error code.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Sorted by Region, then owner, then image ID.
    pub images: Vec<ImageStatus>,
    /// Sorted by Region, then owner; empty where only images matter (tests, benches).
    pub targets: Vec<TargetStatus>,
}

impl Snapshot {
    pub fn new(images: Vec<ImageStatus>) -> Self {
        Self::composed(images, Vec::new())
    }

    /// The images and targets of the latest polls.
    pub fn composed(mut images: Vec<ImageStatus>, mut targets: Vec<TargetStatus>) -> Self {
        images.sort_by(|a, b| (&a.region, &a.owner, &a.image_id).cmp(&(&b.region, &b.owner, &b.image_id)));
        targets.sort_by(|a, b| (&a.region, &a.owner).cmp(&(&b.region, &b.owner)));
        Self { images, targets }
    }

    pub fn series_count(&self) -> usize {
        self.images.iter().filter_map(|i| i.report.as_ref()).map(|r| r.usage.len()).sum()
    }
}

/// How far a target's running poll has come. A snapshot is published when a poll ends, and
/// the first poll of a large estate can take minutes; the status page reads this, live, to
/// show that it moves.
#[derive(Debug, Default)]
pub struct PollProgress {
    /// When the running poll started (Unix milliseconds); 0 while none runs.
    started_ms: AtomicU64,
    reports_read: AtomicUsize,
    reports_total: AtomicUsize,
}

/// What `PollProgress` says at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub started: SystemTime,
    /// Of the usage reports this poll reads (0 of 0 before it reads any).
    pub reports_read: usize,
    pub reports_total: usize,
}

impl PollProgress {
    pub fn start(&self, now: SystemTime) {
        let ms = now.duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis().max(1));
        self.reports_read.store(0, Ordering::Relaxed);
        self.reports_total.store(0, Ordering::Relaxed);
        self.started_ms.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// The poll is about to read the entries of `total` reports.
    pub fn reading(&self, total: usize) {
        self.reports_read.store(0, Ordering::Relaxed);
        self.reports_total.store(total, Ordering::Relaxed);
    }

    pub fn read(&self, reports: usize) {
        self.reports_read.fetch_add(reports, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.started_ms.store(0, Ordering::Release);
    }

    /// The running poll, if one runs.
    pub fn now(&self) -> Option<Progress> {
        let started_ms = self.started_ms.load(Ordering::Acquire);
        (started_ms > 0).then(|| Progress {
            started: std::time::UNIX_EPOCH + Duration::from_millis(started_ms),
            reports_read: self.reports_read.load(Ordering::Relaxed),
            reports_total: self.reports_total.load(Ordering::Relaxed),
        })
    }
}

/// A target's running poll, as the status page finds it.
#[derive(Debug, Clone)]
pub struct LiveTarget {
    pub region: Arc<str>,
    pub owner: Option<Arc<str>>,
    pub progress: Arc<PollProgress>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn entry(report: &str, account: &str, rt: &str, n: u64) -> Entry {
        Entry { report_id: report.into(), account_id: account.into(), resource_type: rt.into(), usage_count: n }
    }

    #[test]
    fn one_count_per_account_and_resource_type() {
        let entries = [
            entry("amiur-1", "111111111111", "ec2:Instance", 15),
            entry("amiur-1", "111111111111", "ec2:LaunchTemplate", 4),
            entry("amiur-1", "222222222222", "ec2:Instance", 39),
        ];
        let usage = ReportUsage::from_entries("amiur-1", UNIX_EPOCH, &entries);
        let counts: Vec<u64> = usage.usage.values().copied().collect();
        assert_eq!(counts, [15, 4, 39]);
    }

    #[test]
    fn repeated_entries_are_not_double_counted() {
        let e = entry("amiur-1", "111111111111", "ec2:Instance", 15);
        let usage = ReportUsage::from_entries("amiur-1", UNIX_EPOCH, [&e, &e, &e]);
        assert_eq!(usage.usage.len(), 1);
        assert_eq!(usage.usage.values().sum::<u64>(), 15);
    }

    #[test]
    fn entries_of_other_reports_never_leak_in() {
        let entries = [
            entry("amiur-new", "111111111111", "ec2:Instance", 10),
            entry("amiur-old", "111111111111", "ec2:Instance", 7),
        ];
        let usage = ReportUsage::from_entries("amiur-new", UNIX_EPOCH, &entries);
        assert_eq!(usage.usage.values().sum::<u64>(), 10);
    }

    #[test]
    fn progress_tells_a_running_poll_only() {
        let progress = PollProgress::default();
        assert_eq!(progress.now(), None);
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        progress.start(t);
        progress.reading(40);
        progress.read(15);
        progress.read(5);
        assert_eq!(progress.now(), Some(Progress { started: t, reports_read: 20, reports_total: 40 }));
        progress.finish();
        assert_eq!(progress.now(), None);
    }

    #[test]
    fn snapshot_sorts_images_and_counts_series() {
        let report = Arc::new(ReportUsage::from_entries(
            "amiur-1",
            UNIX_EPOCH,
            &[
                entry("amiur-1", "111111111111", "ec2:Instance", 1),
                entry("amiur-1", "111111111111", "ec2:LaunchTemplate", 2),
            ],
        ));
        let status = |region: &str, image: &str, report: Option<Arc<ReportUsage>>| ImageStatus {
            poll_success: true,
            report,
            ..ImageStatus::unpolled(region.into(), None, image.into())
        };
        let s = Snapshot::new(vec![
            status("us-west-2", "ami-1", Some(report.clone())),
            status("eu-west-1", "ami-2", None),
            status("eu-west-1", "ami-1", Some(report)),
        ]);
        let order: Vec<_> = s.images.iter().map(|i| format!("{}/{}", i.region, i.image_id)).collect();
        assert_eq!(order, ["eu-west-1/ami-1", "eu-west-1/ami-2", "us-west-2/ami-1"]);
        assert_eq!(s.series_count(), 4);
    }
}
