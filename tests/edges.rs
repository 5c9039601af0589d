//! The edges the README promises to survive, each as EC2 would present it: broken answers in the
//! middle of a long entry chain, reports that EC2 keeps failing or leaves in a state nobody knows,
//! reports that vanish after their create, a Region that hangs beside a healthy one, and reloads
//! and signals as Prometheus handles them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Exporter, Exposition, WAIT, config_for, scraped_usage, simulator, truth};
use ec2_sim::{CreateOutcome, DatasetSpec, Fault, FaultRule, ReportState, SimConfig, Simulator};

const REPORTS: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";
const CREATE: &str = "CreateImageUsageReport";

fn polls(e: &Exposition) -> f64 {
    e.value("ami_usage_polls_total", &[]).unwrap_or(0.0)
}

fn served(sim: &Simulator, operation: &str) -> u64 {
    sim.request_counts().get(operation).copied().unwrap_or(0)
}

fn failures(e: &Exposition, image: &str) -> Option<f64> {
    e.value("ami_usage_image_report_failures", &[("image_id", image)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_or_unparsable_answer_is_retried_within_the_call() {
    let running = simulator(1, 20, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::TruncatedBody).on(ENTRIES).with_limit(1));
    sim.add_fault(FaultRule::new(Fault::NotXml).on(ENTRIES).with_limit(1));
    let config = config_for(
        &sim.image_ids(),
        "poll_interval: 1h\nreports:\n  create: false\naws:\n  page_size: 10\n  max_attempts: 4",
    );
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    let e = exporter.scrape().await;
    assert_eq!(polls(&e), 1.0, "one poll");
    assert_eq!(scraped_usage(&e), truth(sim).0, "the first poll read every page: the broken answers were retried");
    let image = &sim.image_ids()[0];
    assert_eq!(e.value("ami_usage_image_poll_success", &[("image_id", image)]), Some(1.0));
    assert_eq!(
        e.sum("ami_usage_api_errors_total", &[("operation", ENTRIES), ("code", "ResponseError")]),
        2.0,
        "counted"
    );
}

/// A 50-page entry chain with about half of its requests failing: throttling, 500s and cut-off
/// answers. Each chain that still fails after the SDK's retries resumes at the failed page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_converges_under_heavy_faults_without_rereading_pages() {
    let config = SimConfig {
        // 125 accounts x 2 resource types = 250 entries: 50 pages of 5.
        dataset: DatasetSpec { seed: 3, images: 1, accounts: 125, full_usage: true, ..DatasetSpec::default() },
        ..SimConfig::default()
    };
    let running = Simulator::start(config).await.expect("simulator starts");
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Throttle).on(ENTRIES).with_share(0.3));
    sim.add_fault(FaultRule::new(Fault::InternalError).on(ENTRIES).with_share(0.27));
    sim.add_fault(FaultRule::new(Fault::TruncatedBody).on(ENTRIES).with_share(0.21));
    let config = config_for(
        &sim.image_ids(),
        "poll_interval: 1s\nreports:\n  create: false\naws:\n  page_size: 5\n  max_attempts: 4",
    );
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let expected = truth(sim).0;
    assert_eq!(expected.len(), 250);
    let e = exporter
        .scrape_until(Duration::from_secs(150), "the chain to converge", |e| scraped_usage(e) == expected)
        .await;
    let requests = served(sim, ENTRIES);
    let faulted: u64 = sim.fault_hits().values().sum();
    let share = faulted as f64 / requests as f64;
    eprintln!("{requests} entry requests, {faulted} faulted ({share:.2}), {} polls", polls(&e));
    assert!(share > 0.35, "about half of the requests failed: {share:.2}");
    assert_eq!(requests - faulted, 50, "each of the 50 pages was answered once: nothing was read again from page 1");
    assert!(polls(&e) <= 12.0, "converged within a few polls: {}", polls(&e));
    assert!(
        !exporter.log().contains("ResponseError")
            || e.sum("ami_usage_api_errors_total", &[("code", "ResponseError")]) > 0.0
    );
}

/// EC2 fails every new report: requests are spaced out by the consecutive failures EC2 lists, the
/// same for a restarted exporter, and the previous report keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reports_space_out_the_next_requests_across_restarts() {
    let config = SimConfig {
        dataset: DatasetSpec { seed: 5, images: 1, accounts: 4, ..DatasetSpec::default() },
        pending_for: Duration::ZERO,
        create_outcome: CreateOutcome::Error("Internal error".into()),
        ..SimConfig::default()
    };
    let running = Simulator::start(config).await.expect("simulator starts");
    let sim = &running.sim;
    let image = sim.image_ids()[0].clone();
    let (usage, reports) = truth(sim);
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h");
    let mut exporter = Exporter::start(&config, &running.endpoint_url());
    let started = Instant::now();
    // Requests at about 0, 1, 3 and 7 s (waits of 1, 2, 4 s after each failure); the fifth would
    // wait 8 s after the fourth.
    let e = exporter
        .scrape_until(Duration::from_secs(20), "four failed reports", |e| failures(e, &image) == Some(4.0))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(served(sim, CREATE), 4, "one request per failure, spaced out ({elapsed:?})");
    assert!(elapsed >= Duration::from_secs(5), "doubling waits: 1 + 2 + 4 s at least ({elapsed:?})");
    assert_eq!(scraped_usage(&e), usage, "the previous report keeps serving");
    assert_eq!(e.value("ami_usage_report_info", &[("report_id", &reports[&image].0)]), Some(1.0));
    let times = sim.request_times(CREATE);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1].duration_since(w[0])).collect();
    for (gap, at_least) in gaps.iter().zip([1, 2, 4]) {
        assert!(*gap >= Duration::from_millis(at_least * 1000 - 1000), "gaps {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "the wait grows: {gaps:?}");

    // A restart does not reset the wait: it is derived from the failed reports EC2 lists.
    assert!(exporter.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let second = Exporter::start(&config, &running.endpoint_url());
    second.wait_ready().await;
    let e = second.scrape_until(WAIT, "three polls", |e| polls(e) >= 3.0).await;
    assert_eq!(served(sim, CREATE), 4, "still waiting after the restart");
    assert_eq!(failures(&e, &image), Some(4.0));
}

/// A report in a state this version does not know: logged once, pending until
/// `reports.pending_timeout`, then failed, so refreshing goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_report_state_is_logged_once_and_does_not_block_refreshes() {
    let running = simulator(1, 4, Duration::from_secs(3600)).await;
    let sim = &running.sim;
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h\n  pending_timeout: 3s");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.scrape_until(WAIT, "a report requested", |e| e.sum("ami_usage_reports_created_total", &[]) >= 1.0).await;
    let pending = sim.reports().into_iter().find(|r| r.state == ReportState::Pending).expect("the requested report").id;
    sim.set_report_state(&pending, "archiving");
    let e = exporter
        .scrape_until(Duration::from_secs(20), "a second request", |e| {
            e.sum("ami_usage_reports_created_total", &[]) >= 2.0
        })
        .await;
    let times = sim.request_times(CREATE);
    assert_eq!(times.len(), 2);
    assert!(times[1].duration_since(times[0]) >= Duration::from_secs(2), "pending until the timeout first");
    assert_eq!(exporter.log().matches("state this version does not know").count(), 1, "logged once");
    assert_eq!(failures(&e, &sim.image_ids()[0]), Some(1.0), "then counted as a failure");
}

/// A create whose report the listing does not show (deleted elsewhere, same token): counted, and
/// not sent again every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_report_vanished_is_counted_and_not_repeated() {
    let running = simulator(1, 4, Duration::from_secs(3600)).await;
    let sim = &running.sim;
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let e = exporter
        .scrape_until(WAIT, "a report requested", |e| e.sum("ami_usage_reports_created_total", &[]) >= 1.0)
        .await;
    let pending = sim.reports().into_iter().find(|r| r.state == ReportState::Pending).expect("the requested report").id;
    sim.expire_report(&pending);
    let after = polls(&e) + 5.0;
    let e = exporter.scrape_until(WAIT, "five more polls", |e| polls(e) >= after).await;
    assert_eq!(e.sum("ami_usage_reports_vanished_total", &[]), 1.0);
    assert_eq!(served(sim, CREATE), 1, "the same token is not sent again");
    assert_eq!(scraped_usage(&e), truth(sim).0, "the previous report keeps serving");
}

fn usage_by_region(e: &Exposition) -> BTreeMap<String, usize> {
    let mut regions = BTreeMap::new();
    for (labels, _) in e.metric("ami_usage_resources") {
        *regions.entry(labels["aws_region"].clone()).or_default() += 1;
    }
    regions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_region_never_holds_back_another() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let hang = Duration::from_secs(8);
    sim.add_fault(
        FaultRule::new(Fault::Latency { millis: hang.as_millis() as u64 })
            .on(REPORTS)
            .in_region("eu-west-1")
            .with_limit(1),
    );
    let images: Vec<String> = sim.image_ids().iter().map(|i| format!("[{i}]")).collect();
    let config = format!(
        "poll_interval: 1s\nreports:\n  create: false\naws:\n  attempt_timeout: 20s\n  operation_timeout: 30s\ntargets:\n  - region: us-east-1\n    images: {}\n  - region: eu-west-1\n    images: {}\n",
        images[0], images[1]
    );
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let started = Instant::now();
    let e = exporter.scrape_until(WAIT, "us-east-1's usage", |e| usage_by_region(e).contains_key("us-east-1")).await;
    assert!(started.elapsed() < hang / 2, "published before the hung Region answered: {:?}", started.elapsed());
    assert!(!usage_by_region(&e).contains_key("eu-west-1"));
    assert_eq!(exporter.get("/-/ready").await.0, 503, "not ready until every target finished its first poll");
    let e = exporter.scrape_until(WAIT, "three polls of us-east-1", |e| polls(e) >= 3.0).await;
    assert!(started.elapsed() < hang, "us-east-1 kept polling meanwhile");
    assert!(!usage_by_region(&e).contains_key("eu-west-1"));

    exporter.wait_ready().await;
    assert!(started.elapsed() >= hang - Duration::from_secs(1), "ready once eu-west-1 finished");
    let e = exporter.scrape_until(WAIT, "both Regions", |e| usage_by_region(e).len() == 2).await;
    let by_region = sim.request_counts_by();
    let calls = |region: &str| {
        by_region.iter().filter(|((_, r, op), _)| r == region && op == REPORTS).map(|(_, n)| n).sum::<u64>()
    };
    assert!(calls("us-east-1") > calls("eu-west-1"), "us-east-1 was polled more often: {by_region:?}");
    assert!(e.value("ami_usage_image_poll_success", &[("aws_region", "eu-west-1")]) == Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_over_http_needs_the_lifecycle_flag_and_sighup_always_works() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let exporter = Exporter::start(
        &config_for(&images[..1], "poll_interval: 1h\nreports:\n  create: false"),
        &running.endpoint_url(),
    );
    exporter.wait_ready().await;
    std::fs::write(exporter.config_path(), config_for(&images, "poll_interval: 1h\nreports:\n  create: false"))
        .expect("write");
    let refused = common::http_post(exporter.addr, "/-/reload").await;
    assert_eq!(refused, (403, "Lifecycle API is not enabled.".to_owned()), "Prometheus's answer");
    let e = exporter.scrape().await;
    assert_eq!(e.value("ami_usage_image_poll_success", &[("image_id", &images[1])]), None, "not applied");
    let _ = std::process::Command::new("kill").arg("-HUP").arg(exporter.pid().to_string()).status();
    exporter
        .scrape_until(WAIT, "the second image after SIGHUP", |e| {
            e.value("ami_usage_image_poll_success", &[("image_id", &images[1])]) == Some(1.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_unchanged_file_changes_nothing() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let config = config_for(&sim.image_ids(), "poll_interval: 1h\nreports:\n  create: false");
    let exporter = Exporter::start_with(&config, &running.endpoint_url(), &["--web.enable-lifecycle"]);
    exporter.wait_ready().await;
    let before = served(sim, REPORTS);
    for _ in 0..3 {
        let (status, body) = common::http_post(exporter.addr, "/-/reload").await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = exporter.scrape().await;
    assert_eq!(polls(&e), 1.0, "no extra poll");
    assert_eq!(served(sim, REPORTS), before, "no call to EC2");
    assert_eq!(e.value("ami_usage_config_last_reload_successful", &[]), Some(1.0));
    assert_eq!(exporter.log().matches("configuration unchanged").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_sighups_never_delays_sigterm() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let mut exporter = Exporter::start(
        &config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  create: false"),
        &running.endpoint_url(),
    );
    exporter.wait_ready().await;
    let pid = exporter.pid().to_string();
    for _ in 0..50 {
        let _ = std::process::Command::new("kill").arg("-HUP").arg(&pid).status();
    }
    let started = Instant::now();
    let status = exporter.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exited cleanly; log:\n{}", exporter.log());
    assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM was not held up: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_counters_start_at_zero() {
    let running = simulator(1, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let exporter = Exporter::start(&config_for(&sim.image_ids(), "poll_interval: 1h"), &running.endpoint_url());
    exporter.wait_ready().await;
    let e = exporter.scrape().await;
    let region = [("aws_region", "us-east-1")];
    for name in [
        "ami_usage_reports_deleted_total",
        "ami_usage_report_errors_total",
        "ami_usage_reports_stuck_total",
        "ami_usage_reports_vanished_total",
        "ami_usage_invalid_entries_total",
    ] {
        assert_eq!(e.value(name, &region), Some(0.0), "{name} is exported at 0");
    }
    let deletes = [("aws_region", "us-east-1"), ("operation", "DeleteImageUsageReport")];
    assert_eq!(e.value("ami_usage_api_requests_total", &deletes), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_pending_past_the_timeout_is_logged_and_counted_once() {
    let running = simulator(2, 4, Duration::from_secs(3600)).await;
    let sim = &running.sim;
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  max_age: 1h\n  pending_timeout: 2s");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let e = exporter.scrape_until(WAIT, "stuck reports", |e| e.sum("ami_usage_reports_stuck_total", &[]) >= 2.0).await;
    let after = polls(&e) + 3.0;
    let e = exporter.scrape_until(WAIT, "three more polls", |e| polls(e) >= after).await;
    assert_eq!(e.sum("ami_usage_reports_stuck_total", &[]), 2.0, "each stuck report counted once");
    assert_eq!(exporter.log().matches("still pending after reports.pending_timeout").count(), 2, "and logged once");
    assert_eq!(e.metric("ami_usage_pending_report_creation_timestamp_seconds").len(), 2);
    assert_eq!(scraped_usage(&e), truth(sim).0, "the previous reports keep serving");
    assert_eq!(served(sim, CREATE), 2, "no second request while one is pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_visible_and_recover_without_restart() {
    let running = simulator(2, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::AuthFailure).with_limit(3));
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nreports:\n  create: false");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let e = exporter
        .scrape_until(WAIT, "the rejection", |e| e.sum("ami_usage_api_errors_total", &[("code", "AuthFailure")]) >= 1.0)
        .await;
    assert!(sim.image_ids().iter().any(|i| e.value("ami_usage_image_poll_success", &[("image_id", i)]) == Some(0.0)));
    let e = exporter
        .scrape_until(WAIT, "recovery", |e| {
            sim.image_ids().iter().all(|i| e.value("ami_usage_image_poll_success", &[("image_id", i)]) == Some(1.0))
        })
        .await;
    assert_eq!(scraped_usage(&e), truth(sim).0);
    assert_eq!(e.sum("ami_usage_api_errors_total", &[("code", "AuthFailure")]), 3.0);
}

/// A chain resumed with a token EC2 no longer accepts (it expired between polls) starts over from
/// the first page, in the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_saved_token_restarts_the_chain_from_the_first_page() {
    let config = SimConfig {
        // 25 accounts x 2 resource types = 50 entries: 10 pages of 5.
        dataset: DatasetSpec { seed: 4, images: 1, accounts: 25, full_usage: true, ..DatasetSpec::default() },
        ..SimConfig::default()
    };
    let running = Simulator::start(config).await.expect("simulator starts");
    let sim = &running.sim;
    // One entry request part-way through fails (which one depends on the dataset's phase: the
    // third here), and the resumed page then finds its token expired.
    sim.add_fault(FaultRule::new(Fault::InternalError).on(ENTRIES).with_share(0.25).with_limit(1));
    let config = config_for(
        &sim.image_ids(),
        "poll_interval: 2s\nreports:\n  create: false\naws:\n  page_size: 5\n  max_attempts: 1",
    );
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter
        .scrape_until(WAIT, "the failed chain", |e| {
            e.sum("ami_usage_api_errors_total", &[("code", "InternalError")]) >= 1.0
        })
        .await;
    let before = served(sim, ENTRIES);
    assert!(before >= 2, "the chain failed part-way, after {} pages", before - 1);
    sim.add_fault(FaultRule::new(Fault::ExpireToken).on(ENTRIES).with_limit(1));
    let expected = truth(sim).0;
    let e = exporter.scrape_until(WAIT, "the whole report", |e| scraped_usage(e) == expected).await;
    assert_eq!(e.sum("ami_usage_api_errors_total", &[("code", "InvalidPaginationToken")]), 1.0);
    assert!(exporter.log().contains("refused the saved nextToken"), "{}", exporter.log());
    // The pages before the failure and the failed one, the refused resume, then all 10 pages.
    assert_eq!(served(sim, ENTRIES), before + 1 + 10);
}

/// A long first read (a large estate's cold start) logs its progress every few seconds: reports
/// read of the total, at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_of_entries_logs_and_shows_its_progress() {
    let running = simulator(40, 8, Duration::from_secs(60)).await;
    let sim = &running.sim;
    // Pages of 5 entries, 150 ms each: the one entry call of 40 reports takes about 8 s.
    sim.add_fault(FaultRule::new(Fault::Latency { millis: 150 }).on(ENTRIES));
    let config = config_for(&sim.image_ids(), "poll_interval: 1h\nreports:\n  create: false\naws:\n  page_size: 5");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    // While the read runs, the status page shows how far it is.
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let (_, page) = exporter.get("/").await;
        if page.contains("<span class=\"of\">40</span>") {
            break page;
        }
        assert!(Instant::now() < deadline, "the page shows no progress:\n{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.contains("id=\"progress\"") && page.contains("Polling us-east-1 since"), "{page}");
    assert!(page.contains("No poll has finished yet."), "the first poll is the one running");
    while !exporter.log().contains("reading usage report entries") {
        assert!(Instant::now() < deadline, "no progress line; log:\n{}", exporter.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = exporter.log();
    let line = log.lines().find(|l| l.contains("reading usage report entries")).unwrap_or_default();
    assert!(line.contains("level=info") && line.contains("reports_total=40"), "{line}");
    exporter.wait_ready().await;
    assert_eq!(scraped_usage(&exporter.scrape().await), truth(sim).0, "and then the poll completes");
    let (_, done) = exporter.get("/").await;
    assert!(!done.contains("id=\"progress\""), "no poll runs any more:\n{done}");
    assert!(done.contains("<dd id=\"total-images\">40</dd>"), "{done}");
}
