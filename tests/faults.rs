//! The exporter under injected faults: throttling, hangs, broken answers, failing reports,
//! missing credentials, bad reloads. Each test injects one fault into the simulator and checks
//! what `/metrics` shows and what the simulator counted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    Exporter, Exposition, TempFile, WAIT, aws_command, config_for, scraped_usage, serving_reports, simulator, truth,
};
use ec2_sim::{Fault, FaultRule};

const REPORTS: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";
const CREATE: &str = "CreateImageUsageReport";

fn success(e: &Exposition, image: &str) -> Option<f64> {
    e.value("ami_usage_image_poll_success", &[("image_id", image)])
}

fn polls(e: &Exposition) -> f64 {
    e.value("ami_usage_polls_total", &[]).unwrap_or(0.0)
}

/// Waits until `n` more polls than `e` have finished.
async fn polls_after(exporter: &Exporter, e: &Exposition, n: f64) -> Exposition {
    let target = polls(e) + n;
    exporter.scrape_until(WAIT, "more polls", |x| polls(x) >= target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_counted_and_survived() {
    let running = simulator(4, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Throttle).on(REPORTS).with_limit(2));
    let config = config_for(&sim.image_ids(), "poll_interval: 1h\naws:\n  max_attempts: 3");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    let e = exporter.scrape().await;
    assert_eq!(scraped_usage(&e), truth(sim).0, "the third attempt succeeded");
    assert_eq!(e.sum("ami_usage_api_errors_total", &[("operation", REPORTS), ("code", "RequestLimitExceeded")]), 2.0);
    let served = sim.request_counts();
    assert_eq!(served.get(REPORTS), Some(&3));
    assert_eq!(e.sum("ami_usage_api_requests_total", &[("operation", REPORTS)]), 3.0, "retries are requests too");
    assert!(sim.image_ids().iter().all(|i| success(&e, i) == Some(1.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_throttling_lowers_the_request_rate() {
    let running = simulator(3, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Throttle));
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\naws:\n  max_attempts: 2");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let started = Instant::now();
    let window = Duration::from_secs(8);
    while started.elapsed() < window * 2 {
        // Scrapes keep working throughout.
        let (status, _) = exporter.get("/metrics").await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let times = sim.request_times(REPORTS);
    let first = times.first().copied().expect("requests were made");
    let (early, late): (Vec<Instant>, Vec<Instant>) = times.iter().partition(|t| t.duration_since(first) < window);
    assert!(
        late.len() < early.len(),
        "request rate must fall under sustained throttling: {} requests in the first {window:?}, {} in the next",
        early.len(),
        late.len()
    );
    let e = exporter.scrape().await;
    assert!(e.sum("ami_usage_api_errors_total", &[("code", "RequestLimitExceeded")]) >= early.len() as f64);
    assert!(sim.image_ids().iter().all(|i| success(&e, i) == Some(0.0)));
    assert!(exporter.log().contains("polling this Region less often"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_api_blocks_neither_scrapes_nor_shutdown() {
    let running = simulator(3, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let config = config_for(
        &sim.image_ids(),
        "poll_interval: 1s\naws:\n  attempt_timeout: 1s\n  operation_timeout: 2s\n  max_attempts: 2",
    );
    let mut exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    let expected = truth(sim).0;
    sim.add_fault(FaultRule::new(Fault::Latency { millis: 60_000 }));
    let e = exporter
        .scrape_until(WAIT, "timeouts to be counted", |e| {
            e.sum("ami_usage_api_errors_total", &[("code", "Timeout")]) > 0.0
        })
        .await;
    assert_eq!(scraped_usage(&e), expected, "the last good data keeps being served");
    for _ in 0..10 {
        let asked = Instant::now();
        let (status, _) = exporter.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "a scrape took {:?} while EC2 hangs", asked.elapsed());
    }
    let asked = Instant::now();
    let status = exporter.terminate(Duration::from_secs(10)).expect("SIGTERM ends the exporter mid-poll");
    assert!(status.success());
    assert!(asked.elapsed() < Duration::from_secs(5), "shutdown took {:?}", asked.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_image_keeps_the_others_fresh_then_goes_stale() {
    let running = simulator(3, 5, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let config = config_for(&images, "poll_interval: 1s\nstaleness_limit: 4s\nreports:\n  create: false");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    let before = exporter.scrape().await;
    let (broken, healthy) = (&images[0], &images[1]);
    let broken_usage: BTreeMap<_, _> =
        scraped_usage(&before).into_iter().filter(|((i, _, _), _)| i == broken).collect();
    assert!(!broken_usage.is_empty());

    // A new report for one image, whose entries cannot be read.
    sim.add_fault(FaultRule::new(Fault::InternalError).on(ENTRIES));
    sim.add_report(broken);
    let failing = exporter.scrape_until(WAIT, "the image to fail", |e| success(e, broken) == Some(0.0)).await;
    let frozen = failing.value("ami_usage_last_success_timestamp_seconds", &[("image_id", broken)]);
    let later = polls_after(&exporter, &failing, 2.0).await;
    assert_eq!(later.value("ami_usage_last_success_timestamp_seconds", &[("image_id", broken)]), frozen);
    assert_eq!(success(&later, healthy), Some(1.0), "the other images keep refreshing");
    assert!(
        later.value("ami_usage_last_success_timestamp_seconds", &[("image_id", healthy)])
            > failing.value("ami_usage_last_success_timestamp_seconds", &[("image_id", healthy)])
    );
    let served: BTreeMap<_, _> = scraped_usage(&later).into_iter().filter(|((i, _, _), _)| i == broken).collect();
    if later.value("ami_usage_last_success_timestamp_seconds", &[("image_id", broken)]).is_some_and(|t| {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t) + Duration::from_secs(4)
            > std::time::SystemTime::now()
    }) {
        assert_eq!(served, broken_usage, "the last good figures, within the staleness limit");
    }

    let dropped = exporter
        .scrape_until(WAIT, "stale usage to be dropped", |e| scraped_usage(e).keys().all(|(i, _, _)| i != broken))
        .await;
    assert_eq!(success(&dropped, broken), Some(0.0), "the status series stays");
    assert!(scraped_usage(&dropped).keys().any(|(i, _, _)| i == healthy));
    assert!(dropped.sum("ami_usage_api_errors_total", &[("operation", ENTRIES), ("code", "InternalError")]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_next_token_is_cut_off_and_counted() {
    let running = simulator(2, 3, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::RepeatToken).on(REPORTS));
    let exporter = Exporter::start(&config_for(&sim.image_ids(), "poll_interval: 1s"), &running.endpoint_url());
    let e = exporter
        .scrape_until(WAIT, "the loop to be counted", |e| {
            e.sum("ami_usage_api_errors_total", &[("code", "PaginationLoop")]) >= 1.0
        })
        .await;
    assert!(sim.image_ids().iter().all(|i| success(&e, i) == Some(0.0)));
    let requests = sim.request_counts().get(REPORTS).copied().unwrap_or(0);
    assert!(requests < 20, "the loop was stopped at once ({requests} requests)");
    sim.clear_faults();
    let recovered =
        exporter.scrape_until(WAIT, "recovery", |e| sim.image_ids().iter().all(|i| success(e, i) == Some(1.0))).await;
    assert_eq!(scraped_usage(&recovered), truth(sim).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_with_missing_fields_or_impossible_counts_are_skipped() {
    for fault in [Fault::MissingFields, Fault::UsageCount { value: -5 }, Fault::UsageCount { value: i64::MAX }] {
        let running = simulator(3, 5, Duration::from_secs(60)).await;
        let sim = &running.sim;
        sim.add_fault(FaultRule::new(fault.clone()).on(ENTRIES).with_limit(1));
        let config = config_for(&sim.image_ids(), "poll_interval: 1h\naws:\n  page_size: 5");
        let exporter = Exporter::start(&config, &running.endpoint_url());
        exporter.wait_ready().await;
        let e = exporter.scrape().await;
        let skipped = e.sum("ami_usage_invalid_entries_total", &[]);
        assert!(skipped > 0.0, "{fault:?}");
        let expected = truth(sim).0;
        let got = scraped_usage(&e);
        assert_eq!(got.len() as f64, expected.len() as f64 - skipped, "{fault:?}: only the bad entries are missing");
        assert!(got.iter().all(|(k, v)| expected.get(k) == Some(v)), "{fault:?}: the others are exact");
        assert_eq!(
            exporter.log().matches("skipped entries with missing or impossible fields").count(),
            1,
            "{fault:?}: logged once per poll"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_entries_are_not_double_counted() {
    let running = simulator(3, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::DuplicateEntries).on(ENTRIES));
    let config = config_for(&sim.image_ids(), "poll_interval: 1h\naws:\n  page_size: 4");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    assert!(sim.fault_hits().get("duplicate_entries").is_some_and(|n| *n > 0));
    assert_eq!(scraped_usage(&exporter.scrape().await), truth(sim).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_are_counted_and_the_last_good_data_stays() {
    for (fault, code) in [
        (Fault::NotXml, "ResponseError"),
        (Fault::TruncatedBody, "ResponseError"),
        (Fault::CloseMidResponse, "ResponseError"),
        (Fault::CloseConnection, "ConnectionError"),
    ] {
        let running = simulator(2, 4, Duration::from_secs(60)).await;
        let sim = &running.sim;
        let config = config_for(&sim.image_ids(), "poll_interval: 1s\naws:\n  max_attempts: 1");
        let exporter = Exporter::start(&config, &running.endpoint_url());
        exporter.wait_ready().await;
        let good = scraped_usage(&exporter.scrape().await);
        sim.add_fault(FaultRule::new(fault.clone()).on(REPORTS));
        let e = exporter
            .scrape_until(WAIT, "the broken answer", |e| sim.image_ids().iter().all(|i| success(e, i) == Some(0.0)))
            .await;
        assert_eq!(scraped_usage(&e), good, "{fault:?}");
        let errors = e.sum("ami_usage_api_errors_total", &[("operation", REPORTS)]);
        assert!(errors >= 1.0, "{fault:?}: {errors}");
        let coded = e.sum("ami_usage_api_errors_total", &[("operation", REPORTS), ("code", code)]);
        assert!(coded >= 1.0, "{fault:?} counted as {code}: {:?}", e.metric("ami_usage_api_errors_total"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_fails_leaves_the_previous_one_serving() {
    let running = simulator(3, 5, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let exporter = Exporter::start(
        &config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  create: false"),
        &running.endpoint_url(),
    );
    exporter.wait_ready().await;
    let before = serving_reports(&exporter.scrape().await);
    let (image, newest) = before.iter().next().map(|(i, r)| (i.clone(), r.clone())).expect("an image with a report");
    sim.fail_report(&newest, "Internal error: injected by the test");
    let e = exporter
        .scrape_until(WAIT, "the previous report", |e| serving_reports(e).get(&image).is_some_and(|r| *r != newest))
        .await;
    assert_eq!(scraped_usage(&e), truth(sim).0, "the previous available report serves");
    assert!(e.sum("ami_usage_report_errors_total", &[]) >= 1.0);
    assert!(exporter.log().contains("Internal error: injected by the test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_report_creation_backs_off() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Unauthorized).on(CREATE));
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let e = exporter.scrape_until(WAIT, "ten polls", |e| polls(e) >= 10.0).await;
    let creates = sim.request_counts().get(CREATE).copied().unwrap_or(0);
    let images = sim.image_ids().len() as u64;
    // Waits of 1, 2, 4, 8 s: at most 4 attempts per image in 10 polls, not 10.
    assert!(creates >= images && creates <= 4 * images, "{creates} create calls for {images} images in 10 polls");
    assert_eq!(
        e.sum("ami_usage_api_errors_total", &[("operation", CREATE), ("code", "UnauthorizedOperation")]),
        creates as f64
    );
    assert!(sim.image_ids().iter().all(|i| success(&e, i) == Some(1.0)), "reading still works");
    assert_eq!(scraped_usage(&e), truth(sim).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_visible_and_recover_without_restart() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let credentials = std::env::temp_dir().join(format!("ami-usage-test-credentials-{}", std::process::id()));
    let _ = std::fs::remove_file(&credentials);
    let config = TempFile::new(&config_for(&sim.image_ids(), "poll_interval: 1s"));
    let mut cmd = aws_command(&running.endpoint_url());
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    let exporter = Exporter::spawn(cmd, &config);
    // The error counter moves as the call fails; the images' status only when the poll ends.
    let e = exporter
        .scrape_until(WAIT, "the credentials failure", |e| {
            e.sum("ami_usage_api_errors_total", &[("code", "CredentialsError")]) >= 1.0
                && sim.image_ids().iter().all(|i| success(e, i).is_some())
        })
        .await;
    assert!(sim.image_ids().iter().all(|i| success(&e, i) == Some(0.0)));
    assert!(exporter.log().contains("no usable AWS credentials"));
    assert!(!exporter.log().contains("AKID"), "no credentials in the log");

    std::fs::write(&credentials, "[default]\naws_access_key_id = AKIDLATER\naws_secret_access_key = later\n")
        .expect("write");
    let recovered =
        exporter.scrape_until(WAIT, "recovery", |e| sim.image_ids().iter().all(|i| success(e, i) == Some(1.0))).await;
    assert_eq!(scraped_usage(&recovered), truth(sim).0);
    let _ = std::fs::remove_file(&credentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_old_config_and_a_good_one_applies() {
    let running = simulator(3, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let exporter = Exporter::start_with(
        &config_for(&images[..1], "poll_interval: 1s"),
        &running.endpoint_url(),
        &["--web.enable-lifecycle"],
    );
    exporter.wait_ready().await;

    std::fs::write(exporter.config_path(), "poll_interval: 1s\ntargets: oops\n").expect("write");
    let _ = std::process::Command::new("kill").arg("-HUP").arg(exporter.pid().to_string()).status();
    let e = exporter
        .scrape_until(WAIT, "the failed reload", |e| {
            e.value("ami_usage_config_last_reload_successful", &[]) == Some(0.0)
        })
        .await;
    let after = polls_after(&exporter, &e, 2.0).await;
    assert_eq!(success(&after, &images[0]), Some(1.0), "the old configuration keeps polling");
    assert!(exporter.log().contains("configuration reload failed"));

    std::fs::write(exporter.config_path(), config_for(&images[..2], "poll_interval: 1s")).expect("write");
    let (status, body) = common::http_post(exporter.addr, "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    let e = exporter.scrape_until(WAIT, "the second image", |e| success(e, &images[1]) == Some(1.0)).await;
    assert_eq!(e.value("ami_usage_config_last_reload_successful", &[]), Some(1.0));
    let expected: common::Usage = truth(sim).0.into_iter().filter(|((i, _, _), _)| images[..2].contains(i)).collect();
    assert_eq!(scraped_usage(&e), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_the_pending_reports_instead_of_creating_more() {
    let running = simulator(3, 4, Duration::from_secs(300)).await;
    let sim = &running.sim;
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h");
    let mut first = Exporter::start(&config, &running.endpoint_url());
    first.scrape_until(WAIT, "reports requested", |e| e.sum("ami_usage_reports_created_total", &[]) >= 3.0).await;
    assert!(first.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let created = sim.request_counts().get(CREATE).copied();
    assert_eq!(created, Some(3));

    let second = Exporter::start(&config, &running.endpoint_url());
    let e = second.scrape_until(WAIT, "three polls", |e| polls(e) >= 3.0).await;
    assert_eq!(sim.request_counts().get(CREATE).copied(), created, "no new report after the restart");
    assert_eq!(e.metric("ami_usage_pending_report_creation_timestamp_seconds").len(), 3);
}
