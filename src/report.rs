//! AMI usage reports as the exporter sees them, and the decisions made about them: which report
//! of an image to read, and when to ask EC2 for a new one.
//!
//! Everything here is pure (time is passed in), so the rules are unit-tested without AWS.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::config::{LAUNCH_TEMPLATE, ReportPolicy, ResourceType};

/// The tag that marks reports this exporter created, so that people (and the exporter after a
/// restart) can tell them from reports made in the console or the CLI.
pub const CREATED_BY_TAG_KEY: &str = "created-by";
pub const CREATED_BY_TAG_VALUE: &str = "ami-usage-exporter";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportState {
    Pending,
    Available,
    /// EC2 could not produce the report; the reason text is not documented by AWS.
    Error {
        reason: String,
    },
    /// A state this version does not know; treated like pending (not readable, not failed).
    Other(String),
}

impl ReportState {
    pub fn parse(state: &str, reason: Option<&str>) -> Self {
        match state {
            "pending" => Self::Pending,
            "available" => Self::Available,
            "error" => Self::Error { reason: reason.unwrap_or("no reason given").to_owned() },
            other => Self::Other(other.to_owned()),
        }
    }
}

/// What a report counts: its resource types (with options) and its account filter. Two reports
/// with equal parameters answer the same question, so either may serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportParams {
    resource_types: BTreeSet<ResourceType>,
    /// Empty: all accounts.
    account_ids: BTreeSet<String>,
}

impl ReportParams {
    /// Builds the parameters from what EC2 returned. A launch template without a version depth
    /// means EC2's default, so it compares equal to a policy that spells the default out.
    pub fn from_report<'a>(
        resource_types: impl IntoIterator<Item = (&'a str, Option<u32>)>,
        account_ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let resource_types = resource_types
            .into_iter()
            .filter_map(|(name, depth)| {
                // A report carrying an option we would refuse cannot equal our policy anyway.
                let depth = if name == LAUNCH_TEMPLATE { depth } else { None };
                ResourceType::new(name, depth).ok()
            })
            .collect();
        Self { resource_types, account_ids: account_ids.into_iter().map(str::to_owned).collect() }
    }

    pub fn from_policy(policy: &ReportPolicy) -> Self {
        Self {
            resource_types: policy.resource_types.iter().cloned().collect(),
            account_ids: policy.account_ids.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }
}

/// A report as listed by DescribeImageUsageReports.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub id: String,
    pub image_id: String,
    pub state: ReportState,
    pub created: SystemTime,
    pub params: ReportParams,
    pub created_by_exporter: bool,
}

/// The reports of one image, sorted out.
#[derive(Debug, Default, PartialEq)]
pub struct ImageReports<'a> {
    /// The report to read: the newest available one that answers our question.
    pub newest_available: Option<&'a UsageReport>,
    /// EC2 allows one pending report per image; while there is one, creating another fails.
    pub pending: Option<&'a UsageReport>,
    pub errors: Vec<&'a UsageReport>,
}

/// Sorts an image's reports. Only reports that are `usable` may serve: when the exporter
/// creates reports, a console report limited to three accounts must not pass for the whole
/// picture. Pending reports count whatever their parameters: they block creation all the same.
pub fn classify<'a>(reports: &'a [UsageReport], usable: impl Fn(&UsageReport) -> bool) -> ImageReports<'a> {
    let mut out = ImageReports::default();
    for report in reports {
        match &report.state {
            ReportState::Available if usable(report) => {
                // Newest wins; equal times are broken by ID so that every replica picks the same.
                let newer =
                    out.newest_available.is_none_or(|cur| (report.created, &report.id) > (cur.created, &cur.id));
                if newer {
                    out.newest_available = Some(report);
                }
            }
            ReportState::Available => {}
            ReportState::Pending | ReportState::Other(_) => out.pending = out.pending.or(Some(report)),
            ReportState::Error { .. } => out.errors.push(report),
        }
    }
    out
}

/// Whether a new report should be requested now: the newest usable one is missing or too old,
/// and none is pending.
pub fn needs_new_report(reports: &ImageReports<'_>, now: SystemTime, max_age: Duration) -> bool {
    if reports.pending.is_some() {
        return false;
    }
    match reports.newest_available {
        None => true,
        Some(report) => now.duration_since(report.created).is_ok_and(|age| age > max_age),
    }
}

fn window_of(t: SystemTime, max_age: Duration) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |t| t.as_secs()) / max_age.as_secs().max(1)
}

/// How many of the image's reports ended in `error` within the current refresh window. It is
/// part of the client token: after a failed report, the next request must be a new one (EC2
/// would answer a repeated token with the failed report), and every replica counts the same.
pub fn failed_in_window(reports: &ImageReports<'_>, now: SystemTime, max_age: Duration) -> usize {
    let window = window_of(now, max_age);
    reports.errors.iter().filter(|r| window_of(r.created, max_age) == window).count()
}

/// The image's reports that the exporter may delete now that `serving` serves the image (and its
/// entries have been read): the exporter's own reports (tagged `created-by=ami-usage-exporter`),
/// not pinned, answering the same question (`usable`), that are either `available` and older
/// than `serving` (a newer report replaced them) or in `error` and created before the current
/// refresh window. Error reports of the current window stay: `failed_in_window` counts them for
/// the client token. Pending reports, reports made by people or other tools, and reports with
/// other parameters (another deployment's, or ours from before a configuration change) are never
/// selected; the latter expire after 30 days.
pub fn superseded<'a>(
    reports: &'a [UsageReport],
    serving: &UsageReport,
    usable: impl Fn(&UsageReport) -> bool,
    pinned: impl Fn(&str) -> bool,
    now: SystemTime,
    max_age: Duration,
) -> Vec<&'a UsageReport> {
    let window = window_of(now, max_age);
    reports
        .iter()
        .filter(|r| r.id != serving.id && r.created_by_exporter && !pinned(&r.id) && usable(r))
        .filter(|r| match &r.state {
            // The same order as `classify`, so the report it picked is never "older" than another.
            ReportState::Available => (r.created, &r.id) < (serving.created, &serving.id),
            ReportState::Error { .. } => window_of(r.created, max_age) < window,
            ReportState::Pending | ReportState::Other(_) => false,
        })
        .collect()
}

/// The idempotency token of a CreateImageUsageReport call.
///
/// It is the same for the same image, the same report parameters, the same refresh window
/// (wall-clock time divided into `max_age` slices) and the same attempt (failed reports in the
/// window), so that two replicas of the exporter that both decide to refresh an image send the
/// same token and EC2 creates one report, not two. A new window gives a new token, so the next
/// refresh is not mistaken for a retry.
pub fn client_token(
    image_id: &str,
    params: &ReportParams,
    now: SystemTime,
    max_age: Duration,
    attempt: usize,
) -> String {
    let window = window_of(now, max_age);
    let mut hash = Sha256::new();
    hash.update(b"ami-usage-exporter/v1\n");
    hash.update(image_id.as_bytes());
    for rt in &params.resource_types {
        hash.update(format!("\nrt={}:{:?}", rt.name(), rt.version_depth()).as_bytes());
    }
    for account in &params.account_ids {
        hash.update(format!("\naccount={account}").as_bytes());
    }
    hash.update(format!("\nwindow={window}\nattempt={attempt}").as_bytes());
    let digest = hash.finalize();
    // 32 hex digits: unique enough, well under EC2's 128-character limit.
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Retry spacing for something that keeps failing: each failure doubles the wait, up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    until: SystemTime,
}

impl Backoff {
    pub fn after_failure(previous: Option<Backoff>, now: SystemTime, base: Duration, cap: Duration) -> Self {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        let delay = base.saturating_mul(factor).min(cap.max(base));
        // A configured interval can be huge; the wait then lasts "forever", it never overflows.
        let until = now.checked_add(delay).unwrap_or_else(|| now + Duration::from_secs(u32::MAX.into()));
        Self { failures, until }
    }

    /// Whether the wait is over.
    pub fn allows(&self, now: SystemTime) -> bool {
        now >= self.until
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn until(&self) -> SystemTime {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn policy_params() -> ReportParams {
        let yaml = "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n";
        ReportParams::from_policy(&Config::from_yaml(yaml).expect("valid").reports)
    }

    fn report(id: &str, state: ReportState, created: u64) -> UsageReport {
        UsageReport {
            id: id.into(),
            image_id: "ami-12345678".into(),
            state,
            created: at(created),
            params: policy_params(),
            created_by_exporter: false,
        }
    }

    fn error(reason: &str) -> ReportState {
        ReportState::Error { reason: reason.into() }
    }

    #[test]
    fn newest_available_wins_and_others_are_ignored() {
        let reports = [
            report("amiur-1", ReportState::Available, 100),
            report("amiur-3", ReportState::Available, 300),
            report("amiur-2", ReportState::Available, 200),
            report("amiur-4", ReportState::Pending, 400),
            report("amiur-5", error("Internal error"), 500),
        ];
        let wanted = policy_params();
        let sorted = classify(&reports, |r| r.params == wanted);
        assert_eq!(sorted.newest_available.map(|r| r.id.as_str()), Some("amiur-3"));
        assert_eq!(sorted.pending.map(|r| r.id.as_str()), Some("amiur-4"));
        assert_eq!(sorted.errors.len(), 1);
    }

    #[test]
    fn equal_creation_times_break_ties_by_id() {
        let a = [report("amiur-a", ReportState::Available, 5), report("amiur-b", ReportState::Available, 5)];
        let b = [report("amiur-b", ReportState::Available, 5), report("amiur-a", ReportState::Available, 5)];
        let pick = |r: &[UsageReport]| classify(r, |_| true).newest_available.map(|r| r.id.clone());
        assert_eq!(pick(&a), pick(&b));
    }

    #[test]
    fn only_pending_or_error_means_nothing_to_read() {
        let reports = [report("amiur-1", ReportState::Pending, 1), report("amiur-2", error("x"), 2)];
        let sorted = classify(&reports, |_| true);
        assert!(sorted.newest_available.is_none());
        assert!(!needs_new_report(&sorted, at(10), Duration::from_secs(5)), "a pending report blocks creation");
        let only_error = [report("amiur-2", error("x"), 2)];
        assert!(needs_new_report(&classify(&only_error, |_| true), at(3), Duration::from_secs(100)));
    }

    #[test]
    fn reports_with_other_parameters_do_not_serve() {
        let mut narrow = report("amiur-9", ReportState::Available, 900);
        narrow.params = ReportParams::from_report([("ec2:Instance", None)], ["111122223333"]);
        let reports = [report("amiur-1", ReportState::Available, 100), narrow];
        let wanted = policy_params();
        assert_eq!(classify(&reports, |r| r.params == wanted).newest_available.map(|r| r.id.as_str()), Some("amiur-1"));
        assert_eq!(classify(&reports, |_| true).newest_available.map(|r| r.id.as_str()), Some("amiur-9"));
    }

    #[test]
    fn ec2_default_version_depth_matches_the_policy() {
        let from_ec2 = ReportParams::from_report([("ec2:LaunchTemplate", None), ("ec2:Instance", None)], []);
        assert_eq!(from_ec2, policy_params());
        let other_depth = ReportParams::from_report([("ec2:LaunchTemplate", Some(5)), ("ec2:Instance", None)], []);
        assert_ne!(other_depth, policy_params());
    }

    #[test]
    fn refresh_only_when_too_old() {
        let reports = [report("amiur-1", ReportState::Available, 1000)];
        let sorted = classify(&reports, |_| true);
        let max_age = Duration::from_secs(100);
        assert!(!needs_new_report(&sorted, at(1050), max_age));
        assert!(!needs_new_report(&sorted, at(1100), max_age), "exactly max_age old is still fresh");
        assert!(needs_new_report(&sorted, at(1101), max_age));
        assert!(!needs_new_report(&sorted, at(500), max_age), "a clock behind the report's time is not age");
        assert!(needs_new_report(&ImageReports::default(), at(0), max_age), "no report at all");
    }

    #[test]
    fn only_failures_of_the_current_window_count_as_attempts() {
        let day = 86_400;
        let reports = [
            report("amiur-1", error("x"), day * 3 + 10),
            report("amiur-2", error("y"), day * 3 + 20),
            report("amiur-3", error("z"), day * 2 + 10),
        ];
        let sorted = classify(&reports, |_| true);
        assert_eq!(failed_in_window(&sorted, at(day * 3 + 500), Duration::from_secs(day)), 2);
        assert_eq!(failed_in_window(&sorted, at(day * 4), Duration::from_secs(day)), 0);
    }

    fn ours(id: &str, state: ReportState, created: u64) -> UsageReport {
        UsageReport { created_by_exporter: true, ..report(id, state, created) }
    }

    fn deletable(reports: &[UsageReport], serving: &str, pinned: &[&str], now: u64, max_age: u64) -> Vec<String> {
        let wanted = policy_params();
        let serving = reports.iter().find(|r| r.id == serving).expect("serving report listed");
        superseded(
            reports,
            serving,
            |r| r.params == wanted,
            |id| pinned.contains(&id),
            at(now),
            Duration::from_secs(max_age),
        )
        .into_iter()
        .map(|r| r.id.clone())
        .collect()
    }

    #[test]
    fn older_own_available_reports_are_superseded() {
        let reports = [
            ours("amiur-1", ReportState::Available, 100),
            ours("amiur-2", ReportState::Available, 200),
            ours("amiur-3", ReportState::Available, 300),
        ];
        assert_eq!(deletable(&reports, "amiur-3", &[], 400, 1000), ["amiur-1", "amiur-2"]);
        // Never the serving report, never a newer one.
        assert_eq!(deletable(&reports, "amiur-2", &[], 400, 1000), ["amiur-1"]);
        assert!(deletable(&reports, "amiur-1", &[], 400, 1000).is_empty());
    }

    #[test]
    fn equal_creation_times_order_by_id_like_classify() {
        let reports = [ours("amiur-a", ReportState::Available, 5), ours("amiur-b", ReportState::Available, 5)];
        let serving = classify(&reports, |_| true).newest_available.map(|r| r.id.clone()).expect("one serves");
        assert_eq!(serving, "amiur-b");
        assert_eq!(deletable(&reports, &serving, &[], 10, 1000), ["amiur-a"]);
    }

    #[test]
    fn reports_of_others_pinned_pending_or_with_other_parameters_stay() {
        let mut narrow = ours("amiur-4", ReportState::Available, 40);
        narrow.params = ReportParams::from_report([("ec2:Instance", None)], []);
        let reports = [
            report("amiur-1", ReportState::Available, 10), // made in the console: no tag
            ours("amiur-2", ReportState::Available, 20),   // pinned in the configuration
            ours("amiur-3", ReportState::Pending, 30),
            narrow,
            ours("amiur-5", ReportState::Other("archiving".into()), 50),
            ours("amiur-6", ReportState::Available, 60),
            ours("amiur-9", ReportState::Available, 900),
        ];
        assert_eq!(deletable(&reports, "amiur-9", &["amiur-2"], 1000, 10_000), ["amiur-6"]);
    }

    #[test]
    fn error_reports_go_once_their_window_is_over() {
        let day = 86_400;
        let now = day * 3 + 500;
        let reports = [
            ours("amiur-1", error("x"), day * 2 + 10), // the previous window
            ours("amiur-2", error("y"), day * 3 + 20), // this window: counted by failed_in_window
            ours("amiur-3", error("z"), day * 4),      // a clock ahead of ours: not over yet
            report("amiur-4", error("w"), day),        // not ours
            ours("amiur-5", ReportState::Available, day * 3 + 100),
        ];
        assert_eq!(deletable(&reports, "amiur-5", &[], now, day), ["amiur-1"]);
        let sorted = classify(&reports, |_| true);
        assert_eq!(failed_in_window(&sorted, at(now), Duration::from_secs(day)), 1, "the kept one still counts");
        assert_eq!(deletable(&reports, "amiur-5", &[], day * 5, day), ["amiur-1", "amiur-2", "amiur-3"]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(35);
        let first = Backoff::after_failure(None, at(100), base, cap);
        assert!(!first.allows(at(109)) && first.allows(at(110)));
        let second = Backoff::after_failure(Some(first), at(110), base, cap);
        assert!(!second.allows(at(129)) && second.allows(at(130)));
        let third = Backoff::after_failure(Some(second), at(130), base, cap);
        assert!(third.allows(at(165)), "capped at 35 s, not 40 s");
        assert_eq!(third.failures(), 3);
        let huge = Duration::from_secs(u64::MAX / 4);
        let forever = Backoff::after_failure(Some(third), at(0), huge, huge);
        assert!(!forever.allows(at(1 << 40)), "no overflow, no panic");
    }

    #[test]
    fn client_token_is_shared_within_a_window_and_changes_across() {
        let params = policy_params();
        let day = Duration::from_secs(86_400);
        let t = |secs| client_token("ami-12345678", &params, at(secs), day, 0);
        assert_eq!(t(86_400 * 10 + 5), t(86_400 * 10 + 80_000), "same window, same token");
        assert_ne!(t(86_400 * 10 + 5), t(86_400 * 11 + 5), "next window, new token");
        assert_ne!(t(5), client_token("ami-12345679", &params, at(5), day, 0), "per image");
        assert_ne!(t(5), client_token("ami-12345678", &params, at(5), day, 1), "per attempt");
        let narrower = ReportParams::from_report([("ec2:Instance", None)], []);
        assert_ne!(t(5), client_token("ami-12345678", &narrower, at(5), day, 0), "per parameters");
        assert_eq!(t(5).len(), 32);
        assert!(t(5).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
