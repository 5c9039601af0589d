//! In-process figures of the render path (`cargo bench --bench render`): what one poll spends
//! turning a snapshot into the bytes every scrape gets, and what one scrape spends on top.
//!
//! `prometheus crate encoder` is the reference the usage part used to go through (proto
//! messages, then `TextEncoder`); it stays here so that the ratio is measured side by side.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ami_usage_exporter::render::exposition::{Format, Prepared};
use ami_usage_exporter::render::page::{PageQuery, StatusPage};
use ami_usage_exporter::render::{RenderOptions, render_snapshot};
use ami_usage_exporter::snapshot::{ImageFacts, ImageStatus, ReportUsage, Snapshot, UsageKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// `images` x `accounts` x 2 resource types usage series, with realistic IDs.
fn snapshot(images: usize, accounts: usize) -> Snapshot {
    let created = UNIX_EPOCH + Duration::from_secs(1_759_152_432);
    let statuses = (0..images)
        .map(|i| {
            let usage = (0..accounts)
                .flat_map(|a| {
                    ["ec2:Instance", "ec2:LaunchTemplate"].map(|rt| {
                        let key = UsageKey {
                            account_id: format!("{:012}", 100_000_000_000 + a * 7919).into(),
                            resource_type: rt.into(),
                        };
                        (key, (i * 31 + a) as u64 % 500 + 1)
                    })
                })
                .collect();
            ImageStatus {
                region: "us-east-1".into(),
                owner: None,
                image_id: format!("ami-{i:017x}").into(),
                poll_success: true,
                last_success: Some(created),
                pending_since: None,
                report_failures: 0,
                report_error: None,
                poll_error: None,
                report: Some(Arc::new(ReportUsage { report_id: format!("amiur-{i:017x}"), created, usage })),
                facts: None,
                references: None,
            }
        })
        .collect();
    Snapshot::new(statuses)
}

/// The usage series as the prometheus crate's proto messages, encoded by its `TextEncoder`.
fn prometheus_crate_encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut family = MetricFamily::default();
    family.set_name("ami_usage_resources".into());
    family.set_help("Resources of an account that use the image, by resource type.".into());
    family.set_field_type(MetricType::GAUGE);
    let pair = |name: &str, value: &str| {
        let mut p = LabelPair::default();
        p.set_name(name.into());
        p.set_value(value.into());
        p
    };
    for image in &snapshot.images {
        let Some(report) = &image.report else { continue };
        for (key, count) in &report.usage {
            let mut gauge = Gauge::default();
            gauge.set_value(*count as f64);
            let mut metric = Metric::from_gauge(gauge);
            metric.set_label(vec![
                pair("aws_region", &image.region),
                pair("image_id", &image.image_id),
                pair("account_id", &key.account_id),
                pair("resource_type", &key.resource_type),
            ]);
            family.mut_metric().push(metric);
        }
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&[family], &mut out).expect("encodes");
    out
}

fn render(c: &mut Criterion) {
    let snap = snapshot(500, 100);
    let options = RenderOptions::default();
    let text = render_snapshot(&snap, &options);
    let mut group = c.benchmark_group("render 100k series");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(snap.series_count() as u64));
    group.bench_function("render_snapshot (text writer)", |b| b.iter(|| render_snapshot(black_box(&snap), &options)));
    group.bench_function("prometheus crate encoder", |b| b.iter(|| prometheus_crate_encode(black_box(&snap))));
    group.bench_function("Prepared::new (deflate + crc32)", |b| b.iter(|| Prepared::new(black_box(text.clone()))));
    group.finish();

    let prepared = Prepared::new(text);
    let own = vec![b'x'; 4096];
    let mut group = c.benchmark_group("per scrape, 100k series");
    group.bench_function("body, plain", |b| b.iter(|| prepared.body(black_box(&own), Format::Text, false)));
    group.bench_function("body, gzip", |b| b.iter(|| prepared.body(black_box(&own), Format::Text, true)));
    group.finish();
}

/// The snapshot of 10,000 images (10 accounts, 2 resource types each) with their facts.
fn estate() -> Snapshot {
    let mut estate = snapshot(10_000, 10);
    for (i, image) in estate.images.iter_mut().enumerate() {
        image.facts = Some(Arc::new(ImageFacts {
            name: format!("golden-base-{i}"),
            state: "available".into(),
            public: false,
            created: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            last_launched: Some(UNIX_EPOCH + Duration::from_secs(1_759_000_000)),
            deprecation: None,
        }));
    }
    estate
}

/// The status page at 10,000 images: what writing it costs each poll, beside the exposition
/// of the same snapshot, and what a request costs (it only picks prepared fragments).
fn status_page(c: &mut Criterion) {
    let estate = estate();
    let options = RenderOptions::default();
    let now = UNIX_EPOCH + Duration::from_secs(1_760_000_000);
    let mut group = c.benchmark_group("status page, 10k images");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("StatusPage::build", |b| b.iter(|| StatusPage::build(black_box(&estate), &options, now)));
    group.bench_function("render_snapshot (same snapshot)", |b| {
        b.iter(|| render_snapshot(black_box(&estate), &options))
    });
    let page = StatusPage::build(&estate, &options, now);
    let size = |query: &str| page.respond(&PageQuery::parse(Some(query)), &[], "/metrics").concat().len();
    let exposition = render_snapshot(&estate, &options).len();
    println!(
        "status page bytes: first page {}, one image {}; /metrics {exposition}",
        size(""),
        size("image=ami-00000000000001388")
    );
    for (what, query) in [
        ("first page", ""),
        ("page 50", "page=50"),
        ("one image", "image=ami-00000000000001388"),
        ("search", "image=base-99"),
    ] {
        let query = PageQuery::parse(Some(query));
        group.bench_function(format!("respond, {what}"), |b| {
            b.iter(|| page.respond(black_box(&query), &[], "/metrics"))
        });
    }
    group.finish();
}

criterion_group!(benches, render, status_page);
criterion_main!(benches);
