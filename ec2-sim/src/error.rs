//! EC2 error responses as values.
//!
//! Every way a request can go wrong ends up as an `Ec2Error`, so bad input produces the EC2 error envelope the SDK
//! knows how to read, never a panic or an HTML page.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ec2Error {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Ec2Error {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_string(), message: message.into() }
    }

    pub(crate) fn client(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub(crate) fn invalid_value(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterValue", message)
    }

    pub(crate) fn missing(parameter: &str) -> Self {
        Self::client("MissingParameter", format!("The request must contain the parameter {parameter}"))
    }

    pub(crate) fn dry_run() -> Self {
        Self::new(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
    }

    pub(crate) fn invalid_filter(name: &str) -> Self {
        Self::client("InvalidFilter", format!("The filter '{name}' is invalid"))
    }

    pub(crate) fn invalid_token() -> Self {
        Self::client("InvalidPaginationToken", "The pagination token is invalid or does not belong to this request.")
    }

    pub(crate) fn malformed_image(id: &str) -> Self {
        Self::client("InvalidAMIID.Malformed", format!("Invalid id: \"{id}\" (expecting \"ami-...\")"))
    }

    pub(crate) fn image_not_found(ids: &[&str]) -> Self {
        Self::client("InvalidAMIID.NotFound", format!("The image id '[{}]' does not exist", ids.join(", ")))
    }

    /// AWS publishes no code for an unknown report ID; `InvalidParameterValue` is our choice (see README).
    pub(crate) fn unknown_report(id: &str) -> Self {
        Self::invalid_value(format!("The report ID '{id}' does not exist or has expired."))
    }
}

impl fmt::Display for Ec2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for Ec2Error {}
