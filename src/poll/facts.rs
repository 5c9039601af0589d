//! Step 0b: what DescribeImages tells about each watched image (name, state, visibility,
//! creation, last launch, deprecation), read again every `images.refresh_interval`. One call
//! per 200 images, or none for the images discovery has just described.
//!
//! One unknown ID fails a whole DescribeImages call, so a failed batch is split in halves until
//! the IDs EC2 refuses stand alone: the other images keep their facts. An image EC2 no longer
//! knows is shown as `deregistered` (and logged) until the next refresh drops it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::target::{TargetPoller, due};
use crate::aws::{ApiError, Code, Described};
use crate::config::MAX_IDS_PER_CALL;
use crate::snapshot::ImageFacts;

/// What the facts calls of one refresh found.
#[derive(Default)]
struct Found {
    facts: HashMap<String, ImageFacts>,
    /// Images EC2 says do not exist.
    missing: HashSet<String>,
    /// The first failure that was not about an ID, if any: the refresh is incomplete.
    failed: Option<ApiError>,
}

/// Whether EC2 refused the call because of one of its IDs (so that splitting the batch helps).
fn refused_an_id(error: &ApiError) -> bool {
    matches!(&error.code, Code::Other(code) if code.starts_with("InvalidAMIID."))
}

impl TargetPoller {
    /// Reads the facts when they are due. A refused permission drops them (absent, not stale);
    /// another failure keeps the last good ones and tries again at the next poll.
    pub(super) async fn refresh_facts(
        &mut self,
        images: &[String],
        discovered: Option<&Described>,
        now: SystemTime,
        errors: &mut Vec<ApiError>,
    ) {
        let settings = &self.settings.images;
        let interval = settings.refresh_interval.get();
        if !settings.facts || !due(self.memory.facts_at, now, interval) {
            return;
        }
        let mut found = Found::default();
        if let Some(described) = discovered {
            found.facts.extend(described.images.iter().cloned());
        }
        let unknown: Vec<String> = images.iter().filter(|i| !found.facts.contains_key(*i)).cloned().collect();
        self.describe_by_id(&unknown, &mut found).await;
        match found.failed.take() {
            Some(error) if error.code.is_denied() => {
                tracing::warn!(aws_region = %self.target.region, %error, "cannot read image facts (allow ec2:DescribeImages, or set images.facts: false); usage is not affected");
                self.memory.facts.clear();
                self.memory.facts_at = Some(now);
                errors.push(error);
            }
            Some(error) => {
                tracing::warn!(aws_region = %self.target.region, %error, "cannot read some image facts; the last ones stay, and the next poll tries again");
                self.merge_facts(images, found, false);
                errors.push(error);
            }
            None => {
                self.merge_facts(images, found, true);
                self.memory.facts_at = Some(now);
            }
        }
    }

    /// Calls DescribeImages by ID, 200 to a call, splitting a batch that one ID fails.
    async fn describe_by_id(&self, images: &[String], found: &mut Found) {
        let mut batches: Vec<Vec<String>> = images.chunks(MAX_IDS_PER_CALL).map(<[String]>::to_vec).collect();
        while let Some(batch) = batches.pop() {
            match self.target.api.describe_images_by_id(&batch).await {
                Ok(described) => {
                    self.note_skipped(&described.skipped, "images");
                    found.facts.extend(described.images);
                }
                Err(error) if refused_an_id(&error) && batch.len() > 1 => {
                    let (left, right) = batch.split_at(batch.len() / 2);
                    batches.push(left.to_vec());
                    batches.push(right.to_vec());
                }
                Err(error) if refused_an_id(&error) => found.missing.extend(batch),
                Err(error) => {
                    found.failed.get_or_insert(error);
                }
            }
        }
    }

    /// Takes in what a refresh found. An image that a complete refresh did not find is shown
    /// as deregistered once (its last facts, so that dashboards still show its name), then
    /// dropped.
    fn merge_facts(&mut self, images: &[String], mut found: Found, complete: bool) {
        let previous = std::mem::take(&mut self.memory.facts);
        let mut facts = HashMap::with_capacity(images.len());
        for image in images {
            let old = previous.get(image);
            if let Some(new) = found.facts.remove(image) {
                let unchanged = old.filter(|o| ***o == new).cloned();
                facts.insert(image.clone(), unchanged.unwrap_or_else(|| Arc::new(new)));
            } else if !complete && !found.missing.contains(image) {
                // Not asked successfully this time: the last good facts stay.
                if let Some(old) = old {
                    facts.insert(image.clone(), Arc::clone(old));
                }
            } else if let Some(old) = old.filter(|o| o.state != ImageFacts::DEREGISTERED) {
                tracing::warn!(aws_region = %self.target.region, image_id = %image, name = %old.name, "the image is gone from DescribeImages (deregistered?); it is shown as deregistered until the next refresh");
                facts.insert(image.clone(), Arc::new(old.deregistered()));
            }
        }
        self.memory.facts = facts;
    }
}
