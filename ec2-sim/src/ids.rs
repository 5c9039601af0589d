//! Identifiers: how the simulator mints them and how it recognises well-formed ones.
//!
//! IDs are derived from the seed and a per-kind counter through a bijective mixer, so two simulators with the same
//! seed hand out the same IDs in the same order, and distinct counters can never collide.

use crate::rng::mix64;

const DOMAIN_IMAGE: u64 = 0x696d_6167_6500_0001;
const DOMAIN_REPORT: u64 = 0x7265_706f_7274_0002;
const DOMAIN_REQUEST: u64 = 0x7265_7175_6573_0003;

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
