//! How a simulator instance is set up.

use std::time::Duration;

use crate::dataset::DatasetSpec;
use crate::fault::FaultRule;

/// What happens to a report created through the API once its pending time is over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CreateOutcome {
    #[default]
    Available,
    /// The report ends in `error` with this `stateReason`, to exercise clients' handling of failed reports (the
    /// SDK waiter does not notice them).
    Error(String),
}

/// Not `Eq`: fault rules hold a share as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub dataset: DatasetSpec,
    /// How long a created report stays `pending`. Real reports take minutes; tests want seconds or zero.
    pub pending_for: Duration,
    pub create_outcome: CreateOutcome,
    /// Lifetime of a report. AWS deletes reports about 30 days after creation.
    pub report_ttl: Duration,
    /// Fault rules active from the start (see `Simulator::set_faults` to change them at run time).
    pub faults: Vec<FaultRule>,
}

pub(crate) const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetSpec::default(),
            pending_for: Duration::from_secs(2),
            create_outcome: CreateOutcome::Available,
            report_ttl: DEFAULT_REPORT_TTL,
            faults: Vec::new(),
        }
    }
}
