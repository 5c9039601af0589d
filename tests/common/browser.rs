//! A small W3C WebDriver client for the browser tests: Debian's `chromedriver` on a loopback
//! port, driving headless Chromium. One HTTP/1.1 request per connection over
//! `std::net::TcpStream`, JSON bodies through serde_json; an answer ends at its `Content-Length`
//! (chromedriver keeps the connection open despite `Connection: close`).
//!
//! Without chromedriver, [`Browser::start`] writes "skipped: ..." and returns `None`, unless
//! `AMI_USAGE_REQUIRE_BROWSER=1` (CI), where it panics. Every wait is bounded, and a WebDriver
//! error panics with the error chromedriver answered. Dropping the [`Browser`] (also while a test
//! panics) ends the session, shuts chromedriver down and removes the profile. When the test
//! process is killed instead, chromedriver dies with it (`die_with_parent`) and Chromium with
//! chromedriver (it runs with `--remote-debugging-pipe`); as the parent-death signal follows the
//! thread that started chromedriver, a [`Browser`] is used and dropped on the thread that made it.
//!
//! The browser console ([`Browser::console_errors`]) is chromedriver's `browser` log, read with
//! `POST /session/{id}/se/log` (its `GET` is an unknown command in W3C mode). A CSP violation is
//! an entry of level SEVERE and source "security", a failed load one of source "network".
//!
//! The API is blocking: from an async test, call it inside `tokio::task::spawn_blocking`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of a web element reference in W3C WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one WebDriver command may take (a page load is bounded tighter by the session).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long chromedriver may take to answer `/status` as ready, and how often it is started on
/// another port when it does not (its free port may be taken again before it binds).
const START_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;
/// How long ending the session may take when the browser is dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The window the session opens with, in CSS pixels (device scale factor 1).
pub const WINDOW_WIDTH: u32 = 1280;
pub const WINDOW_HEIGHT: u32 = 1000;

/// The Chromium flags of every session: headless, no sandbox (the tests run as root), no GPU, no
/// `/dev/shm` (small in containers), a fixed window without scrollbars (so a page is as wide as
/// the window, and screenshots show no scrollbar), and the DevTools connection over a pipe so that
/// Chromium exits when chromedriver does.
pub fn chromium_args() -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--hide-scrollbars".into(),
        format!("--window-size={WINDOW_WIDTH},{WINDOW_HEIGHT}"),
        "--remote-debugging-pipe".into(),
    ]
}

/// An error that chromedriver answered to a command.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The W3C error code, such as "no such element".
    pub error: String,
    pub message: String,
    /// The answer's body, without its (unsymbolized) stack trace.
    pub body: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}: {}\nbody: {}", self.status, self.error, self.message, self.body)
    }
}

/// A headless Chromium session through its own chromedriver; both end when this is dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    log: Arc<Mutex<String>>,
    profile: PathBuf,
    browser_pid: Option<u32>,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element").field("id", &self.id).finish()
    }
}

/// An executable named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether CI requires the browser tests to run (`AMI_USAGE_REQUIRE_BROWSER=1`).
pub fn browser_required() -> bool {
    std::env::var("AMI_USAGE_REQUIRE_BROWSER").as_deref() == Ok("1")
}

/// Says that a browser test is skipped because `what` is missing, or panics when CI requires it.
pub fn skip_without(what: &str) {
    assert!(
        !browser_required(),
        "{what} is not installed, and AMI_USAGE_REQUIRE_BROWSER=1 requires it \
         (apt-get install chromium chromium-driver)"
    );
    // Written to stderr directly, so that it shows even though the test harness captures output.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {what} is not installed (apt-get install chromium chromium-driver; \
         set AMI_USAGE_REQUIRE_BROWSER=1 to fail instead)"
    );
}

/// The width and height of a PNG, from its IHDR chunk; `None` when `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != MAGIC || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((word(16), word(20)))
}

/// One HTTP/1.1 request on a fresh connection, bounded by `limit`: the status and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + limit;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5).min(limit))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_write_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let content_type = if body.is_some() { "Content-Type: application/json; charset=utf-8\r\n" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send {method} {path}: {e}"))?;
    // Chromedriver keeps the connection open despite `Connection: close`: the answer ends where
    // its Content-Length says (or at the last chunk, or when the server closes).
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        if let Some(answer) = complete_answer(&raw, false) {
            return answer.map_err(|e| format!("{method} {path}: {e}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{method} {path}: no complete answer within {limit:?}"));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buffer) {
            Ok(0) => {
                let answer = complete_answer(&raw, true).expect("a closed answer is complete or an error");
                return answer.map_err(|e| format!("{method} {path}: {e}"));
            }
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{method} {path}: reading the answer: {e}")),
        }
    }
}

/// The status and (de-chunked) body of `raw` once it holds a whole answer; `None` while more is
/// to come. `closed`: the server has closed the connection, so nothing more comes.
fn complete_answer(raw: &[u8], closed: bool) -> Option<Result<(u16, String), String>> {
    let unfinished =
        || closed.then(|| Err(format!("the connection closed mid-answer: {:?}", String::from_utf8_lossy(raw))));
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else { return unfinished() };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else { return Some(Err(format!("no HTTP status in {head:?}"))) };
    let body = &raw[end..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        if !body.ends_with(b"0\r\n\r\n") {
            return unfinished();
        }
        super::dechunk(&String::from_utf8_lossy(body)).into_bytes()
    } else if let Some(length) = header("content-length") {
        let Ok(length) = length.parse::<usize>() else { return Some(Err(format!("bad Content-Length {length:?}"))) };
        if body.len() < length {
            return unfinished();
        }
        body[..length].to_vec()
    } else if closed {
        body.to_vec()
    } else {
        return None;
    };
    Some(String::from_utf8(body).map(|body| (status, body)).map_err(|e| format!("the answer is not UTF-8: {e}")))
}

/// The `value` of a WebDriver answer, or the error it reports.
fn value_of(status: u16, body: &str) -> Result<Value, WebDriverError> {
    let parsed: Value = serde_json::from_str(body).unwrap_or_else(|_| json!({ "value": { "error": "not JSON" } }));
    let mut value = parsed.get("value").cloned().unwrap_or(Value::Null);
    let error = value.get("error").and_then(Value::as_str).map(str::to_owned);
    if status == 200 && error.is_none() {
        return Ok(value);
    }
    let message = value.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(object) = value.as_object_mut() {
        object.remove("stacktrace");
    }
    Err(WebDriverError {
        status,
        error: error.unwrap_or_else(|| "(none)".into()),
        message,
        body: if value.is_null() { body.to_owned() } else { value.to_string() },
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after saying "skipped") when
    /// chromedriver is not installed, unless `AMI_USAGE_REQUIRE_BROWSER=1`, which panics.
    pub fn start() -> Option<Self> {
        let Some(driver) = find_on_path("chromedriver") else {
            skip_without("chromedriver");
            return None;
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::launch(&driver) {
                Ok(browser) => return Some(browser),
                Err(failure) => failures.push(failure),
            }
        }
        panic!("chromedriver did not start in {START_ATTEMPTS} attempts:\n{}", failures.join("\n---\n"));
    }

    /// One attempt: chromedriver on a free loopback port, ready, with a new session.
    fn launch(driver: &Path) -> Result<Self, String> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("ami-usage-browser-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| format!("create {}: {e}", profile.display()))?;

        let port = super::free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new(driver);
        // Without --allowed-ips, chromedriver listens on loopback only and refuses remote clients.
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        super::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", driver.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        super::collect_lines(child.stdout.take().expect("stdout piped"), &log);
        super::collect_lines(child.stderr.take().expect("stderr piped"), &log);
        let mut browser = Self { driver: child, addr, session: String::new(), log, profile, browser_pid: None };

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = browser.driver.try_wait() {
                return Err(format!("chromedriver on port {port} exited ({status}); log:\n{}", browser.log()));
            }
            let ready = http(addr, "GET", "/status", None, Duration::from_secs(2))
                .ok()
                .and_then(|(status, body)| value_of(status, &body).ok())
                .is_some_and(|value| value["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver on port {port} was not ready within {START_TIMEOUT:?}; log:\n{}",
                    browser.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut args = chromium_args();
        args.push(format!("--user-data-dir={}", browser.profile.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "goog:chromeOptions": { "args": args },
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "timeouts": {
                        "pageLoad": PAGE_LOAD_TIMEOUT.as_millis() as u64,
                        "script": SCRIPT_TIMEOUT.as_millis() as u64,
                        "implicit": 0,
                    },
                }
            }
        });
        let (status, body) = http(addr, "POST", "/session", Some(&capabilities), COMMAND_TIMEOUT)?;
        let created = value_of(status, &body)
            .map_err(|e| format!("chromedriver could not create a session: {e}\nlog:\n{}", browser.log()))?;
        browser.session = created["sessionId"].as_str().ok_or_else(|| format!("no sessionId in {body}"))?.to_owned();
        browser.browser_pid = created["capabilities"]["goog:processID"].as_u64().map(|pid| pid as u32);
        Ok(browser)
    }

    /// What chromedriver has written so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process id of Chromium's browser process, as chromedriver reports it.
    pub fn browser_pid(&self) -> Option<u32> {
        self.browser_pid
    }

    pub fn chromedriver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// The session's profile directory (every Chromium process of the session names it).
    pub fn profile_dir(&self) -> &Path {
        &self.profile
    }

    /// A command of this session (`rest` is the path after `/session/{id}`); `Err` for an error
    /// that chromedriver answered, a panic when chromedriver cannot be reached.
    pub fn try_command(&self, method: &str, rest: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        let path = format!("/session/{}{rest}", self.session);
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, body) => body,
        };
        match http(self.addr, method, &path, body.as_ref(), COMMAND_TIMEOUT) {
            Ok((status, text)) => value_of(status, &text),
            Err(failure) => panic!("WebDriver {method} {path}: {failure}\nchromedriver log:\n{}", self.log()),
        }
    }

    /// A command that must succeed: panics with chromedriver's error otherwise.
    pub fn command(&self, method: &str, rest: &str, body: Option<Value>) -> Value {
        self.try_command(method, rest, body.clone()).unwrap_or_else(|error| {
            panic!(
                "WebDriver {method} /session/{}{rest} failed: {error}\nrequest body: {}",
                self.session,
                body.map(|b| b.to_string()).unwrap_or_default()
            )
        })
    }

    /// Opens `url` and waits (bounded by the page load timeout) until it has loaded.
    pub fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    pub fn back(&self) {
        self.command("POST", "/back", None);
    }

    pub fn title(&self) -> String {
        self.command("GET", "/title", None).as_str().unwrap_or_default().to_owned()
    }

    /// The current DOM, serialized (not the bytes the server sent).
    pub fn page_source(&self) -> String {
        self.command("GET", "/source", None).as_str().unwrap_or_default().to_owned()
    }

    /// The elements that match a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.command("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        self.elements(&found)
    }

    /// The first element that matches a CSS selector.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        let found = self.try_command("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
        self.element_or_none(found, css)
    }

    /// Waits (bounded by `limit`) for an element that matches a CSS selector.
    pub fn wait_for(&self, css: &str, limit: Duration) -> Element<'_> {
        let id = self.wait_until(&format!("an element matching {css:?}"), limit, |b| b.find(css).map(|e| e.id));
        Element { browser: self, id }
    }

    /// Polls `done` until it gives a value, or panics after `limit` with the page's URL and source.
    pub fn wait_until<T>(&self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = done(self) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}; at {}:\n{}",
                    self.current_url(),
                    self.page_source()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a script in the page (WebDriver's scripts are not subject to the page's CSP) and
    /// returns its value.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Resizes the window (outer size, in CSS pixels).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// The browser's console entries since the last call, as (level, message); chromedriver hands
    /// each entry out once. Levels are chromedriver's: SEVERE, WARNING, INFO, DEBUG.
    pub fn console(&self) -> Vec<(String, String)> {
        // Chromedriver in W3C mode serves the log at POST /session/{id}/se/log (GET is unknown).
        let entries = self.command("POST", "/se/log", Some(json!({ "type": "browser" })));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
                        (field("level"), field("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The console's errors since the last call to [`Browser::console`] or this: script errors,
    /// CSP violations, resources that failed to load.
    pub fn console_errors(&self) -> Vec<String> {
        self.console().into_iter().filter(|(level, _)| level == "SEVERE").map(|(_, message)| message).collect()
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command("POST", "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params })))
    }

    /// A screenshot of the viewport, written to `path` as PNG; returns the PNG.
    pub fn screenshot_png(&self, path: &Path) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        write_png(path, encoded.as_str().unwrap_or_default())
    }

    /// A screenshot of the whole page, beyond the viewport, written to `path` as PNG; returns the
    /// PNG. Its width is the page's (the viewport's when nothing is wider), its height the
    /// document's.
    pub fn full_page_screenshot_png(&self, path: &Path) -> Vec<u8> {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let (width, height) = (size["width"].as_f64().unwrap_or(0.0), size["height"].as_f64().unwrap_or(0.0));
        assert!(width > 0.0 && height > 0.0, "no content size in Page.getLayoutMetrics: {metrics}");
        let shot = self.cdp(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 },
            }),
        );
        write_png(path, shot["data"].as_str().unwrap_or_default())
    }

    fn elements<'a>(&'a self, found: &Value) -> Vec<Element<'a>> {
        found
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| Element {
                        browser: self,
                        id: element_id(e).unwrap_or_else(|| panic!("not an element: {e}")),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn element_or_none<'a>(&'a self, found: Result<Value, WebDriverError>, css: &str) -> Option<Element<'a>> {
        match found {
            Ok(e) => {
                Some(Element { browser: self, id: element_id(&e).unwrap_or_else(|| panic!("not an element: {e}")) })
            }
            Err(error) if error.error == "no such element" => None,
            Err(error) => panic!("WebDriver: finding {css:?} failed: {error}"),
        }
    }
}

fn element_id(value: &Value) -> Option<String> {
    value.get(ELEMENT_KEY).and_then(Value::as_str).map(str::to_owned)
}

fn write_png(path: &Path, encoded: &str) -> Vec<u8> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("the screenshot is not base64 ({e}): {:.80}", encoded));
    assert!(png_size(&png).is_some(), "the screenshot is not a PNG");
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    png
}

impl<'a> Element<'a> {
    /// The rendered text (what a person sees, whitespace collapsed as rendered).
    pub fn text(&self) -> String {
        self.browser.command("GET", &format!("/element/{}/text", self.id), None).as_str().unwrap_or_default().to_owned()
    }

    /// An attribute as written in the document; `None` when absent.
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.browser.command("GET", &format!("/element/{}/attribute/{name}", self.id), None).as_str().map(str::to_owned)
    }

    /// A DOM property (`value`, `checked`, a link's absolute `href`).
    pub fn property(&self, name: &str) -> Value {
        self.browser.command("GET", &format!("/element/{}/property/{name}", self.id), None)
    }

    pub fn tag_name(&self) -> String {
        self.browser.command("GET", &format!("/element/{}/name", self.id), None).as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the element as a person would (scrolled into view; a link's navigation is waited
    /// for).
    pub fn click(&self) {
        self.browser.command("POST", &format!("/element/{}/click", self.id), None);
    }

    /// Empties a text field.
    pub fn clear(&self) {
        self.browser.command("POST", &format!("/element/{}/clear", self.id), None);
    }

    /// Types into a field.
    pub fn send_keys(&self, text: &str) {
        self.browser.command("POST", &format!("/element/{}/value", self.id), Some(json!({ "text": text })));
    }

    /// The elements inside this one that match a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element<'a>> {
        let found = self.browser.command(
            "POST",
            &format!("/element/{}/elements", self.id),
            Some(json!({ "using": "css selector", "value": css })),
        );
        self.browser.elements(&found)
    }

    /// The first element inside this one that matches a CSS selector.
    pub fn find(&self, css: &str) -> Option<Element<'a>> {
        let found = self.browser.try_command(
            "POST",
            &format!("/element/{}/element", self.id),
            Some(json!({ "using": "css selector", "value": css })),
        );
        self.browser.element_or_none(found, css)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Ends the session: chromedriver quits Chromium and waits for it.
            let path = format!("/session/{}", self.session);
            let _ = http(self.addr, "DELETE", &path, None, QUIT_TIMEOUT);
        }
        // Then chromedriver itself, which removes its scratch directories as it exits (a kill
        // right away can leave one behind); killed if it has not exited within a few seconds.
        let _ = http(self.addr, "GET", "/shutdown", None, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
