//! Step 0: which images to watch. The configured ones, and those DescribeImages selects
//! (`discover`), refreshed on their own interval; a failed refresh keeps the previous selection.

use std::time::SystemTime;

use super::target::{TargetPoller, due};
use crate::aws::{ApiError, Described};

impl TargetPoller {
    /// Runs discovery when its interval has passed; returns its answer, whose facts the facts
    /// step uses instead of asking DescribeImages again.
    pub(super) async fn discover(&mut self, now: SystemTime, errors: &mut Vec<ApiError>) -> Option<Described> {
        let discovery = self.target.discovery.as_ref()?;
        let memory = &mut self.memory;
        let interval = discovery.refresh_interval.get();
        if !due(memory.discovered_at, now, interval) {
            return None;
        }
        let region = &self.target.region;
        match self.target.api.describe_images(&discovery.owners, &discovery.filters).await {
            Ok(found) => {
                let ids = found.ids();
                if ids != memory.discovered {
                    tracing::info!(aws_region = %region, images = ids.len(), "discovered images");
                }
                memory.discovered = ids;
                memory.discovered_at = Some(now);
                Some(found)
            }
            Err(error) => {
                tracing::warn!(aws_region = %region, %error, "cannot discover images; keeping the previous selection");
                errors.push(error);
                None
            }
        }
    }

    /// The configured images and the discovered ones that this shard owns, sorted, each once.
    pub(super) fn watched_images(&self) -> Vec<String> {
        self.target.shard_images(self.target.images.iter().chain(&self.memory.discovered).cloned())
    }
}
