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
//! blocking pool, at most [`MAX_CONCURRENT_BCRYPT`](auth::MAX_CONCURRENT_BCRYPT) at once, and a successful one is cached
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
//!
//! The parts: `schema` (the file as written), `tls` (the rustls server configuration and the
//! handshake), `auth` (basic authentication) and `reload` (the file kept current); this file
//! validates a file into a `WebConfig`.

mod auth;
mod reload;
mod schema;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use hyper::header::{HeaderName, HeaderValue};
use tokio_rustls::TlsAcceptor;

pub use auth::WWW_AUTHENTICATE;
pub use reload::WebConfigSource;
pub use tls::accept_tls;

use crate::config::yaml::{ReadError, parse_yaml, read_limited};
use reload::{Files, Stamp, Watched};
use schema::{FieldError, RawWebConfig, fail};
use tls::build_tls;

/// The highest bcrypt cost accepted. A verification doubles in time with each step of cost:
/// cost 10 is what the toolkit's documentation uses, and cost 14 takes sixteen times as long,
/// about the most a start-up should wait. A hash at the highest cost in the file is made at
/// load (the one unknown users are checked against), so cost 31 would stall start-up for days;
/// and every scrape with new credentials pays a verification.
pub const MAX_BCRYPT_COST: u32 = 14;
/// The headers the toolkit lets a web configuration set, with their allowed values (empty:
/// any). Everything else, Content-Type or WWW-Authenticate included, is refused.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("web config file {path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

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
    #[cfg(test)]
    pub(super) fn from_yaml(text: &str, dir: &Path) -> Result<Self, FieldError> {
        Self::parse(text, &mut Files { dir: dir.to_owned(), read: Vec::new() })
    }

    /// Loads, also returning the files read (the configuration file first), whether it worked or not.
    fn attempt(path: &Path) -> (Watched, Result<Self, WebConfigError>) {
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut files = Files { dir, read: vec![(path.to_owned(), Stamp::of(path))] };
        let text = match read_limited(path) {
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
        let raw: Option<RawWebConfig> = parse_yaml(text)?;
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
    #[cfg(test)]
    pub(super) fn requires_auth(&self) -> bool {
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
