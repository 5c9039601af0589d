//! Step 0c (opt in): how many of the caller's own resources reference each watched image, from
//! DescribeImageReferences, every `references.refresh_interval`: at most 10 images a call, all
//! pages, side by side within the target's request slots. A refresh that fails anywhere keeps
//! the last complete counts (their `measured` time tells their age) and is tried again at the
//! next poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::bounded::bounded;
use super::target::{TargetPoller, due};
use crate::aws::ApiError;
use crate::snapshot::References;

/// EC2 takes at most this many image IDs in one DescribeImageReferences call.
const IMAGES_PER_CALL: usize = 10;

impl TargetPoller {
    pub(super) async fn refresh_references(&mut self, images: &[String], now: SystemTime, errors: &mut Vec<ApiError>) {
        let settings = &self.settings.references;
        let interval = settings.refresh_interval.get();
        if !settings.enabled || !due(self.memory.references_at, now, interval) {
            return;
        }
        let (api, types) = (&self.target.api, &settings.resource_types);
        let calls: Vec<_> =
            images.chunks(IMAGES_PER_CALL).map(|ids| api.describe_image_references(ids, types)).collect();
        let mut found: Vec<(String, String)> = Vec::new();
        let mut failure = None;
        for outcome in bounded(calls, self.settings.concurrency).await {
            match outcome {
                Ok(references) => found.extend(references),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            tracing::warn!(aws_region = %self.target.region, %error, "cannot count the references to the images; the last counts stay");
            errors.push(error);
            return;
        }
        self.memory.references = count(images, &types.names(), &found, now);
        self.memory.references_at = Some(now);
    }
}

/// Per image, the number of references of each configured type (0 for types with none).
fn count(
    images: &[String],
    types: &[&str],
    found: &[(String, String)],
    measured: SystemTime,
) -> HashMap<String, Arc<References>> {
    let zero: BTreeMap<String, u64> = types.iter().map(|t| ((*t).to_owned(), 0)).collect();
    let mut counts: HashMap<&str, BTreeMap<String, u64>> =
        images.iter().map(|image| (image.as_str(), zero.clone())).collect();
    for (image, resource_type) in found {
        // A type EC2 returned that was not asked for is counted too: it is a reference.
        if let Some(by_type) = counts.get_mut(image.as_str()) {
            *by_type.entry(resource_type.clone()).or_default() += 1;
        }
    }
    counts.into_iter().map(|(image, counts)| (image.to_owned(), Arc::new(References { counts, measured }))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_types_without_references_count_zero_and_strangers_are_ignored() {
        let images = vec!["ami-1".to_owned(), "ami-2".to_owned()];
        let found = [
            ("ami-1".to_owned(), "ec2:Instance".to_owned()),
            ("ami-1".to_owned(), "ec2:Instance".to_owned()),
            ("ami-9".to_owned(), "ec2:Instance".to_owned()),
        ];
        let counts = count(&images, &["ec2:Instance", "ssm:Parameter"], &found, SystemTime::UNIX_EPOCH);
        let of = |image: &str| counts[image].counts.clone().into_iter().collect::<Vec<_>>();
        assert_eq!(of("ami-1"), [("ec2:Instance".to_owned(), 2), ("ssm:Parameter".to_owned(), 0)]);
        assert_eq!(of("ami-2"), [("ec2:Instance".to_owned(), 0), ("ssm:Parameter".to_owned(), 0)]);
        assert!(!counts.contains_key("ami-9"), "not watched");
    }
}
