//! How a simulator instance is set up.

use std::time::Duration;

use crate::dataset::DatasetSpec;
use crate::fault::FaultRule;
use crate::ids::is_account_id;

/// What happens to a report created through the API once its pending time is over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CreateOutcome {
    #[default]
    Available,
    /// The report ends in `error` with this `stateReason`, to exercise clients' handling of failed reports (the
    /// SDK waiter does not notice them).
    Error(String),
}

/// An IAM role that STS `AssumeRole` grants. Its account is the 12 digits in the ARN
/// (`arn:aws:iam::222222222222:role/ami-usage`); credentials from it see that account's dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub role_arn: String,
    /// When set, `AssumeRole` must carry exactly this `ExternalId` (a trust policy with an `sts:ExternalId`
    /// condition). When not set, any or no external ID is accepted, as with a trust policy without the condition.
    pub external_id: Option<String>,
}

impl RoleSpec {
    pub fn new(role_arn: &str) -> RoleSpec {
        RoleSpec { role_arn: role_arn.to_string(), external_id: None }
    }

    pub fn with_external_id(mut self, external_id: &str) -> RoleSpec {
        self.external_id = Some(external_id.to_string());
        self
    }

    /// The account of a well-formed role ARN: `arn:<partition>:iam::<12 digits>:role/[path/]name`.
    pub fn account(&self) -> Option<&str> {
        parse_role_arn(&self.role_arn).map(|(account, _)| account)
    }
}

/// `(account, role name without path)` of a role ARN, or None when it is not one.
pub(crate) fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let path_and_name = resource.strip_prefix("role/")?;
    let name = path_and_name.rsplit('/').next().unwrap_or("");
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    (!partition.is_empty() && is_account_id(account) && name_ok).then_some((account, name))
}

/// Not `Eq`: fault rules hold a share as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The primary owner's dataset. Requests signed with any access key that `AssumeRole` did not issue see it.
    pub dataset: DatasetSpec,
    /// Datasets of further owner accounts (see `DatasetSpec::for_owner`). Their data are only visible to
    /// credentials from a role of their account.
    pub extra_owners: Vec<DatasetSpec>,
    /// Roles that STS `AssumeRole` grants. A role of an account without a dataset gives an account that owns
    /// nothing.
    pub roles: Vec<RoleSpec>,
    /// How long a created report stays `pending`. Real reports take minutes; tests want seconds or zero.
    pub pending_for: Duration,
    pub create_outcome: CreateOutcome,
    /// Lifetime of a report. AWS deletes reports about 30 days after creation.
    pub report_ttl: Duration,
    /// Fault rules active from the start (see `Simulator::set_faults` to change them at run time).
    pub faults: Vec<FaultRule>,
}

pub(crate) const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetSpec::default(),
            extra_owners: Vec::new(),
            roles: Vec::new(),
            pending_for: Duration::from_secs(2),
            create_outcome: CreateOutcome::Available,
            report_ttl: DEFAULT_REPORT_TTL,
            faults: Vec::new(),
        }
    }
}

impl SimConfig {
    /// Rejects what the simulator cannot make sense of: an owner account that is not 12 digits or appears twice,
    /// a role ARN that is not one, or a role listed twice. `Simulator::new` panics on these; the binary exits.
    pub fn validate(&self) -> Result<(), String> {
        let mut owners = std::collections::BTreeSet::new();
        for spec in std::iter::once(&self.dataset).chain(&self.extra_owners) {
            if !is_account_id(&spec.owner_account) {
                return Err(format!("owner account {:?} is not 12 digits", spec.owner_account));
            }
            if !owners.insert(spec.owner_account.as_str()) {
                return Err(format!("owner account {} has two datasets", spec.owner_account));
            }
        }
        let mut roles = std::collections::BTreeSet::new();
        for role in &self.roles {
            if role.account().is_none() {
                return Err(format!("{:?} is not a role ARN (arn:aws:iam::123456789012:role/name)", role.role_arn));
            }
            if !roles.insert(role.role_arn.as_str()) {
                return Err(format!("role {} is listed twice", role.role_arn));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(parse_role_arn("arn:aws:iam::222222222222:role/ami-usage"), Some(("222222222222", "ami-usage")));
        assert_eq!(parse_role_arn("arn:aws-cn:iam::222222222222:role/a/b/Reader"), Some(("222222222222", "Reader")));
        for bad in [
            "",
            "arn:aws:iam::22222222222:role/x",
            "arn:aws:iam::222222222222:user/x",
            "arn:aws:sts::222222222222:role/x",
            "arn:aws:iam:us-east-1:222222222222:role/x",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:iam::222222222222:role/a b",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
        let dup = SimConfig { extra_owners: vec![DatasetSpec::default()], ..SimConfig::default() };
        assert!(dup.validate().unwrap_err().contains("two datasets"));
        let bad_role = SimConfig { roles: vec![RoleSpec::new("arn:aws:iam::1:role/x")], ..SimConfig::default() };
        assert!(bad_role.validate().unwrap_err().contains("not a role ARN"));
        let role = RoleSpec::new("arn:aws:iam::222222222222:role/r");
        let twice = SimConfig { roles: vec![role.clone(), role.with_external_id("x")], ..SimConfig::default() };
        assert!(twice.validate().unwrap_err().contains("twice"));
    }
}
