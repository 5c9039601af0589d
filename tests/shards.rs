//! Sharding (`--shard`, `--total-shards`): three shards against one simulator add up, series for
//! series, to one unsharded exporter, no series appears in two shards, every shard has some, and
//! the three together call AWS at most one call per operation and shard more than one exporter.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Exporter, Exposition, config_for, simulator};

/// The per-image families: usage, status, facts and references.
const PER_IMAGE: &[&str] = &[
    "ami_usage_resources",
    "ami_usage_report_info",
    "ami_usage_report_creation_timestamp_seconds",
    "ami_usage_image_poll_success",
    "ami_usage_image_report_failures",
    "ami_usage_image_info",
    "ami_usage_image_creation_timestamp_seconds",
    "ami_usage_image_last_launched_timestamp_seconds",
    "ami_usage_image_deprecation_timestamp_seconds",
    "ami_usage_references",
];

type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn per_image(e: &Exposition) -> Series {
    e.series.iter().filter(|((name, _), _)| PER_IMAGE.contains(&name.as_str())).map(|(k, v)| (k.clone(), *v)).collect()
}

/// Calls per operation, as the exporter counted them.
fn calls(e: &Exposition) -> BTreeMap<String, f64> {
    let mut by_operation = BTreeMap::new();
    for (labels, value) in e.metric("ami_usage_api_requests_total") {
        *by_operation.entry(labels["operation"].clone()).or_insert(0.0) += value;
    }
    by_operation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_add_up_to_one_exporter_series_for_series() {
    let running = simulator(40, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let config = config_for(
        &sim.image_ids(),
        "poll_interval: 1h\nreports:\n  create: false\nreferences:\n  enabled: true\naws:\n  page_size: 50",
    );
    let whole = Exporter::start(&config, &running.endpoint_url());
    let shards: Vec<Exporter> = (0..3)
        .map(|i| {
            let shard = format!("--shard=ami-usage-exporter-{i}");
            Exporter::start_with(&config, &running.endpoint_url(), &[shard.as_str(), "--total-shards=3"])
        })
        .collect();
    whole.wait_ready().await;
    let expected = per_image(&whole.scrape().await);
    assert!(
        expected.keys().any(|(n, _)| n == "ami_usage_references")
            && expected.keys().any(|(n, _)| n == "ami_usage_image_info")
    );

    let mut union = Series::new();
    let mut shard_calls = BTreeMap::<String, f64>::new();
    for (i, shard) in shards.iter().enumerate() {
        shard.wait_ready().await;
        let e = shard.scrape().await;
        assert_eq!(e.value("ami_usage_shard_ordinal", &[]), Some(i as f64));
        assert_eq!(e.value("ami_usage_total_shards", &[]), Some(3.0));
        let mine = per_image(&e);
        let images: BTreeSet<&String> = mine.keys().filter_map(|(_, l)| l.get("image_id")).collect();
        assert!(!images.is_empty(), "shard {i} owns some images");
        for (key, value) in mine {
            assert!(union.insert(key.clone(), value).is_none(), "{key:?} is served by two shards");
        }
        for (operation, n) in calls(&e) {
            *shard_calls.entry(operation).or_insert(0.0) += n;
        }
    }
    // Times of the last refresh differ between processes; the series themselves must not.
    let masked = |s: &Series| -> BTreeMap<(String, BTreeMap<String, String>), Option<f64>> {
        s.iter().map(|(k, v)| (k.clone(), (!k.0.starts_with("ami_usage_last_success")).then_some(*v))).collect()
    };
    assert_eq!(masked(&union), masked(&expected), "the shards' union is the unsharded exporter's output");

    let whole_calls = calls(&whole.scrape().await);
    for (operation, n) in &shard_calls {
        let alone = whole_calls.get(operation).copied().unwrap_or(0.0);
        assert!(
            *n <= alone + 3.0,
            "{operation}: the shards made {n} calls, one exporter {alone}: at most one more per shard (its partly filled last batch or page)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_outside_the_total_or_a_bad_pod_name_is_refused() {
    for (args, message) in [
        (&["--shard=3", "--total-shards=3"][..], "not below --total-shards 3"),
        (&["--shard=web", "--total-shards=3"][..], "StatefulSet pod name"),
        (&["--total-shards=0"][..], "--total-shards"),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .args(["--config.file", concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yml")])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(message), "{args:?}: {text}");
    }
}

/// An HA pair: two replicas of one shard, both creating and deleting. The client token makes
/// their creates one report per image and window, and a report one replica deleted first is
/// only a failed delete for the other: each image keeps its newest report, and both serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_one_shard_create_one_report_per_image_and_delete_safely() {
    let running = simulator(12, 4, Duration::from_millis(300)).await;
    let sim = &running.sim;
    // Every 3 s a new window: each image gets a new report, and the previous own one goes.
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 3s");
    let args = ["--shard=1", "--total-shards=2"];
    let pair = [
        Exporter::start_with(&config, &running.endpoint_url(), &args),
        Exporter::start_with(&config, &running.endpoint_url(), &args),
    ];
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ours = |r: &ec2_sim::ReportView| r.tags.iter().any(|(k, v)| k == "created-by" && v == "ami-usage-exporter");
    let reports = sim.reports();
    let mut per_window: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for report in reports.iter().filter(|r| ours(r)) {
        *per_window.entry((report.image_id.clone(), report.client_token.clone())).or_default() += 1;
    }
    assert!(!per_window.is_empty(), "the pair made reports");
    assert!(per_window.values().all(|n| *n == 1), "one report per image and token: {per_window:?}");
    let mut own_per_image: BTreeMap<&str, usize> = BTreeMap::new();
    for report in reports.iter().filter(|r| ours(r)) {
        *own_per_image.entry(&report.image_id).or_default() += 1;
    }
    assert!(own_per_image.values().all(|n| *n <= 3), "superseded reports were deleted: {own_per_image:?}");
    let first = pair[0].scrape().await;
    let second = pair[1].scrape().await;
    let deleted =
        first.sum("ami_usage_reports_deleted_total", &[]) + second.sum("ami_usage_reports_deleted_total", &[]);
    assert!(deleted > 0.0, "the pair deleted superseded reports");
    for e in [&first, &second] {
        assert!(
            e.metric("ami_usage_image_poll_success").iter().all(|(_, v)| *v == 1.0),
            "a failed delete fails no image"
        );
    }
}
