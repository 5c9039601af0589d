//! The file kept current: re-read when it or a file it names changes, the last good
//! configuration kept when it turns bad.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper::header::HeaderMap;

use super::auth::{BasicAuth, Unauthorized};
use super::{WebConfig, WebConfigError};

/// How often, at most, the files are checked for changes.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a version of a file: modification time, size, inode. `None`: unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    pub(super) fn of(path: &Path) -> Self {
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
pub(super) type Watched = Vec<(PathBuf, Stamp)>;

pub(super) fn changed(watched: &Watched) -> bool {
    watched.iter().any(|(path, stamp)| Stamp::of(path) != *stamp)
}

/// Reads the files a configuration names, relative to its directory, remembering each.
pub(super) struct Files {
    pub(super) dir: PathBuf,
    pub(super) read: Watched,
}

impl Files {
    pub(super) fn read(&mut self, name: &str) -> Result<(PathBuf, Vec<u8>), String> {
        let path = self.dir.join(name);
        self.read.push((path.clone(), Stamp::of(&path)));
        match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }
}

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

    pub(super) fn with_interval(path: &Path, check_interval: Duration) -> Result<Self, WebConfigError> {
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
