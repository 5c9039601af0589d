//! The web configuration file (`--web.config.file`): TLS, basic authentication and extra
//! response headers, in the YAML schema of the Prometheus exporter-toolkit, so a file written
//! for any official exporter works here.
//!
//! The toolkit re-reads its file on every request so that a renewed certificate applies without
//! a restart. This does the same, cheaply: at most once a second, and only on demand, it compares
//! the modification time, size and inode of the file and of the certificate, key and CA files it
//! names; only when one changed is the configuration rebuilt (off the async threads), then
//! swapped in whole. A file that became bad is logged and the last good configuration stays:
//! the exporter never falls back to plain HTTP or to no authentication. TLS itself cannot be
//! turned on or off without a restart, as with the toolkit.
//!
//! bcrypt is deliberately slow (tens of milliseconds at cost 10). Verifications run on the
//! blocking pool, at most [`MAX_CONCURRENT_BCRYPT`] at once, and a successful one is cached
//! under a digest of user, password and stored hash (so a changed hash invalidates it): a
//! scraper sending the same credentials every 15 s costs one verification, not one per scrape.
//!
//! Where this differs from the toolkit (rustls is not Go's crypto/tls):
//! - TLS 1.2 and 1.3 only. `min_version: TLS10` or `TLS11` is raised to TLS 1.2 with a warning
//!   (stricter, never weaker); `max_version` below TLS12 is an error.
//! - `cipher_suites` restricts the TLS 1.2 suites, in the order given (TLS 1.3 suites are always
//!   on, as in Go); names rustls does not implement (CBC, RC4, 3DES) are errors.
//!   `curve_preferences` takes CurveP256, CurveP384, X25519 and X25519MLKEM768 (not CurveP521).
//! - `client_allowed_sans` and `rate_limit` are refused as unsupported rather than ignored;
//!   `http2` is accepted and ignored (HTTP/1.1 only).
//! - Header names in `http_server_config.headers` are matched case-insensitively.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoClientAuth, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::ReadError;

/// The challenge sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"ami-usage-exporter\"";
/// How often, at most, the files are checked for changes.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// bcrypt verifications running at once; more wait (bounding the CPU a password guesser gets).
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// The highest bcrypt cost accepted. A verification takes 0.13 s at cost 10 (what the toolkit's
/// documentation uses) and 2 s at cost 14 on a 2-core machine (release build), doubling with
/// each step. A hash at the highest cost in the file is made at load (the one unknown users
/// are checked against), so cost 31 would stall start-up for days; and every scrape with new
/// credentials pays a verification.
pub const MAX_BCRYPT_COST: u32 = 14;
/// Successful verifications remembered; the cache is emptied when it fills up.
const AUTH_CACHE_CAPACITY: usize = 256;
/// The headers the toolkit lets a web configuration set, with their allowed values (empty:
/// any). Everything else, Content-Type or WWW-Authenticate included, is refused.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];
/// What a client speaking plain HTTP to the TLS port is told (as Go's server does).
const PLAIN_HTTP_TO_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
Client sent an HTTP request to an HTTPS server.\n";

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("web config file {path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    /// A toolkit key this exporter does not implement (`--web.max-requests` bounds load).
    rate_limit: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<ClientAuth>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    /// A toolkit key this exporter does not implement; refused rather than silently ignored,
    /// since it restricts who may connect.
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility; this server speaks HTTP/1.1 only.
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
enum TlsVersion {
    #[serde(rename = "TLS10")]
    Tls10,
    #[serde(rename = "TLS11")]
    Tls11,
    #[serde(rename = "TLS12")]
    Tls12,
    #[serde(rename = "TLS13")]
    Tls13,
}

/// A field path and what is wrong with it.
type FieldError = (String, String);

fn fail<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, FieldError> {
    Err((field.into(), message.into()))
}

/// An empty string means "not set", as in the toolkit.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Change detection.

/// What identifies a version of a file: modification time, size, inode. `None`: unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        Self(std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len(), inode(&m)))))
    }
}

#[cfg(unix)]
fn inode(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// The files one load read, each stamped before it was read (so a change during the read is
/// seen at the next check).
type Watched = Vec<(PathBuf, Stamp)>;

fn changed(watched: &Watched) -> bool {
    watched.iter().any(|(path, stamp)| Stamp::of(path) != *stamp)
}

/// Reads the files a configuration names, relative to its directory, remembering each.
struct Files {
    dir: PathBuf,
    read: Watched,
}

impl Files {
    fn read(&mut self, name: &str) -> Result<(PathBuf, Vec<u8>), String> {
        let path = self.dir.join(name);
        self.read.push((path.clone(), Stamp::of(&path)));
        match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parsed configuration.

/// A validated web configuration: the TLS server configuration built from it, the users, and
/// the extra headers.
pub struct WebConfig {
    tls: Option<TlsAcceptor>,
    /// User name to bcrypt hash.
    users: HashMap<String, String>,
    /// Verified instead when the user is unknown, so that timing does not tell which users exist.
    dummy_hash: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    warnings: Vec<String>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.len())
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl WebConfig {
    /// Reads and validates a web configuration file; the paths it names are relative to its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        Self::attempt(path).1
    }

    /// Parses and validates YAML text, reading the files it names from `dir`; the error is
    /// (field path, reason).
    pub fn from_yaml(text: &str, dir: &Path) -> Result<Self, FieldError> {
        Self::parse(text, &mut Files { dir: dir.to_owned(), read: Vec::new() })
    }

    /// Loads, also returning the files read (the configuration file first), whether it worked or not.
    fn attempt(path: &Path) -> (Watched, Result<Self, WebConfigError>) {
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut files = Files { dir, read: vec![(path.to_owned(), Stamp::of(path))] };
        let text = match crate::config::read_limited(path) {
            Ok(text) => text,
            Err(ReadError::Io(source)) => {
                return (files.read, Err(WebConfigError::Read { path: path.to_owned(), source }));
            }
            Err(ReadError::Invalid(field, message)) => {
                return (files.read, Err(WebConfigError::Invalid { path: path.to_owned(), field, message }));
            }
        };
        let result = Self::parse(&text, &mut files);
        (
            files.read,
            result.map_err(|(field, message)| WebConfigError::Invalid { path: path.to_owned(), field, message }),
        )
    }

    fn parse(text: &str, files: &mut Files) -> Result<Self, FieldError> {
        // An empty file is valid (no TLS, no users), as in the toolkit.
        let raw: Option<RawWebConfig> = crate::config::parse_yaml(text)?;
        let raw = raw.unwrap_or_default();
        if raw.rate_limit.is_some() {
            return fail("rate_limit", "not supported by this exporter; use --web.max-requests to bound load");
        }
        let mut warnings = Vec::new();
        let tls = match &raw.tls_server_config {
            Some(tls) => build_tls(tls, files, &mut warnings)?,
            None => None,
        };
        let http = raw.http_server_config.unwrap_or_default();
        let _ = http.http2; // HTTP/2 is never served; `http2: true` is the toolkit's default anyway.
        let headers = extra_headers(http.headers.unwrap_or_default())?;
        let users = raw.basic_auth_users.unwrap_or_default();
        let mut max_cost = 0;
        for (user, hash) in &users {
            let field = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return fail(field, "a user name cannot contain ':' (basic authentication splits at the first ':')");
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                (field.clone(), format!("not a bcrypt hash ({e}); make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"))
            })?;
            let cost = parts.get_cost();
            if cost < 4 {
                return fail(field, format!("bcrypt cost {cost} is below 4, the least bcrypt defines"));
            }
            if cost > MAX_BCRYPT_COST {
                return fail(
                    field,
                    format!(
                        "bcrypt cost {cost} is above {MAX_BCRYPT_COST}: a check takes about 2 s of CPU at cost \
                         {MAX_BCRYPT_COST} and twice as long for each step above, at start-up and on every new \
                         login; use cost 10 (htpasswd -nBC 10)"
                    ),
                );
            }
            max_cost = max_cost.max(parts.get_cost());
        }
        if !users.is_empty() && tls.is_none() {
            warnings.push(
                "basic_auth_users is set without tls_server_config: passwords cross the network in clear text".into(),
            );
        }
        // Same cost as the most expensive real hash, so an unknown user takes as long as a known one.
        let dummy_hash = if users.is_empty() {
            String::new()
        } else {
            bcrypt::hash("ami-usage-exporter: no such user", max_cost)
                .map_err(|e| ("basic_auth_users".to_owned(), format!("cannot hash: {e}")))?
        };
        Ok(Self { tls, users: users.into_iter().collect(), dummy_hash, headers, warnings })
    }

    /// The TLS acceptor, when the file configures TLS.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.clone()
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests need basic authentication.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Headers added to every response.
    pub fn extra_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Settings accepted but adjusted or ignored, to be logged.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn extra_headers(configured: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, FieldError> {
    let mut headers = Vec::new();
    for (name, value) in configured {
        let field = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return fail(field, format!("this header cannot be configured; allowed: {}", names.join(", ")));
        };
        if value.is_empty() {
            continue; // blank means unset
        }
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
            return fail(field, format!("{value:?} is not one of {}", allowed.join(", ")));
        }
        let value =
            HeaderValue::from_str(&value).map_err(|_| (field, format!("{value:?} is not a valid header value")))?;
        headers.push((HeaderName::from_static(canonical_lower(canonical)), value));
    }
    Ok(headers)
}

/// `HeaderName::from_static` wants lowercase.
fn canonical_lower(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

// ---------------------------------------------------------------------------------------------
// TLS.

const TLS13_SUITE_NAMES: &[&str] =
    &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

fn build_tls(raw: &RawTls, files: &mut Files, warnings: &mut Vec<String>) -> Result<Option<TlsAcceptor>, FieldError> {
    const T: &str = "tls_server_config";
    let enabled = [&raw.cert, &raw.key, &raw.client_ca, &raw.cert_file, &raw.key_file, &raw.client_ca_file]
        .iter()
        .any(|v| given(v).is_some())
        || raw.client_auth_type.is_some();
    let other_settings = raw.min_version.is_some()
        || raw.max_version.is_some()
        || raw.cipher_suites.is_some()
        || raw.curve_preferences.is_some()
        || raw.prefer_server_cipher_suites.is_some();
    if !enabled {
        if other_settings {
            return fail(format!("{T}.cert_file"), "required (or cert) when TLS settings are given");
        }
        return Ok(None);
    }
    if raw.client_allowed_sans.is_some() {
        return fail(format!("{T}.client_allowed_sans"), "not supported by this exporter");
    }

    // Certificate chain and key, from a file or inline.
    let chain = match (given(&raw.cert), given(&raw.cert_file)) {
        (Some(_), Some(_)) => return fail(format!("{T}.cert"), "give cert or cert_file, not both"),
        (None, None) => return fail(format!("{T}.cert_file"), "required (or cert)"),
        (Some(pem), None) => certificates(pem.as_bytes(), "cert").map_err(|m| (format!("{T}.cert"), m))?,
        (None, Some(name)) => {
            let (path, bytes) = files.read(name).map_err(|m| (format!("{T}.cert_file"), m))?;
            certificates(&bytes, &path.display().to_string()).map_err(|m| (format!("{T}.cert_file"), m))?
        }
    };
    let (key, key_field) = match (given(&raw.key), given(&raw.key_file)) {
        (Some(_), Some(_)) => return fail(format!("{T}.key"), "give key or key_file, not both"),
        (None, None) => return fail(format!("{T}.key_file"), "required (or key)"),
        (Some(pem), None) => {
            (private_key(pem.as_bytes(), "key").map_err(|m| (format!("{T}.key"), m))?, format!("{T}.key"))
        }
        (None, Some(name)) => {
            let (path, bytes) = files.read(name).map_err(|m| (format!("{T}.key_file"), m))?;
            let key = private_key(&bytes, &path.display().to_string()).map_err(|m| (format!("{T}.key_file"), m))?;
            (key, format!("{T}.key_file"))
        }
    };
    let client_cas = match (given(&raw.client_ca), given(&raw.client_ca_file)) {
        (Some(_), Some(_)) => return fail(format!("{T}.client_ca"), "give client_ca or client_ca_file, not both"),
        (None, None) => None,
        (Some(pem), None) => Some(roots(pem.as_bytes(), "client_ca").map_err(|m| (format!("{T}.client_ca"), m))?),
        (None, Some(name)) => {
            let (path, bytes) = files.read(name).map_err(|m| (format!("{T}.client_ca_file"), m))?;
            Some(roots(&bytes, &path.display().to_string()).map_err(|m| (format!("{T}.client_ca_file"), m))?)
        }
    };

    // Versions: rustls speaks TLS 1.2 and 1.3 only. A floor of 1.0 or 1.1 is raised to 1.2 (the
    // result is stricter than asked, never weaker); a ceiling below 1.2 cannot be honoured.
    let mut min = raw.min_version.unwrap_or(TlsVersion::Tls12);
    let max = raw.max_version.unwrap_or(TlsVersion::Tls13);
    if max < TlsVersion::Tls12 {
        return fail(format!("{T}.max_version"), "TLS10 and TLS11 are not supported; use TLS12 or TLS13");
    }
    if min < TlsVersion::Tls12 {
        warnings.push(format!("{T}.min_version: TLS 1.0 and 1.1 are not supported; TLS 1.2 is the minimum"));
        min = TlsVersion::Tls12;
    }
    if min > max {
        return fail(format!("{T}.min_version"), "must not be above max_version");
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let mut provider = aws_lc_rs::default_provider();
    if let Some(names) = &raw.cipher_suites {
        provider.cipher_suites = cipher_suites(names, &provider.cipher_suites)?;
    }
    if let Some(names) = &raw.curve_preferences {
        provider.kx_groups = key_exchange_groups(names)?;
    }
    let provider = Arc::new(provider);

    let auth = raw.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
    let verifier: Arc<dyn ClientCertVerifier> = match (auth, client_cas) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return fail(
                format!("{T}.client_auth_type"),
                "a client CA is configured but client_auth_type is NoClientCert; use RequireAndVerifyClientCert",
            );
        }
        (ClientAuth::NoClientCert, None) => Arc::new(NoClientAuth),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => Arc::new(AnyClientCert {
            mandatory: auth == ClientAuth::RequireAnyClientCert,
            algorithms: provider.signature_verification_algorithms,
        }),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return fail(
                format!("{T}.client_ca_file"),
                format!("required (or client_ca) with client_auth_type {auth:?}"),
            );
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, Some(roots)) => {
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder =
                if auth == ClientAuth::VerifyClientCertIfGiven { builder.allow_unauthenticated() } else { builder };
            builder.build().map_err(|e| (format!("{T}.client_ca_file"), format!("unusable client CA: {e}")))?
        }
    };

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| (format!("{T}.cipher_suites"), format!("no cipher suite fits the TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| (key_field, format!("unusable with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{source}: not a PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{source}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"));
    }
    Ok(chain)
}

fn private_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("{source}: no PEM private key found"),
        e => format!("{source}: not a PEM private key: {e}"),
    })
}

fn roots(pem: &[u8], source: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem, source)? {
        store.add(cert).map_err(|e| format!("{source}: unusable CA certificate: {e}"))?;
    }
    Ok(store)
}

/// The TLS 1.2 suites named, in the order given (the server's preference), plus every TLS 1.3
/// suite: like Go, `cipher_suites` restricts TLS 1.2 only.
fn cipher_suites(
    names: &[String],
    available: &[SupportedCipherSuite],
) -> Result<Vec<SupportedCipherSuite>, FieldError> {
    let mut chosen: Vec<SupportedCipherSuite> =
        available.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))).copied().collect();
    let tls12: Vec<&SupportedCipherSuite> =
        available.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).collect();
    for (i, name) in names.iter().enumerate() {
        if TLS13_SUITE_NAMES.contains(&name.as_str()) {
            continue;
        }
        match tls12.iter().find(|s| s.suite().as_str() == Some(name.as_str())) {
            Some(suite) if !chosen.contains(suite) => chosen.push(**suite),
            Some(_) => {}
            None => {
                let supported: Vec<&str> = tls12.iter().filter_map(|s| s.suite().as_str()).collect();
                return fail(
                    format!("tls_server_config.cipher_suites[{i}]"),
                    format!("unknown or unsupported cipher suite {name:?}; supported: {}", supported.join(", ")),
                );
            }
        }
    }
    Ok(chosen)
}

/// Go's curve names, in the order given.
fn key_exchange_groups(names: &[String]) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, FieldError> {
    let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let wanted = match name.as_str() {
            "CurveP256" => NamedGroup::secp256r1,
            "CurveP384" => NamedGroup::secp384r1,
            "X25519" => NamedGroup::X25519,
            "X25519MLKEM768" => NamedGroup::X25519MLKEM768,
            other => {
                return fail(
                    format!("tls_server_config.curve_preferences[{i}]"),
                    format!(
                        "unknown or unsupported curve {other:?}; supported: CurveP256, CurveP384, X25519, X25519MLKEM768"
                    ),
                );
            }
        };
        if let Some(group) = aws_lc_rs::ALL_KX_GROUPS.iter().find(|g| g.name() == wanted)
            && !groups.iter().any(|g| g.name() == wanted)
        {
            groups.push(*group);
        }
    }
    if groups.is_empty() {
        return fail("tls_server_config.curve_preferences", "at least one curve is required when the list is given");
    }
    Ok(groups)
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and, for
/// the latter, required) but its chain is not checked, as in Go. The toolkit calls these modes
/// insecure; `RequireAndVerifyClientCert` is the one to use. The handshake signature is still
/// verified, so the client at least holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS handshake of one connection, bounded by `limit`. A client that speaks plain HTTP is
/// told so in plain HTTP (400) instead of getting a TLS alert it cannot read.
pub async fn accept_tls(
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    limit: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
            stream.write_all(PLAIN_HTTP_TO_TLS).await?;
            let _ = stream.shutdown().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP request on the TLS port"));
        }
        acceptor.accept(stream).await
    };
    tokio::time::timeout(limit, handshake)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")))
}

// ---------------------------------------------------------------------------------------------
// The file, kept current.

/// The web configuration file and its last good contents, re-read when it or a file it names
/// changes (checked at most every [`CHECK_INTERVAL`], when a connection or request needs it).
pub struct WebConfigSource {
    path: PathBuf,
    current: ArcSwap<WebConfig>,
    check_interval: Duration,
    next_check: Mutex<Instant>,
    /// The files of the last attempt, good or bad; locked while a check runs.
    watched: tokio::sync::Mutex<Watched>,
    auth: BasicAuth,
}

impl fmt::Debug for WebConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfigSource").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A request without valid credentials; answer 401 with [`WWW_AUTHENTICATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

impl WebConfigSource {
    /// The `--web.config.file` flag: nothing when absent or empty (as in the toolkit), else the
    /// loaded file, or why it cannot be used.
    pub fn from_flag(path: Option<&Path>) -> Result<Option<Arc<Self>>, WebConfigError> {
        match path {
            Some(path) if !path.as_os_str().is_empty() => Ok(Some(Arc::new(Self::load(path)?))),
            _ => Ok(None),
        }
    }

    /// Loads the file; an error is for start-up, where a bad file stops the exporter.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        Self::with_interval(path, CHECK_INTERVAL)
    }

    fn with_interval(path: &Path, check_interval: Duration) -> Result<Self, WebConfigError> {
        let (watched, config) = WebConfig::attempt(path);
        let config = config?;
        for warning in config.warnings() {
            tracing::warn!(path = %path.display(), "web config: {warning}");
        }
        tracing::info!(
            path = %path.display(),
            tls = config.tls_enabled(),
            basic_auth_users = config.users.len(),
            headers = config.headers.len(),
            "web configuration loaded"
        );
        Ok(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(config),
            check_interval,
            next_check: Mutex::new(Instant::now() + check_interval),
            watched: tokio::sync::Mutex::new(watched),
            auth: BasicAuth::default(),
        })
    }

    /// The configuration to use now, re-read first if a check is due and a file changed.
    pub async fn current(&self) -> Arc<WebConfig> {
        if self.check_due() {
            self.refresh().await;
        }
        self.current.load_full()
    }

    fn check_due(&self) -> bool {
        let mut next = self.next_check.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + self.check_interval;
        true
    }

    /// Re-reads the files if one changed. Another check already running: use what we have.
    async fn refresh(&self) {
        let Ok(mut watched) = self.watched.try_lock() else { return };
        let (path, seen) = (self.path.clone(), watched.clone());
        let attempt = tokio::task::spawn_blocking(move || changed(&seen).then(|| WebConfig::attempt(&path))).await;
        let (read, result) = match attempt {
            Ok(Some(attempt)) => attempt,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, "checking the web configuration failed");
                return;
            }
        };
        *watched = read;
        let tls_before = self.current.load().tls_enabled();
        let result = result.and_then(|config| {
            if config.tls_enabled() == tls_before {
                Ok(config)
            } else {
                Err(WebConfigError::Invalid {
                    path: self.path.clone(),
                    field: "tls_server_config".into(),
                    message: "TLS cannot be turned on or off while running; restart the exporter for that".into(),
                })
            }
        });
        match result {
            Ok(config) => {
                for warning in config.warnings() {
                    tracing::warn!(path = %self.path.display(), "web config: {warning}");
                }
                tracing::info!(path = %self.path.display(), tls = config.tls_enabled(), "web configuration reloaded");
                self.current.store(Arc::new(config));
            }
            Err(error) => {
                tracing::error!(%error, "web configuration reload failed; the previous one stays in use");
            }
        }
    }

    /// Checks the request's basic-auth credentials when `config` has users.
    pub async fn authorize(&self, config: &WebConfig, headers: &HeaderMap) -> Result<(), Unauthorized> {
        self.auth.authorize(config, headers).await
    }
}

/// bcrypt verification, bounded and cached.
struct BasicAuth {
    /// Digests of (user, password, stored hash) that verified.
    verified: Mutex<HashSet<[u8; 32]>>,
    slots: tokio::sync::Semaphore,
    bcrypt_calls: AtomicU64,
}

impl Default for BasicAuth {
    fn default() -> Self {
        Self {
            verified: Mutex::new(HashSet::new()),
            slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_BCRYPT),
            bcrypt_calls: AtomicU64::new(0),
        }
    }
}

impl BasicAuth {
    async fn authorize(&self, config: &WebConfig, headers: &HeaderMap) -> Result<(), Unauthorized> {
        if config.users.is_empty() {
            return Ok(());
        }
        let (user, password) = basic_credentials(headers).ok_or(Unauthorized)?;
        let known = config.users.get(&user);
        let hash = known.unwrap_or(&config.dummy_hash).clone();
        let key = cache_key(&user, &password, &hash);
        if known.is_some() && self.verified.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
            return Ok(());
        }
        // An unknown user costs a verification too (against the dummy hash), and is refused
        // whatever the outcome.
        let matches = self.bcrypt(password, hash).await;
        if known.is_none() || !matches {
            return Err(Unauthorized);
        }
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= AUTH_CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(key);
        Ok(())
    }

    async fn bcrypt(&self, password: Vec<u8>, hash: String) -> bool {
        let Ok(_slot) = self.slots.acquire().await else { return false };
        self.bcrypt_calls.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false)).await.unwrap_or(false)
    }
}

fn cache_key(user: &str, password: &[u8], hash: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [user.as_bytes(), password, hash.as_bytes()] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
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
        assert!(
            config.dummy_hash.starts_with("$2b$05$"),
            "as costly as the costliest real hash: {}",
            config.dummy_hash
        );
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
}
