//! What a poll costs in EC2 calls, against the simulator: superseded reports of the exporter are
//! deleted so that listing stays one call per 200 images, other reports are left alone, and the
//! entries of many new reports are read in as many parallel calls as there are request slots.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Exporter, TempFile, WAIT, aws_command, config_for, scraped_usage, serving_reports, truth};
use ec2_sim::{DatasetSpec, Fault, FaultRule, ReportState, ReportView, RunningSimulator, SimConfig, Simulator};

const LIST: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";
const CREATE: &str = "CreateImageUsageReport";
const DELETE: &str = "DeleteImageUsageReport";

fn ours(report: &ReportView) -> bool {
    report.tags.iter().any(|(k, v)| k == "created-by" && v == "ami-usage-exporter")
}

fn polls(e: &common::Exposition) -> f64 {
    e.value("ami_usage_polls_total", &[]).unwrap_or(0.0)
}

fn deleted(e: &common::Exposition) -> f64 {
    e.sum("ami_usage_reports_deleted_total", &[("aws_region", "us-east-1")])
}

async fn simulator(images: usize, reports_per_image: usize, pending_for: Duration) -> RunningSimulator {
    let config = SimConfig {
        dataset: DatasetSpec { seed: 11, images, accounts: 3, reports_per_image, ..DatasetSpec::default() },
        pending_for,
        ..SimConfig::default()
    };
    Simulator::start(config).await.expect("simulator starts")
}

/// Waits until `done` holds for the simulator's reports, or fails the test.
async fn wait_for_reports(sim: &Simulator, what: &str, done: impl Fn(&[ReportView]) -> bool) -> Vec<ReportView> {
    let deadline = Instant::now() + WAIT;
    loop {
        let reports = sim.reports();
        if done(&reports) {
            return reports;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; reports: {reports:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per image, the exporter's reports that are not pinned.
fn own_by_image<'a>(reports: &'a [ReportView], pinned: &str) -> BTreeMap<&'a str, Vec<&'a ReportView>> {
    let mut by_image: BTreeMap<&str, Vec<&ReportView>> = BTreeMap::new();
    for report in reports.iter().filter(|r| ours(r) && r.id != pinned) {
        by_image.entry(report.image_id.as_str()).or_default().push(report);
    }
    by_image
}

/// The DescribeImageUsageReports calls of each poll since `since`: a poll is a burst of calls, a
/// second from the next. The first and last bursts may be cut; every one between is a whole poll.
fn list_calls_per_poll(sim: &Simulator, since: Instant) -> Vec<usize> {
    calls_per_poll(sim, LIST, since)
}

/// The calls of `operation` in each poll (that made any) since `since`.
fn calls_per_poll(sim: &Simulator, operation: &str, since: Instant) -> Vec<usize> {
    let calls: Vec<Instant> = sim.request_times(operation).into_iter().filter(|t| *t > since).collect();
    let mut bursts: Vec<usize> = Vec::new();
    for (i, t) in calls.iter().enumerate() {
        if i == 0 || t.duration_since(calls[i - 1]) > Duration::from_millis(400) {
            bursts.push(0);
        }
        if let Some(last) = bursts.last_mut() {
            *last += 1;
        }
    }
    bursts
}

async fn reload(exporter: &Exporter, config: &str) {
    std::fs::write(exporter.config_path(), config).expect("write config");
    let (status, body) = common::http_post(exporter.addr, "/-/reload").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_own_reports_are_deleted_and_other_reports_stay() {
    let running = simulator(3, 3, Duration::from_millis(500)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    let theirs: BTreeSet<String> = sim.reports().into_iter().map(|r| r.id).collect();
    assert!(theirs.len() >= 9, "three or more reports per image made outside the exporter");

    // max_age 2s: each image gets a new report every few seconds.
    let churn = |pin: &str| {
        let config = config_for(&images, "poll_interval: 1s\nreports:\n  max_age: 2s");
        if pin.is_empty() { config } else { format!("{config}    report_ids: [{pin}]\n") }
    };
    let exporter = Exporter::start_with(&churn(""), &running.endpoint_url(), &["--web.enable-lifecycle"]);
    let e = exporter
        .scrape_until(WAIT, "the exporter's reports to serve", |e| {
            let own: BTreeSet<String> = sim.reports().into_iter().filter(ours).map(|r| r.id).collect();
            let serving = serving_reports(e);
            serving.len() == images.len() && serving.values().all(|id| own.contains(id))
        })
        .await;

    // Pin the exporter's report of the first image, as if someone wanted to keep it.
    let pinned = serving_reports(&e)[&images[0]].clone();
    reload(&exporter, &churn(&pinned)).await;
    let deleted_before = deleted(&exporter.scrape().await);

    // A report that fails in EC2 goes too, once its refresh window (2 s) is over.
    let failed = wait_for_reports(sim, "a pending report", |reports| {
        reports.iter().any(|r| ours(r) && r.image_id == images[2] && r.state == ReportState::Pending)
    })
    .await
    .into_iter()
    .find(|r| ours(r) && r.image_id == images[2] && r.state == ReportState::Pending)
    .map(|r| r.id)
    .expect("found above");
    sim.fail_report(&failed, "Internal error: injected by the test");

    // Two refreshes of every image later, the old reports were deleted as they went; no image
    // ever piled up more than its serving report, one being built, and one about to go.
    let deadline = Instant::now() + WAIT;
    loop {
        let reports = sim.reports();
        for (image, own) in own_by_image(&reports, &pinned) {
            let live = own.iter().filter(|r| !matches!(r.state, ReportState::Error(_))).count();
            assert!(live <= 3, "{image} has {live} reports of the exporter: {own:#?}");
        }
        let e = exporter.scrape().await;
        if deleted(&e) >= deleted_before + 2.0 * images.len() as f64 && reports.iter().all(|r| r.id != failed) {
            break;
        }
        assert!(Instant::now() < deadline, "superseded reports were not deleted; log:\n{}", exporter.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop refreshing: every image settles on its newest report.
    reload(&exporter, &churn(&pinned).replace("max_age: 2s", "max_age: 1h")).await;
    let reports = wait_for_reports(sim, "one report of the exporter per image", |reports| {
        let own = own_by_image(reports, &pinned);
        own.len() == images.len()
            && own.values().all(|r| r.len() == 1 && r[0].state == ReportState::Available)
            && reports.iter().all(|r| r.state != ReportState::Pending)
    })
    .await;
    let left: BTreeSet<String> = reports.iter().map(|r| r.id.clone()).collect();
    assert!(theirs.is_subset(&left), "reports made outside the exporter stay");
    assert!(left.contains(&pinned), "a pinned report stays, although newer ones replaced it");
    assert_eq!(left.len(), theirs.len() + 1 + images.len(), "{reports:#?}");

    let newest: BTreeMap<String, String> =
        own_by_image(&reports, &pinned).into_iter().map(|(image, own)| (image.to_owned(), own[0].id.clone())).collect();
    let e = exporter.scrape_until(WAIT, "the newest reports to serve", |e| serving_reports(e) == newest).await;
    assert_ne!(newest[&images[0]], pinned, "the pinned report no longer serves");
    assert_eq!(scraped_usage(&e), truth(sim).0);
    assert!(images.iter().all(|i| e.value("ami_usage_image_poll_success", &[("image_id", i)]) == Some(1.0)));
    let served = sim.request_counts();
    assert_eq!(served.get(DELETE).copied().unwrap_or(0) as f64, deleted(&e), "{served:?}");
    assert_eq!(e.sum("ami_usage_api_errors_total", &[("operation", DELETE)]), 0.0);
}

/// An upgrade: a week of reports made without deleting, then the exporter that deletes them. It
/// clears them in its first polls, and from then on a poll lists each batch of 200 images in
/// one call, and calls nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_costs_one_list_call_per_200_images() {
    let images_count = 210;
    let running = simulator(images_count, 1, Duration::from_millis(500)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    // One available report per image, and a failed one on every third.
    let theirs = sim.reports().len();
    // A page holds 500 reports: 200 images with 2 or 3 reports each fit, with 4 or 5 they do not.
    let keeping = config_for(
        &images,
        "poll_interval: 1s\naws:\n  page_size: 500\nreports:\n  max_age: 2s\n  delete_superseded: false",
    );
    let started = Instant::now();
    let mut old = Exporter::start(&keeping, &running.endpoint_url());
    wait_for_reports(sim, "three reports of the exporter per image", |reports| {
        let own = own_by_image(reports, "");
        own.len() == images.len()
            && own.values().all(|r| r.iter().filter(|r| r.state == ReportState::Available).count() >= 3)
    })
    .await;
    assert!(old.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let per_poll = images_count.div_ceil(200);
    let before = list_calls_per_poll(sim, started);
    // The busiest poll, not the second to last: on a loaded machine the pages of one poll can be
    // more than a burst gap apart, which splits its burst in two.
    assert!(
        before.iter().max().is_some_and(|n| *n > per_poll),
        "with every report kept, a poll needs more pages than batches: {before:?}"
    );
    assert_eq!(sim.request_counts().get(DELETE), None, "delete_superseded: false deletes nothing");
    let own_before = sim.reports().iter().filter(|r| ours(r)).count();
    let creates_before = sim.request_counts().get(CREATE).copied();

    let config = config_for(&images, "poll_interval: 1s\naws:\n  page_size: 500\nreports:\n  max_age: 1h");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    let reports = wait_for_reports(sim, "the old reports to be deleted", |reports| {
        let own = own_by_image(reports, "");
        own.len() == images.len()
            && own.values().all(|r| r.len() == 1 && r[0].state == ReportState::Available)
            && reports.iter().all(|r| r.state != ReportState::Pending)
    })
    .await;
    let steady_from = Instant::now();
    assert_eq!(reports.iter().filter(|r| !ours(r)).count(), theirs, "the other reports stay");
    let e = exporter
        .scrape_until(WAIT, "the deletions to be counted", |e| deleted(e) == (own_before - images_count) as f64)
        .await;
    let start = polls(&e);
    let e = exporter.scrape_until(WAIT, "five more polls", |e| polls(e) >= start + 5.0).await;
    assert_eq!(scraped_usage(&e), truth(sim).0);
    assert_eq!(sim.request_counts().get(CREATE).copied(), creates_before, "no report was due");

    let bursts = list_calls_per_poll(sim, steady_from);
    let whole = &bursts[1..bursts.len().saturating_sub(1).max(1)];
    assert!(whole.len() >= 3, "polls seen: {bursts:?}");
    assert!(whole.iter().all(|n| *n == per_poll), "{LIST} calls per poll: {bursts:?}, expected {per_poll}");
    for operation in [ENTRIES, CREATE, DELETE] {
        let calls = sim.request_times(operation).into_iter().filter(|t| *t > steady_from).count();
        assert_eq!(calls, 0, "{operation} called in the steady state");
    }
}

/// 200 new reports and four request slots: four entry calls of 50 reports, not one call of 200
/// whose pages would follow one another; ten reports are too few to split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_reads_entries_in_one_call_per_request_slot() {
    for (images, slots, calls) in [(200, 4, 4), (200, 1, 1), (10, 4, 1)] {
        let running = simulator(images, 1, Duration::from_secs(60)).await;
        let sim = &running.sim;
        let config = config_for(
            &sim.image_ids(),
            &format!("poll_interval: 1h\naws:\n  max_concurrent_requests: {slots}\nreports:\n  create: false"),
        );
        let exporter = Exporter::start(&config, &running.endpoint_url());
        exporter.wait_ready().await;
        let e = exporter.scrape().await;
        assert_eq!(scraped_usage(&e), truth(sim).0);
        let served = sim.request_counts();
        // Each call's entries fit in one page (1000), so calls and pages are the same here.
        assert_eq!(served.get(ENTRIES), Some(&calls), "{images} images, {slots} slots: {served:?}");
        assert_eq!(served.get(LIST), Some(&1), "up to 200 images: one list call, whatever the slots");
    }
}

fn all_fresh(e: &common::Exposition, images: &[String]) -> bool {
    images.iter().all(|i| e.value("ami_usage_image_poll_success", &[("image_id", i)]) == Some(1.0))
}

/// Scrapes until `done`, asserting on every scrape that no image was marked failed.
async fn scrape_fresh_until(
    exporter: &Exporter,
    images: &[String],
    what: &str,
    done: impl Fn(&common::Exposition) -> bool,
) -> common::Exposition {
    let deadline = Instant::now() + WAIT;
    loop {
        let e = exporter.scrape().await;
        assert!(all_fresh(&e, images), "an image was marked failed:\n{e:?}");
        if done(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "no {what} in time; log:\n{}", exporter.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without the permission, deleting pauses for a doubling interval instead of failing in every
/// poll, and reading goes on: no image is marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_backs_off_and_fails_no_image() {
    let running = simulator(2, 1, Duration::from_millis(300)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    sim.add_fault(FaultRule::new(Fault::Unauthorized).on(DELETE));
    let started = Instant::now();
    let config = config_for(&images, "poll_interval: 1s\nreports:\n  max_age: 2s");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    scrape_fresh_until(&exporter, &images, "14 polls", |e| polls(e) >= 14.0).await;
    let refused = |e: &common::Exposition| {
        e.sum("ami_usage_api_errors_total", &[("operation", DELETE), ("code", "UnauthorizedOperation")])
    };
    // The simulator counts a request when it arrives, the exporter its refusal when it is
    // answered: between polls the two agree.
    let served = || sim.request_counts().get(DELETE).copied().unwrap_or(0) as f64;
    let e = exporter.scrape_until(WAIT, "every refusal counted", |e| refused(e) == served()).await;
    let attempts = calls_per_poll(sim, DELETE, started);
    // Waits of 1, 2, 4, 8 s after each refusal: at most 4 or 5 polls of 14 try, and each stops
    // after the first refusals (at most one per request slot).
    assert!(!attempts.is_empty() && attempts.len() <= 5, "polls that tried to delete: {attempts:?}");
    assert!(attempts.iter().all(|n| *n <= 4), "{attempts:?}");
    assert_eq!(deleted(&e), 0.0);
    assert!(exporter.log().contains("allow ec2:DeleteImageUsageReport"), "{}", exporter.log());
}

/// A deletion that fails otherwise (here EC2 errors; with two replicas, the other one may have
/// deleted the report first) is tried again at the next poll; the image is not marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_is_retried_at_the_next_poll() {
    let running = simulator(2, 1, Duration::from_millis(300)).await;
    let sim = &running.sim;
    let images = sim.image_ids();
    sim.add_fault(FaultRule::new(Fault::InternalError).on(DELETE).with_limit(2));
    let config = config_for(&images, "poll_interval: 1s\nreports:\n  max_age: 2s\naws:\n  max_attempts: 1");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    let e = scrape_fresh_until(&exporter, &images, "4 deletions", |e| deleted(e) >= 4.0).await;
    assert_eq!(e.sum("ami_usage_api_errors_total", &[("operation", DELETE), ("code", "InternalError")]), 2.0);
    assert!(exporter.log().contains("cannot delete some superseded usage reports"), "{}", exporter.log());
    // The failed ones were retried: nothing of the exporter's is left but the serving report and
    // perhaps one being built, or one superseded since the last poll.
    let own = own_by_image(&sim.reports(), "").into_values().map(|r| r.len()).max().unwrap_or(0);
    assert!(own <= 3, "{:#?}", sim.reports());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_checks_the_delete_permission() {
    let running = simulator(2, 1, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Unauthorized).on(DELETE));
    let check = |extra: &str| {
        let config = TempFile::new(&config_for(&sim.image_ids(), extra));
        let out = aws_command(&running.endpoint_url())
            .arg("--check-permissions")
            .arg(format!("--config.file={}", config.0.display()))
            .output()
            .expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, stdout) = check("poll_interval: 1h");
    assert_eq!(code, Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.contains("ec2:DeleteImageUsageReport")).unwrap_or_default();
    assert!(line.contains("MISSING (UnauthorizedOperation)"), "{stdout}");
    assert!(stdout.lines().filter(|l| l.contains("ec2:")).all(|l| l.contains("allowed") || l == line), "{stdout}");

    for extra in ["reports:\n  delete_superseded: false", "reports:\n  create: false"] {
        let (code, stdout) = check(extra);
        assert_eq!(code, Some(0), "{extra}: {stdout}");
        assert!(!stdout.contains("DeleteImageUsageReport"), "{extra}: not needed, not checked: {stdout}");
    }
    sim.clear_faults();
    let (code, stdout) = check("poll_interval: 1h");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("ec2:DeleteImageUsageReport") && l.contains("allowed")), "{stdout}");
    assert_eq!(sim.reports().len(), 3, "a dry run deletes nothing");
}
