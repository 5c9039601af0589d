use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderMap};

use super::auth::{BasicAuth, Unauthorized};
use super::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ami-usage-web-config-{}-{n}", std::process::id()));
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

/// A CA, a server certificate it signed (server.crt, server.key, ca.crt), and an unrelated
/// key (other.key).
fn pki() -> TestDir {
    let dir = TestDir::new();
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    dir.write("ca.crt", &ca.pem());
    dir.write("server.crt", &cert.pem());
    dir.write("server.key", &key.serialize_pem());
    dir.write("other.key", &KeyPair::generate().expect("key").serialize_pem());
    dir
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("hash")
}

fn mistake(dir: &TestDir, yaml: &str) -> (String, String) {
    match WebConfig::from_yaml(yaml, &dir.0) {
        Ok(config) => panic!("accepted: {yaml}\n{config:?}"),
        Err(error) => error,
    }
}

#[test]
fn each_mistake_names_its_field() {
    let dir = pki();
    let good_hash = hash("pw");
    let cases: Vec<(String, &str, &str)> = vec![
        ("nope: 1".into(), "nope", "unknown field"),
        (format!("{TLS}  bogus: 1"), "tls_server_config.bogus", "unknown field"),
        ("http_server_config:\n  gzip: true".into(), "http_server_config.gzip", "unknown field"),
        (format!("{TLS}  client_auth_type: Sometimes"), "tls_server_config.client_auth_type", "unknown variant"),
        (format!("{TLS}  min_version: TLS14"), "tls_server_config.min_version", "unknown variant"),
        (format!("{TLS}  max_version: TLS11"), "tls_server_config.max_version", "not supported"),
        (format!("{TLS}  min_version: TLS13\n  max_version: TLS12"), "tls_server_config.min_version", "above"),
        ("tls_server_config:\n  cert_file: server.crt".into(), "tls_server_config.key_file", "required"),
        ("tls_server_config:\n  key_file: server.key".into(), "tls_server_config.cert_file", "required"),
        ("tls_server_config:\n  min_version: TLS13".into(), "tls_server_config.cert_file", "required"),
        (format!("{TLS}  cert: x"), "tls_server_config.cert", "not both"),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key".into(),
            "tls_server_config.cert_file",
            "cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key".into(),
            "tls_server_config.cert_file",
            "no PEM certificate",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt".into(),
            "tls_server_config.key_file",
            "no PEM private key",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key".into(),
            "tls_server_config.key_file",
            "unusable with the certificate",
        ),
        (format!("{TLS}  client_ca_file: ca.crt"), "tls_server_config.client_auth_type", "NoClientCert"),
        (
            format!("{TLS}  client_auth_type: RequireAndVerifyClientCert"),
            "tls_server_config.client_ca_file",
            "required",
        ),
        (
            format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: nope.crt"),
            "tls_server_config.client_ca_file",
            "cannot read",
        ),
        (
            format!("{TLS}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_RC4_128_SHA]"),
            "tls_server_config.cipher_suites[1]",
            "unsupported cipher suite",
        ),
        (format!("{TLS}  curve_preferences: [CurveP521]"), "tls_server_config.curve_preferences[0]", "unsupported"),
        (
            format!("{TLS}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [a]"),
            "tls_server_config.client_allowed_sans",
            "not supported",
        ),
        ("rate_limit:\n  burst: 1\n  interval: 1s".into(), "rate_limit", "not supported"),
        ("http_server_config:\n  http2: maybe".into(), "http_server_config.http2", "invalid type"),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from".into(),
            "http_server_config.headers.X-Frame-Options",
            "not one of",
        ),
        (
            "http_server_config:\n  headers:\n    Server: me".into(),
            "http_server_config.headers.Server",
            "cannot be configured",
        ),
        ("basic_auth_users:\n  alice: secret".into(), "basic_auth_users.alice", "not a bcrypt hash"),
        (format!("basic_auth_users:\n  \"a:b\": \"{good_hash}\""), "basic_auth_users.a:b", "':'"),
    ];
    for (yaml, field, message) in cases {
        let (got_field, got_message) = mistake(&dir, &yaml);
        assert_eq!(got_field, field, "{yaml}\n{got_message}");
        assert!(got_message.contains(message), "{yaml}\nexpected {message:?} in {got_message:?}");
    }
}

#[test]
fn costly_bcrypt_hashes_are_refused_at_load_with_the_user_named() {
    let dir = TestDir::new();
    let cheap = hash("pw");
    let at = |cost: &str| cheap.replacen("$04$", &format!("${cost}$"), 1);
    for cost in ["15", "31", "99"] {
        let started = Instant::now();
        let yaml = format!("basic_auth_users:\n  alice: \"{cheap}\"\n  mallory: \"{}\"\n", at(cost));
        let (field, message) = mistake(&dir, &yaml);
        assert_eq!(field, "basic_auth_users.mallory");
        assert!(message.starts_with(&format!("bcrypt cost {cost} is above 14")), "{message}");
        assert!(started.elapsed() < Duration::from_secs(1), "refused without hashing at cost {cost}");
    }
    let (field, message) = mistake(&dir, &format!("basic_auth_users:\n  bob: \"{}\"\n", at("03")));
    assert_eq!(field, "basic_auth_users.bob");
    assert!(message.contains("below 4"), "{message}");
    let config = WebConfig::from_yaml(&format!("basic_auth_users:\n  alice: \"{}\"\n", at("05")), &dir.0);
    assert!(config.is_ok(), "a cost within bounds loads");
}

#[test]
fn the_configuration_file_limits_apply_here_too() {
    let dir = TestDir::new();
    let padding = "#".repeat(crate::config::MAX_FILE_BYTES);
    let path = dir.write("web.yml", &format!("{padding}\n"));
    let error = WebConfig::load(&path).expect_err("too large").to_string();
    assert!(
        error.ends_with(
            "web.yml: (file): 1048577 bytes, over the limit of 1048576 (1 MiB, what a Kubernetes ConfigMap holds)"
        ),
        "{error}"
    );
    let (field, message) = mistake(&dir, &format!("http_server_config:\n  headers: {}", "[".repeat(400_000)));
    assert!(field.starts_with("http_server_config.headers[0]"), "{field}");
    assert!(message.contains("nested more than 32 levels deep"), "{message}");
    let (field, message) = mistake(&dir, "nope: 1");
    assert_eq!(field, "nope");
    assert!(message.ends_with("at line 1 column 1"), "{message}");
}

#[test]
fn load_names_the_file_and_the_field() {
    let dir = TestDir::new();
    let path = dir.write("web.yml", "tls_server_config:\n  min_version: TLS9\n");
    let error = WebConfig::load(&path).expect_err("bad").to_string();
    assert!(error.contains("web.yml: tls_server_config.min_version: unknown variant `TLS9`"), "{error}");
    let missing = WebConfig::load(&dir.0.join("absent.yml")).expect_err("missing").to_string();
    assert!(missing.starts_with("cannot read web config file"), "{missing}");
}

#[test]
fn valid_files() {
    let dir = pki();
    let empty = WebConfig::from_yaml("", &dir.0).expect("an empty file is valid");
    assert!(!empty.tls_enabled() && !empty.requires_auth() && empty.extra_headers().is_empty());
    let none = WebConfig::from_yaml("tls_server_config:\nbasic_auth_users:\n", &dir.0).expect("null sections");
    assert!(!none.tls_enabled() && !none.requires_auth());

    let full = format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS10\n  \
         max_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  \
         curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n\
         http_server_config:\n  http2: false\n  headers:\n    strict-transport-security: max-age=31536000\n    \
         X-Frame-Options: DENY\n    Content-Security-Policy: \"\"\n\
         basic_auth_users:\n  alice: \"{}\"\n",
        hash("pw")
    );
    let config = WebConfig::from_yaml(&full, &dir.0).expect("valid");
    assert!(config.tls_enabled() && config.requires_auth());
    let mut headers: Vec<(&str, &str)> =
        config.extra_headers().iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or(""))).collect();
    headers.sort();
    assert_eq!(headers, [("strict-transport-security", "max-age=31536000"), ("x-frame-options", "DENY")]);
    assert!(config.warnings().iter().any(|w| w.contains("TLS 1.2 is the minimum")), "{:?}", config.warnings());

    // Inline PEM instead of files.
    let cert = std::fs::read_to_string(dir.0.join("server.crt")).expect("cert");
    let key = std::fs::read_to_string(dir.0.join("server.key")).expect("key");
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let inline = format!("tls_server_config:\n  cert: |\n{}  key: |\n{}", indent(&cert), indent(&key));
    assert!(WebConfig::from_yaml(&inline, &dir.0).expect("inline").tls_enabled());

    let plain_auth = format!("basic_auth_users:\n  alice: \"{}\"\n", hash("pw"));
    let config = WebConfig::from_yaml(&plain_auth, &dir.0).expect("valid");
    assert!(config.warnings().iter().any(|w| w.contains("clear text")));
}

#[test]
fn headers_that_would_break_the_protocol_are_refused() {
    let dir = TestDir::new();
    for name in [
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Authorization",
        "WWW-Authenticate",
        "Server",
        "Set-Cookie",
        "Connection",
        "Vary",
    ] {
        let (field, message) = mistake(&dir, &format!("http_server_config:\n  headers:\n    {name}: x\n"));
        assert_eq!(field, format!("http_server_config.headers.{name}"));
        assert!(message.contains("cannot be configured"), "{message}");
    }
    let (field, _) = mistake(&dir, "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n");
    assert_eq!(field, "http_server_config.headers.X-Content-Type-Options");
    let (_, message) = mistake(&dir, "http_server_config:\n  headers:\n    X-XSS-Protection: \"a\\nb\"\n");
    assert!(message.contains("not a valid header value"), "{message}");
    let ok = "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    X-XSS-Protection: 0\n";
    assert_eq!(WebConfig::from_yaml(ok, &dir.0).expect("valid").extra_headers().len(), 2);
}

fn users(pairs: &[(&str, &str)]) -> WebConfig {
    let list: String = pairs.iter().map(|(u, h)| format!("  {u}: \"{h}\"\n")).collect();
    WebConfig::from_yaml(&format!("basic_auth_users:\n{list}"), Path::new(".")).expect("valid")
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {token}")).expect("value"));
    headers
}

#[tokio::test]
async fn a_verified_password_is_not_checked_again() {
    let config = users(&[("alice", &hash("right"))]);
    let auth = BasicAuth::default();
    let calls = || auth.bcrypt_calls.load(Ordering::Relaxed);
    assert_eq!(auth.authorize(&config, &basic("alice", "right")).await, Ok(()));
    assert_eq!(calls(), 1);
    assert_eq!(auth.authorize(&config, &basic("alice", "right")).await, Ok(()));
    assert_eq!(calls(), 1, "the second request is served from the cache");
    // Failures are not cached: each costs a verification.
    assert_eq!(auth.authorize(&config, &basic("alice", "wrong")).await, Err(Unauthorized));
    assert_eq!(auth.authorize(&config, &basic("alice", "wrong")).await, Err(Unauthorized));
    assert_eq!(calls(), 3);
    // A new hash for the same user and password is verified anew.
    let rehashed = users(&[("alice", &hash("right"))]);
    assert_eq!(auth.authorize(&rehashed, &basic("alice", "right")).await, Ok(()));
    assert_eq!(calls(), 4);
    // A changed password: the old one no longer works, even though it was cached.
    let changed = users(&[("alice", &hash("new"))]);
    assert_eq!(auth.authorize(&changed, &basic("alice", "right")).await, Err(Unauthorized));
    assert_eq!(auth.authorize(&changed, &basic("alice", "new")).await, Ok(()));
}

#[tokio::test]
async fn unknown_users_cost_a_verification_against_the_dummy_hash() {
    let config = users(&[("alice", &hash("right")), ("bob", &bcrypt::hash("x", 5).expect("hash"))]);
    assert!(config.dummy_hash.starts_with("$2b$05$"), "as costly as the costliest real hash: {}", config.dummy_hash);
    let auth = BasicAuth::default();
    // Even with alice's password, and even twice: never cached, never accepted.
    for _ in 0..2 {
        assert_eq!(auth.authorize(&config, &basic("mallory", "right")).await, Err(Unauthorized));
    }
    assert_eq!(auth.bcrypt_calls.load(Ordering::Relaxed), 2);
    assert!(auth.verified.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn malformed_or_missing_credentials_are_refused_without_bcrypt() {
    let config = users(&[("alice", &hash("right"))]);
    let auth = BasicAuth::default();
    assert_eq!(auth.authorize(&config, &HeaderMap::new()).await, Err(Unauthorized));
    for value in ["Bearer abc", "Basic !!!", "Basic", "Basic YWxpY2U="] {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(auth.authorize(&config, &headers).await, Err(Unauthorized), "{value}");
    }
    assert_eq!(auth.bcrypt_calls.load(Ordering::Relaxed), 0);
    // No users: everything passes.
    assert_eq!(auth.authorize(&users(&[]), &HeaderMap::new()).await, Ok(()));
    // The scheme is case-insensitive, and the password may contain ':'.
    let config = users(&[("alice", &hash("a:b"))]);
    let mut headers = basic("alice", "a:b");
    let value = headers[AUTHORIZATION].to_str().expect("ascii").replace("Basic", "bAsIc");
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).expect("value"));
    assert_eq!(auth.authorize(&config, &headers).await, Ok(()));
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_configuration() {
    let dir = pki();
    let path = dir.write("web.yml", &format!("{TLS}http_server_config:\n  headers:\n    X-Frame-Options: deny\n"));
    let source = WebConfigSource::with_interval(&path, Duration::ZERO).expect("valid");
    let header = |config: &Arc<WebConfig>| config.extra_headers().first().map(|(_, v)| v.clone());
    assert_eq!(header(&source.current().await), Some(HeaderValue::from_static("deny")));
    let first = source.current().await;

    dir.write("web.yml", &format!("{TLS}  surprise: 1\n"));
    let kept = source.current().await;
    assert!(Arc::ptr_eq(&first, &kept), "a bad file changes nothing");

    dir.write("web.yml", "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n");
    assert!(source.current().await.tls_enabled(), "TLS cannot be turned off by a reload");

    dir.write("web.yml", &format!("{TLS}http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n"));
    assert_eq!(header(&source.current().await), Some(HeaderValue::from_static("sameorigin")));

    // A file named by the configuration counts too: a broken key is refused, a fixed one taken.
    let before = source.current().await;
    let key = std::fs::read_to_string(dir.0.join("server.key")).expect("key");
    dir.write("server.key", "garbage\n");
    assert!(Arc::ptr_eq(&before, &source.current().await), "a broken key file changes nothing");
    dir.write("server.key", &key);
    assert!(!Arc::ptr_eq(&before, &source.current().await), "the repaired key file is taken");
}

#[tokio::test]
async fn files_are_checked_at_most_once_per_interval() {
    let dir = TestDir::new();
    let path = dir.write("web.yml", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
    let source = WebConfigSource::with_interval(&path, Duration::from_secs(3600)).expect("valid");
    let first = source.current().await;
    dir.write("web.yml", "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n");
    assert!(Arc::ptr_eq(&first, &source.current().await), "not checked again before the interval");
}
