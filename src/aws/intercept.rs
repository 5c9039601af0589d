//! What every EC2 client does besides calling: it counts each HTTP attempt and each failed one
//! by its code, refuses answers that were cut off, and retries broken successful answers.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef, Error as ErasedError,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::calls::CallCounter;
use super::error::{Code, Failure, IncompleteAnswer, caused_by, classify};

/// Counts each HTTP attempt (retries are requests EC2 throttles and sees, so they count) and
/// each failed attempt by its error code.
#[derive(Clone)]
pub(super) struct RequestCounter(pub(super) CallCounter);

impl std::fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCounter").field("region", &self.0.region()).finish()
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
        self.0.request(operation_name(cfg));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(error)) = context.output_or_error() {
            let code = attempt_code(error, context.response());
            // The answer to a permission check (DryRun) that says "allowed" is not a failure.
            if code != Code::DryRunOperation {
                self.0.error(operation_name(cfg), code.as_str());
            }
        }
        Ok(())
    }
}

/// The code of a failed attempt. The SDK erases the operation's error type here, so EC2's code
/// is read from the error document itself: the same for every operation, present or future.
fn attempt_code(error: &OrchestratorError<ErasedError>, response: Option<&HttpResponse>) -> Code {
    let failure = if error.as_operation_error().is_some() {
        Failure::Answered(response.and_then(|r| r.body().bytes()).and_then(ec2_error_code))
    } else if error.is_timeout_error() {
        Failure::Timeout
    } else if error.is_connector_error() {
        Failure::Dispatch
    } else if error.is_response_error() {
        Failure::Response
    } else {
        Failure::Other
    };
    classify(failure, error)
}

/// The `<Code>` of an EC2 error document
/// (`<Response><Errors><Error><Code>…</Code>…</Error></Errors>…</Response>`).
fn ec2_error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let errors = &text[text.find("<Errors>")?..];
    let start = errors.find("<Code>")? + "<Code>".len();
    let len = errors[start..].find("</Code>")?;
    Some(errors[start..start + len].trim()).filter(|code| !code.is_empty())
}

/// Refuses answers that were cut off. The SDK's XML parser stops quietly at the end of the
/// input, so a truncated DescribeImageUsageReports answer would read as "fewer reports": an
/// image would look report-less and get a new report every poll. A complete EC2 answer always
/// ends with the closing tag of the element it opened with.
#[derive(Debug)]
pub(super) struct RequireCompleteAnswer;

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
pub(super) struct RetryBrokenAnswers;

impl ClassifyRetry for RetryBrokenAnswers {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else { return RetryAction::NoActionIndicated };
        let answered_ok = ctx.response().is_some_and(|r| r.status().is_success());
        if caused_by::<IncompleteAnswer>(error)
            || (answered_ok && attempt_code(error, ctx.response()) == Code::BrokenAnswer)
        {
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

#[cfg(test)]
mod tests {
    use super::{ec2_error_code, is_complete_xml};

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

    #[test]
    fn the_code_is_read_from_the_error_document() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>"#;
        assert_eq!(ec2_error_code(doc), Some("RequestLimitExceeded"));
        assert_eq!(ec2_error_code(b"<html><body>Bad Gateway</body></html>"), None);
        assert_eq!(ec2_error_code(b"<Response><Errors><Error><Code></Code></Error></Errors></Response>"), None);
        assert_eq!(ec2_error_code(b"\xff\xfe"), None);
    }
}
