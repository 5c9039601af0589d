//! The README's first command, `cargo run --features demo --bin ami-usage-demo`, as a user runs
//! it (on an ephemeral loopback port instead of 10264): the binary starts, prints where to scrape,
//! serves the simulator's ground truth, shows the refreshed reports it announces, and stops on
//! SIGTERM. Its simulator lives inside the demo process, so the test builds an identical one (the
//! dataset is deterministic: same seed, same IDs and counts) and takes the ground truth from it.
#![cfg(feature = "demo")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Exposition, collect_lines, die_with_parent, field, http_get, scraped_usage, serving_reports, truth};
use ec2_sim::{DatasetSpec, SimConfig, Simulator};

const DEMO: &str = env!("CARGO_BIN_EXE_ami-usage-demo");

/// The demo's simulator, built the same way as in src/bin/demo.rs.
fn demo_simulator() -> Simulator {
    Simulator::new(SimConfig {
        dataset: DatasetSpec { seed: 42, images: 6, accounts: 12, ..DatasetSpec::default() },
        pending_for: Duration::from_secs(20),
        ..SimConfig::default()
    })
}

/// The demo process; killed when dropped, and with the test process (PR_SET_PDEATHSIG).
struct Demo {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(DEMO);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TMPDIR", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ami-usage-demo");
        let (stdout, stderr) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        collect_lines(child.stdout.take().expect("stdout piped"), &stdout);
        collect_lines(child.stderr.take().expect("stderr piped"), &stderr);
        Self { child, stdout, stderr }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }

    /// Waits (bounded) until `found` returns something from the output so far.
    fn wait_for<T>(&mut self, limit: Duration, what: &str, found: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = found(self) {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the demo exited ({status}) before {what}; {}", self.output());
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; {}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        common::terminate(&mut self.child, limit)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bound address of the exporter's `listening` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("msg=listening"))
        .find_map(|l| field(l, "address").and_then(|a| a.parse::<SocketAddr>().ok()))
}

/// Scrapes until `done` holds, failing the test after `limit`.
async fn scrape_until(
    demo: &Demo,
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = http_get(addr, "/metrics").await;
        if status == 200 {
            let exposition = Exposition::parse(&body);
            if done(&exposition) {
                return exposition;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last scrape:\n{body}\n{}", demo.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn creation_times(e: &Exposition) -> BTreeMap<String, f64> {
    e.metric("ami_usage_report_creation_timestamp_seconds")
        .into_iter()
        .map(|(l, v)| (l["image_id"].clone(), v))
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_ground_truth_then_the_refreshed_reports() {
    let started = unix_now();
    let mut demo = Demo::start(&["--web.listen-address=127.0.0.1:0"]);
    let addr = demo.wait_for(Duration::from_secs(30), "the listening log line", |d| listening_address(&d.stderr()));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // The printed addresses are the bound ones, not the flag's text.
    let stdout = demo.wait_for(Duration::from_secs(10), "the printed addresses", |d| {
        let out = d.stdout();
        out.contains("Ctrl-C stops").then_some(out)
    });
    assert!(stdout.contains(&format!("Metrics:    http://{addr}/metrics\n")), "{stdout}");
    assert!(stdout.contains(&format!("targets: ['{addr}']")), "{stdout}");
    assert!(!stdout.contains("127.0.0.1:0"), "{stdout}");
    let config_file = stdout
        .split("exporter config in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no config path printed: {stdout}"));
    assert!(config_file.is_file(), "{}", config_file.display());

    let sim = demo_simulator();
    let (expected, old_reports) = truth(&sim);
    let images = sim.image_ids();
    assert_eq!(images.len(), 6);
    assert!(stdout.contains("with 6 images"), "{stdout}");
    assert!(!expected.is_empty() && old_reports.len() >= 5, "the sample data has usage");

    // The first poll: the sample reports, equal to the ground truth series by series.
    let first = scrape_until(&demo, addr, Duration::from_secs(30), "usage numbers", |e| {
        !e.metric("ami_usage_resources").is_empty()
    })
    .await;
    assert_eq!(scraped_usage(&first), expected, "the sample reports' usage");
    // Every image has sample reports; the truth names the serving report of those with usage
    // (the IDs are the same in both simulators; the creation times are relative to their start).
    let reports = serving_reports(&first);
    let mut sorted = images.clone();
    sorted.sort();
    assert_eq!(reports.keys().cloned().collect::<Vec<_>>(), sorted, "every image is served");
    for (image, (report, _)) in &old_reports {
        assert_eq!(reports.get(image), Some(report), "{image}: the newest available sample report serves");
    }
    let old_times = creation_times(&first);
    assert_eq!(old_times.len(), images.len());
    for (image, created) in &old_times {
        assert!(*created < started - 3600.0, "{image}: the sample report is older than max_age (1h)");
    }
    for image in &images {
        let success = first.value("ami_usage_image_poll_success", &[("image_id", image.as_str())]);
        assert_eq!(success, Some(1.0), "{image}");
    }

    // The refresh the demo announces: reports requested on the first poll, pending 20 s, read by
    // the next poll (every 10 s) after that.
    let refreshed = scrape_until(&demo, addr, Duration::from_secs(90), "the refreshed reports", |e| {
        let times = creation_times(e);
        times.len() == old_times.len() && times.iter().all(|(image, t)| old_times.get(image) != Some(t))
    })
    .await;
    for (image, created) in creation_times(&refreshed) {
        assert!(created >= started - 1.0 && created <= unix_now() + 1.0, "{image}: a report of this run ({created})");
    }
    let new_reports = serving_reports(&refreshed);
    assert_eq!(new_reports.len(), reports.len());
    assert!(new_reports.iter().all(|(image, id)| reports.get(image) != Some(id)), "{new_reports:?}");
    assert_eq!(refreshed.sum("ami_usage_reports_created_total", &[]), images.len() as f64, "one report per image");

    // A new report of an image counts the same dataset usage: in the simulator (a fresh report
    // there snapshots the same counts), and on /metrics.
    for image in &images {
        sim.add_report(image);
    }
    assert_eq!(truth(&sim).0, expected, "a new report of the same dataset reports the same usage");
    assert_eq!(scraped_usage(&refreshed), expected, "the refreshed reports' usage");

    let status =
        demo.terminate(Duration::from_secs(15)).unwrap_or_else(|| panic!("SIGTERM ignored; {}", demo.output()));
    assert!(status.success(), "{status}; {}", demo.output());
    assert!(demo.stderr().contains("SIGTERM received"), "{}", demo.output());
    assert!(!config_file.exists(), "the demo removes its configuration file on exit");
}
