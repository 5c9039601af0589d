//! The facts `DescribeImages` tells about the dataset's images: creation date, state, visibility, deprecation and
//! last launch.
//!
//! Which images are special is decided by their index, so a test author can rely on it for any seed (see
//! README, "The dataset"); the times are drawn from a stream of their own, derived from the seed, so that adding
//! facts changed none of the draws the dataset made before (IDs, accounts, counts, reports).

use std::time::{Duration, SystemTime};

use crate::rng::{SplitMix64, mix64};
use crate::timefmt::{round_to_minute, truncate_to_millis};

const DOMAIN_FACTS: u64 = 0x6661_6374_7300_0008;
const DAY: Duration = Duration::from_secs(86_400);

/// Creation dates lie between these many days ago: spread over the last two years.
const CREATED_DAYS_AGO: (u64, u64) = (30, 730);
/// Launched images last launched at most this many days ago.
const MAX_LAUNCHED_DAYS_AGO: u64 = 200;

/// The facts of one dataset image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) creation_date: SystemTime,
    pub(crate) state: &'static str,
    pub(crate) public: bool,
    pub(crate) deprecation_time: Option<SystemTime>,
    pub(crate) last_launched_time: Option<SystemTime>,
}

/// When an image's deprecation falls, relative to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deprecation {
    Past,
    /// Within the next 14 days.
    Soon,
    /// Two months to a year ahead.
    Later,
}

/// Every fourth image from index 1 (1, 5, 9, …) is deprecated: at index 1, 13, 25, … in the past, at 5, 17, … in
/// the next 14 days, at 9, 21, … months ahead.
pub(crate) fn deprecation_of(index: usize) -> Option<Deprecation> {
    if index % 4 != 1 {
        return None;
    }
    Some(match (index / 4) % 3 {
        0 => Deprecation::Past,
        1 => Deprecation::Soon,
        _ => Deprecation::Later,
    })
}

/// Every fifth image from index 3 (3, 8, 13, …) never launched an instance. Index 3 is also the dataset's unused
/// image (every seventh from 3), so the default dataset has a clear retirement candidate.
pub(crate) fn never_launched(index: usize) -> bool {
    index % 5 == 3
}

/// Every tenth image from index 9 (9, 19, …) is disabled: none of a dataset of up to 9 images is, so discovery
/// of small datasets sees every image.
pub(crate) fn disabled(index: usize) -> bool {
    index % 10 == 9
}

/// Every sixth image from index 4 (4, 10, 16, …) is public. None of them is disabled (AWS makes a disabled image
/// private).
pub(crate) fn public(index: usize) -> bool {
    index % 6 == 4
}

/// The facts stream of a dataset seed: independent of the stream that draws IDs, accounts and counts.
pub(crate) fn stream(seed: u64) -> SplitMix64 {
    SplitMix64::new(mix64(seed ^ DOMAIN_FACTS))
}

fn days_and_some(rng: &mut SplitMix64, lo: u64, hi: u64) -> Duration {
    DAY * rng.range_inclusive(lo, hi) as u32 + Duration::from_millis(rng.below(86_400_000))
}

/// The facts of the image at `index`, drawn from `rng` (the facts stream), with times relative to `now`.
pub(crate) fn draw(rng: &mut SplitMix64, index: usize, now: SystemTime) -> Facts {
    let age = days_and_some(rng, CREATED_DAYS_AGO.0, CREATED_DAYS_AGO.1);
    let creation_date = truncate_to_millis(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let age_days = age.as_secs() / 86_400;
    // Always drawn, so that an image's launch does not depend on the rules of the images before it.
    let launched_ago = days_and_some(rng, 0, MAX_LAUNCHED_DAYS_AGO.min(age_days));
    let last_launched_time = (!never_launched(index))
        .then(|| truncate_to_millis(now.checked_sub(launched_ago).unwrap_or(now).max(creation_date)));
    let past = days_and_some(rng, 1, 90.min(age_days - 1));
    let soon = days_and_some(rng, 1, 12);
    let later = days_and_some(rng, 60, 365);
    let deprecation_time = deprecation_of(index).map(|when| {
        let at = match when {
            Deprecation::Past => now.checked_sub(past).unwrap_or(now).max(creation_date),
            Deprecation::Soon => now + soon,
            Deprecation::Later => now + later,
        };
        round_to_minute(at)
    });
    Facts {
        creation_date,
        state: if disabled(index) { "disabled" } else { "available" },
        public: public(index),
        deprecation_time,
        last_launched_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_by_index() {
        let deprecated: Vec<usize> = (0..30).filter(|i| deprecation_of(*i).is_some()).collect();
        assert_eq!(deprecated, [1, 5, 9, 13, 17, 21, 25, 29]);
        assert_eq!(deprecation_of(1), Some(Deprecation::Past));
        assert_eq!(deprecation_of(5), Some(Deprecation::Soon));
        assert_eq!(deprecation_of(9), Some(Deprecation::Later));
        assert_eq!(deprecation_of(13), Some(Deprecation::Past));
        assert_eq!((0..20).filter(|i| never_launched(*i)).collect::<Vec<_>>(), [3, 8, 13, 18]);
        assert_eq!((0..30).filter(|i| disabled(*i)).collect::<Vec<_>>(), [9, 19, 29]);
        assert_eq!((0..20).filter(|i| public(*i)).collect::<Vec<_>>(), [4, 10, 16]);
        assert!((0..10_000).all(|i| !(disabled(i) && public(i))));
    }

    #[test]
    fn times_are_where_the_rules_say() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut rng = stream(1);
        for index in 0..500 {
            let f = draw(&mut rng, index, now);
            let ago = |t: SystemTime| now.duration_since(t).unwrap_or_default();
            assert!((DAY * 30..=DAY * 731).contains(&ago(f.creation_date)), "{index}");
            assert_eq!(f.creation_date, truncate_to_millis(f.creation_date));
            match f.last_launched_time {
                None => assert!(never_launched(index)),
                Some(t) => {
                    assert!(t >= f.creation_date && t <= now && ago(t) <= DAY * 201, "{index}");
                    assert_eq!(t, truncate_to_millis(t));
                }
            }
            match (deprecation_of(index), f.deprecation_time) {
                (None, None) => {}
                (Some(Deprecation::Past), Some(t)) => {
                    assert!(t <= now && t + Duration::from_secs(30) >= f.creation_date)
                }
                (Some(Deprecation::Soon), Some(t)) => assert!(t > now && t <= now + DAY * 14),
                (Some(Deprecation::Later), Some(t)) => assert!(t >= now + DAY * 59 && t <= now + DAY * 367),
                other => panic!("{index}: {other:?}"),
            }
            if let Some(t) = f.deprecation_time {
                assert_eq!(t, round_to_minute(t));
            }
            assert_eq!(f.state, if disabled(index) { "disabled" } else { "available" });
        }
    }

    #[test]
    fn same_seed_same_facts() {
        let now = SystemTime::now();
        let a: Vec<Facts> = (0..20).scan(stream(5), |rng, i| Some(draw(rng, i, now))).collect();
        let b: Vec<Facts> = (0..20).scan(stream(5), |rng, i| Some(draw(rng, i, now))).collect();
        let c: Vec<Facts> = (0..20).scan(stream(6), |rng, i| Some(draw(rng, i, now))).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
