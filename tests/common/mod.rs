//! Test harness: the real exporter binary as a child process, pointed at an in-process EC2
//! simulator through `AWS_ENDPOINT_URL_EC2`, scraped over real HTTP on loopback.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod browser;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ec2_sim::{DatasetSpec, RunningSimulator, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod dashboard;

/// How long a test waits for something the exporter should do within a few polls.
pub const WAIT: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_ami-usage-exporter");

/// A running exporter; killed when dropped, so no test leaves one behind.
pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    config_path: PathBuf,
    _config: Option<TempFile>,
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(contents: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ami-usage-test-{}-{n}.yml", std::process::id()));
        std::fs::write(&path, contents).expect("write temp config");
        Self(path)
    }

    /// A path for a file a test will write (`name` tells it apart), removed when dropped.
    pub fn named(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("ami-usage-test-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The environment of a machine with no AWS account: static fake credentials, no instance
/// metadata, no profile files, and the endpoint override that every AWS SDK honours.
pub fn aws_command(endpoint: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL_EC2", endpoint)
        .env("AWS_ENDPOINT_URL_STS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    die_with_parent(&mut cmd);
    cmd
}

/// Makes the child die with the test process, even when the test binary is killed before the
/// `Drop` that would stop it runs (a timeout, Ctrl-C): nothing is left running.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe, and the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Exporter {
    pub fn start(config_yaml: &str, endpoint: &str) -> Self {
        Self::start_with(config_yaml, endpoint, &[])
    }

    pub fn start_with(config_yaml: &str, endpoint: &str, extra_args: &[&str]) -> Self {
        let config = TempFile::new(config_yaml);
        let mut cmd = aws_command(endpoint);
        cmd.args(extra_args);
        let mut exporter = Self::spawn(cmd, &config);
        exporter._config = Some(config);
        exporter
    }

    /// Starts `cmd` (the exporter binary with its environment) on an ephemeral loopback port.
    pub fn spawn(mut cmd: Command, config: &TempFile) -> Self {
        let mut child = cmd
            .arg(format!("--config.file={}", config.0.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn exporter");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("msg=listening")
                    && let Some(addr) = field(&line, "address").and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "exporter did not report its address; log:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        Self { child, addr, log, config_path: config.0.clone(), _config: None }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    pub async fn scrape(&self) -> Exposition {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        Exposition::parse(&body)
    }

    /// Scrapes until `done` holds for the exposition, or fails the test after `limit`.
    pub async fn scrape_until(&self, limit: Duration, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.get("/metrics").await;
            if status == 200 {
                let exposition = Exposition::parse(&body);
                if done(&exposition) {
                    return exposition;
                }
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{body}\nlog:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/-/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "exporter never became ready; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, limit)
    }
}

/// Sends SIGTERM to a child process and waits (bounded) for its exit.
pub fn terminate(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends every line of a child's `pipe` to `sink`, on a thread of its own.
pub fn collect_lines(pipe: impl std::io::Read + Send + 'static, sink: &Arc<Mutex<String>>) {
    let sink = Arc::clone(sink);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(&line);
            text.push('\n');
        }
    });
}

/// A port free on loopback now (another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A logfmt field's value (unquoted values only, which is what addresses are).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split(' ').next()
}

/// A minimal HTTP/1.1 GET on a fresh connection; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

pub async fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "POST", path).await
}

/// Decodes a chunked HTTP/1.1 body (Prometheus's API answers that way).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// Sends raw bytes and returns whatever comes back before the server closes (bounded).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(bytes).await.ok()?;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        Some(raw)
    };
    tokio::time::timeout(limit, attempt).await.ok().flatten().unwrap_or_default()
}

async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        Some((status, if chunked { dechunk(body) } else { body.to_owned() }))
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Some(answer)) => answer,
        _ => (0, String::new()),
    }
}

/// Series of a text exposition: name and labels to value.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Exposition {
    pub series: BTreeMap<(String, BTreeMap<String, String>), f64>,
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                out.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
                let value: f64 = value.parse().expect("numeric sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                out.series.insert((name.to_owned(), labels), value);
            }
        }
        out
    }

    /// The samples of one metric: labels to value.
    pub fn metric(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.series.iter().filter(|((n, _), _)| n == name).map(|((_, l), v)| (l, *v)).collect()
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metric(name)
            .into_iter()
            .find(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
    }

    /// Sum of a metric's samples whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metric(name)
            .into_iter()
            .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// A configuration watching the given images in us-east-1.
pub fn config_for(images: &[String], extra: &str) -> String {
    config_for_regions(&["us-east-1"], images, extra)
}

/// A configuration watching the given images in each of the Regions, one target a Region.
pub fn config_for_regions(regions: &[&str], images: &[String], extra: &str) -> String {
    let list: String = images.iter().map(|i| format!("      - {i}\n")).collect();
    let targets: String = regions.iter().map(|r| format!("  - region: {r}\n    images:\n{list}")).collect();
    format!("{extra}\ntargets:\n{targets}")
}

pub async fn simulator(images: usize, accounts: usize, pending_for: Duration) -> RunningSimulator {
    let config = SimConfig {
        dataset: DatasetSpec { seed: 7, images, accounts, ..DatasetSpec::default() },
        pending_for,
        ..SimConfig::default()
    };
    Simulator::start(config).await.expect("simulator starts")
}

pub type Usage = BTreeMap<(String, String, String), f64>;

/// The simulator's truth: (image, account, resource type) to count, and image to report.
pub fn truth(sim: &Simulator) -> (Usage, BTreeMap<String, (String, f64)>) {
    let mut usage = Usage::new();
    let mut reports = BTreeMap::new();
    for e in sim.ground_truth() {
        usage.insert((e.image_id.clone(), e.account_id.clone(), e.resource_type.clone()), e.usage_count as f64);
        let created =
            e.report_creation_time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        reports.insert(e.image_id.clone(), (e.report_id.clone(), created));
    }
    (usage, reports)
}

pub fn scraped_usage(exposition: &Exposition) -> Usage {
    exposition
        .metric("ami_usage_resources")
        .into_iter()
        .map(|(l, v)| {
            assert_eq!(l.get("aws_region").map(String::as_str), Some("us-east-1"));
            ((l["image_id"].clone(), l["account_id"].clone(), l["resource_type"].clone()), v)
        })
        .collect()
}

pub fn serving_reports(exposition: &Exposition) -> BTreeMap<String, String> {
    exposition
        .metric("ami_usage_report_info")
        .into_iter()
        .map(|(l, _)| (l["image_id"].clone(), l["report_id"].clone()))
        .collect()
}
