//! The exporter end to end: the real binary, the real AWS SDK, real HTTP, against the EC2
//! simulator; every assertion compares `/metrics` with the simulator's ground truth.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Exporter, TempFile, WAIT, aws_command, config_for, scraped_usage, serving_reports, simulator, truth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_equal_the_newest_available_reports() {
    let running = simulator(6, 10, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    // Several reports per image, so that an exporter mixing in old ones would be caught.
    let per_image = sim.reports().iter().filter(|r| r.image_id == images[0]).count();
    assert!(per_image >= 2, "the dataset must have older reports too");

    let exporter =
        Exporter::start(&config_for(&images, "poll_interval: 1h\naws:\n  page_size: 7"), &running.endpoint_url());
    exporter.wait_ready().await;
    let exposition = exporter.scrape().await;

    let (expected, reports) = truth(sim);
    assert!(!expected.is_empty());
    assert_eq!(scraped_usage(&exposition), expected, "usage series equal the ground truth, series by series");
    for (image, (report_id, created)) in &reports {
        let labels = [("aws_region", "us-east-1"), ("image_id", image.as_str())];
        assert_eq!(exposition.value("ami_usage_report_creation_timestamp_seconds", &labels), Some(*created));
        assert_eq!(serving_reports(&exposition).get(image), Some(report_id));
    }
    for image in &images {
        let labels = [("aws_region", "us-east-1"), ("image_id", image.as_str())];
        assert_eq!(exposition.value("ami_usage_image_poll_success", &labels), Some(1.0), "{image}");
        assert!(exposition.value("ami_usage_last_success_timestamp_seconds", &labels).is_some_and(|t| t > 1.7e9));
    }
    // The reports are fresh (hours old, max_age 24h): nothing to create.
    assert_eq!(sim.request_counts().get("CreateImageUsageReport"), None);
    assert_eq!(exposition.value("ami_usage_polls_total", &[]), Some(1.0));
    assert!(exposition.help["ami_usage_resources"].contains("refreshes on a schedule"));
    assert_eq!(exposition.types["ami_usage_resources"], "gauge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_match_what_the_simulator_served() {
    let running = simulator(5, 12, Duration::from_secs(60)).await;
    let sim = &running.sim;
    // A small page size forces several pages of entries.
    let exporter = Exporter::start(
        &config_for(&sim.image_ids(), "poll_interval: 1h\naws:\n  page_size: 4"),
        &running.endpoint_url(),
    );
    exporter.wait_ready().await;
    let exposition = exporter.scrape().await;
    let served = sim.request_counts();
    for (operation, count) in &served {
        let ours = exposition.sum("ami_usage_api_requests_total", &[("operation", operation)]);
        assert_eq!(ours, *count as f64, "{operation}: exporter counted {ours}, simulator served {count}");
    }
    // 5 images fit in one call (of at most 200 IDs); its pages hold 4 reports each.
    let listed = sim.reports().len() as u64;
    assert_eq!(served.get("DescribeImageUsageReports"), Some(&listed.div_ceil(4)), "{served:?}");
    assert!(
        served.get("DescribeImageUsageReportEntries").is_some_and(|n| *n > 1),
        "entries were paginated: {served:?}"
    );
    assert_eq!(exposition.sum("ami_usage_api_errors_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_polls_do_not_reread_entries() {
    let running = simulator(4, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let exporter = Exporter::start(&config_for(&sim.image_ids(), "poll_interval: 1s"), &running.endpoint_url());
    exporter
        .scrape_until(WAIT, "three polls", |e| e.value("ami_usage_polls_total", &[]).is_some_and(|n| n >= 3.0))
        .await;
    let served = sim.request_counts();
    // 4 reports: one call (too few to split among the request slots), in the first poll only.
    assert_eq!(served.get("DescribeImageUsageReportEntries"), Some(&1), "entries are read once per report: {served:?}");
    assert!(served.get("DescribeImageUsageReports").is_some_and(|n| *n >= 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_created_by_the_exporter_is_served_once_available() {
    // Reports in the dataset are hours old; with max_age 1h every image needs a new one.
    let running = simulator(3, 5, Duration::from_secs(2)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let (_, old_reports) = truth(sim);
    let exporter =
        Exporter::start(&config_for(&images, "poll_interval: 1s\nreports:\n  max_age: 1h"), &running.endpoint_url());

    // Until the new reports are available, the old ones keep serving.
    let first = exporter.scrape_until(WAIT, "first poll", |e| !e.metric("ami_usage_report_info").is_empty()).await;
    let first_reports = serving_reports(&first);
    assert!(
        first_reports.iter().all(|(image, id)| old_reports.get(image).is_some_and(|(old, _)| old == id)),
        "{first_reports:?}"
    );

    let created: BTreeSet<String> = sim
        .reports()
        .into_iter()
        .filter(|r| r.tags.iter().any(|(k, v)| k == "created-by" && v == "ami-usage-exporter"))
        .map(|r| r.id)
        .collect();
    assert_eq!(created.len(), images.len(), "one report per image");

    let exposition = exporter
        .scrape_until(WAIT, "the new reports", |e| {
            serving_reports(e).values().all(|id| created.contains(id)) && serving_reports(e).len() == images.len()
        })
        .await;
    let (expected, _) = truth(sim);
    assert_eq!(scraped_usage(&exposition), expected);
    assert_eq!(exposition.sum("ami_usage_reports_created_total", &[]), images.len() as f64);
    // Fresh reports now: later polls create nothing more.
    exporter
        .scrape_until(WAIT, "two more polls", |e| {
            e.value("ami_usage_polls_total", &[])
                .is_some_and(|n| n >= first.value("ami_usage_polls_total", &[]).unwrap_or(0.0) + 4.0)
        })
        .await;
    assert_eq!(sim.request_counts().get("CreateImageUsageReport"), Some(&(images.len() as u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_removed_from_the_dataset_disappears() {
    let running = simulator(3, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let exporter =
        Exporter::start(&config_for(&images, "poll_interval: 1s\nreports:\n  create: false"), &running.endpoint_url());
    exporter.wait_ready().await;
    let before = scraped_usage(&exporter.scrape().await);
    let gone = before.keys().map(|(_, account, _)| account.clone()).next().expect("some usage");

    sim.remove_account(&gone);
    let new_reports: BTreeSet<String> = images.iter().map(|image| sim.add_report(image)).collect();
    let exposition = exporter
        .scrape_until(WAIT, "the new reports", |e| serving_reports(e).values().all(|id| new_reports.contains(id)))
        .await;
    let after = scraped_usage(&exposition);
    assert!(after.keys().all(|(_, account, _)| *account != gone), "{gone} still exported");
    assert!(exposition.series.keys().all(|(_, labels)| labels.get("account_id") != Some(&gone)));
    assert_eq!(after, truth(sim).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_create_one_report_per_image() {
    let running = simulator(4, 5, Duration::from_secs(300)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let config = config_for(&images, "poll_interval: 1s\nreports:\n  max_age: 1h");
    let a = Exporter::start(&config, &running.endpoint_url());
    let b = Exporter::start(&config, &running.endpoint_url());
    for exporter in [&a, &b] {
        exporter
            .scrape_until(WAIT, "three polls", |e| e.value("ami_usage_polls_total", &[]).is_some_and(|n| n >= 3.0))
            .await;
    }
    let mut per_image: BTreeMap<String, usize> = BTreeMap::new();
    for report in sim.reports().into_iter().filter(|r| r.tags.iter().any(|(_, v)| v == "ami-usage-exporter")) {
        *per_image.entry(report.image_id).or_default() += 1;
    }
    assert_eq!(per_image.len(), images.len());
    assert!(per_image.values().all(|n| *n == 1), "{per_image:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_exporter_cleanly() {
    let running = simulator(2, 3, Duration::from_secs(60)).await;
    let mut exporter =
        Exporter::start(&config_for(&running.sim.image_ids(), "poll_interval: 1h"), &running.endpoint_url());
    exporter.wait_ready().await;
    let status = exporter.terminate(Duration::from_secs(15)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(exporter.log().contains("SIGTERM received"));
}

#[test]
fn a_bad_config_names_the_field_and_exits_non_zero() {
    let config = TempFile::new("poll_interval: 0s\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n");
    let out =
        aws_command("http://127.0.0.1:9").arg(format!("--config.file={}", config.0.display())).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("poll_interval") && stderr.contains("greater than zero"), "{stderr}");

    let check = aws_command("http://127.0.0.1:9")
        .arg("--check-config")
        .arg("--config.file=config/example.yml")
        .output()
        .expect("runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// A log reader that goes away (a restarted log shipper) must not stop the exporter, nor its
/// handling of SIGTERM: failed log writes are dropped, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_breaks_neither_serving_nor_sigterm() {
    let running = simulator(2, 3, Duration::from_secs(60)).await;
    let config = TempFile::new(&config_for(&running.sim.image_ids(), "poll_interval: 1s"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let mut child = aws_command(&running.endpoint_url())
        .arg(format!("--config.file={}", config.0.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take()); // the reader is gone: every later log write fails
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = std::time::Instant::now() + WAIT;
    while common::http_get(addr, "/-/ready").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // a few polls, each logging
    assert_eq!(common::http_get(addr, "/metrics").await.0, 200, "still serving");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "SIGTERM ignored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
