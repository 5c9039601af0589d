//! Polls: for every target (a Region of an owner account), list the reports of the watched
//! images, request new reports where they are due, read the entries of reports not read before,
//! delete what a newer report replaced, and tell the images' status.
//!
//! A poll of one target (`cycle`) runs these steps in order, one file each: `list` (which
//! reports exist), `decide` (which report serves, which images need a new one: the rules are in
//! `report`), `create`, `entries` (read the serving reports never read before) and `delete`.
//! `target` holds a target with everything remembered about it between polls; the steps read
//! and update it, and depend on nothing but it and each other's outputs.
//!
//! Cost is the design constraint. Reports are listed 200 images to a call; entries are read by
//! report ID, up to 200 reports to a call, and only for reports never read before (an available
//! report never changes); the exporter deletes its own reports once a newer one serves, so an
//! image lists one or two reports, not 30 days of them. A steady-state poll therefore costs one
//! DescribeImageUsageReports call (one page) per 200 images and nothing else.
//!
//! Failure is contained. Each target is polled on its own (`TargetPoller`), so a hung Region
//! holds back no other. The images of a failed call keep their last good data, marked by
//! `ami_usage_image_poll_success 0`, for `staleness_limit`; the others refresh. An entry chain
//! that fails part-way resumes at the failed page at the next poll. A Region that EC2 throttles
//! is polled less and less often until it answers again; an image whose reports keep failing,
//! or whose report cannot be created, waits longer and longer before the next request.

mod bounded;
mod create;
mod cycle;
mod decide;
mod delete;
mod discover;
mod entries;
mod facts;
mod list;
mod references;
mod target;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cycle::PollStats;
pub use target::{Target, TargetPoller};

use crate::config::Config;
use crate::intern::Interner;
use crate::report::ReportParams;
use crate::self_metrics::SelfMetrics;
use target::Settings;

/// All targets of a configuration.
pub struct Poller {
    targets: Vec<TargetPoller>,
    max_concurrent_targets: usize,
}

impl Poller {
    pub fn new(config: &Config, targets: Vec<Target>, metrics: SelfMetrics) -> Self {
        let settings = Arc::new(Settings {
            policy: config.reports.clone(),
            entry_query: config.entries.clone(),
            wanted: ReportParams::from_policy(&config.reports),
            concurrency: config.aws.max_concurrent_requests.get() as usize,
            poll_interval: config.poll_interval.get(),
            staleness_limit: config.staleness_limit.get(),
            images: config.images.clone(),
            references: config.references.clone(),
        });
        let strings = Arc::new(Interner::new());
        let targets = targets
            .into_iter()
            .map(|target| TargetPoller::new(target, Arc::clone(&settings), metrics.clone(), Arc::clone(&strings)))
            .collect();
        Self { targets, max_concurrent_targets: config.aws.max_concurrent_targets.get() as usize }
    }

    /// Takes over what the targets of a previous configuration learned, after a reload: the
    /// last good data of every image and the memory of targets still configured, and the report
    /// cache if the new configuration reads reports the same way.
    pub fn inherit(&mut self, previous: Vec<TargetPoller>) {
        // The strings the inherited usage holds: new entries share them too.
        if let Some(first) = previous.first() {
            for target in &mut self.targets {
                target.share_strings(first);
            }
        }
        for old in previous {
            if let Some(new) = self.targets.iter_mut().find(|t| t.key() == old.key()) {
                new.inherit(old);
            }
        }
    }

    /// The targets, each to be polled on its own.
    pub fn into_targets(self) -> Vec<TargetPoller> {
        self.targets
    }

    pub fn max_concurrent_targets(&self) -> usize {
        self.max_concurrent_targets
    }
}
