//! Basic authentication: bcrypt verification, bounded and cached.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, HeaderMap};
use sha2::{Digest as _, Sha256};

use super::WebConfig;

/// The challenge sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"ami-usage-exporter\"";
/// bcrypt verifications running at once; more wait (bounding the CPU a password guesser gets).
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Successful verifications remembered; the cache is emptied when it fills up.
const AUTH_CACHE_CAPACITY: usize = 256;

/// A request without valid credentials; answer 401 with [`WWW_AUTHENTICATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized;

/// bcrypt verification, bounded and cached.
pub(super) struct BasicAuth {
    /// Digests of (user, password, stored hash) that verified.
    pub(super) verified: Mutex<HashSet<[u8; 32]>>,
    slots: tokio::sync::Semaphore,
    pub(super) bcrypt_calls: AtomicU64,
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
    pub(super) async fn authorize(&self, config: &WebConfig, headers: &HeaderMap) -> Result<(), Unauthorized> {
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
