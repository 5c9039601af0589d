//! Timestamps as EC2 writes them (`2025-09-29T13:27:12.322Z`).
//!
//! Every time the simulator stores is truncated to whole milliseconds, because that is all the wire carries: a
//! client that compares a parsed `creationTime` with `Simulator::ground_truth()` must see equal values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn truncate_to_millis(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        // Before 1970 cannot happen with a sane clock; keep the value rather than panic.
        Err(_) => t,
    }
}

/// The nearest whole minute: EC2 rounds a deprecation time's seconds to the minute.
pub(crate) fn round_to_minute(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => {
            let minutes = (d.as_millis() + 30_000) / 60_000;
            UNIX_EPOCH + Duration::from_secs(u64::try_from(minutes * 60).unwrap_or(u64::MAX))
        }
        Err(_) => t,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, without fractions: the format of `deprecationTime`.
pub(crate) fn format_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// ISO 8601 UTC with milliseconds.
pub(crate) fn format_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Serde adapter so `TruthEntry` crosses the admin endpoint as RFC 3339 text, readable by humans and by
/// out-of-process users that deserialize it back.
pub(crate) mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_millis(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        let t = UNIX_EPOCH + Duration::from_millis(1_759_152_432_322);
        assert_eq!(format_millis(t), "2025-09-29T13:27:12.322Z");
        assert_eq!(parse("2025-09-29T13:27:12.322Z"), Some(t));
        assert_eq!(parse("2025-09-29T13:27:12.322+00:00"), Some(t));
    }

    #[test]
    fn deprecation_times_are_whole_minutes() {
        let t = UNIX_EPOCH + Duration::from_millis(1_759_152_432_322); // 2025-09-29T13:27:12.322Z
        assert_eq!(format_seconds(round_to_minute(t)), "2025-09-29T13:27:00Z");
        let later = t + Duration::from_millis(17_678); // 13:27:30.000
        assert_eq!(format_seconds(round_to_minute(later)), "2025-09-29T13:28:00Z");
        assert_eq!(round_to_minute(round_to_minute(t)), round_to_minute(t));
        assert_eq!(parse("2025-09-29T13:27:00Z"), Some(round_to_minute(t)));
    }

    #[test]
    fn truncation_round_trips() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_759_152_432_322_999_999);
        let tr = truncate_to_millis(t);
        assert_eq!(parse(&format_millis(tr)), Some(tr));
        assert_eq!(format_millis(t), format_millis(tr));
    }
}
