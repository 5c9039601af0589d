//! The permission preflight (`--check-permissions`): one `DryRun` call per EC2 action the
//! exporter needs, per target, so that a missing IAM permission is named before deploying
//! instead of surfacing as a failed poll. It is a separate command, not part of start-up, so
//! that the exporter's API cost stays exactly what a poll needs.

use std::fmt::Write as _;

use crate::config::ReportPolicy;
use crate::ec2::Permission;
use crate::poller::RegionTarget;

/// The verdict on one IAM action for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub region: String,
    pub owner: Option<String>,
    pub operation: &'static str,
    pub permission: Permission,
}

impl Finding {
    pub fn iam_action(&self) -> String {
        format!("ec2:{}", self.operation)
    }
}

/// Checks every target. Creating a report is tried on the first image the target names.
pub async fn check(targets: &[RegionTarget], policy: &ReportPolicy) -> Vec<Finding> {
    let mut findings = Vec::new();
    for target in targets {
        let image = target.images.first().map(String::as_str);
        for (operation, permission) in target.api.check_permissions(image, policy, target.discovery.is_some()).await {
            findings.push(Finding {
                region: target.region.to_string(),
                owner: target.owner.as_ref().map(|o| o.to_string()),
                operation,
                permission,
            });
        }
    }
    findings
}

/// Whether every needed action is allowed (unknown ones are not counted as missing).
pub fn all_allowed(findings: &[Finding]) -> bool {
    !findings.iter().any(|f| matches!(f.permission, Permission::Denied(_)))
}

/// A table for `--check-permissions`.
pub fn table(findings: &[Finding]) -> String {
    let mut out = String::from("REGION            OWNER          ACTION                                RESULT\n");
    for f in findings {
        let result = match &f.permission {
            Permission::Allowed => "allowed".to_owned(),
            Permission::Denied(code) => format!("MISSING ({code})"),
            Permission::Unknown(why) => format!("unknown: {why}"),
        };
        let _ =
            writeln!(out, "{:<17} {:<14} {:<37} {result}", f.region, f.owner.as_deref().unwrap_or("-"), f.iam_action());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(permission: Permission) -> Finding {
        Finding { region: "us-east-1".into(), owner: None, operation: "CreateImageUsageReport", permission }
    }

    #[test]
    fn missing_permissions_fail_the_check_and_are_named() {
        let ok = [finding(Permission::Allowed), finding(Permission::Unknown("throttled".into()))];
        assert!(all_allowed(&ok));
        let denied = [finding(Permission::Allowed), finding(Permission::Denied("UnauthorizedOperation".into()))];
        assert!(!all_allowed(&denied));
        let table = table(&denied);
        assert!(
            table.contains("ec2:CreateImageUsageReport") && table.contains("MISSING (UnauthorizedOperation)"),
            "{table}"
        );
    }
}
