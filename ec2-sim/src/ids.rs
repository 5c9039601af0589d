//! Identifiers: how the simulator mints them and how it recognises well-formed ones.
//!
//! IDs are derived from the seed and a per-kind counter through a bijective mixer, so two simulators with the same
//! seed hand out the same IDs in the same order, and distinct counters can never collide.

use crate::rng::mix64;

const DOMAIN_IMAGE: u64 = 0x696d_6167_6500_0001;
const DOMAIN_REPORT: u64 = 0x7265_706f_7274_0002;
const DOMAIN_REQUEST: u64 = 0x7265_7175_6573_0003;
const DOMAIN_OWNER: u64 = 0x6f77_6e65_7200_0005;
const DOMAIN_SECRET: u64 = 0x7365_6372_6574_0006;
const DOMAIN_TOKEN: u64 = 0x746f_6b65_6e00_0007;

/// RFC 4648 base32, the alphabet of AWS access key IDs.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The serial bits of an access key ID: 80 bits hold a zero bit, the 40-bit account and these.
const KEY_SERIAL_BITS: u32 = 39;

#[derive(Debug, Clone)]
pub(crate) struct IdGen {
    seed: u64,
    next_report: u64,
    next_request: u64,
}

impl IdGen {
    pub(crate) fn new(seed: u64) -> Self {
        Self { seed, next_report: 0, next_request: 0 }
    }

    /// The IDs of an extra owner's dataset depend on the seed and the account, so two owners never share IDs even
    /// with the same seed. (The primary owner's depend on the seed alone, as they always have.)
    pub(crate) fn for_owner(seed: u64, account: &str) -> Self {
        let account: u64 = account.parse().unwrap_or(0);
        Self::new(mix64(seed ^ mix64(account ^ DOMAIN_OWNER)))
    }

    fn key(&self, domain: u64) -> u64 {
        mix64(self.seed ^ domain)
    }

    /// `ami-` + 17 lowercase hex digits, as current AWS AMI IDs are.
    pub(crate) fn image_id(&self, index: u64) -> String {
        let a = mix64(self.key(DOMAIN_IMAGE) ^ index);
        format!("ami-{}", hex17(a))
    }

    /// `amiur-` + 17 lowercase hex digits, as in the AWS examples.
    pub(crate) fn next_report_id(&mut self) -> String {
        let a = mix64(self.key(DOMAIN_REPORT) ^ self.next_report);
        self.next_report += 1;
        format!("amiur-{}", hex17(a))
    }

    /// UUID-shaped, like the request IDs EC2 returns; only their uniqueness matters to clients.
    pub(crate) fn next_request_id(&mut self) -> String {
        let a = mix64(self.key(DOMAIN_REQUEST) ^ self.next_request);
        let b = mix64(a);
        self.next_request += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// An STS access key ID laid out as AWS's are: `ASIA`, then 80 bits in base32 whose bits 1–40 hold the account
/// (so the well-known decoding of key IDs gives the account back, see `account_of_access_key`) and whose last 39
/// bits hold `serial`, masked with `key`. Distinct serials (below 2^39) give distinct IDs for one account.
pub(crate) fn access_key_id(account: &str, serial: u64, key: u64) -> String {
    let account: u128 = account.parse().unwrap_or(0);
    let low = u128::from((serial ^ key) & ((1 << KEY_SERIAL_BITS) - 1));
    let bits: u128 = (account & ((1 << 40) - 1)) << KEY_SERIAL_BITS | low;
    let mut out = String::from("ASIA");
    for i in (0..16).rev() {
        out.push(BASE32[((bits >> (5 * i)) & 31) as usize] as char);
    }
    out
}

/// The account an AWS access key ID belongs to, decoded as AWS lays them out (any prefix, 16 base32 characters).
#[cfg(test)]
pub(crate) fn account_of_access_key(id: &str) -> Option<String> {
    let encoded = id.get(4..).filter(|e| e.len() == 16)?;
    let mut bits: u128 = 0;
    for c in encoded.bytes() {
        bits = bits << 5 | BASE32.iter().position(|&b| b == c)? as u128;
    }
    Some(format!("{:012}", (bits >> KEY_SERIAL_BITS) & ((1 << 40) - 1)))
}

/// `n` characters of `alphabet` drawn from a stream seeded by `seed`.
fn chars(n: usize, alphabet: &[u8], seed: u64) -> String {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = mix64(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// 40 base64 characters, the shape of an AWS secret access key.
pub(crate) fn secret_access_key(serial: u64, key: u64) -> String {
    chars(40, BASE64, mix64(key ^ DOMAIN_SECRET) ^ serial)
}

/// A base64 blob the length of a short STS session token. Nothing checks it; it only has to look like one.
pub(crate) fn session_token(serial: u64, key: u64) -> String {
    format!("IQoJb3JpZ2luX2Vj{}", chars(300, BASE64, mix64(key ^ DOMAIN_TOKEN) ^ serial))
}

/// An IAM unique ID: `prefix` (`AROA` for a role, `AIDA` for a user) + 17 characters, stable for an ARN.
pub(crate) fn unique_id(prefix: &str, arn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in arn.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{prefix}{}", chars(17, BASE32, h))
}

/// 16 hex digits of a unique value plus one derived digit: the first 16 keep the uniqueness of `a`.
fn hex17(a: u64) -> String {
    format!("{a:016x}{:x}", mix64(a) & 0xf)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// AWS accepts both the old 8-digit and the current 17-digit AMI IDs.
pub(crate) fn is_image_id(s: &str) -> bool {
    match s.strip_prefix("ami-") {
        Some(hex) => (hex.len() == 8 || hex.len() == 17) && is_lower_hex(hex),
        None => false,
    }
}

pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn id_shapes() {
        let mut g = IdGen::new(1);
        let img = g.image_id(0);
        assert!(is_image_id(&img), "{img}");
        assert_eq!(img.len(), 4 + 17);
        let rep = g.next_report_id();
        assert!(rep.starts_with("amiur-") && rep.len() == 6 + 17 && is_lower_hex(&rep[6..]));
        let req = g.next_request_id();
        assert_eq!(req.len(), 36);
        assert_eq!(req.matches('-').count(), 4);
    }

    #[test]
    fn ids_are_unique_and_deterministic() {
        let mut a = IdGen::new(9);
        let mut b = IdGen::new(9);
        let mut seen = BTreeSet::new();
        for i in 0..2000 {
            let r = a.next_report_id();
            assert_eq!(r, b.next_report_id());
            assert!(seen.insert(r));
            assert!(seen.insert(a.image_id(i)));
        }
        assert_ne!(IdGen::new(1).image_id(0), IdGen::new(2).image_id(0));
        assert_ne!(IdGen::new(1).image_id(0), IdGen::for_owner(1, "111111111111").image_id(0));
        assert_ne!(IdGen::for_owner(1, "222222222222").image_id(0), IdGen::for_owner(1, "333333333333").image_id(0));
    }

    #[test]
    fn access_keys_encode_their_account() {
        let mut seen = BTreeSet::new();
        for serial in 0..1000 {
            for account in ["000000000001", "222222222222", "999999999999"] {
                let id = access_key_id(account, serial, 0x1234_5678_9abc);
                assert_eq!(id.len(), 20);
                assert!(id.starts_with("ASIA") && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
                assert_eq!(account_of_access_key(&id).as_deref(), Some(account));
                assert!(seen.insert(id));
            }
        }
        // The example of the published decoding (Tal Be'ery, "A short note on AWS KEY ID").
        assert_eq!(account_of_access_key("ASIAY34FZKBOKMUTVV7A").as_deref(), Some("609629065308"));
        assert_eq!(account_of_access_key("AKIA"), None);
        assert_eq!(account_of_access_key("AKIA0000000000000000"), None);
        assert_eq!(secret_access_key(1, 2).len(), 40);
        assert_ne!(secret_access_key(1, 2), secret_access_key(2, 2));
        assert_ne!(session_token(1, 2), session_token(2, 2));
        let role = unique_id("AROA", "arn:aws:iam::222222222222:role/r");
        assert_eq!(role.len(), 21);
        assert_eq!(role, unique_id("AROA", "arn:aws:iam::222222222222:role/r"));
        assert_ne!(role, unique_id("AROA", "arn:aws:iam::222222222222:role/s"));
    }

    #[test]
    fn validation() {
        assert!(is_image_id("ami-12345678"));
        assert!(is_image_id("ami-0abcdef1234567890"));
        assert!(!is_image_id("ami-0ABCDEF1234567890"));
        assert!(!is_image_id("ami-123"));
        assert!(!is_image_id("i-0abcdef1234567890"));
        assert!(!is_image_id(""));
        assert!(is_account_id("123456789012"));
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901a"));
    }
}
