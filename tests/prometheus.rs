//! End to end with a real Prometheus server (Debian's `prometheus` package): the simulator, the
//! exporter and Prometheus on loopback. What Prometheus stores must equal the simulator's ground
//! truth, the project's alert rules must load, and the unexpected-use alert must fire for a
//! planted account. `promtool check metrics` must find nothing wrong with the exposition. Every
//! query of the Grafana dashboard, its template variables first, must parse and return data for a
//! dataset that plants something for every panel.
//!
//! Without the binaries the tests say so and pass, unless `AMI_USAGE_REQUIRE_PROMTOOL=1` (CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Exporter, Usage, WAIT, config_for, http_get, scraped_usage, simulator, truth};

/// Whether `tool` is installed; fails the test when CI requires it.
fn installed(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(
            std::env::var("AMI_USAGE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "{tool} is required (apt-get install prometheus)"
        );
        eprintln!("skipped: {tool} is not installed (apt-get install prometheus)");
    }
    found
}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("ami-usage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: ScratchDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The project's alert rules with every `for:` set to 0s, so that alerts fire within a test.
fn rules_without_delay(from: &Path, to: &Path) {
    let rules = std::fs::read_to_string(from).expect("deploy/prometheus/rules.yml");
    let fast: String = rules
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 0s\n", &line[..line.len() - line.trim_start().len()]),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::write(to, fast).expect("write rules");
}

fn start_prometheus(exporter: &Exporter) -> Prometheus {
    start_prometheus_on(&[exporter])
}

/// Prometheus scraping every exporter in `exporters` as one job.
fn start_prometheus_on(exporters: &[&Exporter]) -> Prometheus {
    let dir = ScratchDir::new("prometheus");
    let rules = dir.0.join("rules.yml");
    rules_without_delay(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/rules.yml")), &rules);
    let targets: Vec<String> = exporters.iter().map(|e| format!("'{}'", e.addr)).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: ami-usage\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    );
    let config_path = dir.0.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    // The free port may be taken again before Prometheus binds it (other processes start beside
    // it): a Prometheus that exits is started again on another port, a bounded number of times.
    for attempt in 0..5 {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().expect("addr");
        let mut command = Command::new("prometheus");
        common::die_with_parent(&mut command);
        let mut child = command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join(format!("data-{attempt}")).display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Prometheus { child, addr, _dir: dir };
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("prometheus did not start in 5 attempts");
}

/// `text` encoded for a URL's query string, as a browser encodes a form.
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One call of Prometheus's HTTP API: the HTTP status and the answer (`status`, `data` or
/// `errorType` and `error`), or Null when the body is not JSON.
async fn api(prometheus: &Prometheus, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(prometheus.addr, path).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Queries Prometheus's HTTP API until `done` accepts the answer's `data`.
async fn query_until(
    prometheus: &Prometheus,
    path: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let (status, answer) = api(prometheus, path).await;
        if status == 200 && done(&answer["data"]) {
            return answer["data"].clone();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last answer {status}: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn series_of(data: &serde_json::Value) -> Usage {
    let mut usage = BTreeMap::new();
    for series in data["result"].as_array().into_iter().flatten() {
        let label = |name: &str| series["metric"][name].as_str().unwrap_or_default().to_owned();
        let value = series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        usage.insert((label("image_id"), label("account_id"), label("resource_type")), value);
    }
    usage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_the_ground_truth_and_fires_the_unexpected_use_alert() {
    if !installed("prometheus") {
        return;
    }
    let running = simulator(4, 8, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let (expected, _) = truth(sim);
    // Every account is expected but one that has usage: the planted one.
    let planted = expected.keys().map(|(_, account, _)| account.clone()).next().expect("some usage");
    let allowed: Vec<String> =
        sim.account_ids().into_iter().filter(|a| *a != planted).map(|a| format!("'{a}'")).collect();
    // Facts off: the image-life alerts have a test of their own below.
    let extra = format!("poll_interval: 1s\nimages:\n  facts: false\naccounts:\n  expected: [{}]", allowed.join(", "));
    let exporter = Exporter::start(&config_for(&sim.image_ids(), &extra), &running.endpoint_url());
    exporter.wait_ready().await;
    assert_eq!(scraped_usage(&exporter.scrape().await), expected);

    let prometheus = start_prometheus(&exporter);
    let stored = query_until(&prometheus, "/api/v1/query?query=ami_usage_resources", "the usage series", |d| {
        d["result"].as_array().is_some_and(|r| r.len() == expected.len())
    })
    .await;
    assert_eq!(series_of(&stored), expected, "Prometheus holds exactly the simulator's truth");

    let rules = query_until(&prometheus, "/api/v1/rules", "the rules", |d| {
        d["groups"].as_array().is_some_and(|g| !g.is_empty())
    })
    .await;
    let group = &rules["groups"][0];
    assert_eq!(group["name"], "ami-usage-exporter");
    assert!(
        group["rules"]
            .as_array()
            .is_some_and(|r| r.iter().all(|rule| rule["health"] == "ok" || rule["health"] == "unknown"))
    );

    let alerts = query_until(&prometheus, "/api/v1/alerts", "the unexpected-use alert", |d| {
        d["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| a["labels"]["alertname"] == "AmiUsageUnexpectedAccount" && a["state"] == "firing")
        })
    })
    .await;
    let accounts: Vec<&str> = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == "AmiUsageUnexpectedAccount")
        .filter_map(|a| a["labels"]["account_id"].as_str())
        .collect();
    assert!(
        !accounts.is_empty() && accounts.iter().all(|a| *a == planted),
        "alerts for {accounts:?}, planted {planted}"
    );
    let firing = firing_names(&alerts);
    assert!(
        firing.iter().all(|name| *name == "AmiUsageUnexpectedAccount"),
        "a healthy exporter fires no other alert: {firing:?}"
    );
}

/// The images each image-life alert must name, from the simulator's ground truth: usage per image
/// (references are not enabled, so only cross-account usage counts) and DescribeImages' facts.
/// What the image-life rules of deploy/prometheus/rules.yml see in an image's facts at `now`:
/// deprecated already, deprecated within 14 days, idle for 90 days (its last launch, or its
/// creation when it never launched).
struct Life {
    deprecated: bool,
    soon: bool,
    idle: bool,
}

impl Life {
    fn of(f: &ec2_sim::ImageFacts, now: std::time::SystemTime) -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        let since = f.last_launched_time.unwrap_or(f.creation_date);
        Self {
            deprecated: f.deprecation_time.is_some_and(|t| t <= now),
            soon: f.deprecation_time.is_some_and(|t| t > now && t <= now + days(14)),
            idle: now.duration_since(since).is_ok_and(|age| age > days(90)),
        }
    }
}

fn planted_image_life_alerts(sim: &ec2_sim::Simulator) -> BTreeMap<&'static str, Vec<String>> {
    let (usage, _) = truth(sim);
    let used = |image: &str| usage.iter().any(|((i, _, _), n)| i == image && *n > 0.0);
    let now = std::time::SystemTime::now();
    let mut planted: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for f in sim.image_facts() {
        let available = f.state == "available";
        let Life { deprecated, soon, idle } = Life::of(&f, now);
        let alerts = [
            ("AmiUsageDeprecatedImageInUse", available && deprecated && used(&f.image_id)),
            ("AmiUsageImageDeprecationSoon", available && soon && used(&f.image_id)),
            ("AmiUsageDisabledImageInUse", f.state == "disabled" && used(&f.image_id)),
            ("AmiUsageRetirementCandidate", available && idle && !used(&f.image_id)),
        ];
        for (alert, fires) in alerts {
            if fires {
                planted.entry(alert).or_default().push(f.image_id.clone());
            }
        }
    }
    planted
}

/// The image IDs of the firing alerts, by alert.
fn firing_by_alert(data: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    let mut firing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for alert in data["alerts"].as_array().into_iter().flatten().filter(|a| a["state"] == "firing") {
        let name = alert["labels"]["alertname"].as_str().unwrap_or_default().to_owned();
        let image = alert["labels"]["image_id"].as_str().unwrap_or_default().to_owned();
        firing.entry(name).or_default().push(image);
    }
    for images in firing.values_mut() {
        images.sort();
    }
    firing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_life_alerts_fire_exactly_for_the_planted_images() {
    if !installed("prometheus") {
        return;
    }
    // Ten images: deprecated ones (past, within 14 days, months ahead), a disabled one, one never
    // launched and unused (see ec2-sim's README, "Image facts").
    let running = simulator(10, 8, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let planted = planted_image_life_alerts(sim);
    for alert in ["AmiUsageDeprecatedImageInUse", "AmiUsageRetirementCandidate"] {
        assert!(planted.contains_key(alert), "the dataset plants {alert}: {planted:?}");
    }
    let exporter = Exporter::start(&config_for(&sim.image_ids(), "poll_interval: 1s"), &running.endpoint_url());
    exporter.wait_ready().await;
    let prometheus = start_prometheus(&exporter);
    let expected: BTreeMap<String, Vec<String>> = planted
        .into_iter()
        .map(|(alert, mut images)| {
            images.sort();
            (alert.to_owned(), images)
        })
        .collect();
    let alerts =
        query_until(&prometheus, "/api/v1/alerts", "the image-life alerts", |d| firing_by_alert(d) == expected).await;
    assert_eq!(
        firing_by_alert(&alerts),
        expected,
        "each alert names exactly the planted images, and nothing else fires"
    );
}

/// The firing alerts' names.
fn firing_names(data: &serde_json::Value) -> BTreeSet<String> {
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_add_up_in_prometheus_and_a_stopped_shard_fires_the_sharding_alert() {
    if !installed("prometheus") {
        return;
    }
    let running = simulator(12, 6, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let (expected, _) = truth(sim);
    let config = config_for(&sim.image_ids(), "poll_interval: 1s\nimages:\n  facts: false");
    let mut shards: Vec<Exporter> = (0..3)
        .map(|i| {
            let shard = format!("--shard={i}");
            Exporter::start_with(&config, &running.endpoint_url(), &[shard.as_str(), "--total-shards=3"])
        })
        .collect();
    for shard in &shards {
        shard.wait_ready().await;
    }
    let prometheus = start_prometheus_on(&shards.iter().collect::<Vec<_>>());
    let total: f64 = expected.values().sum();
    let query = "/api/v1/query?query=sum(ami_usage_resources)";
    query_until(&prometheus, query, "the usage of every shard", |d| {
        d["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(total)
    })
    .await;
    let stored = query_until(&prometheus, "/api/v1/query?query=ami_usage_resources", "the usage series", |d| {
        d["result"].as_array().is_some_and(|r| r.len() == expected.len())
    })
    .await;
    assert_eq!(series_of(&stored), expected, "the three shards hold the ground truth, once");
    // Let the rules run a few times on the whole set: neither sharding alert fires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, alerts) = api(&prometheus, "/api/v1/alerts").await;
    let firing = firing_names(&alerts["data"]);
    assert!(!firing.iter().any(|n| n.starts_with("AmiUsageShard")), "all shards up: {firing:?}");

    let stopped = shards.remove(1);
    drop(stopped);
    let alerts = query_until(&prometheus, "/api/v1/alerts", "the missing-shard alert", |d| {
        firing_names(d).contains("AmiUsageShardsMissing")
    })
    .await;
    assert!(!firing_names(&alerts).contains("AmiUsageShardingMismatch"), "the totals still agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_no_problem_in_the_exposition() {
    if !installed("promtool") {
        return;
    }
    let running = simulator(3, 5, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let extra = "poll_interval: 1h\naccounts:\n  expected: ['000000000000']\n  names: {'000000000000': nobody}";
    let exporter = Exporter::start(&config_for(&sim.image_ids(), extra), &running.endpoint_url());
    exporter.wait_ready().await;
    let (status, body) = exporter.get("/metrics").await;
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write metrics");
    let out = promtool.wait_with_output().expect("promtool finishes");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}

/// What `plant_for_every_panel` planted, as the panels must show it.
struct Planted {
    /// The account outside `accounts.expected` that uses images.
    unexpected_account: String,
    /// The accounts of `accounts.expected`.
    expected_accounts: Vec<String>,
    /// Available, unused, unreferenced images without a launch for 90 days.
    retirement_candidates: BTreeSet<String>,
    /// Deprecated (and available) or disabled images that are used or referenced.
    deprecated_or_disabled_in_use: BTreeSet<String>,
}

/// Gives every panel of the dashboard something to show, on top of the dataset of ten images
/// (usage, reports, a deprecated and a disabled image that are used, references: see ec2-sim's
/// README): an image that is a retirement candidate for certain (its last launch moved 200 days
/// back), an account outside the expected ones, and throttled calls in eu-west-1 that the SDK
/// retries, so that the API errors have a series.
fn plant_for_every_panel(sim: &ec2_sim::Simulator) -> Planted {
    let (usage, _) = truth(sim);
    let references = sim.reference_counts(&ec2_sim::ReferenceQuery::all());
    let in_use = |image: &str| {
        usage.iter().any(|((i, _, _), n)| i == image && *n > 0.0)
            || references.iter().any(|((i, _), n)| i == image && *n > 0)
    };
    let now = std::time::SystemTime::now();
    let facts = sim.image_facts();
    let unused = facts
        .iter()
        .find(|f| f.state == "available" && !in_use(&f.image_id))
        .expect("the dataset has an available image nothing uses or references (index 3)");
    sim.set_last_launched_time(&unused.image_id, Some(now - Duration::from_secs(200 * 86_400)));
    let mut retirement_candidates = BTreeSet::new();
    let mut deprecated_or_disabled_in_use = BTreeSet::new();
    for f in sim.image_facts() {
        let Life { deprecated, idle, .. } = Life::of(&f, now);
        if f.state == "available" && idle && !in_use(&f.image_id) {
            retirement_candidates.insert(f.image_id.clone());
        }
        if (f.state == "disabled" || (f.state == "available" && deprecated)) && in_use(&f.image_id) {
            deprecated_or_disabled_in_use.insert(f.image_id.clone());
        }
    }
    assert!(retirement_candidates.contains(&unused.image_id), "{retirement_candidates:?}");
    let state_of = |image: &str| facts.iter().find(|f| f.image_id == image).map(|f| f.state.clone());
    let states: BTreeSet<Option<String>> = deprecated_or_disabled_in_use.iter().map(|i| state_of(i)).collect();
    assert!(
        states.contains(&Some("disabled".to_owned())) && states.contains(&Some("available".to_owned())),
        "the dataset has a deprecated and a disabled image in use: {deprecated_or_disabled_in_use:?}"
    );
    let unexpected_account = usage.keys().map(|(_, account, _)| account.clone()).next().expect("some usage");
    let expected_accounts = sim.account_ids().into_iter().filter(|a| *a != unexpected_account).collect();
    // Every fourth DescribeImageUsageReports call in eu-west-1 is throttled; its retry succeeds.
    sim.add_fault(
        ec2_sim::FaultRule::new(ec2_sim::Fault::Throttle)
            .on("DescribeImageUsageReports")
            .in_region("eu-west-1")
            .with_share(0.25),
    );
    Planted { unexpected_account, expected_accounts, retirement_candidates, deprecated_or_disabled_in_use }
}

/// Evaluates a template variable's `label_values(selector, label)` query as Grafana does, through
/// Prometheus's label values API; `known` holds the values of the variables before it.
async fn variable_values(prometheus: &Prometheus, name: &str, query: &str, known: &[(&str, String)]) -> Vec<String> {
    let (selector, label) = common::dashboard::label_values(query)
        .unwrap_or_else(|| panic!("variable {name}: {query:?} is not label_values(...): the test cannot evaluate it"));
    let path = match selector {
        Some(selector) => {
            let selector = common::dashboard::interpolate(selector, known);
            format!("/api/v1/label/{label}/values?match[]={}", encode(&selector))
        }
        None => format!("/api/v1/label/{label}/values"),
    };
    let what = format!("the values of ${name} ({query})");
    let data = query_until(prometheus, &path, &what, |d| d.as_array().is_some_and(|a| !a.is_empty())).await;
    let mut values: Vec<String> =
        data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    values.sort();
    values
}

/// One evaluation of a dashboard query: instant at the current time, or over the last minutes.
#[derive(Clone, Copy, Debug)]
enum Evaluation {
    Instant,
    Range,
}

/// `expr` evaluated through Prometheus's query API, as Grafana does: the answer's `data`, or the
/// error Prometheus gave.
async fn evaluate(prometheus: &Prometheus, expr: &str, how: Evaluation) -> Result<serde_json::Value, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let path = match how {
        Evaluation::Instant => format!("/api/v1/query?query={}&time={now:.3}", encode(expr)),
        Evaluation::Range => {
            format!("/api/v1/query_range?query={}&start={:.3}&end={now:.3}&step=5", encode(expr), now - 180.0)
        }
    };
    let (status, answer) = api(prometheus, &path).await;
    if status == 200 && answer["status"] == "success" {
        Ok(answer["data"].clone())
    } else {
        Err(format!("HTTP {status}: {answer}"))
    }
}

/// A label's values over the series of a query's result.
fn label_set(data: &serde_json::Value, label: &str) -> BTreeSet<String> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| series["metric"][label].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_for_the_planted_dataset() {
    if !installed("prometheus") {
        return;
    }
    let running = simulator(10, 8, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let planted = plant_for_every_panel(sim);
    let regions = ["eu-west-1", "us-east-1"];
    let expected: Vec<String> = planted.expected_accounts.iter().map(|a| format!("'{a}'")).collect();
    let extra =
        format!("poll_interval: 1s\naccounts:\n  expected: [{}]\nreferences:\n  enabled: true", expected.join(", "));
    let exporter =
        Exporter::start(&common::config_for_regions(&regions, &sim.image_ids(), &extra), &running.endpoint_url());
    exporter.wait_ready().await;
    let families = [
        "ami_usage_resources",
        "ami_usage_unexpected_resources",
        "ami_usage_report_info",
        "ami_usage_image_info",
        "ami_usage_image_last_launched_timestamp_seconds",
        "ami_usage_image_deprecation_timestamp_seconds",
        "ami_usage_references",
        "ami_usage_api_errors_total",
    ];
    exporter
        .scrape_until(WAIT * 2, "every family the dashboard shows, in both Regions", |e| {
            let in_region =
                |f: &str, r: &str| e.metric(f).iter().any(|(l, _)| l.get("aws_region").is_some_and(|v| v == r));
            families.iter().all(|f| in_region(f, "eu-west-1"))
                && families.iter().filter(|f| !f.starts_with("ami_usage_api_errors")).all(|f| in_region(f, "us-east-1"))
        })
        .await;

    let prometheus = start_prometheus(&exporter);
    // Enough scrapes (one a second) that rate() and increase() have two points and more.
    query_until(&prometheus, "/api/v1/query?query=count_over_time(ami_usage_polls_total%5B5m%5D)", "5 scrapes", |d| {
        d["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|n| n >= 5.0)
    })
    .await;

    // The template variables, each with the values of those before it, as Grafana fills them.
    let dashboard = common::dashboard::load();
    let mut every_value: Vec<(&str, String)> = Vec::new();
    let mut all: Vec<(&str, String)> = Vec::new();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for variable in dashboard["templating"]["list"].as_array().expect("templating.list") {
        let name = variable["name"].as_str().expect("a variable has a name");
        match variable["type"].as_str() {
            Some("datasource") => continue,
            Some("query") => {}
            other => panic!("variable {name} of type {other:?}: the test does not know how Grafana fills it in"),
        }
        let values =
            variable_values(&prometheus, name, common::dashboard::variable_query(variable), &every_value).await;
        let alternation = common::dashboard::multi_value(&values);
        let all_value = variable["allValue"].as_str().filter(|v| variable["includeAll"] == true && !v.is_empty());
        every_value.push((name, alternation.clone()));
        all.push((name, all_value.map_or(alternation, str::to_owned)));
        found.insert(name.to_owned(), values);
    }
    let mut images = sim.image_ids();
    images.sort();
    assert_eq!(found.get("aws_region"), Some(&regions.map(str::to_owned).to_vec()), "$aws_region");
    assert_eq!(found.get("image_id"), Some(&images), "$image_id");

    // Every query of every panel, with every value selected (a regex alternation) and with "All"
    // (the variables' allValue): it parses and has data, now and over the last minutes.
    let built_ins = common::dashboard::built_ins();
    let queries = common::dashboard::queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:?}");
    let mut pending = Vec::new();
    for (selection, variables) in [("every value selected", &every_value), ("All", &all)] {
        let variables: Vec<(&str, String)> = variables.iter().cloned().chain(built_ins.iter().cloned()).collect();
        for query in &queries {
            let expr = common::dashboard::interpolate(&query.expr, &variables);
            assert!(
                !expr.contains('$'),
                "panel {:?} {}: a variable the test does not fill in: {expr}",
                query.panel,
                query.ref_id
            );
            for how in [Evaluation::Instant, Evaluation::Range] {
                pending.push((selection, query, expr.clone(), how));
            }
        }
    }
    let mut shown: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut empty = Vec::new();
        for (selection, query, expr, how) in pending {
            let data = evaluate(&prometheus, &expr, how).await.unwrap_or_else(|error| {
                panic!("panel {:?} query {} ({selection}, {how:?}) fails: {error}\n{expr}", query.panel, query.ref_id)
            });
            if let Some(legend) = &query.legend {
                let names: Vec<String> = data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|series| common::dashboard::legend_name(legend, &series["metric"]))
                    .collect();
                let distinct: BTreeSet<&String> = names.iter().collect();
                assert_eq!(
                    distinct.len(),
                    names.len(),
                    "panel {:?} query {} ({selection}, {how:?}): the legend {legend:?} names two series alike: {names:?}",
                    query.panel,
                    query.ref_id
                );
            }
            if data["result"].as_array().is_some_and(|r| !r.is_empty()) {
                if selection == "every value selected" && matches!(how, Evaluation::Instant) {
                    shown.insert((query.panel.clone(), query.ref_id.clone()), data);
                }
            } else {
                empty.push((selection, query, expr, how));
            }
        }
        if empty.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = empty
                .iter()
                .map(|(selection, q, expr, how)| {
                    format!("panel {:?} query {} ({selection}, {how:?}): {expr}", q.panel, q.ref_id)
                })
                .collect();
            panic!("dashboard queries without data for the planted dataset:\n{}", names.join("\n"));
        }
        pending = empty;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The image-life panels and the unexpected use name exactly what was planted.
    let panel = |title: &str| {
        shown.get(&(title.to_owned(), "A".to_owned())).unwrap_or_else(|| panic!("no panel {title:?} with a query A"))
    };
    assert_eq!(label_set(panel("Retirement candidates"), "image_id"), planted.retirement_candidates);
    assert_eq!(
        label_set(panel("Deprecated or disabled, still used"), "image_id"),
        planted.deprecated_or_disabled_in_use
    );
    assert_eq!(label_set(panel("Unexpected use"), "account_id"), BTreeSet::from([planted.unexpected_account.clone()]));
    assert_eq!(label_set(panel("Unexpected use"), "aws_region"), regions.iter().map(|r| (*r).to_owned()).collect());
    assert_eq!(label_set(panel("Images"), "image_id"), images.iter().cloned().collect(), "every watched image");
    assert_eq!(
        label_set(panel("Own references by resource type"), "resource_type"),
        ec2_sim::REFERENCE_RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        "every resource type, as references.resource_types is all"
    );
}
