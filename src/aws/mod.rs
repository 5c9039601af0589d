//! Everything that speaks to AWS: the SDK configuration and credentials (`mod.rs`), the
//! per-Region EC2 client (`client`), the translation of its answers (`convert`), what each
//! request passes through (`intercept`), what a failure means (`error`) and the permission
//! preflight (`dry_run`). Nothing outside this module touches the SDK's types.
//!
//! Credentials and endpoints come from `aws-config`'s default chain, so the exporter runs the
//! way every AWS tool does: environment variables, shared profiles and SSO, web identity (IRSA,
//! EKS Pod Identity), ECS task roles and EC2 instance metadata; `AWS_ENDPOINT_URL_EC2` (or
//! `AWS_ENDPOINT_URL`) redirects the client, e.g. to a VPC endpoint.

mod calls;
mod client;
mod convert;
pub mod dry_run;
mod error;
mod intercept;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use calls::CallCounter;
pub use client::{Described, Ec2Client, EntryChain, ReportSelector, Skipped};
pub use error::{ApiError, Code};

use crate::config::{AwsSettings, RetryMode};
use crate::self_metrics::ApiMetrics;

/// The SDK behaviour the exporter was tested with, pinned so that an SDK upgrade cannot change
/// defaults (retries, timeouts) behind our back.
fn behavior_version() -> BehaviorVersion {
    BehaviorVersion::v2026_01_12()
}

/// Loads what all Regions share: credentials chain, timeouts and retry policy.
pub async fn shared_config(settings: &AwsSettings) -> SdkConfig {
    loader(settings).load().await
}

/// The SDK configuration of `shared_config`, pointed at `endpoint` with static credentials:
/// what the in-process tests talk to the simulator with, without touching the environment.
#[cfg(test)]
pub(crate) async fn test_config(settings: &AwsSettings, endpoint: &str) -> SdkConfig {
    let credentials = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
    loader(settings)
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await
}

fn loader(settings: &AwsSettings) -> aws_config::ConfigLoader {
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
    aws_config::defaults(behavior_version()).timeout_config(timeouts).retry_config(retry)
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

/// The EC2 client of one Region: EC2 endpoints and throttling buckets are regional.
pub fn region_client(shared: &SdkConfig, region: &str, settings: &AwsSettings, metrics: &ApiMetrics) -> Ec2Client {
    let calls = CallCounter::new(region, metrics.clone());
    let config = aws_sdk_ec2::config::Builder::from(shared)
        .region(Region::new(region.to_owned()))
        .interceptor(intercept::RequestCounter(calls.clone()))
        .interceptor(intercept::RequireCompleteAnswer)
        .retry_classifier(intercept::RetryBrokenAnswers)
        .build();
    let concurrency = settings.max_concurrent_requests.get() as usize;
    Ec2Client::new(aws_sdk_ec2::Client::from_conf(config), calls, concurrency, settings.page_size.get())
}
