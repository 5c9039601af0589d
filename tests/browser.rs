//! The exporter's pages in a real browser: headless Chromium (Debian's `chromium`), driven through
//! Debian's `chromedriver` by the WebDriver client in tests/common/browser.rs, against the
//! simulator and the exporter on loopback. The page must load with no console errors and show what
//! the simulator holds, and its links must lead where they say. The harness itself is proved too:
//! its console catches CSP violations and failed loads, its screenshots are PNGs of the window's
//! size, nothing of the browser outlives it, and docs/screenshot.sh shoots a page for the README.
//!
//! Without chromedriver (or chromium) the tests say "skipped" and pass, unless
//! `AMI_USAGE_REQUIRE_BROWSER=1` (CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::browser::{Browser, WINDOW_WIDTH, find_on_path, png_size, skip_without};
use common::{Exporter, Exposition, TempFile, config_for, config_for_regions, scraped_usage, simulator, truth};
use ec2_sim::RunningSimulator;

/// The simulator and a ready exporter watching all its images (one poll, then quiet).
async fn ready_exporter() -> (RunningSimulator, Exporter) {
    let running = simulator(3, 4, Duration::from_secs(60)).await;
    let config = config_for(&running.sim.image_ids(), "poll_interval: 1h");
    let exporter = Exporter::start(&config, &running.endpoint_url());
    exporter.wait_ready().await;
    (running, exporter)
}

/// Runs the browser part of a test on a blocking thread (the simulator answers on the async
/// workers) and passes its panic on; `None` when the browser is not installed (skipped).
async fn with_browser<T: Send + 'static>(test: impl FnOnce(&Browser) -> T + Send + 'static) -> Option<T> {
    let outcome = tokio::task::spawn_blocking(move || Browser::start().map(|browser| test(&browser))).await;
    outcome.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The rendered text of the page's body.
fn body_text(browser: &Browser) -> String {
    browser.find("body").map(|body| body.text()).unwrap_or_default()
}

/// A figure of the page, as shown (`1,234`).
fn figure(browser: &Browser, css: &str) -> u64 {
    let text = browser.find(css).map(|e| e.text()).unwrap_or_else(|| panic!("no {css}:\n{}", browser.page_source()));
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("{css} is not a number: {text:?}"))
}

/// The image rows of the page: (Region, image ID, total shown, marked unexpected).
fn image_rows(browser: &Browser) -> Vec<(String, String, u64, bool)> {
    browser
        .find_all("tr.image")
        .iter()
        .map(|row| {
            let attribute = |name: &str| row.attribute(name).unwrap_or_default();
            let total = row.find("td.usage").and_then(|td| td.attribute("data-total")).unwrap_or_default();
            let class = attribute("class");
            (
                attribute("data-region"),
                attribute("data-image"),
                total.parse().unwrap_or(u64::MAX),
                class.contains("unexpected"),
            )
        })
        .collect()
}

/// Submits the filter form and waits for the page it leads to.
fn submit_filters(browser: &Browser, expect_in_url: &str) {
    browser.find("form button[type=submit]").expect("the filter button").click();
    browser.wait_until(&format!("a URL with {expect_in_url}"), Duration::from_secs(10), |b| {
        b.current_url().contains(expect_in_url).then_some(())
    });
}

/// The page a person opens first: in Chromium, under its Content-Security-Policy, with no console
/// error, it shows the simulator's ground truth for two Regions of 60 images (two pages of
/// images), marks the unexpected account's use, names the named account, and its filters, typed
/// and clicked as a person would, narrow the list to a Region and then to one image, whose
/// accounts table equals the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_ground_truth_and_its_filters_work() {
    let running = simulator(60, 4, Duration::from_secs(60)).await;
    let (usage, _) = truth(&running.sim);
    let accounts: BTreeSet<String> = usage.keys().map(|(_, account, _)| account.clone()).collect();
    let stranger = accounts.iter().next_back().cloned().expect("accounts");
    let named = accounts.iter().next().cloned().expect("accounts");
    let expected: Vec<String> = accounts.iter().filter(|a| **a != stranger).map(|a| format!("\"{a}\"")).collect();
    let extra = format!(
        "poll_interval: 1h\naccounts:\n  names: {{\"{named}\": payments}}\n  expected: [{}]",
        expected.join(", ")
    );
    let regions = ["eu-west-1", "us-east-1"];
    let exporter =
        Exporter::start(&config_for_regions(&regions, &running.sim.image_ids(), &extra), &running.endpoint_url());
    exporter.wait_ready().await;
    // Per image: its total, and whether the stranger uses it (0 and no for unused images).
    let mut per_image: BTreeMap<String, (u64, bool)> =
        running.sim.image_ids().into_iter().map(|image| (image, (0, false))).collect();
    for ((image, account, _), n) in &usage {
        let entry = per_image.entry(image.clone()).or_default();
        entry.0 += *n as u64;
        entry.1 |= *account == stranger && *n > 0.0;
    }
    let base = format!("http://{}", exporter.addr);
    with_browser(move |browser| {
        browser.navigate(&format!("{base}/"));
        assert_eq!(browser.title(), "AMI Usage Exporter");
        let text = body_text(browser);
        assert!(text.contains(&format!("Version {}", env!("CARGO_PKG_VERSION"))), "{text}");
        // The inline stylesheet applies under the page's policy (a blocked one would leave the
        // browser's default, `separate`).
        let collapse =
            browser.execute("return getComputedStyle(document.querySelector('table')).borderCollapse", vec![]);
        assert_eq!(collapse.as_str(), Some("collapse"), "the stylesheet is in force");
        for (name, href) in [("Metrics", "/metrics"), ("Health", "/-/healthy"), ("Readiness", "/-/ready")] {
            let link = browser.find_all("nav a").into_iter().find(|a| a.text() == name);
            assert_eq!(link.and_then(|a| a.attribute("href")).as_deref(), Some(href), "{name}");
        }
        assert_eq!(figure(browser, "#total-targets"), 2);
        assert_eq!(figure(browser, "#total-images"), 120);
        let total: u64 = per_image.values().map(|(n, _)| n).sum();
        assert_eq!(figure(browser, "#total-resources"), 2 * total, "both Regions, as the simulator holds");
        assert_eq!(browser.find_all("tr.target").len(), 2);
        assert!(text.contains("payments"), "the named account by its name");

        // Two pages of images, every row the ground truth.
        let mut shown = image_rows(browser);
        assert_eq!(shown.len(), 100, "a page holds 100 images");
        browser.find("a[rel=next]").expect("a next page").click();
        browser.wait_until("page 2", Duration::from_secs(10), |b| b.current_url().contains("page=2").then_some(()));
        shown.extend(image_rows(browser));
        assert_eq!(shown.len(), 120);
        let want: BTreeSet<(String, String, u64, bool)> = regions
            .iter()
            .flat_map(|r| per_image.iter().map(move |(image, (n, odd))| (r.to_string(), image.clone(), *n, *odd)))
            .collect();
        assert_eq!(shown.into_iter().collect::<BTreeSet<_>>(), want, "rows equal the ground truth");
        assert!(want.iter().any(|row| row.3), "the dataset has unexpected use to show");

        // Filter by Region, as a person would: pick it, click Filter.
        browser.navigate(&format!("{base}/"));
        browser.find("select[name=region] option[value=eu-west-1]").expect("the Region's option").click();
        submit_filters(browser, "region=eu-west-1");
        let rows = image_rows(browser);
        assert_eq!(rows.len(), 60);
        assert!(rows.iter().all(|r| r.0 == "eu-west-1"), "{rows:?}");
        assert_eq!(browser.find_all("tr.target").len(), 1, "and only its target");

        // Then one image: its row and its accounts.
        let (image, (image_total, _)) =
            per_image.iter().find(|(_, (_, odd))| *odd).expect("an image the stranger uses");
        let input = browser.find("input[name=image]").expect("the image field");
        input.clear();
        input.send_keys(image);
        submit_filters(browser, &format!("image={image}"));
        let rows = image_rows(browser);
        assert_eq!(rows, [("eu-west-1".to_owned(), image.clone(), *image_total, true)]);
        let detail: BTreeMap<String, u64> = browser
            .find_all("section.detail table.accounts tbody tr")
            .iter()
            .map(|tr| {
                let cells: Vec<String> = tr.find_all("td").iter().map(|td| td.text()).collect();
                (cells[0].clone(), cells[2].replace(',', "").parse().unwrap_or(u64::MAX))
            })
            .collect();
        let mut truth_accounts: BTreeMap<String, u64> = BTreeMap::new();
        for ((i, account, _), n) in &usage {
            if i == image && *n > 0.0 {
                *truth_accounts.entry(account.clone()).or_default() += *n as u64;
            }
        }
        assert_eq!(detail, truth_accounts, "the image's accounts");
        let marked = browser.find_all("section.detail tr.unexpected");
        assert_eq!(marked.len(), 1);
        assert!(marked[0].text().contains(&stranger));
        assert_eq!(browser.console_errors(), Vec::<String>::new(), "no page logged an error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_links_lead_where_they_say_and_metrics_show_the_ground_truth() {
    let (running, exporter) = ready_exporter().await;
    let (usage, _) = truth(&running.sim);
    assert!(!usage.is_empty());
    let base = format!("http://{}", exporter.addr);
    with_browser(move |browser| {
        // Each link, clicked as a person would, leads to its page.
        let pages = [("Metrics", "/metrics"), ("Health", "/-/healthy"), ("Readiness", "/-/ready")];
        for (name, path) in pages {
            browser.navigate(&format!("{base}/"));
            let link = browser
                .find_all("nav a")
                .into_iter()
                .find(|a| a.text() == name)
                .unwrap_or_else(|| panic!("no {name} link:\n{}", browser.page_source()));
            link.click();
            let url = format!("{base}{path}");
            browser.wait_until(&format!("the {name} page"), Duration::from_secs(10), |b| {
                (b.current_url() == url).then_some(())
            });
        }
        assert_eq!(body_text(browser), "Ready", "the last page is readiness");

        // The metrics page, as the browser renders it, holds the simulator's ground truth.
        browser.navigate(&format!("{base}/metrics"));
        let shown = Exposition::parse(&body_text(browser));
        assert_eq!(scraped_usage(&shown), usage, "the metrics page in the browser shows the ground truth");
        assert_eq!(browser.console_errors(), Vec::<String>::new(), "no page logged an error");
    })
    .await;
}

/// A tiny HTTP server on loopback for pages the exporter does not serve: one thread per
/// connection, each bounded by a read timeout; stopped when dropped.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A page: status, extra headers, body.
type Page = (u16, &'static [(&'static str, &'static str)], &'static str);

impl PageServer {
    fn start(route: fn(&str) -> Page) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || Self::serve(stream, route));
                }
            }
        });
        Self { addr, stop, thread: Some(thread) }
    }

    fn serve(mut stream: TcpStream, route: fn(&str) -> Page) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or("/");
        let (status, headers, body) = route(path);
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            if status == 200 { "OK" } else { "Not Found" },
            body.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(body);
        let _ = stream.write_all(response.as_bytes());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The test pages: one whose CSP blocks its inline style and image, one with a missing image,
/// a clean one, and a tall one.
fn test_pages(path: &str) -> Page {
    const CSP: &[(&str, &str)] = &[("Content-Security-Policy", "default-src 'none'")];
    match path {
        "/csp" => (
            200,
            CSP,
            "<!DOCTYPE html><html><head><title>csp</title><style>body { color: rgb(255, 0, 0) }</style></head>\
             <body><p>blocked style</p><img src=\"/pixel.png\" alt=\"\"></body></html>",
        ),
        "/broken" => (
            200,
            &[],
            "<!DOCTYPE html><html><head><title>broken</title></head><body><img src=\"/missing.png\" alt=\"\"></body></html>",
        ),
        "/clean" => (200, CSP, "<!DOCTYPE html><html><head><title>clean</title></head><body><p>fine</p></body></html>"),
        "/tall" => (
            200,
            &[],
            "<!DOCTYPE html><html><head><title>tall</title></head>\
             <body style=\"margin:0\"><div style=\"height:3000px;background:linear-gradient(red,blue)\"></div></body></html>",
        ),
        _ => (404, &[], "not found"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_errors_report_csp_violations_and_failed_loads() {
    let server = PageServer::start(test_pages);
    let (csp, broken, clean) = (server.url("/csp"), server.url("/broken"), server.url("/clean"));
    with_browser(move |browser| {
        browser.navigate(&clean);
        assert_eq!(browser.title(), "clean");
        assert_eq!(browser.console_errors(), Vec::<String>::new(), "a clean page under CSP logs nothing");

        browser.navigate(&csp);
        let errors = browser.console_errors();
        assert!(
            errors.iter().any(|e| e.contains("inline style violates") && e.contains("Content Security Policy")),
            "the blocked inline style is a console error: {errors:#?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("pixel.png") && e.contains("Content Security Policy")),
            "the blocked image is a console error: {errors:#?}"
        );
        // The style really was blocked (WebDriver's own scripts are not subject to the page's CSP).
        let color = browser.execute("return getComputedStyle(document.body).color", vec![]);
        assert_eq!(color, "rgb(0, 0, 0)");
        assert_eq!(browser.console_errors(), Vec::<String>::new(), "each entry is handed out once");

        browser.navigate(&broken);
        let errors = browser.console_errors();
        assert!(
            errors.iter().any(|e| e.contains("missing.png") && e.contains("404")),
            "a failed load is a console error: {errors:#?}"
        );

        // WebDriver errors come back with chromedriver's error code and message.
        let error = browser
            .try_command("POST", "/element", Some(serde_json::json!({ "using": "css selector", "value": "[[[" })))
            .expect_err("an invalid selector is an error");
        assert_eq!(error.error, "invalid selector", "{error}");
        assert!(browser.find("#absent").is_none());
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| browser.find_all("[[[")))
            .expect_err("an invalid selector panics");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("invalid selector") && message.contains("/elements"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_are_pngs_of_the_window() {
    let (_running, exporter) = ready_exporter().await;
    let server = PageServer::start(test_pages);
    let (landing, tall) = (format!("http://{}/", exporter.addr), server.url("/tall"));
    with_browser(move |browser| {
        browser.navigate(&landing);
        let file = TempFile::named("landing.png");
        let png = browser.screenshot_png(&file.0);
        assert_eq!(std::fs::read(&file.0).expect("the screenshot file"), png);
        let (width, height) = png_size(&png).expect("a PNG");
        assert_eq!(width, WINDOW_WIDTH, "the viewport is the window's width");
        assert!(height > 500, "{height}");
        assert!(png.len() > 5_000, "a page with text is more than a blank PNG: {} bytes", png.len());

        browser.navigate(&tall);
        let file = TempFile::named("tall.png");
        let viewport = png_size(&browser.screenshot_png(&file.0)).expect("a PNG");
        let full = png_size(&browser.full_page_screenshot_png(&file.0)).expect("a PNG");
        assert!(viewport.1 < 3000, "the viewport screenshot stops at the window: {viewport:?}");
        assert_eq!(full, (WINDOW_WIDTH, 3000), "the full-page screenshot holds the whole document");
    })
    .await;
}

/// Whether any live process names `needle` on its command line, or has pid `pid`.
fn live_processes(needle: &str, pids: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie has exited; only its parent's wait is missing.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) || stat.is_empty() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if pids.contains(&pid) || cmdline.contains(needle) {
            found.push(format!("{pid} {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_the_browser_outlives_a_panicking_test() {
    if find_on_path("chromedriver").is_none() {
        skip_without("chromedriver");
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let browser = Browser::start().expect("chromedriver is installed");
        browser.navigate("about:blank");
        let pids = [Some(browser.chromedriver_pid()), browser.browser_pid()];
        tx.send((pids.into_iter().flatten().collect::<Vec<_>>(), browser.profile_dir().to_owned())).unwrap();
        panic!("a test failing with the browser open");
    });
    assert!(test.join().is_err(), "the test panicked");
    let (pids, profile) = rx.recv().expect("the browser started");
    assert_eq!(pids.len(), 2, "chromedriver reports Chromium's pid: {pids:?}");
    let needle = profile.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = live_processes(&needle, &pids);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running after the browser was dropped:\n{}", left.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!profile.exists(), "the profile {} is removed", profile.display());
}

/// The pids of a helper's chromedriver and Chromium, and the profile directory, as it prints them.
const HELPER_LINE: &str = "helper browser:";

#[test]
#[ignore = "a helper: nothing_of_the_browser_outlives_a_killed_test runs it, then kills it"]
fn helper_holds_a_browser_open_until_killed() {
    let browser = Browser::start().expect("chromedriver is installed");
    browser.navigate("about:blank");
    println!(
        "{HELPER_LINE} {} {} {}",
        browser.chromedriver_pid(),
        browser.browser_pid().expect("chromedriver reports Chromium's pid"),
        browser.profile_dir().display()
    );
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_the_browser_outlives_a_killed_test() {
    if find_on_path("chromedriver").is_none() {
        skip_without("chromedriver");
        return;
    }
    // The helper's scratch files (chromedriver's and the profile) go to a directory removed here,
    // since a killed process removes nothing.
    let scratch = std::env::temp_dir().join(format!("ami-usage-browser-killed-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--exact", "helper_holds_a_browser_open_until_killed", "--ignored", "--nocapture"])
        .env("TMPDIR", &scratch)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    common::die_with_parent(&mut cmd);
    let mut helper = cmd.spawn().expect("run the helper test");
    let stdout = helper.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(HELPER_LINE) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    // SIGKILL: no Drop runs in the helper.
    let _ = helper.kill();
    let _ = helper.wait();
    let line = line.expect("the helper started a browser");
    let mut words = line.splitn(3, ' ');
    let pids: Vec<u32> = words.by_ref().take(2).map(|w| w.parse().expect("a pid")).collect();
    let profile = words.next().expect("the profile directory").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = live_processes(&profile, &pids);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let _ = std::fs::remove_dir_all(&scratch);
            panic!("still running after the test holding the browser was killed:\n{}", left.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&scratch).expect("remove the scratch directory");
}

fn screenshot_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.sh")
}

/// Runs a screenshot script off the async workers; it must succeed (its output is shown when it
/// does not) and leave its PNG in `out`.
async fn shoot(mut script: Command, out: &TempFile, what: &str) -> Vec<u8> {
    let run = tokio::task::spawn_blocking(move || script.output()).await.expect("join");
    let run = run.unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        run.status.success(),
        "{what} failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&out.0).unwrap_or_else(|e| panic!("{what} wrote no screenshot: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screenshot_script_shoots_the_status_page() {
    let usage = Command::new("bash").arg(screenshot_script()).output().expect("run bash");
    assert_eq!(usage.status.code(), Some(2), "no arguments is a usage error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage:"), "{usage:?}");
    if find_on_path("chromium").is_none() {
        skip_without("chromium");
        return;
    }
    let (_running, exporter) = ready_exporter().await;
    let url = format!("http://{}/", exporter.addr);
    let out = TempFile::named("script.png");
    let mut script = Command::new("bash");
    script.arg(screenshot_script()).arg(&url).arg(&out.0).arg("1024x700");
    let png = shoot(script, &out, "docs/screenshot.sh").await;
    assert_eq!(png_size(&png), Some((1024, 700)), "a PNG of the size asked for");
    assert!(png.len() > 5_000, "the page's text is in it: {} bytes", png.len());
}

/// The README's picture: docs/demo-screenshot.sh runs the demo, waits for its refreshed reports
/// and shoots its status page, the same way the committed docs/status-page.png was made.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_screenshot_script_shoots_the_demos_status_page() {
    if find_on_path("chromium").is_none() {
        skip_without("chromium");
        return;
    }
    let out = TempFile::named("demo.png");
    let mut script = Command::new("bash");
    script
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo-screenshot.sh"))
        .arg(&out.0)
        .env("DEMO", env!("CARGO_BIN_EXE_ami-usage-demo"));
    let png = shoot(script, &out, "docs/demo-screenshot.sh").await;
    assert_eq!(png_size(&png), Some((1280, 900)), "the README picture's size");
    let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png"));
    assert_eq!(committed.ok().and_then(|p| png_size(&p)), Some((1280, 900)), "docs/status-page.png is such a picture");
    assert!(png.len() > 50_000, "a page full of figures: {} bytes", png.len());
}
