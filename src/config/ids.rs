//! Identifiers the user writes in the configuration.
//!
//! They are checked once, when the file is read, so that a typo is reported with its field
//! instead of surfacing hours later as an `InvalidAMIID.Malformed` from EC2. Values that come
//! back from AWS are not re-validated: EC2 is the authority on its own IDs.

use std::fmt;

use serde::Deserialize;

/// Why an identifier was refused; the config module adds the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: expected {expected}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                let valid: fn(&str) -> bool = $valid;
                if valid(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidId { kind: $kind, value, expected: $expected })
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An AMI ID: `ami-` and 8 (older images) or 17 lowercase hex digits.
    ImageId,
    "AMI ID",
    "\"ami-\" followed by 8 or 17 lowercase hex digits",
    |s| s
        .strip_prefix("ami-")
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && is_lower_hex(hex))
);

id_type!(
    /// A 12-digit AWS account ID. Kept as a string: leading zeros are significant.
    AccountId,
    "account ID",
    "12 digits",
    |s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
);

id_type!(
    /// An AMI usage report ID: `amiur-` and lowercase hex digits.
    ReportId,
    "report ID",
    "\"amiur-\" followed by lowercase hex digits",
    |s| s
        .strip_prefix("amiur-")
        .is_some_and(|hex| (8..=32).contains(&hex.len()) && is_lower_hex(hex))
);

id_type!(
    /// An AWS Region name such as `us-east-1` or `us-gov-west-1`.
    RegionName,
    "AWS Region",
    "a Region name such as us-east-1",
    |s| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() >= 3
            && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    }
);

id_type!(
    /// An IAM role ARN, `arn:<partition>:iam::<12-digit account>:role/<path and name>`.
    RoleArn,
    "IAM role ARN",
    "arn:aws:iam::123456789012:role/name",
    |s| {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "iam"
            && parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && parts[5].strip_prefix("role/").is_some_and(|name| !name.is_empty())
    }
);

impl RoleArn {
    /// The account the role lives in: the owner of the images read through it.
    pub fn account(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids() {
        for ok in ["ami-0123456789abcdef0", "ami-12345678"] {
            assert!(ok.parse::<ImageId>().is_ok(), "{ok}");
        }
        for bad in ["ami-0123456789ABCDEF0", "ami-123", "ami-0123456789abcdef", "0123456789abcdef0", "ami-1234567g", ""]
        {
            let err = bad.parse::<ImageId>().unwrap_err();
            assert!(err.to_string().contains("8 or 17"), "{err}");
        }
    }

    #[test]
    fn account_ids() {
        assert!("001100110011".parse::<AccountId>().is_ok());
        for bad in ["12345678901", "1234567890123", "12345678901a", " 123456789012"] {
            assert!(bad.parse::<AccountId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn role_arns() {
        let role: RoleArn = "arn:aws:iam::111122223333:role/ami-usage".parse().expect("valid");
        assert_eq!(role.account(), "111122223333");
        assert!("arn:aws-us-gov:iam::111122223333:role/path/x".parse::<RoleArn>().is_ok());
        for bad in ["arn:aws:iam::1111:role/x", "arn:aws:iam::111122223333:user/x", "arn:aws:s3:::b", "role/x"] {
            assert!(bad.parse::<RoleArn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn report_ids_and_regions() {
        assert!("amiur-00b877d192f6b02d0".parse::<ReportId>().is_ok());
        assert!("amiur-".parse::<ReportId>().is_err());
        assert!("ami-00b877d192f6b02d0".parse::<ReportId>().is_err());
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-5"] {
            assert!(ok.parse::<RegionName>().is_ok(), "{ok}");
        }
        for bad in ["us-east", "US-EAST-1", "useast1", "us--1", ""] {
            assert!(bad.parse::<RegionName>().is_err(), "{bad}");
        }
    }
}
