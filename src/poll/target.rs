//! One target and everything the exporter knows about it, in one value: its client, what it
//! remembers between polls, the usage of its serving reports and the last status of its images.
//! Targets share nothing but the settings, the metrics and the string interner, so each can be
//! polled on its own schedule.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::{Ec2Client, EntryChain, Skipped};
use crate::config::{Discovery, EntryQuery, ImageSettings, ReferenceSettings, ReportPolicy};
use crate::intern::Interner;
use crate::report::{Backoff, ReportParams};
use crate::self_metrics::SelfMetrics;
use crate::shard::Shard;
use crate::snapshot::{ImageFacts, ImageStatus, LiveTarget, PollProgress, References, ReportUsage};

/// The settings a poll needs, taken from the configuration; shared by all targets.
pub(super) struct Settings {
    pub(super) policy: ReportPolicy,
    pub(super) entry_query: EntryQuery,
    pub(super) wanted: ReportParams,
    pub(super) concurrency: usize,
    pub(super) poll_interval: Duration,
    pub(super) staleness_limit: Duration,
    pub(super) images: ImageSettings,
    pub(super) references: ReferenceSettings,
}

/// Whether something last done at `last` (never: `None`) is due again at `now`. A clock that
/// went back makes it due: better one call too many than facts that never refresh.
pub(super) fn due(last: Option<SystemTime>, now: SystemTime, interval: Duration) -> bool {
    last.is_none_or(|at| now.duration_since(at).map_or(true, |age| age >= interval))
}

/// A create whose answer named a report that the next listing did not show (deleted elsewhere,
/// or expired): the same request would get the same answer, so it is not repeated until the
/// image's token changes.
pub(super) struct Vanished {
    pub(super) token: String,
    pub(super) report_id: String,
}

/// What a target is: the images and pinned reports of one Region of one owner account, with
/// its client.
pub struct Target {
    pub region: Arc<str>,
    /// Set when several owner accounts are configured: the value of the `owner_account_id` label.
    pub owner: Option<Arc<str>>,
    /// Identifies the target across reloads: Region and role.
    pub key: String,
    pub api: Ec2Client,
    /// Images to watch; the exporter keeps their reports fresh when creation is on.
    pub images: Vec<String>,
    /// Reports made elsewhere, read as they are; never replaced by the exporter.
    pub report_ids: Vec<String>,
    /// More images to watch, found with DescribeImages.
    pub discovery: Option<Discovery>,
    /// The share of the images this process owns (see `shard`), and the owner account that
    /// keys them (the same in every shard: it comes from the configuration).
    pub shard: Shard,
    pub hash_owner: String,
}

impl Target {
    /// Whether this process polls and serves the image.
    pub fn owns(&self, image_id: &str) -> bool {
        self.shard.owns(&self.hash_owner, &self.region, image_id)
    }

    /// The images among `candidates` that this process polls, sorted, each once: every step
    /// takes the shard's share of its images here, so that no two steps can disagree.
    pub(super) fn shard_images(&self, candidates: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut images: Vec<String> = candidates.into_iter().filter(|image| self.owns(image)).collect();
        images.sort();
        images.dedup();
        images
    }
}

/// What the poller remembers of one target between polls. All of it can be rebuilt from what
/// EC2 holds (`TargetPoller::reset`); it only saves calls and repeated log lines.
#[derive(Default)]
pub(super) struct Memory {
    /// Error reports already logged, so each is logged and counted once.
    pub(super) seen_errors: HashSet<String>,
    /// Pending reports already reported as stuck.
    pub(super) seen_stuck: HashSet<String>,
    /// Reports in a state this version does not know, already logged.
    pub(super) seen_unknown: HashSet<String>,
    /// The image of each pinned report, for when listing the report fails.
    pub(super) pinned_images: HashMap<String, String>,
    /// Images whose last report creation failed, and when to try again.
    pub(super) create_backoff: HashMap<String, Backoff>,
    /// Reports requested at the last poll, by image, with their token: the next listing must
    /// show them.
    pub(super) requested: HashMap<String, Vanished>,
    /// Per image, a token whose report vanished.
    pub(super) vanished: HashMap<String, Vanished>,
    /// Entry chains that failed part-way, by the reports they read; the next poll resumes them.
    pub(super) chains: HashMap<Vec<String>, EntryChain>,
    /// Set while EC2 refuses DeleteImageUsageReport (a missing IAM permission).
    pub(super) delete_backoff: Option<Backoff>,
    /// Set while EC2 throttles the Region.
    pub(super) throttled: Option<Backoff>,
    /// The facts of each watched image (see `facts`), and when they were last read in full.
    pub(super) facts: HashMap<String, Arc<ImageFacts>>,
    pub(super) facts_at: Option<SystemTime>,
    /// The reference counts of each watched image (see `references`), and when they were read.
    pub(super) references: HashMap<String, Arc<References>>,
    pub(super) references_at: Option<SystemTime>,
    /// Images found by discovery, and when.
    pub(super) discovered: Vec<String>,
    pub(super) discovered_at: Option<SystemTime>,
}

/// A target, its memory and its last results.
pub struct TargetPoller {
    pub(super) target: Target,
    pub(super) memory: Memory,
    pub(super) settings: Arc<Settings>,
    pub(super) metrics: SelfMetrics,
    /// Usage of every report currently serving an image, by report ID.
    pub(super) cache: HashMap<String, Arc<ReportUsage>>,
    /// The account IDs, resource types and report IDs of the entries read, one copy of each
    /// (see `intern`); shared by all targets, and what no report holds is forgotten.
    pub(super) strings: Arc<Interner>,
    /// The last status of each image, served again when a later poll of the image fails.
    pub(super) last: HashMap<String, ImageStatus>,
    /// How far the running poll is, for the status page.
    pub(super) progress: Arc<PollProgress>,
    /// Makes the next poll panic half-way, for the tests of what follows a panic.
    #[cfg(test)]
    pub(super) panic_next: bool,
}

impl TargetPoller {
    pub(super) fn new(target: Target, settings: Arc<Settings>, metrics: SelfMetrics, strings: Arc<Interner>) -> Self {
        Self {
            target,
            memory: Memory::default(),
            settings,
            metrics,
            cache: HashMap::new(),
            strings,
            last: HashMap::new(),
            progress: Arc::default(),
            #[cfg(test)]
            panic_next: false,
        }
    }

    /// Identifies the target across reloads.
    pub fn key(&self) -> &str {
        &self.target.key
    }

    pub fn region(&self) -> &str {
        &self.target.region
    }

    pub fn shard(&self) -> Shard {
        self.target.shard
    }

    /// The target's running poll, live: what the status page shows while it runs.
    pub fn live(&self) -> LiveTarget {
        LiveTarget {
            region: self.target.region.clone(),
            owner: self.target.owner.clone(),
            progress: Arc::clone(&self.progress),
        }
    }

    /// Uses the strings `other` interns, so that inherited usage and new entries share them.
    pub(super) fn share_strings(&mut self, other: &TargetPoller) {
        self.strings = Arc::clone(&other.strings);
    }

    /// Keeps what `old` (the same target under the previous configuration) learned.
    pub(super) fn inherit(&mut self, mut old: TargetPoller) {
        self.last = std::mem::take(&mut old.last);
        if old.settings.entry_query == self.settings.entry_query {
            self.cache = std::mem::take(&mut old.cache);
        }
        let rediscover = old.target.discovery != self.target.discovery;
        let reread_facts =
            rediscover || old.target.images != self.target.images || old.settings.images != self.settings.images;
        self.memory = std::mem::take(&mut old.memory);
        if rediscover {
            self.memory.discovered_at = None;
        }
        if reread_facts {
            self.memory.facts_at = None;
        }
        if reread_facts || old.settings.references != self.settings.references {
            self.memory.references_at = None;
        }
    }

    /// Starts over from what EC2 holds, after a poll that panicked and may have left the memory
    /// half-updated. The last statuses stay (they are replaced whole at the end of a poll, so a
    /// panic cannot have touched them); everything else is read again from EC2.
    pub fn reset(&mut self) {
        self.progress.finish();
        self.memory = Memory::default();
        self.cache.clear();
        self.strings.forget_unused();
    }

    #[cfg(test)]
    pub(crate) fn panic_next_poll(&mut self) {
        self.panic_next = true;
    }

    #[cfg(test)]
    pub(crate) fn memory_is_clean(&self) -> bool {
        self.memory.seen_errors.is_empty() && self.memory.chains.is_empty() && self.cache.is_empty()
    }

    /// Gives the target a new client (after the credentials changed), keeping all state.
    pub fn replace_client(&mut self, api: Ec2Client) {
        self.target.api = api;
    }

    /// Counts (entries only) and logs what an answer held that could not be used.
    pub(super) fn note_skipped(&self, skipped: &Skipped, what: &str) {
        if skipped.count == 0 {
            return;
        }
        let region = &*self.target.region;
        if what == "entries" {
            self.metrics.invalid_entries.with_label_values(&[region]).inc_by(skipped.count);
        }
        tracing::warn!(
            aws_region = region,
            skipped = skipped.count,
            example = skipped.example.as_deref().unwrap_or(""),
            "skipped {what} with missing or impossible fields"
        );
    }
}
