//! Which series a snapshot becomes: the usage part (everything that depends only on which
//! report serves each image, and on the options) and the status part (what every poll changes).

use std::collections::{BTreeMap, BTreeSet};

use super::text::{TextFamily, unix_seconds};
use crate::METRIC_PREFIX as PREFIX;
use crate::config::AccountId;
use crate::config::Config;
use crate::snapshot::{ImageFacts, ImageStatus, References, ReportUsage, Snapshot, TargetStatus};

const CACHED: &str = "Read from EC2 AMI usage reports, which EC2 builds asynchronously and the exporter refreshes on a schedule (reports lag by up to a day)";

/// Accounts allowed on every image, and per image.
type Expected = (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>);

/// How usage becomes series: which accounts are expected, account names, and cardinality
/// limits. Built from the configuration; changes on reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// `None`: unexpected use is not tracked.
    expected: Option<Expected>,
    names: Vec<(String, String)>,
    sum_all: bool,
    sum_for: BTreeSet<String>,
    /// 0: no limit.
    max_series: u64,
}

impl RenderOptions {
    pub fn from_config(config: &Config) -> Self {
        let accounts = &config.accounts;
        let ids = |list: &[AccountId]| list.iter().map(|a| a.as_str().to_owned()).collect::<BTreeSet<_>>();
        Self {
            expected: accounts.tracks_unexpected().then(|| {
                let per_image = accounts
                    .expected_per_image
                    .iter()
                    .map(|(image, list)| (image.as_str().to_owned(), ids(list)))
                    .collect();
                (ids(&accounts.expected), per_image)
            }),
            names: accounts.names.iter().map(|(id, name)| (id.as_str().to_owned(), name.clone())).collect(),
            sum_all: config.cardinality.sum_accounts,
            sum_for: config.cardinality.sum_accounts_for.iter().map(|i| i.as_str().to_owned()).collect(),
            max_series: config.cardinality.max_series,
        }
    }

    /// Whether unexpected use is tracked at all.
    pub(super) fn tracks_unexpected(&self) -> bool {
        self.expected.is_some()
    }

    /// The configured name of each named account.
    pub(super) fn account_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(id, name)| (id.as_str(), name.as_str()))
    }

    pub(super) fn is_unexpected(&self, image: &str, account: &str) -> bool {
        self.expected.as_ref().is_some_and(|(all, per_image)| {
            !all.contains(account) && !per_image.get(image).is_some_and(|set| set.contains(account))
        })
    }
}

/// A family with a series budget: samples past `limit` are counted, not kept.
struct Capped {
    family: TextFamily,
    limit: u64,
    dropped: u64,
}

impl Capped {
    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        if self.limit > 0 && self.family.samples >= self.limit {
            self.dropped += 1;
        } else {
            self.family.push(labels, value);
        }
    }
}

/// Renders a whole snapshot: its usage part, then its status part (see `render_usage` and
/// `render_status`).
pub fn render_snapshot(snapshot: &Snapshot, options: &RenderOptions) -> Vec<u8> {
    let mut out = render_usage(snapshot, options);
    out.extend_from_slice(&render_status(snapshot));
    out
}

/// The labels that identify a target: Region, and owner when several are configured.
fn target_labels<'a>(region: &'a str, owner: Option<&'a str>) -> Vec<(&'static str, &'a str)> {
    let mut labels = vec![("aws_region", region)];
    labels.extend(owner.map(|owner| ("owner_account_id", owner)));
    labels
}

/// The labels that identify an image: its target's, then the image.
fn image_labels(image: &ImageStatus) -> Vec<(&str, &str)> {
    let mut labels = target_labels(&image.region, image.owner.as_deref());
    labels.push(("image_id", &image.image_id));
    labels
}

/// Renders what changes every poll: whether each image was refreshed, when, and its pending
/// report. A few series per image.
pub(crate) fn render_status(snapshot: &Snapshot) -> Vec<u8> {
    let mut success = TextFamily::gauge(
        "image_poll_success",
        "Whether the last poll refreshed the image (1) or kept its last good data (0)",
    );
    let mut last = TextFamily::gauge(
        "last_success_timestamp_seconds",
        "When the image was last refreshed successfully (Unix time)",
    );
    let mut pending = TextFamily::gauge(
        "pending_report_creation_timestamp_seconds",
        "When the image's pending report was requested (Unix time); absent when none is pending",
    );
    let mut failures = TextFamily::gauge(
        "image_report_failures",
        "Consecutive failed reports of the image since its newest available one (0 when the latest is fine); the next request waits poll_interval x 2^(failures-1), at most reports.max_age",
    );
    let mut facts = FactFamilies::new();
    let mut references = ReferenceFamilies::new();
    for image in &snapshot.images {
        let labels = image_labels(image);
        if let Some(f) = &image.facts {
            facts.push(&labels, f);
        }
        if let Some(r) = &image.references {
            references.push(&labels, r);
        }
        success.push(&labels, if image.poll_success { 1.0 } else { 0.0 });
        if let Some(t) = image.last_success {
            last.push(&labels, unix_seconds(t));
        }
        if let Some(t) = image.pending_since {
            pending.push(&labels, unix_seconds(t));
        }
        failures.push(&labels, image.report_failures as f64);
    }
    for target in &snapshot.targets {
        references.push_target(target);
    }
    let mut out = Vec::new();
    for family in [success, last, pending, failures] {
        family.append_to(&mut out);
    }
    facts.append_to(&mut out);
    references.append_to(&mut out);
    out
}

/// The families of the in-account references (DescribeImageReferences).
struct ReferenceFamilies {
    counts: TextFamily,
    measured: TextFamily,
}

impl ReferenceFamilies {
    fn new() -> Self {
        Self {
            counts: TextFamily::gauge(
                "references",
                "Resources of the exporter's own account and Region that reference the image, by resource type (DescribeImageReferences); 0 for configured types with none",
            ),
            measured: TextFamily::gauge(
                "references_last_success_timestamp_seconds",
                "When the references were last counted completely (Unix time)",
            ),
        }
    }

    fn push(&mut self, labels: &[(&str, &str)], references: &References) {
        for (resource_type, count) in &references.counts {
            self.counts.push(&[labels, &[("resource_type", resource_type)]].concat(), *count as f64);
        }
    }

    /// A target's last complete count: one series per target, labelled like its images but
    /// for the image.
    fn push_target(&mut self, target: &TargetStatus) {
        let Some(measured) = target.references_measured else { return };
        self.measured.push(&target_labels(&target.region, target.owner.as_deref()), unix_seconds(measured));
    }

    fn append_to(self, out: &mut Vec<u8>) {
        self.counts.append_to(out);
        self.measured.append_to(out);
    }
}

/// The families of the image facts (DescribeImages).
struct FactFamilies {
    info: TextFamily,
    created: TextFamily,
    launched: TextFamily,
    deprecation: TextFamily,
}

impl FactFamilies {
    fn new() -> Self {
        Self {
            info: TextFamily::gauge(
                "image_info",
                "The image as DescribeImages describes it (state deregistered: no longer returned); value is always 1",
            ),
            created: TextFamily::gauge("image_creation_timestamp_seconds", "When the image was created (Unix time)"),
            launched: TextFamily::gauge(
                "image_last_launched_timestamp_seconds",
                "When the image last launched an instance, in any account (Unix time; EC2 reports it up to 24 h late); absent when it never launched",
            ),
            deprecation: TextFamily::gauge(
                "image_deprecation_timestamp_seconds",
                "When the image is (or was) deprecated (Unix time); absent when no deprecation is set",
            ),
        }
    }

    fn push(&mut self, labels: &[(&str, &str)], facts: &ImageFacts) {
        let public = if facts.public { "true" } else { "false" };
        let info = [labels, &[("image_name", &facts.name), ("image_state", &facts.state), ("public", public)]].concat();
        self.info.push(&info, 1.0);
        for (family, time) in [
            (&mut self.created, facts.created),
            (&mut self.launched, facts.last_launched),
            (&mut self.deprecation, facts.deprecation),
        ] {
            if let Some(t) = time {
                family.push(labels, unix_seconds(t));
            }
        }
    }

    fn append_to(self, out: &mut Vec<u8>) {
        for family in [self.info, self.created, self.launched, self.deprecation] {
            family.append_to(out);
        }
    }
}

/// Renders the usage data of a snapshot: everything that depends only on which report serves
/// each image and on the options, so that it can be reused while neither changes. Images without a usable report get their status
/// series but no usage series: a missing report is not zero usage.
pub(crate) fn render_usage(snapshot: &Snapshot, options: &RenderOptions) -> Vec<u8> {
    let mut usage = UsageFamilies::new(options, snapshot.series_count());
    let mut created = TextFamily::gauge(
        "report_creation_timestamp_seconds",
        "When EC2 created the report the usage figures come from (Unix time)",
    );
    let mut info =
        TextFamily::gauge("report_info", "The report that serves an image's usage figures; value is always 1");
    for image in &snapshot.images {
        let Some(report) = &image.report else { continue };
        let labels = image_labels(image);
        created.push(&labels, unix_seconds(report.created));
        info.push(&[labels.as_slice(), &[("report_id", &report.report_id)]].concat(), 1.0);
        if options.sum_all || options.sum_for.contains(&*image.image_id) {
            usage.push_summed(image, report, &labels);
        } else {
            usage.push_per_account(image, report, &labels);
        }
    }
    let mut out = Vec::new();
    let dropped = usage.append_to(&mut out);
    for family in [created, info] {
        family.append_to(&mut out);
    }
    if !options.names.is_empty() {
        let mut names =
            TextFamily::gauge("account_info", "Names of the accounts, from the configuration; value is always 1");
        for (id, name) in &options.names {
            names.push(&[("account_id", id), ("account_name", name)], 1.0);
        }
        names.append_to(&mut out);
    }
    if options.max_series > 0 {
        push_dropped(&mut out, dropped, options.max_series);
    }
    out.shrink_to_fit();
    out
}

/// The two usage families, all usage and unexpected usage, within the series budget.
struct UsageFamilies<'a> {
    options: &'a RenderOptions,
    resources: Capped,
    unexpected: Capped,
}

impl<'a> UsageFamilies<'a> {
    fn new(options: &'a RenderOptions, series: usize) -> Self {
        let cap = |family| Capped { family, limit: options.max_series, dropped: 0 };
        let resources = TextFamily::gauge(
            "resources",
            &format!("Resources of an account that use the image, by resource type. {CACHED}."),
        );
        let unexpected = TextFamily::gauge(
            "unexpected_resources",
            &format!(
                "Resources of accounts not expected to use the image (see accounts.expected), by resource type. {CACHED}."
            ),
        );
        Self { options, resources: cap(resources.reserve(series)), unexpected: cap(unexpected) }
    }

    /// One series per account and resource type.
    fn push_per_account(&mut self, image: &ImageStatus, report: &ReportUsage, labels: &[(&str, &str)]) {
        for (key, count) in &report.usage {
            let series = [labels, &[("account_id", &key.account_id), ("resource_type", &key.resource_type)]].concat();
            self.resources.push(&series, *count as f64);
            if self.options.is_unexpected(&image.image_id, &key.account_id) {
                self.unexpected.push(&series, *count as f64);
            }
        }
    }

    /// Summed over accounts: one series per resource type.
    fn push_summed(&mut self, image: &ImageStatus, report: &ReportUsage, labels: &[(&str, &str)]) {
        let mut total: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (key, count) in &report.usage {
            let entry = total.entry(&key.resource_type).or_default();
            entry.0 += count;
            if self.options.is_unexpected(&image.image_id, &key.account_id) {
                entry.1 += count;
            }
        }
        for (resource_type, (all, other)) in total {
            let series = [labels, &[("resource_type", resource_type)]].concat();
            self.resources.push(&series, all as f64);
            if self.options.expected.is_some() && other > 0 {
                self.unexpected.push(&series, other as f64);
            }
        }
    }

    /// Appends both families; returns how many series the budget left out.
    fn append_to(self, out: &mut Vec<u8>) -> u64 {
        self.resources.family.append_to(out);
        self.unexpected.family.append_to(out);
        self.resources.dropped + self.unexpected.dropped
    }
}

fn push_dropped(out: &mut Vec<u8>, dropped: u64, max_series: u64) {
    if dropped > 0 {
        tracing::warn!(dropped, max_series, "usage series over cardinality.max_series were left out");
    }
    let mut gauge =
        TextFamily::gauge("series_dropped", "Usage series left out in the last poll because of cardinality.max_series");
    gauge.push(&[], dropped as f64);
    gauge.append_to(out);
}

/// The names of every family the exporter can serve; used by tests and the docs check.
pub fn snapshot_family_names() -> Vec<String> {
    [
        "resources",
        "report_creation_timestamp_seconds",
        "report_info",
        "image_poll_success",
        "last_success_timestamp_seconds",
        "pending_report_creation_timestamp_seconds",
        "image_report_failures",
        "unexpected_resources",
        "account_info",
        "series_dropped",
        "image_info",
        "image_creation_timestamp_seconds",
        "image_last_launched_timestamp_seconds",
        "image_deprecation_timestamp_seconds",
        "references",
        "references_last_success_timestamp_seconds",
    ]
    .iter()
    .map(|n| format!("{PREFIX}_{n}"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Entry, ImageStatus, ReportUsage};
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn snapshot() -> Snapshot {
        let entries = [
            Entry {
                report_id: "amiur-1".into(),
                account_id: "111122223333".into(),
                resource_type: "ec2:Instance".into(),
                usage_count: 15,
            },
            Entry {
                report_id: "amiur-1".into(),
                account_id: "444455556666".into(),
                resource_type: "ec2:LaunchTemplate".into(),
                usage_count: 4,
            },
        ];
        let created = UNIX_EPOCH + Duration::from_secs(1_759_152_432);
        let report = Arc::new(ReportUsage::from_entries("amiur-1", created, &entries));
        Snapshot::new(vec![
            ImageStatus {
                region: "us-east-1".into(),
                owner: None,
                image_id: "ami-0123456789abcdef0".into(),
                poll_success: true,
                last_success: Some(UNIX_EPOCH + Duration::from_secs(1_759_200_000)),
                pending_since: None,
                report_failures: 0,
                report_error: None,
                poll_error: None,
                report: Some(report),
                facts: None,
                references: None,
            },
            ImageStatus {
                region: "us-east-1".into(),
                owner: None,
                image_id: "ami-12345678".into(),
                poll_success: false,
                last_success: None,
                pending_since: Some(UNIX_EPOCH + Duration::from_secs(1_759_300_000)),
                report_failures: 3,
                report_error: None,
                poll_error: None,
                report: None,
                facts: None,
                references: None,
            },
        ])
    }

    /// The whole exposition, byte for byte: names, help texts and label order are a contract
    /// that dashboards are built on, so any change must show up here.
    #[test]
    fn snapshot_exposition_is_stable() {
        let text = String::from_utf8(render_snapshot(&snapshot(), &RenderOptions::default())).expect("utf-8");
        let expected = format!(
            "# HELP ami_usage_resources Resources of an account that use the image, by resource type. {CACHED}.
# TYPE ami_usage_resources gauge
ami_usage_resources{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",account_id=\"111122223333\",resource_type=\"ec2:Instance\"}} 15
ami_usage_resources{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",account_id=\"444455556666\",resource_type=\"ec2:LaunchTemplate\"}} 4
# HELP ami_usage_report_creation_timestamp_seconds When EC2 created the report the usage figures come from (Unix time)
# TYPE ami_usage_report_creation_timestamp_seconds gauge
ami_usage_report_creation_timestamp_seconds{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\"}} 1759152432
# HELP ami_usage_report_info The report that serves an image's usage figures; value is always 1
# TYPE ami_usage_report_info gauge
ami_usage_report_info{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",report_id=\"amiur-1\"}} 1
# HELP ami_usage_image_poll_success Whether the last poll refreshed the image (1) or kept its last good data (0)
# TYPE ami_usage_image_poll_success gauge
ami_usage_image_poll_success{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\"}} 1
ami_usage_image_poll_success{{aws_region=\"us-east-1\",image_id=\"ami-12345678\"}} 0
# HELP ami_usage_last_success_timestamp_seconds When the image was last refreshed successfully (Unix time)
# TYPE ami_usage_last_success_timestamp_seconds gauge
ami_usage_last_success_timestamp_seconds{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\"}} 1759200000
# HELP ami_usage_pending_report_creation_timestamp_seconds When the image's pending report was requested (Unix time); absent when none is pending
# TYPE ami_usage_pending_report_creation_timestamp_seconds gauge
ami_usage_pending_report_creation_timestamp_seconds{{aws_region=\"us-east-1\",image_id=\"ami-12345678\"}} 1759300000
# HELP ami_usage_image_report_failures Consecutive failed reports of the image since its newest available one (0 when the latest is fine); the next request waits poll_interval x 2^(failures-1), at most reports.max_age
# TYPE ami_usage_image_report_failures gauge
ami_usage_image_report_failures{{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\"}} 0
ami_usage_image_report_failures{{aws_region=\"us-east-1\",image_id=\"ami-12345678\"}} 3
"
        );
        assert_eq!(text, expected);
    }

    fn options(yaml: &str) -> RenderOptions {
        let text = format!("{yaml}\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n");
        RenderOptions::from_config(&Config::from_yaml(&text).expect("valid"))
    }

    fn lines_of(text: &[u8], prefix: &str) -> Vec<String> {
        String::from_utf8_lossy(text).lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    }

    #[test]
    fn unexpected_accounts_are_reported_separately() {
        let o = options("accounts:\n  expected: ['111122223333']\n  names: {'444455556666': data-team}");
        let text = render_snapshot(&snapshot(), &o);
        assert_eq!(
            lines_of(&text, "ami_usage_unexpected_resources{"),
            [
                "ami_usage_unexpected_resources{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",account_id=\"444455556666\",resource_type=\"ec2:LaunchTemplate\"} 4"
            ]
        );
        assert_eq!(lines_of(&text, "ami_usage_resources{").len(), 2, "all usage is still in ami_usage_resources");
        assert_eq!(
            lines_of(&text, "ami_usage_account_info{"),
            ["ami_usage_account_info{account_id=\"444455556666\",account_name=\"data-team\"} 1"]
        );
        let per_image = options("accounts:\n  expected_per_image:\n    ami-0123456789abcdef0: ['444455556666']");
        let text = render_snapshot(&snapshot(), &per_image);
        assert_eq!(lines_of(&text, "ami_usage_unexpected_resources{").len(), 1, "111122223333 is not expected there");
        assert!(
            lines_of(&render_snapshot(&snapshot(), &RenderOptions::default()), "# HELP ami_usage_unexpected")
                .is_empty()
        );
    }

    #[test]
    fn summing_over_accounts_and_the_series_cap() {
        let text = render_snapshot(&snapshot(), &options("cardinality:\n  sum_accounts: true"));
        assert_eq!(
            lines_of(&text, "ami_usage_resources{"),
            [
                "ami_usage_resources{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",resource_type=\"ec2:Instance\"} 15",
                "ami_usage_resources{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\",resource_type=\"ec2:LaunchTemplate\"} 4",
            ]
        );
        let capped = render_snapshot(&snapshot(), &options("cardinality:\n  max_series: 1"));
        assert_eq!(lines_of(&capped, "ami_usage_resources{").len(), 1);
        assert_eq!(lines_of(&capped, "ami_usage_series_dropped "), ["ami_usage_series_dropped 1"]);
    }

    #[test]
    fn owner_label_follows_the_region() {
        let mut s = snapshot();
        s.images[0].owner = Some("777788889999".into());
        let text = render_snapshot(&s, &RenderOptions::default());
        assert!(
            String::from_utf8_lossy(&text).contains("ami_usage_image_poll_success{aws_region=\"us-east-1\",owner_account_id=\"777788889999\",image_id=\"ami-0123456789abcdef0\"} 1")
        );
    }

    #[test]
    fn image_facts_are_status_series_and_absent_times_have_none() {
        let mut s = snapshot();
        s.images[0].facts = Some(Arc::new(ImageFacts {
            name: "golden \"al2023\"".into(),
            state: "disabled".into(),
            public: true,
            created: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            last_launched: None,
            deprecation: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }));
        let text = render_snapshot(&s, &RenderOptions::default());
        assert_eq!(
            lines_of(&text, "ami_usage_image_info{"),
            [
                r#"ami_usage_image_info{aws_region="us-east-1",image_id="ami-0123456789abcdef0",image_name="golden \"al2023\"",image_state="disabled",public="true"} 1"#
            ]
        );
        assert_eq!(
            lines_of(&text, "ami_usage_image_deprecation_timestamp_seconds{"),
            [
                "ami_usage_image_deprecation_timestamp_seconds{aws_region=\"us-east-1\",image_id=\"ami-0123456789abcdef0\"} 1800000000"
            ]
        );
        assert_eq!(lines_of(&text, "ami_usage_image_creation_timestamp_seconds{").len(), 1);
        assert!(lines_of(&text, "ami_usage_image_last_launched").is_empty(), "never launched: no series, no family");
        let usage = render_usage(&s, &RenderOptions::default());
        assert!(lines_of(&usage, "ami_usage_image_info").is_empty(), "facts are not in the cached usage part");
    }

    #[test]
    fn empty_snapshot_renders_nothing() {
        assert!(render_snapshot(&Snapshot::default(), &RenderOptions::default()).is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = snapshot();
        s.images[0].region = "a\"b\\c\nd".into();
        let text = String::from_utf8(render_snapshot(&s, &RenderOptions::default())).expect("utf-8");
        assert!(text.contains(r#"aws_region="a\"b\\c\nd""#), "{text}");
    }
}
