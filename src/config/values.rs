//! The values a configuration is made of, each refusing what EC2 would refuse (or what is
//! surely a typo) when it is parsed: durations, resource types and account filters.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::ids::AccountId;
use super::{DEFAULT_VERSION_DEPTH, LAUNCH_TEMPLATE, MAX_IDS_PER_CALL};

const MAX_VERSION_DEPTH: u32 = 10_000;
/// Longer durations are refused: they are typos, and timers cannot represent them all.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A duration written like Prometheus durations (`30s`, `5m`, `24h`, `1d`), never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct PositiveDuration(pub(super) Duration);

impl PositiveDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<String> for PositiveDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. 30s, 5m, 24h"))?;
        if d.is_zero() {
            return Err(format!("duration {s:?} must be greater than zero"));
        }
        if d > MAX_DURATION {
            return Err(format!("duration {s:?} is longer than 10 years"));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for PositiveDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// One resource type a report counts, with its option. A launch template's version depth is
/// always explicit (EC2's default filled in), so that two policies that mean the same compare
/// equal and a report made with the default is recognized as ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceType {
    name: String,
    version_depth: Option<u32>,
}

/// A launch template's `version_depth`, for usage reports and references alike: it applies to
/// ec2:LaunchTemplate only, within EC2's range.
pub(super) fn check_version_depth(name: &str, depth: u32) -> Result<u32, String> {
    if name != LAUNCH_TEMPLATE {
        return Err(format!("version_depth applies only to {LAUNCH_TEMPLATE}, not {name}"));
    }
    if !(1..=MAX_VERSION_DEPTH).contains(&depth) {
        return Err(format!("version_depth {depth} is out of range 1 to {MAX_VERSION_DEPTH}"));
    }
    Ok(depth)
}

impl ResourceType {
    pub fn new(name: &str, version_depth: Option<u32>) -> Result<Self, String> {
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!("resource type {name:?} must be a non-empty name without spaces, e.g. ec2:Instance"));
        }
        let version_depth = match version_depth {
            Some(depth) => Some(check_version_depth(name, depth)?),
            None => (name == LAUNCH_TEMPLATE).then_some(DEFAULT_VERSION_DEPTH),
        };
        Ok(Self { name: name.to_owned(), version_depth })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version_depth(&self) -> Option<u32> {
        self.version_depth
    }
}

/// Accepts either `ec2:Instance` or `{type: ec2:LaunchTemplate, version_depth: 20}`; a hand-written
/// visitor because an untagged enum would answer any mistake with "did not match any variant".
impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ResourceTypeVisitor;
        impl<'de> Visitor<'de> for ResourceTypeVisitor {
            type Value = ResourceType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a resource type name, or a map with `type` and `version_depth`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ResourceType, E> {
                ResourceType::new(v, None).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResourceType, A::Error> {
                let (mut name, mut depth) = (None::<String>, None::<u32>);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => name = Some(map.next_value()?),
                        "version_depth" => depth = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["type", "version_depth"])),
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("type"))?;
                ResourceType::new(&name, depth).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(ResourceTypeVisitor)
    }
}

/// The resource types of the reports: at least one, no duplicates, kept sorted so that the
/// same set written in another order is the same policy (and the same client token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTypes(Vec<ResourceType>);

impl ResourceTypes {
    pub fn iter(&self) -> impl Iterator<Item = &ResourceType> {
        self.0.iter()
    }
}

impl Default for ResourceTypes {
    fn default() -> Self {
        let instance = ResourceType { name: "ec2:Instance".into(), version_depth: None };
        let template = ResourceType { name: LAUNCH_TEMPLATE.into(), version_depth: Some(DEFAULT_VERSION_DEPTH) };
        Self(vec![instance, template])
    }
}

impl TryFrom<Vec<ResourceType>> for ResourceTypes {
    type Error = String;
    fn try_from(mut types: Vec<ResourceType>) -> Result<Self, String> {
        if types.is_empty() {
            return Err("at least one resource type is required".into());
        }
        types.sort();
        let names: BTreeSet<&str> = types.iter().map(ResourceType::name).collect();
        if names.len() != types.len() {
            return Err("each resource type may be listed once".into());
        }
        Ok(Self(types))
    }
}

impl<'de> Deserialize<'de> for ResourceTypes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<ResourceType>::deserialize(deserializer)?.try_into().map_err(de::Error::custom)
    }
}

/// The accounts a created report is limited to: sorted, unique, at most 200 (EC2's limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter(Vec<AccountId>);

impl AccountFilter {
    pub fn iter(&self) -> impl Iterator<Item = &AccountId> {
        self.0.iter()
    }
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<AccountId>> for AccountFilter {
    type Error = String;
    fn try_from(mut ids: Vec<AccountId>) -> Result<Self, String> {
        ids.sort();
        ids.dedup();
        if ids.len() > MAX_IDS_PER_CALL {
            return Err(format!("{} account IDs given; EC2 accepts at most {MAX_IDS_PER_CALL} per report", ids.len()));
        }
        Ok(Self(ids))
    }
}

impl<'de> Deserialize<'de> for AccountFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<AccountId>::deserialize(deserializer)?.try_into().map_err(de::Error::custom)
    }
}
