//! Building EC2 clients: credentials, timeouts, retries, and the counting of every request.
//!
//! Credentials and endpoints come from `aws-config`'s default chain, so the exporter runs the
//! way every AWS tool does: environment variables, shared profiles and SSO, web identity (IRSA,
//! EKS Pod Identity), ECS task roles and EC2 instance metadata; `AWS_ENDPOINT_URL_EC2` (or
//! `AWS_ENDPOINT_URL`) redirects the client, e.g. to a VPC endpoint.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::create_image_usage_report::CreateImageUsageReportError;
use aws_sdk_ec2::operation::delete_image_usage_report::DeleteImageUsageReportError;
use aws_sdk_ec2::operation::describe_image_usage_report_entries::DescribeImageUsageReportEntriesError;
use aws_sdk_ec2::operation::describe_image_usage_reports::DescribeImageUsageReportsError;
use aws_sdk_ec2::operation::describe_images::DescribeImagesError;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef, Error as ErasedError,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::config::{AwsSettings, RetryMode};
use crate::metrics::ApiMetrics;

/// The SDK behaviour the exporter was tested with, pinned so that an SDK upgrade cannot change
/// defaults (retries, timeouts) behind our back.
fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2026_01_12()
}

/// Loads what all Regions share: credentials chain, timeouts and retry policy.
pub async fn shared_config(settings: &AwsSettings) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout.get())
        .operation_attempt_timeout(settings.attempt_timeout.get())
        .operation_timeout(settings.operation_timeout.get())
        .build();
    let retry = match settings.retry_mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    }
    .with_max_attempts(settings.max_attempts.get());
    aws_config::defaults(behavior_version()).timeout_config(timeouts).retry_config(retry).load().await
}

/// The configuration of one target: the shared one, or, with a role, one whose credentials come
/// from STS AssumeRole (cached, and refreshed before they expire, by the SDK's provider).
pub async fn target_config(shared: &SdkConfig, target: &crate::config::Target) -> SdkConfig {
    let Some(role) = &target.role_arn else { return shared.clone() };
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(role.as_str())
        .session_name(target.session_name.clone().unwrap_or_else(|| "ami-usage-exporter".to_owned()))
        .region(Region::new(target.region.as_str().to_owned()));
    if let Some(external_id) = &target.external_id {
        provider = provider.external_id(external_id.clone());
    }
    let provider = provider.configure(shared).build().await;
    shared
        .to_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        .build()
}

/// One client per Region: EC2 endpoints and throttling buckets are regional.
pub fn ec2_client(shared: &SdkConfig, region: &str, metrics: ApiMetrics) -> aws_sdk_ec2::Client {
    let counter = RequestCounter { region: region.to_owned(), metrics };
    let config = aws_sdk_ec2::config::Builder::from(shared)
        .region(Region::new(region.to_owned()))
        .interceptor(counter)
        .interceptor(RequireCompleteAnswer)
        .retry_classifier(RetryBrokenAnswers)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// Counts each HTTP attempt (retries are requests EC2 throttles and sees, so they count) and
/// each failed attempt by its error code.
#[derive(Clone)]
struct RequestCounter {
    region: String,
    metrics: ApiMetrics,
}

impl std::fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCounter").field("region", &self.region).finish()
    }
}

fn operation_name(cfg: &ConfigBag) -> &str {
    cfg.load::<Metadata>().map_or("Unknown", Metadata::name)
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "ami-usage-exporter request counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.metrics.request(&self.region, operation_name(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let code = attempt_error_code(error);
            // The answer to a permission check (DryRun) that says "allowed" is not a failure.
            if code != "DryRunOperation" {
                self.metrics.error(&self.region, operation_name(cfg), &code);
            }
        }
        Ok(())
    }
}

fn code_of<E>(error: &ErasedError) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    error.downcast_ref::<E>().and_then(|e| e.code()).map(str::to_owned)
}

/// The EC2 error code of a failed attempt, or a name for the kind of failure when EC2 did not
/// answer with one. The SDK erases the operation's error type here, so each of ours is tried.
fn attempt_error_code(error: &OrchestratorError<ErasedError>) -> String {
    if let Some(op) = error.as_operation_error() {
        // An answer that is not an EC2 error document (HTML from a proxy, cut-off XML) has no
        // code: the answer itself was broken.
        return code_of::<DescribeImageUsageReportsError>(op)
            .or_else(|| code_of::<DescribeImageUsageReportEntriesError>(op))
            .or_else(|| code_of::<CreateImageUsageReportError>(op))
            .or_else(|| code_of::<DeleteImageUsageReportError>(op))
            .or_else(|| code_of::<DescribeImagesError>(op))
            .unwrap_or_else(|| RESPONSE_ERROR.to_owned());
    }
    let kind = if is_credentials_error(error) {
        CREDENTIALS_ERROR
    } else if caused_by::<IncompleteAnswer>(error) {
        RESPONSE_ERROR
    } else if error.is_timeout_error() {
        "Timeout"
    } else if error.is_connector_error() {
        "ConnectionError"
    } else if error.is_response_error() {
        RESPONSE_ERROR
    } else {
        "ClientError"
    };
    kind.to_owned()
}

/// The code of an answer that could not be understood.
pub const RESPONSE_ERROR: &str = "ResponseError";

/// The code under which missing or unloadable credentials are counted and logged. The SDK
/// reports them as a dispatch failure, which would otherwise read as a network problem.
pub const CREDENTIALS_ERROR: &str = "CredentialsError";

/// Whether the credential chain failed somewhere in this error's sources.
pub fn is_credentials_error(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<aws_credential_types::provider::error::CredentialsError>(error)
}

/// Whether an error of type `T` is among this error's sources.
pub fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<T>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A successful answer whose XML stops before its root element closes.
#[derive(Debug, thiserror::Error)]
#[error("the answer was cut off: its XML document does not end with the closing tag of its root element")]
pub struct IncompleteAnswer;

/// Refuses answers that were cut off. The SDK's XML parser stops quietly at the end of the
/// input, so a truncated DescribeImageUsageReports answer would read as "fewer reports": an
/// image would look report-less and get a new report every poll. A complete EC2 answer always
/// ends with the closing tag of the element it opened with.
#[derive(Debug)]
struct RequireCompleteAnswer;

impl Intercept for RequireCompleteAnswer {
    fn name(&self) -> &'static str {
        "ami-usage-exporter complete-answer check"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        match response.body().bytes() {
            Some(body) if response.status().is_success() && !is_complete_xml(body) => Err(Box::new(IncompleteAnswer)),
            _ => Ok(()),
        }
    }
}

/// Makes a broken successful answer a transient error, retried like a dropped connection.
///
/// The SDK retries throttling, 5xx and I/O errors, but an HTTP 200 whose body is cut off or is
/// not EC2's XML (a proxy's HTML page, a load balancer closing early) reaches it as an error
/// without a code, which no default classifier retries: one such answer on page 37 of an entry
/// chain would fail the whole chain. The next attempt usually gets a whole answer.
#[derive(Debug)]
struct RetryBrokenAnswers;

impl ClassifyRetry for RetryBrokenAnswers {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else { return RetryAction::NoActionIndicated };
        let answered_ok = ctx.response().is_some_and(|r| r.status().is_success());
        if caused_by::<IncompleteAnswer>(error) || (answered_ok && attempt_error_code(error) == RESPONSE_ERROR) {
            RetryAction::transient_error()
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "ami-usage-exporter broken-answer classifier"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Whether `body` ends with the closing tag of its first (root) element.
fn is_complete_xml(body: &[u8]) -> bool {
    let mut rest = body;
    // Skip the XML declaration, comments and whitespace before the root element.
    let root = loop {
        let Some(start) = rest.iter().position(|b| *b == b'<') else { return false };
        rest = &rest[start + 1..];
        match rest.first() {
            Some(b'?') | Some(b'!') => continue,
            Some(_) => {
                let end =
                    rest.iter().position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/').unwrap_or(rest.len());
                break &rest[..end];
            }
            None => return false,
        }
    };
    let trimmed = body.trim_ascii_end();
    let Some(tail) = trimmed.strip_suffix(b">") else { return false };
    tail.ends_with(root) && tail[..tail.len() - root.len()].ends_with(b"</")
}

/// An error and its causes on one line, each cause once: the SDK nests the same text several
/// levels deep, and a log line is read by people.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
    use super::is_complete_xml;

    #[test]
    fn complete_and_cut_off_answers() {
        let full = br#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImageUsageReportsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>x</requestId>
    <imageUsageReportSet/>
</DescribeImageUsageReportsResponse>
"#;
        assert!(is_complete_xml(full));
        for cut in [full.len() / 2, full.len() - 10, 40] {
            assert!(!is_complete_xml(&full[..cut]), "cut at {cut}");
        }
        assert!(is_complete_xml(b"<A><b/></A>"));
        assert!(!is_complete_xml(b"<A><b/></B>"));
        assert!(!is_complete_xml(b"<html><body>Service Unavailable</body>"));
        assert!(!is_complete_xml(b""));
    }
}
