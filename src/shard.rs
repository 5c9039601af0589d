//! Sharding, as kube-state-metrics does it: `--total-shards` processes (a StatefulSet), each
//! owning the images whose key hashes to its ordinal, so that the shards' series add up to one
//! exporter's, and none appears twice.
//!
//! An image's key is (owner, Region, image ID), hashed with a stable 64-bit hash (the first 8
//! bytes of its SHA-256: the same in every process, version and platform) and placed with jump
//! consistent hashing (Lamping and Veach, 2014), so that going from N to N+1 shards moves about
//! 1/(N+1) of the images, the least any placement can.

use sha2::{Digest as _, Sha256};

/// Which share of the images this process polls and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    ordinal: u32,
    total: u32,
}

impl Default for Shard {
    /// Not sharded: one process owns every image.
    fn default() -> Self {
        Self { ordinal: 0, total: 1 }
    }
}

impl Shard {
    pub fn new(ordinal: u32, total: u32) -> Result<Self, String> {
        if total == 0 {
            return Err("--total-shards must be at least 1".to_owned());
        }
        if ordinal >= total {
            return Err(format!("--shard {ordinal} is not below --total-shards {total} (shards count from 0)"));
        }
        Ok(Self { ordinal, total })
    }

    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Whether this shard polls and serves the image.
    pub fn owns(&self, owner: &str, region: &str, image_id: &str) -> bool {
        self.total == 1 || jump_hash(key_hash(owner, region, image_id), self.total) == self.ordinal
    }
}

/// The stable 64-bit hash of an image's key. The parts are length-prefixed, so that no two
/// keys run together into the same bytes.
fn key_hash(owner: &str, region: &str, image_id: &str) -> u64 {
    let mut digest = Sha256::new();
    for part in [owner, region, image_id] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    let bytes = digest.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first)
}

/// Jump consistent hash: the bucket (0..buckets) of `key`, as published by Lamping and Veach.
fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// `--shard`: an ordinal, or a StatefulSet pod name ending in `-N` (`--shard=$(POD_NAME)`).
pub fn parse_ordinal(text: &str) -> Result<u32, String> {
    let refused = || format!("{text:?} is neither a shard ordinal (0, 1, ...) nor a StatefulSet pod name ending in -N");
    let digits = match text.rsplit_once('-') {
        Some((name, n)) if !name.is_empty() => n,
        Some(_) => return Err(refused()),
        None => text,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    digits.parse::<u32>().map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("ami-{i:017x}")).collect()
    }

    #[test]
    fn jump_hash_matches_the_published_algorithm() {
        // Values from the reference implementation (Lamping and Veach, and Guava's port).
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(1, 1), 0);
        for key in [0u64, 1, 42, u64::MAX] {
            for buckets in 1..50 {
                assert!(jump_hash(key, buckets) < buckets);
            }
        }
        // The defining property: growing by one bucket moves a key only into the new bucket.
        for key in 0..10_000u64 {
            let k = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for buckets in 1..20 {
                let (before, after) = (jump_hash(k, buckets), jump_hash(k, buckets + 1));
                assert!(after == before || after == buckets, "{k}: {before} -> {after} at {buckets}");
            }
        }
    }

    #[test]
    fn every_image_has_exactly_one_shard_and_the_shares_are_even() {
        let images = keys(30_000);
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).expect("valid")).collect();
        let mut counts = [0usize; 3];
        for image in &images {
            let owners: Vec<u32> =
                shards.iter().filter(|s| s.owns("111111111111", "us-east-1", image)).map(Shard::ordinal).collect();
            assert_eq!(owners.len(), 1, "{image}: {owners:?}");
            counts[owners[0] as usize] += 1;
        }
        for count in counts {
            assert!((9_500..=10_500).contains(&count), "{counts:?}");
        }
        assert!(images.iter().all(|i| Shard::default().owns("", "us-east-1", i)), "unsharded owns everything");
    }

    /// From 3 to 4 shards, about a quarter of the images move (all of them to the new shard).
    #[test]
    fn resharding_from_three_to_four_moves_about_a_quarter() {
        let images = keys(100_000);
        let owner = |total: u32, image: &str| {
            (0..total).find(|o| Shard::new(*o, total).is_ok_and(|s| s.owns("111111111111", "eu-west-1", image)))
        };
        let moved = images.iter().filter(|i| owner(3, i) != owner(4, i)).count();
        let share = moved as f64 / images.len() as f64;
        assert!((0.24..=0.26).contains(&share), "moved {share:.4} of the images, expected about 1/4");
        assert!(images.iter().filter(|i| owner(3, i) != owner(4, i)).all(|i| owner(4, i) == Some(3)));
    }

    #[test]
    fn the_shard_flag_takes_an_ordinal_or_a_pod_name() {
        assert_eq!(parse_ordinal("0"), Ok(0));
        assert_eq!(parse_ordinal("ami-usage-exporter-2"), Ok(2));
        assert_eq!(parse_ordinal("web-12"), Ok(12));
        for bad in ["", "web", "web-", "-1", "web-x", "2.5", "+1", "web-+1"] {
            assert!(parse_ordinal(bad).is_err_and(|e| e.contains("StatefulSet")), "{bad}");
        }
        assert!(Shard::new(3, 3).is_err_and(|e| e.contains("not below --total-shards 3")));
        assert!(Shard::new(0, 0).is_err());
        assert_eq!(Shard::new(2, 3).map(|s| (s.ordinal(), s.total())), Ok((2, 3)));
    }
}
