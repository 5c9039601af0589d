//! What a failed EC2 call means: one error type, one code type, and one classifier that both
//! the per-attempt counter (`intercept`) and the callers (`client`) use, so that a failure is
//! named the same way in `ami_usage_api_errors_total`, in the log and in the poll's decisions.

use std::fmt;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// A failed EC2 call, with what the operator needs to act on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct ApiError {
    pub operation: &'static str,
    pub code: Code,
    pub message: String,
}

/// Why a call failed: EC2's error code, or the kind of failure when EC2 did not answer with one.
///
/// The codes the exporter acts on are variants; every other code EC2 sends is kept as it spelled
/// it (`Other`), so that it is counted and logged faithfully without this list having to know
/// every code of every operation. `as_str` is the `code` label of `ami_usage_api_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Code {
    /// EC2 throttled the call.
    RequestLimitExceeded,
    /// The answer to a `DryRun` call that would have been allowed.
    DryRunOperation,
    /// EC2 refused a `NextToken` it handed out (it expired, or the query changed).
    InvalidPaginationToken,
    UnauthorizedOperation,
    AuthFailure,
    Blocked,
    OptInRequired,
    AccessDenied,
    /// Any other code EC2 answered with.
    Other(Box<str>),
    /// No credentials could be loaded (the SDK reports this as a dispatch failure, which would
    /// otherwise read as a network problem).
    Credentials,
    Timeout,
    Connection,
    /// An answer that could not be understood: cut off, not EC2's XML, or missing a field.
    BrokenAnswer,
    /// The request could not be built or sent for another reason.
    Client,
    /// A paginated call repeated a token, or ran past the page limit.
    PaginationLoop,
}

/// EC2's codes that have a variant, with their spelling.
const KNOWN: [(Code, &str); 8] = [
    (Code::RequestLimitExceeded, "RequestLimitExceeded"),
    (Code::DryRunOperation, "DryRunOperation"),
    (Code::InvalidPaginationToken, "InvalidPaginationToken"),
    (Code::UnauthorizedOperation, "UnauthorizedOperation"),
    (Code::AuthFailure, "AuthFailure"),
    (Code::Blocked, "Blocked"),
    (Code::OptInRequired, "OptInRequired"),
    (Code::AccessDenied, "AccessDenied"),
];

impl Code {
    /// The code of an EC2 error document.
    pub fn from_ec2(code: &str) -> Self {
        KNOWN.iter().find(|(_, name)| *name == code).map_or_else(|| Code::Other(code.into()), |(c, _)| c.clone())
    }

    pub fn as_str(&self) -> &str {
        match self {
            Code::Other(code) => code,
            Code::Credentials => "CredentialsError",
            Code::Timeout => "Timeout",
            Code::Connection => "ConnectionError",
            Code::BrokenAnswer => "ResponseError",
            Code::Client => "ClientError",
            Code::PaginationLoop => "PaginationLoop",
            known => KNOWN.iter().find(|(c, _)| c == known).map_or("", |(_, name)| name),
        }
    }

    /// The call is not allowed (a missing IAM permission, rejected or missing credentials), so
    /// repeating it soon is pointless.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            Code::UnauthorizedOperation
                | Code::AuthFailure
                | Code::Blocked
                | Code::OptInRequired
                | Code::AccessDenied
                | Code::Credentials
        )
    }

    /// The credentials are missing or rejected: a rebuilt credential chain may find new ones.
    pub fn is_credentials_problem(&self) -> bool {
        matches!(self, Code::Credentials | Code::AuthFailure)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure as the SDK reports it, before it is named: the shape shared by a whole call's
/// `SdkError` and one attempt's `OrchestratorError`.
pub(super) enum Failure<'a> {
    /// EC2 answered with an error document; its code, if it had one.
    Answered(Option<&'a str>),
    Timeout,
    Dispatch,
    Response,
    Other,
}

/// The one classifier: names a failure from its shape and its chain of causes.
pub(super) fn classify(failure: Failure<'_>, error: &(dyn std::error::Error + 'static)) -> Code {
    match failure {
        Failure::Answered(Some(code)) => Code::from_ec2(code),
        // An error answer without a code is not an EC2 error document (HTML from a proxy).
        Failure::Answered(None) => Code::BrokenAnswer,
        _ if caused_by::<IncompleteAnswer>(error) => Code::BrokenAnswer,
        _ if is_credentials_error(error) => Code::Credentials,
        Failure::Timeout => Code::Timeout,
        Failure::Dispatch => Code::Connection,
        Failure::Response => Code::BrokenAnswer,
        Failure::Other => Code::Client,
    }
}

impl ApiError {
    pub(super) fn from_sdk<E>(operation: &'static str, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let failure = match &err {
            SdkError::ServiceError(e) => Failure::Answered(e.err().code()),
            SdkError::TimeoutError(_) => Failure::Timeout,
            SdkError::DispatchFailure(_) => Failure::Dispatch,
            SdkError::ResponseError(_) => Failure::Response,
            _ => Failure::Other,
        };
        let code = classify(failure, &err);
        let message = match &err {
            SdkError::ServiceError(e) => e.err().message().unwrap_or("no message").to_owned(),
            _ => error_chain(&err),
        };
        Self { operation, code, message }
    }

    /// An answer that parsed but lacks what the call must return.
    pub(super) fn broken(operation: &'static str, message: String) -> Self {
        Self { operation, code: Code::BrokenAnswer, message }
    }

    pub(super) fn pagination(operation: &'static str, message: String) -> Self {
        Self { operation, code: Code::PaginationLoop, message }
    }
}

/// A successful answer whose XML stops before its root element closes.
#[derive(Debug, thiserror::Error)]
#[error("the answer was cut off: its XML document does not end with the closing tag of its root element")]
pub struct IncompleteAnswer;

/// Whether the credential chain failed somewhere in this error's sources.
pub(crate) fn is_credentials_error(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<aws_credential_types::provider::error::CredentialsError>(error)
}

/// Whether an error of type `T` is among this error's sources.
pub(super) fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<T>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error and its causes on one line, each cause once: the SDK nests the same text several
/// levels deep, and a log line is read by people.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string().replace('\n', "; ");
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_ec2s_spelling() {
        for (code, name) in &KNOWN {
            assert_eq!(&Code::from_ec2(name), code);
            assert_eq!(code.as_str(), *name);
        }
        assert_eq!(Code::from_ec2("InvalidAMIID.Malformed").as_str(), "InvalidAMIID.Malformed");
        assert_eq!(Code::BrokenAnswer.to_string(), "ResponseError");
        assert_eq!(Code::Credentials.to_string(), "CredentialsError");
        assert!(Code::Credentials.is_denied() && Code::AccessDenied.is_denied());
        assert!(!Code::RequestLimitExceeded.is_denied() && !Code::from_ec2("Throttling").is_denied());
    }
}
