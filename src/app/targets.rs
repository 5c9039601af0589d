//! From the configuration to the targets a poller polls: one EC2 client per target (Region
//! and owner account), with the target's credentials.

use aws_config::SdkConfig;

use crate::aws;
use crate::config::Config;
use crate::poll::Target;
use crate::self_metrics::SelfMetrics;
use crate::shard::Shard;

/// Every target of the configuration.
pub(super) async fn build_targets(
    config: &Config,
    shared: &SdkConfig,
    metrics: &SelfMetrics,
    shard: Shard,
) -> Vec<Target> {
    let mut targets = Vec::with_capacity(config.targets.len());
    for target in &config.targets {
        targets.push(build_target(config, target, shared, metrics, shard).await);
    }
    targets
}

/// What identifies a target across reloads: its Region and role.
pub(super) fn target_key(target: &crate::config::Target) -> String {
    format!("{} {}", target.region.as_str(), target.role_arn.as_ref().map_or("", |r| r.as_str()))
}

/// One target's client and watch list. Its IDs are unique: the configuration refuses repeats.
pub(super) async fn build_target(
    config: &Config,
    target: &crate::config::Target,
    shared: &SdkConfig,
    metrics: &SelfMetrics,
    shard: Shard,
) -> Target {
    let region = target.region.as_str();
    let sdk = aws::target_config(shared, target).await;
    Target {
        region: region.into(),
        owner: config.labels_owner().then(|| target.owner().unwrap_or_default().into()),
        key: target_key(target),
        api: aws::region_client(&sdk, region, &config.aws, &metrics.api),
        images: target.images.iter().map(|i| i.as_str().to_owned()).collect(),
        report_ids: target.report_ids.iter().map(|r| r.as_str().to_owned()).collect(),
        discovery: target.discover.clone(),
        shard,
        hash_owner: target.owner().unwrap_or_default().to_owned(),
    }
}
