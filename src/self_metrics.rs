//! The exporter's own metrics: API calls, polls, reports, reloads and the process. They live
//! as long as the process and are a few dozen series that move between polls, so they are
//! rendered on each scrape (the data of a poll is rendered once, in `render`). The two never
//! share a metric name, so their concatenation is one valid exposition.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::METRIC_PREFIX as PREFIX;
use crate::config::Config;

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
    shard_ordinal: prometheus::IntGauge,
    total_shards: prometheus::IntGauge,
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

/// Makes each metric and registers it; every name gets the exporter's prefix.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<M: Collector + Clone + 'static>(&self, metric: M) -> Result<M, prometheus::Error> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(format!("{PREFIX}_{name}"), help)
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.register(IntCounter::with_opts(Self::opts(name, help))?)
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
        self.register(IntCounterVec::new(Self::opts(name, help), labels)?)
    }

    /// A counter per Region.
    fn region_counter(&self, name: &str, help: &str) -> Result<IntCounterVec, prometheus::Error> {
        self.counter_vec(name, help, &["aws_region"])
    }
}

impl SelfMetrics {
    /// Registration can only fail on a programming error (a duplicate or invalid name), which the
    /// unit tests catch; the error is still returned rather than unwrapped.
    pub fn new(version: &str, revision: &str, process_metrics: bool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let build_info = r.register(prometheus::IntGaugeVec::new(
            Registrar::opts(
                "build_info",
                "A metric with a constant '1' value labelled by version and revision of ami-usage-exporter",
            ),
            &["version", "revision"],
        )?)?;
        build_info.with_label_values(&[version, revision]).set(1);
        #[cfg(target_os = "linux")]
        if process_metrics {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            registry.register(Box::new(Cached::new(process, PROCESS_METRICS_MAX_AGE)))?;
        }
        Ok(Self {
            polls: r.counter(
                "polls_total",
                "Polls started, one per target (a Region of an owner account) each poll interval",
            )?,
            poll_failures: r.counter("poll_failures_total", "Polls in which at least one image could not be refreshed")?,
            poll_duration: r.register(prometheus::GaugeVec::new(
                Registrar::opts(
                    "poll_duration_seconds",
                    "How long the last poll of the Region took (of its last polled owner account, with several)",
                ),
                &["aws_region"],
            )?)?,
            api: ApiMetrics {
                requests: r.counter_vec(
                    "api_requests_total",
                    "HTTP requests sent to the EC2 API, retries included",
                    &["aws_region", "operation"],
                )?,
                errors: r.counter_vec(
                    "api_errors_total",
                    "EC2 API attempts that failed, by error code",
                    &["aws_region", "operation", "code"],
                )?,
            },
            reports_created: r
                .region_counter("reports_created_total", "AMI usage reports this exporter asked EC2 to create")?,
            report_errors: r.region_counter(
                "report_errors_total",
                "AMI usage reports found in the error state, each counted once",
            )?,
            reports_stuck: r.region_counter(
                "reports_stuck_total",
                "AMI usage reports still pending after reports.pending_timeout, each counted once",
            )?,
            reports_deleted: r.region_counter(
                "reports_deleted_total",
                "AMI usage reports this exporter created and then deleted: available or failed, older than the newer report that replaced them",
            )?,
            reports_vanished: r.region_counter(
                "reports_vanished_total",
                "Reports EC2 said it created that the next listing did not show (deleted elsewhere); the request is not repeated with the same token",
            )?,
            poll_panics: r.counter("poll_panics_total", "Polls that panicked; the exporter kept running")?,
            shard_ordinal: r.register(prometheus::IntGauge::with_opts(Registrar::opts(
                "shard_ordinal",
                "This exporter's shard (--shard); 0 when not sharded",
            ))?)?,
            total_shards: Self::total_shards(&r)?,
            reload_successful: Self::reload_successful(&r)?,
            reload_success_time: Self::reload_success_time(&r)?,
            invalid_entries: r.region_counter(
                "invalid_entries_total",
                "Report entries skipped because a field was missing or impossible",
            )?,
            registry,
        })
    }

    /// 1 until the flags say otherwise (`set_shard`).
    fn total_shards(r: &Registrar<'_>) -> Result<prometheus::IntGauge, prometheus::Error> {
        let gauge = r.register(prometheus::IntGauge::with_opts(Registrar::opts(
            "total_shards",
            "How many shards share the images (--total-shards); 1 when not sharded",
        ))?)?;
        gauge.set(1);
        Ok(gauge)
    }

    pub fn set_shard(&self, shard: crate::shard::Shard) {
        self.shard_ordinal.set(i64::from(shard.ordinal()));
        self.total_shards.set(i64::from(shard.total()));
    }

    /// 1 from the start: the configuration was just loaded.
    fn reload_successful(r: &Registrar<'_>) -> Result<prometheus::IntGauge, prometheus::Error> {
        let gauge = r.register(prometheus::IntGauge::with_opts(Registrar::opts(
            "config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or failed and the previous configuration is still in use (0)",
        ))?)?;
        gauge.set(1);
        Ok(gauge)
    }

    fn reload_success_time(r: &Registrar<'_>) -> Result<prometheus::Gauge, prometheus::Error> {
        let gauge = r.register(prometheus::Gauge::with_opts(Registrar::opts(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time)",
        ))?)?;
        gauge.set(unix_seconds(SystemTime::now()));
        Ok(gauge)
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
        if config.images.facts || config.targets.iter().any(|t| t.discover.is_some()) {
            operations.push("DescribeImages");
        }
        if config.references.enabled {
            operations.push("DescribeImageReferences");
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

    /// The names of the families, for the test that they never clash with the snapshot's.
    #[cfg(test)]
    fn describe(&self) -> Vec<String> {
        self.registry.gather().iter().map(|f| f.name().to_owned()).collect()
    }
}

/// How long sampled process metrics are reused. Sampling reads several files under /proc, more
/// work than everything else a scrape does (BENCHMARKS.md, "What changed"), and a value a
/// second old tells a dashboard the same thing.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        for name in crate::render::snapshot_family_names() {
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
