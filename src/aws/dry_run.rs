//! The permission preflight (`--check-permissions`): one `DryRun` call per EC2 action the
//! exporter needs, per target, so that a missing IAM permission is named before deploying
//! instead of surfacing as a failed poll. It is a separate command, not part of start-up, so
//! that the exporter's API cost stays exactly what a poll needs.

use std::fmt::Write as _;
use std::future::Future;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::client::Ec2Client;
use super::error::{ApiError, Code};
use crate::config::ReportPolicy;

/// A well-formed report ID that names no report, for the DryRun permission check of
/// DeleteImageUsageReport: DryRun checks the permission before the ID.
const DRY_RUN_REPORT_ID: &str = "amiur-00000000000000000";
/// The same for DescribeImageReferences, which wants at least one image.
const DRY_RUN_IMAGE_ID: &str = "ami-00000000000000000";

/// What a DryRun call said about one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Allowed,
    /// EC2 refused: the IAM action is missing (or credentials are rejected); the code says which.
    Denied(Code),
    /// Something else answered (throttling, network): the permission is unknown.
    Unknown(String),
}

impl Permission {
    fn from_dry_run<T>(result: Result<T, ApiError>) -> Self {
        match result {
            // DryRun never succeeds: EC2 answers DryRunOperation when the call would have.
            Ok(_) => Permission::Allowed,
            Err(e) if e.code == Code::DryRunOperation => Permission::Allowed,
            Err(e) if e.code.is_denied() => Permission::Denied(e.code),
            Err(e) => Permission::Unknown(format!("{}: {}", e.code, e.message)),
        }
    }
}

/// What the target a check runs against needs of it.
pub struct Needs<'a> {
    /// An image to try CreateImageUsageReport with.
    pub image: Option<&'a str>,
    pub policy: &'a ReportPolicy,
    /// Discovery or image facts: DescribeImages.
    pub describe_images: bool,
    /// `references.enabled`: DescribeImageReferences.
    pub references: bool,
}

async fn dry_run<O, E>(
    operation: &'static str,
    request: impl Future<Output = Result<O, SdkError<E, HttpResponse>>>,
) -> (&'static str, Permission)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    (operation, Permission::from_dry_run(request.await.map_err(|e| ApiError::from_sdk(operation, e))))
}

/// Asks EC2, with `DryRun`, whether each call the exporter makes is permitted.
pub async fn check(api: &Ec2Client, needs: &Needs<'_>) -> Vec<(&'static str, Permission)> {
    let client = &api.client;
    let policy = needs.policy;
    let mut checks = vec![
        dry_run("DescribeImageUsageReports", client.describe_image_usage_reports().dry_run(true).send()).await,
        dry_run("DescribeImageUsageReportEntries", client.describe_image_usage_report_entries().dry_run(true).send())
            .await,
    ];
    if needs.describe_images {
        checks.push(dry_run("DescribeImages", client.describe_images().owners("self").dry_run(true).send()).await);
    }
    if needs.references {
        // A well-formed ID: DryRun checks the permission before the images.
        let references = client
            .describe_image_references()
            .image_ids(DRY_RUN_IMAGE_ID)
            .include_all_resource_types(true)
            .dry_run(true);
        checks.push(dry_run("DescribeImageReferences", references.send()).await);
    }
    if policy.create {
        let create = match needs.image {
            Some(image) => {
                dry_run("CreateImageUsageReport", api.create_request(image, policy, None).dry_run(true).send()).await
            }
            None => ("CreateImageUsageReport", Permission::Unknown("no image known yet to try it with".to_owned())),
        };
        checks.push(create);
    }
    if policy.create && policy.delete_superseded {
        let delete = client.delete_image_usage_report().report_id(DRY_RUN_REPORT_ID).dry_run(true).send();
        checks.push(dry_run("DeleteImageUsageReport", delete).await);
    }
    checks
}

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

/// The findings of every target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    pub findings: Vec<Finding>,
}

impl Preflight {
    /// Whether every needed action is allowed (unknown ones are not counted as missing).
    pub fn all_allowed(&self) -> bool {
        !self.findings.iter().any(|f| matches!(f.permission, Permission::Denied(_)))
    }

    /// A table for `--check-permissions`.
    pub fn table(&self) -> String {
        let mut out = String::from("REGION            OWNER          ACTION                                RESULT\n");
        for f in &self.findings {
            let result = match &f.permission {
                Permission::Allowed => "allowed".to_owned(),
                Permission::Denied(code) => format!("MISSING ({code})"),
                Permission::Unknown(why) => format!("unknown: {why}"),
            };
            let owner = f.owner.as_deref().unwrap_or("-");
            let _ = writeln!(out, "{:<17} {:<14} {:<37} {result}", f.region, owner, f.iam_action());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(permission: Permission) -> Finding {
        Finding { region: "us-east-1".into(), owner: None, operation: "CreateImageUsageReport", permission }
    }

    #[test]
    fn missing_permissions_fail_the_check_and_are_named() {
        let ok = Preflight {
            findings: vec![finding(Permission::Allowed), finding(Permission::Unknown("throttled".into()))],
        };
        assert!(ok.all_allowed());
        let denied = Preflight {
            findings: vec![finding(Permission::Allowed), finding(Permission::Denied(Code::UnauthorizedOperation))],
        };
        assert!(!denied.all_allowed());
        let table = denied.table();
        assert!(
            table.contains("ec2:CreateImageUsageReport") && table.contains("MISSING (UnauthorizedOperation)"),
            "{table}"
        );
    }
}
