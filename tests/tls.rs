//! `--web.config.file` against the real binary: TLS, mutual TLS, TLS versions, basic
//! authentication, extra headers, certificate renewal and a file turning bad while running.
//! Certificates are made on the spot; the client is a real rustls client.

mod common;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Exporter, TempFile, aws_command, config_for, http_get, raw_exchange, simulator};
use ec2_sim::RunningSimulator;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Just over the exporter's check interval for changed files.
const RECHECK: Duration = Duration::from_millis(1100);
const WWW_AUTHENTICATE: &str = "Basic realm=\"ami-usage-exporter\"";

/// A directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ami-usage-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create test dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority that signs server and client certificates.
struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA certificate"))
    }

    fn server(&self, serial: u64) -> Leaf {
        self.leaf(&["localhost", "127.0.0.1"], "ami-usage-exporter", ExtendedKeyUsagePurpose::ServerAuth, serial)
    }

    fn client(&self, serial: u64) -> Leaf {
        self.leaf(&["prometheus.example"], "prometheus", ExtendedKeyUsagePurpose::ClientAuth, serial)
    }

    fn leaf(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose, serial: u64) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.0).expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }
}

/// A TLS client trusting `ca`, presenting `identity` if given, speaking only `versions`.
fn client(ca: &Ca, identity: Option<&Leaf>, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.0.der().clone()).expect("CA");
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder.with_client_auth_cert(vec![leaf.der.clone()], leaf.key()).expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn any_version(ca: &Ca, identity: Option<&Leaf>) -> Arc<ClientConfig> {
    client(ca, identity, rustls::ALL_VERSIONS)
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
    /// The server's certificate (TLS only).
    peer: Option<CertificateDer<'static>>,
    alpn: Option<Vec<u8>>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Self { status, head: head.to_owned(), body: body.to_owned(), peer: None, alpn: None })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn request(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n")
}

/// A GET over a new TLS connection; `Err` says where it failed (handshake, or no answer).
async fn tls_get(exporter: &Exporter, config: Arc<ClientConfig>, path: &str) -> Result<Answer, String> {
    let attempt = async {
        let tcp = TcpStream::connect(exporter.addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").expect("server name");
        let mut tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        let (_, connection) = tls.get_ref();
        let peer = connection.peer_certificates().and_then(|chain| chain.first()).map(|c| c.clone().into_owned());
        let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(request(path, "").as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        let read = tls.read_to_end(&mut raw).await;
        let mut answer = Answer::parse(&raw).ok_or_else(|| format!("no HTTP answer: {read:?}"))?;
        answer.peer = peer;
        answer.alpn = alpn;
        Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// A GET over plain HTTP with extra header lines (each ending in CRLF).
async fn plain_get(exporter: &Exporter, path: &str, extra_headers: &str) -> Option<Answer> {
    let raw = raw_exchange(exporter.addr, request(path, extra_headers).as_bytes(), Duration::from_secs(10)).await;
    Answer::parse(&raw)
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

/// The simulator and an exporter using `web.yml` in `dir`.
async fn start(dir: &TestDir, web_yaml: &str) -> (RunningSimulator, Exporter) {
    let web = dir.write("web.yml", web_yaml);
    let running = simulator(1, 2, Duration::ZERO).await;
    let config = config_for(&running.sim.image_ids(), "poll_interval: 1h");
    let flag = format!("--web.config.file={}", web.display());
    let exporter = Exporter::start_with(&config, &running.endpoint_url(), &[&flag]);
    (running, exporter)
}

/// A directory with a CA and a server certificate it signed: ca.crt, server.crt, server.key.
fn server_files(serial: u64) -> (TestDir, Ca, Leaf) {
    let dir = TestDir::new();
    let ca = Ca::new("test CA");
    let server = ca.server(serial);
    dir.write("ca.crt", &ca.0.pem());
    dir.write("server.crt", &server.cert_pem);
    dir.write("server.key", &server.key_pem);
    (dir, ca, server)
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_metrics_and_plain_http_is_refused() {
    let (dir, ca, server) = server_files(1);
    let (_sim, exporter) = start(&dir, TLS).await;

    let answer = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("TLS scrape");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("ami_usage_build_info"), "{}", answer.body);
    assert_eq!(answer.peer.as_ref(), Some(&server.der), "the configured certificate");
    assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // TLS 1.2 is allowed by default.
    let tls12 = tls_get(&exporter, client(&ca, None, &[&rustls::version::TLS12]), "/-/healthy").await;
    assert_eq!(tls12.map(|a| a.status), Ok(200));

    let (status, body) = http_get(exporter.addr, "/metrics").await;
    assert_eq!(status, 400, "plain HTTP on the TLS port: {body}");
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
    assert!(!body.contains("ami_usage"), "no metrics over plain HTTP");
    // A client that does not trust the server's CA gives up.
    let stranger = Ca::new("another CA");
    assert!(tls_get(&exporter, any_version(&stranger, None), "/metrics").await.is_err());
    assert_eq!(tls_get(&exporter, any_version(&ca, None), "/metrics").await.map(|a| a.status), Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let (dir, ca, _server) = server_files(1);
    let web = format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n");
    let (_sim, exporter) = start(&dir, &web).await;

    let scraper = ca.client(10);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let answer = tls_get(&exporter, client(&ca, Some(&scraper), versions), "/metrics").await;
        assert_eq!(answer.map(|a| a.status), Ok(200), "{versions:?}");
    }
    let refused = tls_get(&exporter, any_version(&ca, None), "/metrics").await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("CertificateRequired")), "no client certificate: {refused:?}");
    let other_ca = Ca::new("other CA");
    let intruder = other_ca.client(11);
    let refused = tls_get(&exporter, any_version(&ca, Some(&intruder)), "/metrics").await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("UnknownCA")), "a certificate from another CA: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_tls13_refuses_tls12_clients() {
    let (dir, ca, _server) = server_files(1);
    let (_sim, exporter) = start(&dir, &format!("{TLS}  min_version: TLS13\n")).await;
    let tls12 = tls_get(&exporter, client(&ca, None, &[&rustls::version::TLS12]), "/metrics").await;
    assert!(tls12.as_ref().is_err_and(|e| e.contains("ProtocolVersion")), "a TLS 1.2-only client: {tls12:?}");
    let tls13 = tls_get(&exporter, client(&ca, None, &[&rustls::version::TLS13]), "/metrics").await;
    assert_eq!(tls13.map(|a| a.status), Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_extra_headers() {
    let dir = TestDir::new();
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let web = format!(
        "basic_auth_users:\n  alice: \"{hash}\"\nhttp_server_config:\n  headers:\n    \
         Strict-Transport-Security: max-age=31536000\n    X-Content-Type-Options: nosniff\n"
    );
    let (_sim, exporter) = start(&dir, &web).await;

    let ok = plain_get(&exporter, "/metrics", &basic("alice", "s3cret")).await.expect("answer");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("ami_usage_build_info"));
    assert_eq!(ok.header("Strict-Transport-Security"), Some("max-age=31536000"));
    assert_eq!(ok.header("X-Content-Type-Options"), Some("nosniff"));
    // Again: served from the verification cache, same answer.
    assert_eq!(plain_get(&exporter, "/metrics", &basic("alice", "s3cret")).await.map(|a| a.status), Some(200));

    for (what, headers) in [
        ("wrong password", basic("alice", "guess")),
        ("no credentials", String::new()),
        ("unknown user", basic("mallory", "s3cret")),
        ("not basic", "Authorization: Bearer s3cret\r\n".to_owned()),
    ] {
        let refused = plain_get(&exporter, "/metrics", &headers).await.expect("answer");
        assert_eq!(refused.status, 401, "{what}: {refused:?}");
        assert_eq!(refused.header("WWW-Authenticate"), Some(WWW_AUTHENTICATE), "{what}");
        assert_eq!(refused.header("Strict-Transport-Security"), Some("max-age=31536000"), "{what}");
        assert!(!refused.body.contains("ami_usage"), "{what}");
    }
    // Every path, as with the toolkit.
    for path in ["/", "/-/healthy", "/-/ready", "/nope"] {
        assert_eq!(plain_get(&exporter, path, "").await.map(|a| a.status), Some(401), "{path}");
    }
    assert_eq!(plain_get(&exporter, "/-/healthy", &basic("alice", "s3cret")).await.map(|a| a.status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_used_without_restart() {
    let (dir, ca, old) = server_files(1);
    let (_sim, exporter) = start(&dir, TLS).await;
    let first = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("first");
    assert_eq!(first.peer.as_ref(), Some(&old.der));

    let renewed = ca.server(2);
    assert_ne!(renewed.der, old.der);
    dir.write("server.key", &renewed.key_pem);
    dir.write("server.crt", &renewed.cert_pem);
    tokio::time::sleep(RECHECK).await;
    let second = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("after renewal");
    assert_eq!(second.status, 200);
    assert_eq!(second.peer.as_ref(), Some(&renewed.der), "the new certificate, without a restart");
    assert!(exporter.log().contains("web configuration reloaded"), "{}", exporter.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_config_turning_bad_keeps_the_last_good_one() {
    let (dir, ca, server) = server_files(1);
    let (_sim, exporter) =
        start(&dir, &format!("{TLS}http_server_config:\n  headers:\n    X-Frame-Options: deny\n")).await;
    let before = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("before");
    assert_eq!(before.header("X-Frame-Options"), Some("deny"));

    dir.write("web.yml", "tls_server_config:\n  cert_file: server.crt\n  key_fiel: server.key\n");
    tokio::time::sleep(RECHECK).await;
    let during = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("still TLS");
    assert_eq!(during.status, 200);
    assert_eq!(during.peer.as_ref(), Some(&server.der));
    assert_eq!(during.header("X-Frame-Options"), Some("deny"), "the last good configuration");
    assert_eq!(http_get(exporter.addr, "/metrics").await.0, 400, "never plain HTTP");
    // The log reaches us through a reader thread: give it a moment under load.
    let logged =
        |log: &str| log.contains("web configuration reload failed") && log.contains("tls_server_config.key_fiel");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged(&exporter.log()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = exporter.log();
    assert!(logged(&log), "{log}");

    // Fixed: the new file applies.
    dir.write("web.yml", &format!("{TLS}http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n"));
    tokio::time::sleep(RECHECK).await;
    let after = tls_get(&exporter, any_version(&ca, None), "/metrics").await.expect("after");
    assert_eq!(after.header("X-Frame-Options"), Some("sameorigin"));
}

/// Runs the exporter with a web config file and waits (bounded) for it to exit.
async fn exit_with_web_config(web_yaml: &str) -> (ExitStatus, String) {
    let dir = TestDir::new();
    let web = dir.write("web.yml", web_yaml);
    let running = simulator(1, 1, Duration::ZERO).await;
    let config = TempFile::new(&config_for(&running.sim.image_ids(), ""));
    let mut child = aws_command(&running.endpoint_url())
        .arg(format!("--config.file={}", config.0.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--web.config.file={}", web.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exporter");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the exporter kept running with a bad web config file");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_web_config_stops_start_up_naming_the_field() {
    for (yaml, field) in [
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS14\n",
            "tls_server_config.min_version",
        ),
        ("tls_server_config:\n  cert_file: absent.crt\n  key_file: absent.key\n", "tls_server_config.cert_file"),
        ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice"),
        ("colour: blue\n", "colour"),
    ] {
        let (status, stderr) = exit_with_web_config(yaml).await;
        assert!(!status.success(), "{yaml}: {status}");
        assert!(stderr.contains(field), "{yaml}: expected {field} in:\n{stderr}");
        assert!(stderr.contains("cannot start"), "{stderr}");
    }
}
