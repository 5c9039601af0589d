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
    /// A state this version does not know: treated like pending until `reports.pending_timeout`,
    /// then like an error, so that a new state EC2 introduces cannot stop refreshes for good.
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
pub struct Report {
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
    pub newest_available: Option<&'a Report>,
    /// EC2 allows one pending report per image; while there is one, creating another fails.
    pub pending: Option<&'a Report>,
    /// Reports that failed: in `error`, or in a state we do not know for longer than
    /// `reports.pending_timeout`.
    pub errors: Vec<&'a Report>,
    /// Reports in a state we do not know, whatever their age (for a log line).
    pub unknown: Vec<&'a Report>,
    /// The newest report of the image in any state: a new request follows it (see `client_token`).
    pub newest: Option<&'a Report>,
}

/// Newest first by creation time, ties broken by ID, so that every replica orders alike.
fn newer(a: &Report, b: &Report) -> bool {
    (a.created, &a.id) > (b.created, &b.id)
}

/// Sorts an image's reports. Only reports that are `usable` may serve: when the exporter
/// creates reports, a console report limited to three accounts must not pass for the whole
/// picture. Pending reports count whatever their parameters: they block creation all the same.
/// A report in a state this version does not know is pending until it is older than
/// `pending_timeout`, and failed after that.
pub fn classify<'a>(
    reports: &'a [Report],
    usable: impl Fn(&Report) -> bool,
    now: SystemTime,
    pending_timeout: Duration,
) -> ImageReports<'a> {
    let mut out = ImageReports::default();
    for report in reports {
        if out.newest.is_none_or(|cur| newer(report, cur)) {
            out.newest = Some(report);
        }
        match &report.state {
            ReportState::Available if usable(report) => {
                if out.newest_available.is_none_or(|cur| newer(report, cur)) {
                    out.newest_available = Some(report);
                }
            }
            ReportState::Available => {}
            ReportState::Pending => out.pending = out.pending.or(Some(report)),
            ReportState::Other(_) => {
                out.unknown.push(report);
                let timed_out = now.duration_since(report.created).is_ok_and(|age| age > pending_timeout);
                if timed_out {
                    out.errors.push(report);
                } else {
                    out.pending = out.pending.or(Some(report));
                }
            }
            ReportState::Error { .. } => out.errors.push(report),
        }
    }
    out
}

impl ImageReports<'_> {
    /// The failed reports since the newest available one (all of them when none is available),
    /// newest first: the image's consecutive failures.
    pub fn consecutive_failures(&self) -> Vec<&Report> {
        let mut failed: Vec<&Report> =
            self.errors.iter().copied().filter(|r| self.newest_available.is_none_or(|ok| newer(r, ok))).collect();
        failed.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        failed
    }

    /// When a new report may be requested after the image's consecutive failures: after the k-th,
    /// `poll_interval × 2^(k-1)` after the newest failed report was created, at most `max_age`.
    /// Derived from what EC2 lists, so every replica, and a restarted exporter, waits alike.
    /// `None` when the latest report did not fail.
    pub fn retry_after(&self, poll_interval: Duration, max_age: Duration) -> Option<SystemTime> {
        let failed = self.consecutive_failures();
        let latest = failed.first()?;
        let doublings = u32::try_from(failed.len() - 1).unwrap_or(u32::MAX).min(20);
        let wait = poll_interval.saturating_mul(1 << doublings).min(max_age.max(poll_interval));
        Some(latest.created.checked_add(wait).unwrap_or(latest.created))
    }
}

/// Whether a new report should be requested now: the newest usable one is missing or too old,
/// none is pending, and the wait after failed reports (`ImageReports::retry_after`) is over.
pub fn needs_new_report(
    reports: &ImageReports<'_>,
    now: SystemTime,
    max_age: Duration,
    poll_interval: Duration,
) -> bool {
    if reports.pending.is_some() {
        return false;
    }
    if reports.retry_after(poll_interval, max_age).is_some_and(|at| now < at) {
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

/// The image's reports that the exporter may delete now that `serving` serves the image (and its
/// entries have been read): the exporter's own reports (tagged `created-by=ami-usage-exporter`),
/// not pinned, answering the same question (`usable`), that are `available` or in `error` and
/// older than `serving` (a newer report replaced them). Failed reports newer than `serving`
/// stay: they are the image's consecutive failures, which space out the next requests
/// (`ImageReports::retry_after`). Pending reports, reports made by people or other tools, and
/// reports with other parameters (another deployment's, or ours from before a configuration
/// change) are never selected; the latter expire after 30 days.
pub fn superseded<'a>(
    reports: &'a [Report],
    serving: &Report,
    usable: impl Fn(&Report) -> bool,
    pinned: impl Fn(&str) -> bool,
) -> Vec<&'a Report> {
    reports
        .iter()
        .filter(|r| r.id != serving.id && r.created_by_exporter && !pinned(&r.id) && usable(r))
        .filter(|r| match &r.state {
            // The same order as `classify`, so the report it picked is never "older" than another.
            ReportState::Available | ReportState::Error { .. } => newer(serving, r),
            ReportState::Pending | ReportState::Other(_) => false,
        })
        .collect()
}

/// The idempotency token of a CreateImageUsageReport call.
///
/// It is the same for the same image, the same report parameters, the same refresh window
/// (wall-clock time divided into `max_age` slices) and the same newest listed report of the
/// image (`after`, in any state), so that two replicas of the exporter that both decide to
/// refresh an image send the same token and EC2 creates one report, not two. The report a
/// request creates becomes the newest, so the next request (after it failed, or in the next
/// window) gets a new token and is not mistaken for a retry; deleting older reports never
/// brings an old token back.
pub fn client_token(
    image_id: &str,
    params: &ReportParams,
    now: SystemTime,
    max_age: Duration,
    after: Option<&str>,
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
    hash.update(format!("\nwindow={window}\nafter={}", after.unwrap_or("")).as_bytes());
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

    fn report(id: &str, state: ReportState, created: u64) -> Report {
        Report {
            id: id.into(),
            image_id: "ami-12345678".into(),
            state,
            created: at(created),
            params: policy_params(),
            created_by_exporter: false,
        }
    }

    /// `classify` at time 0 with an hour of pending timeout: what most rules need.
    fn sort(reports: &[Report], usable: impl Fn(&Report) -> bool) -> ImageReports<'_> {
        classify(reports, usable, at(0), HOUR)
    }

    const HOUR: Duration = Duration::from_secs(3600);

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
        let sorted = sort(&reports, |r| r.params == wanted);
        assert_eq!(sorted.newest_available.map(|r| r.id.as_str()), Some("amiur-3"));
        assert_eq!(sorted.pending.map(|r| r.id.as_str()), Some("amiur-4"));
        assert_eq!(sorted.errors.len(), 1);
    }

    #[test]
    fn equal_creation_times_break_ties_by_id() {
        let a = [report("amiur-a", ReportState::Available, 5), report("amiur-b", ReportState::Available, 5)];
        let b = [report("amiur-b", ReportState::Available, 5), report("amiur-a", ReportState::Available, 5)];
        let pick = |r: &[Report]| sort(r, |_| true).newest_available.map(|r| r.id.clone());
        assert_eq!(pick(&a), pick(&b));
    }

    #[test]
    fn only_pending_or_error_means_nothing_to_read() {
        let reports = [report("amiur-1", ReportState::Pending, 1), report("amiur-2", error("x"), 2)];
        let sorted = sort(&reports, |_| true);
        assert!(sorted.newest_available.is_none());
        assert!(!needs_new_report(&sorted, at(10), Duration::from_secs(5), HOUR), "a pending report blocks creation");
        let only_error = [report("amiur-2", error("x"), 2)];
        let one_second = Duration::from_secs(1);
        assert!(!needs_new_report(&sort(&only_error, |_| true), at(2), Duration::from_secs(100), one_second));
        assert!(needs_new_report(&sort(&only_error, |_| true), at(3), Duration::from_secs(100), one_second));
    }

    #[test]
    fn reports_with_other_parameters_do_not_serve() {
        let mut narrow = report("amiur-9", ReportState::Available, 900);
        narrow.params = ReportParams::from_report([("ec2:Instance", None)], ["111122223333"]);
        let reports = [report("amiur-1", ReportState::Available, 100), narrow];
        let wanted = policy_params();
        assert_eq!(sort(&reports, |r| r.params == wanted).newest_available.map(|r| r.id.as_str()), Some("amiur-1"));
        assert_eq!(sort(&reports, |_| true).newest_available.map(|r| r.id.as_str()), Some("amiur-9"));
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
        let sorted = sort(&reports, |_| true);
        let max_age = Duration::from_secs(100);
        let poll = Duration::from_secs(10);
        assert!(!needs_new_report(&sorted, at(1050), max_age, poll));
        assert!(!needs_new_report(&sorted, at(1100), max_age, poll), "exactly max_age old is still fresh");
        assert!(needs_new_report(&sorted, at(1101), max_age, poll));
        assert!(!needs_new_report(&sorted, at(500), max_age, poll), "a clock behind the report's time is not age");
        assert!(needs_new_report(&ImageReports::default(), at(0), max_age, poll), "no report at all");
    }

    #[test]
    fn failed_reports_space_out_the_next_request() {
        let poll = Duration::from_secs(300);
        let max_age = Duration::from_secs(86_400);
        let mut reports = vec![report("amiur-0", ReportState::Available, 1_000)];
        let wait_after = |reports: &[Report]| {
            let sorted = sort(reports, |_| true);
            sorted.retry_after(poll, max_age).map(|t| t.duration_since(at(0)).map_or(0, |d| d.as_secs()))
        };
        assert_eq!(wait_after(&reports), None, "the latest report is fine");
        // The k-th consecutive failure waits poll × 2^(k-1) after its creation, capped at max_age.
        let mut created = 100_000;
        for (k, wait) in [(1, 300), (2, 600), (3, 1200), (4, 2400), (9, 76_800), (10, 86_400), (30, 86_400)] {
            while reports.len() <= k {
                created += 10;
                reports.push(report(&format!("amiur-{:03}", reports.len()), error("x"), created));
            }
            assert_eq!(wait_after(&reports), Some(created + wait), "after failure {k}");
        }
        let sorted = sort(&reports, |_| true);
        assert_eq!(sorted.consecutive_failures().len(), 30);
        assert!(!needs_new_report(&sorted, at(created + 86_399), max_age, poll), "still waiting");
        assert!(needs_new_report(&sorted, at(created + 86_400), max_age, poll), "the wait is over");
        // A success resets the count: only failures after it count.
        reports.push(report("amiur-ok", ReportState::Available, created + 5));
        assert_eq!(wait_after(&reports), None);
        reports.push(report("amiur-late", error("x"), created + 6));
        assert_eq!(wait_after(&reports), Some(created + 6 + 300));
    }

    #[test]
    fn unknown_states_are_pending_until_the_timeout_then_failed() {
        let reports = [
            report("amiur-1", ReportState::Available, 100),
            report("amiur-2", ReportState::Other("archiving".into()), 1_000),
        ];
        let young = classify(&reports, |_| true, at(1_000 + 3_600), HOUR);
        assert_eq!(young.pending.map(|r| r.id.as_str()), Some("amiur-2"), "pending while young");
        assert!(young.errors.is_empty());
        assert!(!needs_new_report(&young, at(1_000 + 3_600), Duration::from_secs(60), Duration::from_secs(60)));
        let old = classify(&reports, |_| true, at(1_000 + 3_601), HOUR);
        assert!(old.pending.is_none(), "no longer blocks creation");
        assert_eq!(old.errors.len(), 1);
        assert_eq!(old.unknown.len(), 1, "still reported as unknown");
        assert_eq!(old.consecutive_failures().len(), 1, "it counts as a failure");
    }

    fn ours(id: &str, state: ReportState, created: u64) -> Report {
        Report { created_by_exporter: true, ..report(id, state, created) }
    }

    fn deletable(reports: &[Report], serving: &str, pinned: &[&str], now: u64, max_age: u64) -> Vec<String> {
        let wanted = policy_params();
        let serving = reports.iter().find(|r| r.id == serving).expect("serving report listed");
        let _ = (now, max_age);
        superseded(reports, serving, |r| r.params == wanted, |id| pinned.contains(&id))
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
        let serving = sort(&reports, |_| true).newest_available.map(|r| r.id.clone()).expect("one serves");
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
    fn error_reports_go_once_a_newer_report_serves() {
        let reports = [
            ours("amiur-1", error("x"), 10),              // before the serving report
            report("amiur-2", error("w"), 20),            // not ours
            ours("amiur-5", ReportState::Available, 100), // serving
            ours("amiur-6", error("y"), 200),             // after it: a consecutive failure
        ];
        assert_eq!(deletable(&reports, "amiur-5", &[], 300, 1000), ["amiur-1"]);
        let sorted = sort(&reports, |_| true);
        assert_eq!(sorted.consecutive_failures().len(), 1, "the kept one still counts");
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
        let t = |secs| client_token("ami-12345678", &params, at(secs), day, None);
        assert_eq!(t(86_400 * 10 + 5), t(86_400 * 10 + 80_000), "same window, same token");
        assert_ne!(t(86_400 * 10 + 5), t(86_400 * 11 + 5), "next window, new token");
        assert_ne!(t(5), client_token("ami-12345679", &params, at(5), day, None), "per image");
        let after = |id| client_token("ami-12345678", &params, at(5), day, Some(id));
        assert_ne!(t(5), after("amiur-1"), "after a failed report, a new request");
        assert_ne!(after("amiur-1"), after("amiur-2"));
        let narrower = ReportParams::from_report([("ec2:Instance", None)], []);
        assert_ne!(t(5), client_token("ami-12345678", &narrower, at(5), day, None), "per parameters");
        assert_eq!(t(5).len(), 32);
        assert!(t(5).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
