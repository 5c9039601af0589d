//! Counting calls twice over: into the exporter's Prometheus counters (per Region and
//! operation, for ever) and into a tally of the client's target since its last poll, which the
//! status page shows ("the last poll made 12 calls, 1 throttled"). Several targets may share a
//! Region, so the counters alone cannot tell one target's poll.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::self_metrics::ApiMetrics;

/// The calls a client made since they were last taken: HTTP attempts (retries included) and
/// failed attempts by error code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: u64,
    pub errors: BTreeMap<String, u64>,
}

/// Counts one client's calls; clones count into the same tally.
#[derive(Clone)]
pub struct CallCounter {
    region: String,
    metrics: ApiMetrics,
    tally: Arc<Mutex<CallCounts>>,
}

impl CallCounter {
    pub fn new(region: &str, metrics: ApiMetrics) -> Self {
        Self { region: region.to_owned(), metrics, tally: Arc::default() }
    }

    pub(super) fn region(&self) -> &str {
        &self.region
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, CallCounts> {
        // A panic while holding the lock leaves plain numbers behind: still good to count on.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn request(&self, operation: &str) {
        self.metrics.request(&self.region, operation);
        self.tally().calls += 1;
    }

    pub(super) fn error(&self, operation: &str, code: &str) {
        self.metrics.error(&self.region, operation, code);
        *self.tally().errors.entry(code.to_owned()).or_default() += 1;
    }

    /// The calls counted since the last take, and a fresh start.
    pub fn take(&self) -> CallCounts {
        std::mem::take(&mut *self.tally())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_restarts_at_each_take_and_clones_share_it() {
        let metrics = crate::self_metrics::SelfMetrics::new("0", "r", false).expect("metrics");
        let counter = CallCounter::new("us-east-1", metrics.api.clone());
        let clone = counter.clone();
        counter.request("DescribeImageUsageReports");
        clone.request("DescribeImageUsageReports");
        clone.error("DescribeImageUsageReports", "RequestLimitExceeded");
        let taken = counter.take();
        assert_eq!(taken.calls, 2);
        assert_eq!(taken.errors.get("RequestLimitExceeded"), Some(&1));
        assert_eq!(counter.take(), CallCounts::default(), "counted from zero again");
        assert!(String::from_utf8_lossy(&metrics.render()).contains("RequestLimitExceeded"), "and in the counters");
    }
}
