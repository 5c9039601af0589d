//! The configuration file: which images to watch in which Regions, how often, and how reports
//! are kept fresh.
//!
//! Parsing happens in two layers. serde (through `serde_path_to_error`, so every error names the
//! field it is about) turns YAML into types whose constructors refuse bad values: IDs, durations
//! and resource types. `Config::validate` then checks what spans several fields. Whatever gets
//! past both is something EC2 will accept, so a bad file fails at start-up, not at 3 a.m.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod ids;
mod references;
mod values;
pub(crate) mod yaml;
mod yaml_scan;

pub use ids::{AccountId, ImageId, RegionName, ReportId, RoleArn};
pub use references::{REFERENCE_TYPES, ReferenceSettings, ReferenceType, ReferenceTypes};
pub use values::{AccountFilter, PositiveDuration, ResourceType, ResourceTypes};

use yaml::{ReadError, parse_yaml, read_limited};

/// EC2 takes at most this many IDs in one Describe call, and this many account IDs in a report.
pub const MAX_IDS_PER_CALL: usize = 200;
/// The only resource type that takes an option, and its default when none is given.
pub const LAUNCH_TEMPLATE: &str = "ec2:LaunchTemplate";
pub const DEFAULT_VERSION_DEPTH: u32 = 20;
/// Intervals below this are allowed (tests, demos) but make no sense against a daily report.
pub const SHORT_POLL_WARNING: Duration = Duration::from_secs(60);
/// The largest configuration file read, in bytes: 1 MiB, all that a Kubernetes ConfigMap
/// holds, and room for tens of thousands of image IDs. A larger file is refused before it is
/// read (by its size, and by a read that stops one byte past the limit, for a pipe or a file
/// whose size is not known in advance). Applies to the web configuration file too.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most image IDs in one target's `images`, and most report IDs in its `report_ids`. Each 200
/// of them are a Describe call per poll (and each image a report to keep fresh), so 10,000 are
/// 50 calls per list per poll under EC2's per-account throttling; and they fit in the 1 MiB file.
pub const MAX_IDS_PER_TARGET: usize = 10_000;
/// The largest `aws.page_size`: the most `MaxResults` that EC2's Describe calls take. (The
/// smallest is 1; DescribeImages, which needs at least 5, is sent at least 5.)
pub const MAX_PAGE_SIZE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// The whole configuration, valid by construction once `load` or `from_yaml` returned it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How often the exporter reads the reports. Reports themselves change at most daily.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: PositiveDuration,
    /// How long an image that cannot be refreshed keeps showing its last good figures (marked
    /// by `ami_usage_image_poll_success 0`) before its usage series are dropped.
    #[serde(default = "default_staleness_limit")]
    pub staleness_limit: PositiveDuration,
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub reports: ReportPolicy,
    #[serde(default)]
    pub entries: EntryQuery,
    #[serde(default)]
    pub accounts: AccountSettings,
    #[serde(default)]
    pub cardinality: Cardinality,
    #[serde(default)]
    pub images: ImageSettings,
    #[serde(default)]
    pub references: ReferenceSettings,
    pub targets: Vec<Target>,
}

/// What DescribeImages tells about the watched images: name, state, visibility, creation, last
/// launch and deprecation (`ami_usage_image_*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSettings {
    /// Read the facts at all (one DescribeImages call per 200 images per refresh).
    pub facts: bool,
    /// How often the facts are read again; they change rarely, and `lastLaunchedTime` itself
    /// lags by up to a day.
    pub refresh_interval: PositiveDuration,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self { facts: true, refresh_interval: PositiveDuration(Duration::from_secs(3600)) }
    }
}

/// What the exporter knows about the accounts that use the images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Friendly names, exported as `ami_usage_account_info` for dashboards to join on.
    pub names: BTreeMap<AccountId, String>,
    /// Accounts allowed to use every image. With this or `expected_per_image` set, usage by any
    /// other account is also exported as `ami_usage_unexpected_resources`.
    pub expected: Vec<AccountId>,
    /// Accounts allowed to use one image, in addition to `expected`.
    pub expected_per_image: BTreeMap<ImageId, Vec<AccountId>>,
}

impl AccountSettings {
    /// Whether unexpected use is tracked at all.
    pub fn tracks_unexpected(&self) -> bool {
        !self.expected.is_empty() || !self.expected_per_image.is_empty()
    }
}

/// Limits on the number of series, for images used by thousands of accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cardinality {
    /// Drop the `account_id` label of usage series, summing over accounts, for every image.
    pub sum_accounts: bool,
    /// The same for these images only.
    pub sum_accounts_for: Vec<ImageId>,
    /// At most this many `ami_usage_resources` series (0: no limit). Series past the limit are
    /// left out, and their number is exported as `ami_usage_series_dropped`.
    pub max_series: u64,
}

/// How the exporter talks to the EC2 API: limits, timeouts and retries, shared by all Regions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// AWS calls in flight at once, per Region. EC2 throttles per account, Region and action.
    pub max_concurrent_requests: NonZeroU32,
    /// Targets (Regions of owner accounts) polled at once. Each is polled on its own schedule,
    /// so a slow Region never holds back another; this bounds the work in flight.
    pub max_concurrent_targets: NonZeroU32,
    /// `MaxResults` of every Describe call, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: NonZeroU32,
    pub connect_timeout: PositiveDuration,
    /// One HTTP attempt; a slow attempt is abandoned and retried.
    pub attempt_timeout: PositiveDuration,
    /// One operation, all retries included.
    pub operation_timeout: PositiveDuration,
    /// Attempts per operation, the first included (the SDK's standard retry with backoff).
    pub max_attempts: NonZeroU32,
    pub retry_mode: RetryMode,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            max_concurrent_requests: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
            max_concurrent_targets: NonZeroU32::new(8).unwrap_or(NonZeroU32::MIN),
            page_size: NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
            connect_timeout: PositiveDuration(Duration::from_secs(3)),
            attempt_timeout: PositiveDuration(Duration::from_secs(10)),
            operation_timeout: PositiveDuration(Duration::from_secs(30)),
            max_attempts: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            retry_mode: RetryMode::Standard,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    Standard,
    /// Standard plus a client-side rate limiter that slows down after throttling.
    Adaptive,
}

/// What reports the exporter reads, and whether and how it creates them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportPolicy {
    /// `false`: only read reports that exist (read-only IAM). `true`: also create them.
    pub create: bool,
    /// A report older than this is replaced by a new one (when `create` is on).
    pub max_age: PositiveDuration,
    /// Delete the exporter's own reports once a newer one serves (when `create` is on), so that
    /// an image keeps one or two reports instead of 30 days of them, and listing its reports
    /// stays one page.
    pub delete_superseded: bool,
    /// A report pending longer than this is logged and counted as stuck. AWS documents no
    /// build time; its own waiter gives up after 10 minutes.
    pub pending_timeout: PositiveDuration,
    pub resource_types: ResourceTypes,
    /// Only these accounts in created reports (EC2 allows at most 200); empty means all.
    pub account_ids: AccountFilter,
    /// Extra tags on the reports the exporter creates, beside its own marker tag.
    pub tags: BTreeMap<String, String>,
}

impl Default for ReportPolicy {
    fn default() -> Self {
        Self {
            create: true,
            max_age: PositiveDuration(Duration::from_secs(24 * 3600)),
            delete_superseded: true,
            pending_timeout: PositiveDuration(Duration::from_secs(3600)),
            resource_types: ResourceTypes::default(),
            account_ids: AccountFilter::default(),
            tags: BTreeMap::new(),
        }
    }
}

/// Filters sent with DescribeImageUsageReportEntries (as `Filters`); each empty list sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntryQuery {
    pub account_ids: Vec<AccountId>,
    pub resource_types: Vec<String>,
    /// ISO 8601 times, `*` allowed as a wildcard, e.g. `2026-11-*`.
    pub creation_times: Vec<String>,
}

/// One Region of one owner account: images, image discovery, and reports made elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub region: RegionName,
    #[serde(default)]
    pub images: Vec<ImageId>,
    #[serde(default)]
    pub report_ids: Vec<ReportId>,
    /// Images selected by DescribeImages, refreshed on their own schedule.
    #[serde(default)]
    pub discover: Option<Discovery>,
    /// A role to assume for this target (another owner account); default credentials otherwise.
    #[serde(default)]
    pub role_arn: Option<RoleArn>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub session_name: Option<String>,
    /// The owner account of a target without `role_arn`, needed to label series when several
    /// owner accounts are configured.
    #[serde(default)]
    pub owner_account_id: Option<AccountId>,
}

impl Target {
    /// The owner account, when known from the configuration.
    pub fn owner(&self) -> Option<&str> {
        self.role_arn.as_ref().map(RoleArn::account).or(self.owner_account_id.as_ref().map(AccountId::as_str))
    }
}

/// Which images DescribeImages selects, and how often the selection is refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// `self`, or owner account IDs.
    #[serde(default = "default_owners")]
    pub owners: Vec<String>,
    /// DescribeImages filters, e.g. `name: ["golden-*"]`, `"tag:Team": [platform]`.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_discovery_interval")]
    pub refresh_interval: PositiveDuration,
}

fn default_owners() -> Vec<String> {
    vec!["self".to_owned()]
}

fn default_discovery_interval() -> PositiveDuration {
    PositiveDuration(Duration::from_secs(3600))
}

fn default_poll_interval() -> PositiveDuration {
    PositiveDuration(Duration::from_secs(300))
}

fn default_staleness_limit() -> PositiveDuration {
    PositiveDuration(Duration::from_secs(3600))
}

impl Discovery {
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.owners.is_empty() {
            return fail("owners", "at least one owner (self, or an account ID) is required".into());
        }
        for (i, owner) in self.owners.iter().enumerate() {
            let account = owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit());
            if owner != "self" && !account {
                return fail(&format!("owners[{i}]"), format!("{owner:?} is neither self nor a 12-digit account ID"));
            }
        }
        for (name, values) in &self.filters {
            if name.is_empty() || values.is_empty() || values.iter().any(String::is_empty) {
                return fail(
                    &format!("filters.{name}"),
                    "a filter needs a name and at least one non-empty value".into(),
                );
            }
        }
        Ok(())
    }
}

/// At most [`MAX_IDS_PER_TARGET`] IDs, each listed once; the error names the list or the repeat.
fn unique_ids<'a>(
    field: &str,
    ids: impl ExactSizeIterator<Item = &'a str>,
    what: &str,
) -> Result<(), (String, String)> {
    if ids.len() > MAX_IDS_PER_TARGET {
        return Err((
            field.to_owned(),
            format!("{} {what} listed; at most {MAX_IDS_PER_TARGET} per target", ids.len()),
        ));
    }
    let mut first = std::collections::HashMap::with_capacity(ids.len());
    for (j, id) in ids.enumerate() {
        if let Some(earlier) = first.insert(id, j) {
            return Err((format!("{field}[{j}]"), format!("{id} is listed twice (first at {field}[{earlier}])")));
        }
    }
    Ok(())
}

impl Config {
    /// Reads and validates the file; every error names the file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let invalid = |(field, message)| ConfigError::Invalid { path: path.into(), field, message };
        let text = read_limited(path).map_err(|e| match e {
            ReadError::Io(source) => ConfigError::Read { path: path.into(), source },
            ReadError::Invalid(field, message) => invalid((field, message)),
        })?;
        Self::from_yaml(&text).map_err(invalid)
    }

    /// Parses and validates YAML text; the error is (field path, reason).
    pub fn from_yaml(text: &str) -> Result<Self, (String, String)> {
        let config: Config = parse_yaml(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: String, message: &str| Err((field, message.to_owned()));
        if self.targets.is_empty() {
            return err("targets".into(), "at least one target (a Region and its images) is required");
        }
        let a = &self.aws;
        if a.attempt_timeout > a.operation_timeout {
            return err("aws.attempt_timeout".into(), "must not exceed aws.operation_timeout");
        }
        if a.page_size.get() > MAX_PAGE_SIZE {
            return err(
                "aws.page_size".into(),
                &format!("{} is over {MAX_PAGE_SIZE}, the most MaxResults EC2 takes", a.page_size),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            if !seen.insert((target.region.as_str(), target.role_arn.as_ref().map(RoleArn::as_str))) {
                return err(
                    format!("targets[{i}].region"),
                    &format!(
                        "{} is listed twice for the same credentials; put all its images in one target",
                        target.region
                    ),
                );
            }
            unique_ids(&format!("targets[{i}].images"), target.images.iter().map(ImageId::as_str), "images")?;
            unique_ids(
                &format!("targets[{i}].report_ids"),
                target.report_ids.iter().map(ReportId::as_str),
                "report IDs",
            )?;
            if target.images.is_empty() && target.report_ids.is_empty() && target.discover.is_none() {
                return err(format!("targets[{i}]"), "lists no images, report_ids or discover");
            }
            if target.role_arn.is_none() && (target.external_id.is_some() || target.session_name.is_some()) {
                return err(format!("targets[{i}].role_arn"), "is required when external_id or session_name is set");
            }
            if let Some(name) = &target.session_name {
                let valid = (2..=64).contains(&name.len())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
                if !valid {
                    return err(
                        format!("targets[{i}].session_name"),
                        "must be 2 to 64 characters of letters, digits and +=,.@-_",
                    );
                }
            }
            if let Some(discovery) = &target.discover {
                discovery.validate().map_err(|(field, message)| (format!("targets[{i}].discover.{field}"), message))?;
            }
        }
        let owners: BTreeSet<Option<&str>> = self.targets.iter().map(Target::owner).collect();
        if owners.len() > 1
            && let Some(i) = self.targets.iter().position(|t| t.owner().is_none())
        {
            return err(
                format!("targets[{i}].owner_account_id"),
                "is required when targets use several owner accounts (it labels this target's series)",
            );
        }
        Ok(())
    }

    /// Whether series carry an `owner_account_id` label: only when there is more than one.
    pub fn labels_owner(&self) -> bool {
        self.targets.iter().map(Target::owner).collect::<BTreeSet<_>>().len() > 1
    }

    /// Wall-clock poll intervals below a minute are legal but worth a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.poll_interval.get() < SHORT_POLL_WARNING {
            warnings.push(format!(
                "poll_interval {} is under a minute: reports change at most daily, so this only spends API calls",
                self.poll_interval
            ));
        }
        if self.aws.operation_timeout >= self.poll_interval {
            warnings.push(format!(
                "aws.operation_timeout {} is not shorter than poll_interval {}: a slow poll delays the next one",
                self.aws.operation_timeout, self.poll_interval
            ));
        }
        if !self.reports.create && self.targets.iter().all(|t| t.report_ids.is_empty()) {
            warnings.push("reports.create is false: images without an existing report will show no usage".into());
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
poll_interval: 5m
aws:
  max_concurrent_requests: 2
  page_size: 500
  retry_mode: adaptive
reports:
  create: true
  max_age: 24h
  delete_superseded: false
  resource_types:
    - ec2:Instance
    - type: ec2:LaunchTemplate
      version_depth: 50
    - imagebuilder:ImageRecipe
  account_ids: ["444455556666", "111122223333"]
  tags: {team: platform}
entries:
  resource_types: [ec2:Instance]
targets:
  - region: us-east-1
    images: [ami-0123456789abcdef0, ami-12345678]
    report_ids: [amiur-00b877d192f6b02d0]
  - region: eu-west-1
    images: [ami-0123456789abcdef1]
"#;

    fn error_of(yaml: &str) -> (String, String) {
        Config::from_yaml(yaml).expect_err("config should be refused")
    }

    fn with_target(head: &str) -> String {
        format!("{head}\ntargets:\n  - region: us-east-1\n    images: [ami-0123456789abcdef0]\n")
    }

    #[test]
    fn full_example_parses() {
        let c = Config::from_yaml(FULL).expect("valid");
        assert_eq!(c.poll_interval.get(), Duration::from_secs(300));
        assert_eq!(c.aws.retry_mode, RetryMode::Adaptive);
        assert_eq!(c.aws.page_size.get(), 500);
        assert!(!c.reports.delete_superseded);
        let types: Vec<_> = c.reports.resource_types.iter().map(|t| (t.name(), t.version_depth())).collect();
        assert_eq!(
            types,
            [("ec2:Instance", None), ("ec2:LaunchTemplate", Some(50)), ("imagebuilder:ImageRecipe", None)]
        );
        let accounts: Vec<_> = c.reports.account_ids.iter().map(AccountId::as_str).collect();
        assert_eq!(accounts, ["111122223333", "444455556666"], "sorted");
        assert_eq!(c.targets[0].images.len(), 2);
        assert_eq!(c.targets[1].region.as_str(), "eu-west-1");
    }

    #[test]
    fn defaults_fill_everything_but_targets() {
        let c = Config::from_yaml(&with_target("")).expect("valid");
        assert_eq!(c.poll_interval.get(), Duration::from_secs(300));
        assert_eq!(c.reports.max_age.get(), Duration::from_secs(86_400));
        assert!(c.reports.create);
        assert!(c.reports.delete_superseded);
        assert_eq!(c.reports.resource_types, ResourceTypes::default());
        assert!(c.reports.account_ids.is_all());
        assert_eq!(c.aws, AwsSettings::default());
    }

    #[test]
    fn example_file_in_repo_is_valid() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yml"))
            .expect("config/example.yml exists");
        Config::from_yaml(&text).expect("config/example.yml is valid");
    }

    #[test]
    fn an_empty_key_is_named_too() {
        let (field, msg) = error_of("\"\": 1\n");
        assert_eq!(field, "\"\"");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let (field, msg) = error_of(&with_target("poll_intervall: 5m"));
        assert_eq!(field, "poll_intervall");
        assert!(msg.contains("unknown field `poll_intervall`"), "{field}: {msg}");
        let (field, msg) = error_of(&with_target("reports:\n  max_agee: 1h"));
        assert_eq!(field, "reports.max_agee");
        assert!(msg.contains("expected one of"), "{msg}");
        let (field, msg) = error_of("targets:\n  - region: us-east-1\n    image: [ami-12345678]\n");
        assert_eq!(field, "targets[0].image");
        assert!(msg.contains("unknown field `image`"), "{msg}");
    }

    #[test]
    fn malformed_ids_are_named() {
        let (field, msg) = error_of("targets:\n  - region: us-east-1\n    images: [ami-12345678, ami-xyz]\n");
        assert_eq!(field, "targets[0].images[1]");
        assert!(msg.starts_with("invalid AMI ID \"ami-xyz\""), "{msg}");
        assert!(msg.contains("8 or 17") && msg.contains("line 3"), "{msg}");
        let (field, msg) = error_of(&with_target("reports:\n  account_ids: ['12345']"));
        assert_eq!(field, "reports.account_ids[0]");
        assert!(msg.contains("12 digits"), "{msg}");
        let (field, _) = error_of(&with_target("entries:\n  account_ids: ['abcdefghijkl']"));
        assert_eq!(field, "entries.account_ids[0]");
        let (field, _) = error_of("targets:\n  - region: US-East\n    images: [ami-12345678]\n");
        assert_eq!(field, "targets[0].region");
        let (field, _) = error_of("targets:\n  - region: us-east-1\n    report_ids: [amiur-zz]\n");
        assert_eq!(field, "targets[0].report_ids[0]");
    }

    #[test]
    fn bad_durations_are_named() {
        for (yaml, field, needle) in [
            ("poll_interval: 0s", "poll_interval", "greater than zero"),
            ("poll_interval: -5m", "poll_interval", "invalid duration"),
            ("poll_interval: soon", "poll_interval", "invalid duration"),
            ("poll_interval: 11y", "poll_interval", "longer than 10 years"),
            ("reports:\n  max_age: 0h", "reports.max_age", "greater than zero"),
            ("aws:\n  attempt_timeout: -1s", "aws.attempt_timeout", "invalid duration"),
        ] {
            let (f, msg) = error_of(&with_target(yaml));
            assert_eq!(f, field, "{yaml}");
            assert!(msg.contains(needle), "{yaml}: {msg}");
        }
    }

    #[test]
    fn short_intervals_are_valid_but_warned() {
        let c = Config::from_yaml(&with_target("poll_interval: 2s")).expect("valid");
        assert_eq!(c.poll_interval.get(), Duration::from_secs(2));
        assert!(c.warnings().iter().any(|w| w.contains("under a minute")));
        let c = Config::from_yaml(&with_target("poll_interval: 1h")).expect("valid");
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn resource_type_rules() {
        let (f, msg) = error_of(&with_target("reports:\n  resource_types: []"));
        assert_eq!(f, "reports.resource_types");
        assert!(msg.contains("at least one"), "{msg}");
        let (_, msg) =
            error_of(&with_target("reports:\n  resource_types:\n    - type: ec2:Instance\n      version_depth: 3"));
        assert!(msg.contains("only to ec2:LaunchTemplate"), "{msg}");
        let (_, msg) = error_of(&with_target(
            "reports:\n  resource_types:\n    - type: ec2:LaunchTemplate\n      version_depth: 0",
        ));
        assert!(msg.contains("out of range"), "{msg}");
        let (_, msg) = error_of(&with_target("reports:\n  resource_types: [ec2:Instance, ec2:Instance]"));
        assert!(msg.contains("once"), "{msg}");
        let (_, msg) = error_of(&with_target("reports:\n  resource_types:\n    - version_depth: 3"));
        assert!(msg.contains("missing field `type`"), "{msg}");
        let c = Config::from_yaml(&with_target("reports:\n  resource_types: [ec2:LaunchTemplate]")).expect("valid");
        let lt: Vec<_> = c.reports.resource_types.iter().map(ResourceType::version_depth).collect();
        assert_eq!(lt, [Some(DEFAULT_VERSION_DEPTH)], "EC2's default is made explicit");
    }

    #[test]
    fn account_filter_limit() {
        let ids: Vec<String> = (0..201).map(|i| format!("'{i:012}'")).collect();
        let (f, msg) = error_of(&with_target(&format!("reports:\n  account_ids: [{}]", ids.join(","))));
        assert_eq!(f, "reports.account_ids");
        assert!(msg.contains("at most 200"), "{msg}");
        let ids: Vec<String> = (0..200).map(|i| format!("'{i:012}'")).collect();
        assert!(Config::from_yaml(&with_target(&format!("reports:\n  account_ids: [{}]", ids.join(",")))).is_ok());
    }

    #[test]
    fn accounts_cardinality_and_discovery() {
        let yaml = r#"
accounts:
  names: {"111122223333": payments}
  expected: ["111122223333"]
  expected_per_image:
    ami-12345678: ["444455556666"]
cardinality:
  sum_accounts_for: [ami-12345678]
  max_series: 1000
targets:
  - region: us-east-1
    discover:
      filters:
        name: ["golden-*"]
        "tag:Team": [platform]
      refresh_interval: 10m
"#;
        let c = Config::from_yaml(yaml).expect("valid");
        assert!(c.accounts.tracks_unexpected());
        assert_eq!(c.cardinality.max_series, 1000);
        let d = c.targets[0].discover.as_ref().expect("discovery");
        assert_eq!(d.owners, ["self"]);
        assert_eq!(d.refresh_interval.get(), Duration::from_secs(600));
        let (f, _) = error_of("targets:\n  - region: us-east-1\n    discover:\n      owners: [me]\n");
        assert_eq!(f, "targets[0].discover.owners[0]");
        let (f, _) = error_of("targets:\n  - region: us-east-1\n    discover:\n      filters: {name: []}\n");
        assert_eq!(f, "targets[0].discover.filters.name");
        let (f, _) = error_of(&with_target("accounts:\n  names: {\"12\": x}"));
        assert!(f.starts_with("accounts.names"), "{f}");
    }

    #[test]
    fn roles_and_owner_accounts() {
        let two = "targets:
  - region: us-east-1
    images: [ami-12345678]
    role_arn: arn:aws:iam::111122223333:role/ami-usage
    external_id: secret
  - region: us-east-1
    images: [ami-12345679]
    role_arn: arn:aws:iam::444455556666:role/ami-usage
";
        let c = Config::from_yaml(two).expect("same Region twice, with different roles");
        assert!(c.labels_owner());
        assert_eq!(c.targets[0].owner(), Some("111122223333"));
        let mixed = format!("{two}  - region: eu-west-1\n    images: [ami-12345670]\n");
        assert_eq!(error_of(&mixed).0, "targets[2].owner_account_id");
        let labelled = format!("{mixed}    owner_account_id: '777788889999'\n");
        assert!(Config::from_yaml(&labelled).is_ok());
        let one = Config::from_yaml(&with_target("")).expect("valid");
        assert!(!one.labels_owner(), "one owner: no owner label");
        let (f, _) = error_of("targets:\n  - region: us-east-1\n    images: [ami-12345678]\n    external_id: x\n");
        assert_eq!(f, "targets[0].role_arn");
        let (f, _) = error_of(
            "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n    role_arn: arn:aws:iam::1:role/x\n",
        );
        assert_eq!(f, "targets[0].role_arn");
    }

    #[test]
    fn cross_field_rules() {
        assert_eq!(error_of("targets: []").0, "targets");
        assert_eq!(error_of("poll_interval: 5m").0, "(top level)");
        let (f, _) = error_of("targets:\n  - region: us-east-1\n");
        assert_eq!(f, "targets[0]");
        let twice = "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n  - region: us-east-1\n    images: [ami-12345679]\n";
        assert_eq!(error_of(twice).0, "targets[1].region");
        let (f, _) = error_of(&with_target("aws:\n  attempt_timeout: 1m\n  operation_timeout: 30s"));
        assert_eq!(f, "aws.attempt_timeout");
        let c = Config::from_yaml(&with_target("poll_interval: 2m\naws:\n  operation_timeout: 5m")).expect("valid");
        assert!(c.warnings().iter().any(|w| w.contains("operation_timeout")));
        let (f, msg) = error_of(&with_target("aws:\n  page_size: 0"));
        assert_eq!(f, "aws.page_size");
        assert!(msg.contains("nonzero") || msg.contains("zero"), "{msg}");
        let (f, _) = error_of(&with_target("aws:\n  retry_mode: reckless"));
        assert_eq!(f, "aws.retry_mode");
    }

    /// A file of `n` image IDs in one target, written one a line as an operator would.
    fn images_yaml(n: usize, field: &str) -> String {
        let prefix = if field == "images" { "ami-" } else { "amiur-" };
        let ids: String = (0..n).map(|i| format!("      - {prefix}{i:08x}\n")).collect();
        format!("targets:\n  - region: us-east-1\n    {field}:\n{ids}")
    }

    #[test]
    fn files_over_a_mebibyte_are_refused_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("ami-usage-config-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("big.yml");
        let fits = with_target("");
        let padding = "#".repeat(MAX_FILE_BYTES - fits.len() - 1);
        std::fs::write(&path, format!("{fits}{padding}\n")).expect("write");
        assert!(Config::load(&path).is_ok(), "exactly 1 MiB is allowed");
        std::fs::write(&path, format!("{fits}{padding}\n\n")).expect("write");
        let error = Config::load(&path).expect_err("one byte over").to_string();
        assert!(
            error.ends_with(
                "big.yml: (file): 1048577 bytes, over the limit of 1048576 (1 MiB, what a Kubernetes ConfigMap holds)"
            ),
            "{error}"
        );
        // A device, like a pipe, has no size: the read itself stops one byte past the limit.
        let error = Config::load(Path::new("/dev/zero")).expect_err("endless").to_string();
        assert!(error.contains("(file): more than 1048576 bytes"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
        let (field, message) = error_of(&format!("{fits}{padding}\n\n"));
        assert_eq!(field, "(file)");
        assert!(message.contains("over the limit of 1048576"), "{message}");
    }

    #[test]
    fn deep_nesting_is_refused_by_the_first_pass() {
        let (field, message) = error_of(&"[".repeat(400_000));
        assert_eq!(field, "[0]".repeat(yaml_scan::MAX_DEPTH));
        assert!(message.contains("nested more than 32 levels deep at line 1 column 33"), "{message}");
        let (field, message) = error_of(&with_target(&format!("accounts:\n  expected: {}", "[".repeat(40))));
        assert!(field.starts_with("accounts.expected[0][0]"), "{field}");
        assert!(message.ends_with("line 2 column 43"), "{message}");
    }

    #[test]
    fn alias_bombs_are_refused_by_the_first_pass() {
        let accounts: String = (0..1000).map(|i| format!("    - '{:012}'\n", 100_000_000_000u64 + i)).collect();
        let images: String = (0..20_000).map(|i| format!("    ami-{i:017x}: *a\n")).collect();
        let bomb = with_target(&format!("accounts:\n  expected: &a\n{accounts}  expected_per_image:\n{images}"));
        let (field, message) = error_of(&bomb);
        // 1007 values before the first entry, 1002 in each: the 249th is one too many.
        assert_eq!(field, "accounts.expected_per_image.ami-000000000000000f8");
        assert!(message.starts_with("alias *a: more than 250000 values"), "{message}");
        assert!(message.ends_with("at line 1252 column 28"), "{message}");
        // A few aliases are fine.
        let few = with_target("accounts:\n  expected: &a ['111122223333']\n  expected_per_image: {ami-12345678: *a}");
        assert!(Config::from_yaml(&few).is_ok());
    }

    #[test]
    fn image_and_report_lists_are_limited_and_unique() {
        for field in ["images", "report_ids"] {
            assert!(Config::from_yaml(&images_yaml(MAX_IDS_PER_TARGET, field)).is_ok(), "{field}");
            let (f, message) = error_of(&images_yaml(MAX_IDS_PER_TARGET + 1, field));
            assert_eq!(f, format!("targets[0].{field}"));
            assert!(message.contains("10001") && message.contains("at most 10000 per target"), "{message}");
        }
        let twice = "targets:\n  - region: us-east-1\n    images: [ami-12345678, ami-87654321, ami-12345678]\n";
        let (field, message) = error_of(twice);
        assert_eq!(field, "targets[0].images[2]");
        assert_eq!(message, "ami-12345678 is listed twice (first at targets[0].images[0])");
        let twice = "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n  - region: eu-west-1\n    \
                     report_ids: [amiur-00b877d192f6b02d0, amiur-00b877d192f6b02d0]\n";
        assert_eq!(error_of(twice).0, "targets[1].report_ids[1]");
        let apart = "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n  - region: eu-west-1\n    images: [ami-12345678]\n";
        assert!(Config::from_yaml(apart).is_ok(), "the same ID in two Regions is two images");
    }

    #[test]
    fn page_size_is_at_most_what_ec2_takes() {
        for ok in [1, 5, 1000] {
            let c = Config::from_yaml(&with_target(&format!("aws:\n  page_size: {ok}"))).expect("valid");
            assert_eq!(c.aws.page_size.get(), ok);
        }
        let (field, message) = error_of(&with_target("aws:\n  page_size: 1001"));
        assert_eq!(field, "aws.page_size");
        assert_eq!(message, "1001 is over 1000, the most MaxResults EC2 takes");
    }

    #[test]
    fn unknown_keys_carry_their_line() {
        // On the first line (where yaml_serde leaves the position out), further down, nested.
        for (yaml, field, at) in [
            (with_target("bogus: 1"), "bogus", "at line 1 column 1"),
            (format!("{}bogus: 1\n", with_target("")), "bogus", "at line 5 column 1"),
            (with_target("aws:\n  page_sizee: 3"), "aws.page_sizee", "at line 2 column 3"),
            (
                "targets:\n  - region: us-east-1\n    image: [ami-12345678]\n".into(),
                "targets[0].image",
                "at line 3 column 5",
            ),
        ] {
            let (f, message) = error_of(&yaml);
            assert_eq!(f, field, "{yaml}");
            assert!(
                message.starts_with(&format!("unknown field `{}`", field.rsplit('.').next().unwrap_or(field))),
                "{message}"
            );
            assert!(message.ends_with(at), "{yaml}: {message}");
        }
    }

    #[test]
    fn image_facts_and_references_settings() {
        let defaults = Config::from_yaml(&with_target("")).expect("valid");
        assert!(defaults.images.facts && !defaults.references.enabled, "facts on, references opt in");
        assert_eq!(defaults.references.resource_types, ReferenceTypes::All);
        let config = Config::from_yaml(&with_target(
            "images:\n  refresh_interval: 6h\nreferences:\n  enabled: true\n  resource_types:\n    - ssm:Parameter\n    - {type: ec2:Instance, states: [running, stopped]}\n    - {type: ec2:LaunchTemplate, version_depth: 20}",
        ))
        .expect("valid");
        assert_eq!(config.images.refresh_interval.get(), Duration::from_secs(6 * 3600));
        assert_eq!(config.references.resource_types.names(), ["ssm:Parameter", "ec2:Instance", "ec2:LaunchTemplate"]);
        for (yaml, field, reason) in [
            ("references:\n  resource_types: some", "references.resource_types", "write `all`"),
            ("references:\n  resource_types: []", "references.resource_types", "at least one"),
            ("references:\n  resource_types: [ec2:Volume]", "references.resource_types[0]", "unknown resource type"),
            ("references:\n  resource_types: [ssm:Parameter, ssm:Parameter]", "references.resource_types", "twice"),
            (
                "references:\n  resource_types: [{type: ssm:Parameter, states: [running]}]",
                "references.resource_types[0]",
                "only to ec2:Instance",
            ),
            (
                "references:\n  resource_types: [{type: ec2:Instance, states: [asleep]}]",
                "references.resource_types[0]",
                "unknown instance state",
            ),
            (
                "references:\n  resource_types: [{type: ec2:LaunchTemplate, version_depth: 0}]",
                "references.resource_types[0]",
                "out of range",
            ),
            (
                "references:\n  resource_types: [{type: ec2:Instance, version_depth: 5}]",
                "references.resource_types[0]",
                "only to ec2:LaunchTemplate",
            ),
            ("images:\n  refresh: 1h", "images", "unknown field"),
        ] {
            let (got_field, message) = error_of(&with_target(yaml));
            assert!(got_field.starts_with(field), "{yaml}: field {got_field}");
            assert!(message.contains(reason), "{yaml}: {message}");
        }
    }
}
