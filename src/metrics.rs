//! The metrics: names, help texts, and how they become the text exposition.
//!
//! Two parts make up `/metrics`. The data of a poll (`render_usage`, up to 100,000 series and
//! more, rendered again only when a report changes, and `render_status`, a few lines per image,
//! rendered every poll) is served as stored bytes.
//! The exporter's own metrics (`SelfMetrics`: API calls, polls, process) are a few dozen series
//! that move between polls, so they are rendered on each scrape. The two parts never share a
//! metric name, so their concatenation is one valid exposition.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::ids::AccountId;
use crate::snapshot::{ImageStatus, Snapshot};

const PREFIX: &str = "ami_usage";

const CACHED: &str = "Read from EC2 AMI usage reports, which EC2 builds asynchronously and the exporter refreshes on a schedule (reports lag by up to a day)";

/// Counters and gauges about the exporter itself; they live as long as the process.
#[derive(Clone)]
pub struct SelfMetrics {
    registry: Registry,
    pub polls: IntCounter,
    pub poll_failures: IntCounter,
    pub poll_duration: prometheus::GaugeVec,
    pub api: ApiMetrics,
    pub reports_created: IntCounterVec,
    pub report_errors: IntCounterVec,
    pub reports_stuck: IntCounterVec,
    pub reports_deleted: IntCounterVec,
    pub reports_vanished: IntCounterVec,
    pub invalid_entries: IntCounterVec,
    pub poll_panics: IntCounter,
    pub reload_successful: prometheus::IntGauge,
    pub reload_success_time: prometheus::Gauge,
}

/// Every AWS call and every failed one, by Region and operation, so the cost of the exporter is
/// visible where it is paid (EC2 throttles per account, Region and action).
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
}

impl ApiMetrics {
    pub fn request(&self, region: &str, operation: &str) {
        self.requests.with_label_values(&[region, operation]).inc();
    }

    pub fn error(&self, region: &str, operation: &str, code: &str) {
        self.errors.with_label_values(&[region, operation, code]).inc();
    }
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::with_opts(Opts::new(format!("{PREFIX}_{name}"), help))?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl SelfMetrics {
    /// Registration can only fail on a programming error (a duplicate or invalid name), which the
    /// unit tests catch; the error is still returned rather than unwrapped.
    pub fn new(version: &str, revision: &str, process_metrics: bool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_build_info"),
                "A metric with a constant '1' value labelled by version and revision of ami-usage-exporter",
            ),
            &["version", "revision"],
        )?;
        build_info.with_label_values(&[version, revision]).set(1);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        if process_metrics {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            registry.register(Box::new(Cached::new(process, PROCESS_METRICS_MAX_AGE)))?;
        }

        let poll_duration = prometheus::GaugeVec::new(
            Opts::new(
                format!("{PREFIX}_poll_duration_seconds"),
                "How long the last poll of the Region took (of its last polled owner account, with several)",
            ),
            &["aws_region"],
        )?;
        registry.register(Box::new(poll_duration.clone()))?;
        let reload_successful = prometheus::IntGauge::with_opts(Opts::new(
            format!("{PREFIX}_config_last_reload_successful"),
            "Whether the last configuration reload succeeded (1) or failed and the previous configuration is still in use (0)",
        ))?;
        reload_successful.set(1);
        registry.register(Box::new(reload_successful.clone()))?;
        let reload_success_time = prometheus::Gauge::with_opts(Opts::new(
            format!("{PREFIX}_config_last_reload_success_timestamp_seconds"),
            "When the configuration was last loaded successfully (Unix time)",
        ))?;
        reload_success_time.set(unix_seconds(SystemTime::now()));
        registry.register(Box::new(reload_success_time.clone()))?;
        Ok(Self {
            polls: counter(
                &registry,
                "polls_total",
                "Polls started, one per target (a Region of an owner account) each poll interval",
            )?,
            poll_failures: counter(
                &registry,
                "poll_failures_total",
                "Polls in which at least one image could not be refreshed",
            )?,
            poll_duration,
            api: ApiMetrics {
                requests: counter_vec(
                    &registry,
                    "api_requests_total",
                    "HTTP requests sent to the EC2 API, retries included",
                    &["aws_region", "operation"],
                )?,
                errors: counter_vec(
                    &registry,
                    "api_errors_total",
                    "EC2 API attempts that failed, by error code",
                    &["aws_region", "operation", "code"],
                )?,
            },
            reports_created: counter_vec(
                &registry,
                "reports_created_total",
                "AMI usage reports this exporter asked EC2 to create",
                &["aws_region"],
            )?,
            report_errors: counter_vec(
                &registry,
                "report_errors_total",
                "AMI usage reports found in the error state, each counted once",
                &["aws_region"],
            )?,
            reports_stuck: counter_vec(
                &registry,
                "reports_stuck_total",
                "AMI usage reports still pending after reports.pending_timeout, each counted once",
                &["aws_region"],
            )?,
            reports_deleted: counter_vec(
                &registry,
                "reports_deleted_total",
                "AMI usage reports this exporter created and then deleted: replaced by a newer report, or failed in an earlier refresh window",
                &["aws_region"],
            )?,
            reports_vanished: counter_vec(
                &registry,
                "reports_vanished_total",
                "Reports EC2 said it created that the next listing did not show (deleted elsewhere); the request is not repeated with the same token",
                &["aws_region"],
            )?,
            poll_panics: counter(&registry, "poll_panics_total", "Polls that panicked; the exporter kept running")?,
            reload_successful,
            reload_success_time,
            invalid_entries: counter_vec(
                &registry,
                "invalid_entries_total",
                "Report entries skipped because a field was missing or impossible",
                &["aws_region"],
            )?,
            registry,
        })
    }

    pub fn render(&self) -> Vec<u8> {
        encode(&self.registry.gather())
    }

    /// Creates, at 0, the labelled counters whose labels the configuration tells: per Region,
    /// and per Region and operation for the calls the configuration makes. `rate()` and
    /// `increase()` then see a series from the first scrape, not only after its first event.
    pub fn preset(&self, config: &Config) {
        let mut operations = vec!["DescribeImageUsageReports", "DescribeImageUsageReportEntries"];
        if config.reports.create {
            operations.push("CreateImageUsageReport");
            if config.reports.delete_superseded {
                operations.push("DeleteImageUsageReport");
            }
        }
        if config.targets.iter().any(|t| t.discover.is_some()) {
            operations.push("DescribeImages");
        }
        for target in &config.targets {
            let region = target.region.as_str();
            for operation in &operations {
                self.api.requests.with_label_values(&[region, operation]);
            }
            for counter in [
                &self.reports_created,
                &self.report_errors,
                &self.reports_stuck,
                &self.reports_deleted,
                &self.reports_vanished,
                &self.invalid_entries,
            ] {
                counter.with_label_values(&[region]);
            }
        }
    }

    /// The families, for tests that check names and help texts.
    pub fn families(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    pub fn describe(&self) -> Vec<String> {
        self.registry.gather().iter().map(|f| f.name().to_owned()).collect()
    }
}

/// How long sampled process metrics are reused. Sampling reads several files under /proc
/// (about 90 us, more than everything else a scrape does), and a value a second old tells a
/// dashboard the same thing.
const PROCESS_METRICS_MAX_AGE: Duration = Duration::from_secs(1);

/// A collector whose samples are reused for `max_age`: scrapes in a burst (several Prometheus
/// replicas, a load test) sample once.
struct Cached<C> {
    inner: C,
    max_age: Duration,
    last: Mutex<Option<(Instant, Vec<MetricFamily>)>>,
}

impl<C: Collector> Cached<C> {
    fn new(inner: C, max_age: Duration) -> Self {
        Self { inner, max_age, last: Mutex::new(None) }
    }
}

impl<C: Collector> Collector for Cached<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A poisoned lock only means a panic elsewhere mid-update; the cache is still usable.
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*last {
            Some((at, families)) if at.elapsed() < self.max_age => families.clone(),
            _ => {
                let families = self.inner.collect();
                *last = Some((Instant::now(), families.clone()));
                families
            }
        }
    }
}

fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for I/O; a family without samples is skipped by us first.
    let families: Vec<&MetricFamily> = families.iter().filter(|f| !f.get_metric().is_empty()).collect();
    for family in families {
        if let Err(e) = TextEncoder::new().encode(std::slice::from_ref(family), &mut out) {
            tracing::error!(family = family.name(), error = %e, "cannot encode metric family");
        }
    }
    out
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One gauge family of the usage exposition, written straight to text.
///
/// The usage part can be a million series. Building `prometheus::proto` messages for it (eight
/// `String`s and a `Vec` per series) and encoding them took about ten times the memory of the
/// text and most of the render time (BENCHMARKS.md), so the text is written directly, in the
/// byte-identical format of the prometheus crate's `TextEncoder`.
struct TextFamily {
    name: String,
    help: String,
    out: Vec<u8>,
    samples: u64,
}

impl TextFamily {
    fn gauge(name: &str, help: &str) -> Self {
        Self { name: format!("{PREFIX}_{name}"), help: help.to_owned(), out: Vec::new(), samples: 0 }
    }

    /// Reserves room for `series` samples of about this size (address space only: untouched
    /// pages of a large allocation cost no resident memory).
    fn reserve(mut self, series: usize) -> Self {
        self.out.reserve(series.saturating_mul(self.name.len() + 120));
        self
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let out = &mut self.out;
        if self.samples == 0 {
            // A family without samples is left out entirely, as the prometheus crate does.
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(self.name.as_bytes());
            out.push(b' ');
            escape_into(out, &self.help, false);
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(self.name.as_bytes());
            out.extend_from_slice(b" gauge\n");
        }
        self.samples += 1;
        out.extend_from_slice(self.name.as_bytes());
        let mut separator = b'{';
        for (name, value) in labels {
            out.push(separator);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(out, value, true);
            out.push(b'"');
            separator = b',';
        }
        if !labels.is_empty() {
            out.push(b'}');
        }
        out.push(b' ');
        write_value(out, value);
        out.push(b'\n');
    }

    /// Appends the family to `out`, taking its buffer as a whole when `out` is still empty.
    fn append_to(self, out: &mut Vec<u8>) {
        if out.is_empty() {
            *out = self.out;
        } else {
            out.extend_from_slice(&self.out);
        }
    }
}

/// Escapes as the text format requires: backslash and newline always, the double quote in
/// label values.
fn escape_into(out: &mut Vec<u8>, text: &str, quote: bool) {
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(escaped);
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
}

/// Writes a sample value as `f64`'s `Display` does (what the prometheus crate writes), with a
/// fast path for the whole numbers that nearly every usage value is.
fn write_value(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every whole number below is exact
    // Writing into a Vec cannot fail.
    let _ = if value.fract() == 0.0 && value.abs() < EXACT {
        write!(out, "{}", value as i64)
    } else {
        write!(out, "{value}")
    };
}

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

    fn is_unexpected(&self, image: &str, account: &str) -> bool {
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

/// The labels that identify an image: Region, owner (when several are configured), image.
fn image_labels(image: &ImageStatus) -> Vec<(&str, &str)> {
    let mut labels: Vec<(&str, &str)> = vec![("aws_region", &image.region)];
    if let Some(owner) = &image.owner {
        labels.push(("owner_account_id", owner));
    }
    labels.push(("image_id", &image.image_id));
    labels
}

/// Renders what changes every poll: whether each image was refreshed, when, and its pending
/// report. A few series per image.
pub fn render_status(snapshot: &Snapshot) -> Vec<u8> {
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
    for image in &snapshot.images {
        let labels = image_labels(image);
        success.push(&labels, if image.poll_success { 1.0 } else { 0.0 });
        if let Some(t) = image.last_success {
            last.push(&labels, unix_seconds(t));
        }
        if let Some(t) = image.pending_since {
            pending.push(&labels, unix_seconds(t));
        }
        failures.push(&labels, image.report_failures as f64);
    }
    let mut out = Vec::new();
    for family in [success, last, pending, failures] {
        family.append_to(&mut out);
    }
    out
}

/// Renders the usage data of a snapshot: everything that depends only on which report serves
/// each image and on the options, so that it can be reused while neither changes. Images without a usable report get their status
/// series but no usage series: a missing report is not zero usage.
pub fn render_usage(snapshot: &Snapshot, options: &RenderOptions) -> Vec<u8> {
    let cap = |family| Capped { family, limit: options.max_series, dropped: 0 };
    let mut resources = cap(TextFamily::gauge(
        "resources",
        &format!("Resources of an account that use the image, by resource type. {CACHED}."),
    )
    .reserve(snapshot.series_count()));
    let mut unexpected = cap(TextFamily::gauge(
        "unexpected_resources",
        &format!(
            "Resources of accounts not expected to use the image (see accounts.expected), by resource type. {CACHED}."
        ),
    ));
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
            // Summed over accounts: one series per resource type.
            let mut total: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for (key, count) in &report.usage {
                let entry = total.entry(&key.resource_type).or_default();
                entry.0 += count;
                if options.is_unexpected(&image.image_id, &key.account_id) {
                    entry.1 += count;
                }
            }
            for (resource_type, (all, other)) in total {
                let series = [labels.as_slice(), &[("resource_type", resource_type)]].concat();
                resources.push(&series, all as f64);
                if options.expected.is_some() && other > 0 {
                    unexpected.push(&series, other as f64);
                }
            }
            continue;
        }
        for (key, count) in &report.usage {
            let series =
                [labels.as_slice(), &[("account_id", &key.account_id), ("resource_type", &key.resource_type)]].concat();
            resources.push(&series, *count as f64);
            if options.is_unexpected(&image.image_id, &key.account_id) {
                unexpected.push(&series, *count as f64);
            }
        }
    }
    let mut out = Vec::new();
    resources.family.append_to(&mut out);
    unexpected.family.append_to(&mut out);
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
        let dropped = resources.dropped + unexpected.dropped;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                max_series = options.max_series,
                "usage series over cardinality.max_series were left out"
            );
        }
        let mut gauge = TextFamily::gauge(
            "series_dropped",
            "Usage series left out in the last poll because of cardinality.max_series",
        );
        gauge.push(&[], dropped as f64);
        gauge.append_to(&mut out);
    }
    out.shrink_to_fit();
    out
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
        "unexpected_resources",
        "account_info",
        "series_dropped",
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
    use std::time::Duration;

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
                report: Some(report),
            },
            ImageStatus {
                region: "us-east-1".into(),
                owner: None,
                image_id: "ami-12345678".into(),
                poll_success: false,
                last_success: None,
                pending_since: Some(UNIX_EPOCH + Duration::from_secs(1_759_300_000)),
                report_failures: 3,
                report: None,
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

    /// The usage part is written without the prometheus crate; its text must stay exactly what
    /// the crate's encoder writes for the same samples (escaping, number formatting).
    #[test]
    fn text_family_writes_what_the_prometheus_encoder_writes() {
        use prometheus::proto::{Gauge, LabelPair, Metric, MetricType};
        let help = "help with a \\ backslash,\na newline and \"quotes\"";
        let samples: &[(&[(&str, &str)], f64)] = &[
            (&[("aws_region", "a\"b\\c\nd"), ("image_id", "ami-1")], 15.0),
            (&[], 0.0),
            (&[("account_id", "é ✓")], 1_759_152_432.123),
            (&[("a", "b")], 1e15),
            (&[("a", "b")], 12_345_678_901_234_567_890.0),
            (&[("a", "b")], 0.5),
        ];
        let mut ours = TextFamily::gauge("t", help);
        let mut family = MetricFamily::default();
        family.set_name(format!("{PREFIX}_t"));
        family.set_help(help.to_owned());
        family.set_field_type(MetricType::GAUGE);
        for (labels, value) in samples {
            ours.push(labels, *value);
            let mut gauge = Gauge::default();
            gauge.set_value(*value);
            let mut metric = Metric::from_gauge(gauge);
            metric.set_label(
                labels
                    .iter()
                    .map(|(n, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name((*n).to_owned());
                        pair.set_value((*v).to_owned());
                        pair
                    })
                    .collect(),
            );
            family.mut_metric().push(metric);
        }
        let mut expected = Vec::new();
        TextEncoder::new().encode(&[family], &mut expected).expect("encodes");
        assert_eq!(String::from_utf8(ours.out).expect("utf-8"), String::from_utf8(expected).expect("utf-8"));
    }

    #[test]
    fn cached_collector_reuses_samples_until_they_are_too_old() {
        let counter = IntCounter::new("c", "help").expect("valid");
        let value = |families: Vec<MetricFamily>| families[0].get_metric()[0].get_counter().get_value();
        let long = Cached::new(counter.clone(), Duration::from_secs(3600));
        assert_eq!(value(long.collect()), 0.0);
        counter.inc();
        assert_eq!(value(long.collect()), 0.0, "reused");
        let none = Cached::new(counter.clone(), Duration::ZERO);
        assert_eq!(value(none.collect()), 1.0, "sampled again");
        assert_eq!(long.desc().len(), 1);
    }

    #[test]
    fn self_metrics_have_distinct_names_from_snapshot_metrics() {
        let m = SelfMetrics::new("1.2.3", "abc", true).expect("registers");
        m.api.request("us-east-1", "DescribeImageUsageReports");
        m.api.error("us-east-1", "DescribeImageUsageReports", "RequestLimitExceeded");
        m.reports_created.with_label_values(&["us-east-1"]).inc();
        let names = m.describe();
        for name in snapshot_family_names() {
            assert!(!names.contains(&name), "{name} would be exposed twice");
        }
        let text = String::from_utf8(m.render()).expect("utf-8");
        assert!(text.contains("ami_usage_build_info{revision=\"abc\",version=\"1.2.3\"} 1"), "{text}");
        assert!(text.contains(
            "ami_usage_api_requests_total{aws_region=\"us-east-1\",operation=\"DescribeImageUsageReports\"} 1"
        ));
        assert!(text.contains("ami_usage_api_errors_total{aws_region=\"us-east-1\",code=\"RequestLimitExceeded\",operation=\"DescribeImageUsageReports\"} 1"));
        assert!(text.contains("ami_usage_polls_total 0"));
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "process metrics");
        let without = SelfMetrics::new("1.2.3", "abc", false).expect("registers");
        assert!(!String::from_utf8_lossy(&without.render()).contains("process_"));
    }
}
