//! `references`: which of the exporter's own resources DescribeImageReferences counts. Opt in,
//! because it needs more permissions than the reports.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::values::{PositiveDuration, check_version_depth};

/// The resource types DescribeImageReferences knows, as the API spells them.
pub const REFERENCE_TYPES: [&str; 5] =
    ["ec2:Instance", "ec2:LaunchTemplate", "ssm:Parameter", "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe"];
/// Instance states the `state-name` option takes.
const INSTANCE_STATES: [&str; 6] = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceSettings {
    pub enabled: bool,
    pub refresh_interval: PositiveDuration,
    pub resource_types: ReferenceTypes,
}

impl Default for ReferenceSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            refresh_interval: PositiveDuration(Duration::from_secs(3600)),
            resource_types: ReferenceTypes::All,
        }
    }
}

/// `all` (IncludeAllResourceTypes), or a list of types with their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceTypes {
    All,
    Only(Vec<ReferenceType>),
}

impl ReferenceTypes {
    /// The names of the types counted, each exported (0 when none references the image).
    pub fn names(&self) -> Vec<&str> {
        match self {
            ReferenceTypes::All => REFERENCE_TYPES.to_vec(),
            ReferenceTypes::Only(types) => types.iter().map(|t| t.name.as_str()).collect(),
        }
    }
}

/// One resource type, with the options EC2 takes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceType {
    pub name: String,
    /// `state-name` (ec2:Instance only); empty: every state.
    pub states: Vec<String>,
    /// `version-depth` (ec2:LaunchTemplate only); `None`: EC2's default.
    pub version_depth: Option<u32>,
}

impl ReferenceType {
    fn new(name: String, states: Vec<String>, version_depth: Option<u32>) -> Result<Self, String> {
        if !REFERENCE_TYPES.contains(&name.as_str()) {
            return Err(format!(
                "unknown resource type {name:?}; DescribeImageReferences takes {}",
                REFERENCE_TYPES.join(", ")
            ));
        }
        if !states.is_empty() && name != "ec2:Instance" {
            return Err(format!("states applies only to ec2:Instance, not {name}"));
        }
        if let Some(bad) = states.iter().find(|s| !INSTANCE_STATES.contains(&s.as_str())) {
            return Err(format!("unknown instance state {bad:?}; one of {}", INSTANCE_STATES.join(", ")));
        }
        let version_depth = version_depth.map(|depth| check_version_depth(&name, depth)).transpose()?;
        Ok(Self { name, states, version_depth })
    }
}

impl<'de> Deserialize<'de> for ReferenceTypes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypesVisitor;
        impl<'de> Visitor<'de> for TypesVisitor {
            type Value = ReferenceTypes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all`, or a list of resource types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReferenceTypes, E> {
                match v {
                    "all" => Ok(ReferenceTypes::All),
                    other => Err(E::custom(format!("{other:?}: write `all`, or a list of resource types"))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ReferenceTypes, A::Error> {
                let mut types: Vec<ReferenceType> = Vec::new();
                while let Some(t) = seq.next_element::<ReferenceType>()? {
                    if types.iter().any(|known| known.name == t.name) {
                        return Err(de::Error::custom(format!("{} is listed twice", t.name)));
                    }
                    types.push(t);
                }
                if types.is_empty() {
                    return Err(de::Error::custom("at least one resource type, or `all`"));
                }
                Ok(ReferenceTypes::Only(types))
            }
        }
        deserializer.deserialize_any(TypesVisitor)
    }
}

/// `ec2:Instance`, or `{type: ec2:Instance, states: [running]}` / `{type: ec2:LaunchTemplate,
/// version_depth: 20}`.
impl<'de> Deserialize<'de> for ReferenceType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypeVisitor;
        impl<'de> Visitor<'de> for TypeVisitor {
            type Value = ReferenceType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a resource type name, or a map with `type` and its options")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReferenceType, E> {
                ReferenceType::new(v.to_owned(), Vec::new(), None).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReferenceType, A::Error> {
                let (mut name, mut states, mut depth) = (None::<String>, Vec::new(), None::<u32>);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => name = Some(map.next_value()?),
                        "states" => states = map.next_value()?,
                        "version_depth" => depth = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["type", "states", "version_depth"])),
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("type"))?;
                ReferenceType::new(name, states, depth).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(TypeVisitor)
    }
}
