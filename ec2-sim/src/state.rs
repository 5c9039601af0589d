//! The mutable world behind the lock, and the rules that move it: report creation, the lazy pending -> available
//! transition, and lazy expiry.
//!
//! Nothing runs in the background. Every entry point calls `refresh` first, which applies every transition whose
//! time has come, so behaviour depends only on the clock and the order of calls, and tests need no sleeps (see
//! `advance_clock`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{CreateOutcome, SimConfig};
use crate::dataset::{self, Timing};
use crate::error::Ec2Error;
use crate::fault::FaultSet;
use crate::ids::IdGen;
use crate::model::{CreateRequest, Image, Report, ReportState, TruthEntry, Usage, snapshot};
use crate::timefmt::truncate_to_millis;

/// AWS quota: pending reports per account and Region.
pub(crate) const MAX_PENDING_PER_ACCOUNT: usize = 2000;
/// Arrival times kept per operation, enough for rate measurements over a long test without growing forever.
pub(crate) const MAX_REQUEST_TIMES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: SimConfig,
    accounts: Vec<String>,
    images: Vec<Image>,
    usage: BTreeMap<String, Usage>,
    /// Kept sorted by `Report::sort_key`, the order of every listing.
    reports: Vec<Report>,
    ids: IdGen,
    next_seq: u64,
    clock_offset: Duration,
    request_counts: BTreeMap<String, u64>,
    /// Real (not simulated) arrival times per Action, the newest `MAX_REQUEST_TIMES` of each.
    request_times: BTreeMap<String, VecDeque<Instant>>,
    pub(crate) faults: FaultSet,
}

impl State {
    pub(crate) fn new(mut config: SimConfig) -> Self {
        // The rules live (and change) in the fault set; a copy left in the config would only go stale.
        let faults = FaultSet::new(config.dataset.seed, std::mem::take(&mut config.faults));
        let mut ids = IdGen::new(config.dataset.seed);
        let timing = Timing { now: SystemTime::now(), report_ttl: config.report_ttl, pending_for: config.pending_for };
        let data = dataset::generate(&config.dataset, timing, &mut ids);
        let usage = data.images.iter().map(|i| i.id.clone()).zip(data.usage).collect();
        let mut state = Self {
            next_seq: data.reports.len() as u64,
            accounts: data.accounts,
            images: data.images,
            usage,
            reports: data.reports,
            ids,
            clock_offset: Duration::ZERO,
            request_counts: BTreeMap::new(),
            request_times: BTreeMap::new(),
            faults,
            config,
        };
        state.sort_reports();
        state
    }

    fn sort_reports(&mut self) {
        self.reports.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    /// The simulated clock: wall time plus whatever tests skipped ahead, in whole milliseconds like the wire.
    pub(crate) fn now(&self) -> SystemTime {
        truncate_to_millis(SystemTime::now() + self.clock_offset)
    }

    pub(crate) fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
        self.refresh();
    }

    /// Applies every transition that is due: pending reports whose time has come are completed against the usage
    /// as it is now, then reports past their expiration time disappear.
    pub(crate) fn refresh(&mut self) {
        let now = self.now();
        for i in 0..self.reports.len() {
            if self.reports[i].state == ReportState::Pending && self.reports[i].ready_at <= now {
                self.complete(i);
            }
        }
        self.reports.retain(|r| r.expiration_time > now);
    }

    fn complete(&mut self, index: usize) {
        let outcome = self.config.create_outcome.clone();
        let report = &mut self.reports[index];
        match outcome {
            CreateOutcome::Available => {
                report.entries = snapshot(self.usage.get(&report.request.image_id), &report.request);
                report.state = ReportState::Available;
            }
            CreateOutcome::Error(reason) => {
                report.entries.clear();
                report.state = ReportState::Error(reason);
            }
        }
    }

    /// Completes every pending report now; returns how many there were.
    pub(crate) fn complete_pending(&mut self) -> usize {
        self.refresh();
        let pending: Vec<usize> =
            (0..self.reports.len()).filter(|&i| self.reports[i].state == ReportState::Pending).collect();
        for &i in &pending {
            self.complete(i);
        }
        pending.len()
    }

    /// Creation times are strictly increasing per image, so "the newest report" is never ambiguous, even for two
    /// reports created within one millisecond.
    fn next_creation_time(&self, image_id: &str) -> SystemTime {
        let now = self.now();
        let latest = self.reports.iter().filter(|r| r.request.image_id == image_id).map(|r| r.creation_time).max();
        match latest {
            Some(t) if t >= now => t + Duration::from_millis(1),
            _ => now,
        }
    }

    fn insert(&mut self, request: CreateRequest, client_token: Option<String>, state: ReportState) -> String {
        let creation_time = self.next_creation_time(&request.image_id);
        let id = self.ids.next_report_id();
        let entries = match state {
            ReportState::Available => snapshot(self.usage.get(&request.image_id), &request),
            _ => Vec::new(),
        };
        self.reports.push(Report {
            id: id.clone(),
            request,
            client_token,
            state,
            creation_time,
            expiration_time: creation_time + self.config.report_ttl,
            ready_at: creation_time + self.config.pending_for,
            entries,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        self.sort_reports();
        id
    }

    /// `CreateImageUsageReport` after parameter validation: idempotency first (a retry of a request whose report is
    /// still pending must get the same ID, not a quota error), then existence, then the pending quotas.
    pub(crate) fn create_report(
        &mut self,
        request: CreateRequest,
        client_token: Option<String>,
    ) -> Result<String, Ec2Error> {
        if let Some(token) = client_token.as_deref()
            && let Some(existing) = self.reports.iter().find(|r| r.client_token.as_deref() == Some(token))
        {
            return if existing.request == request {
                Ok(existing.id.clone())
            } else {
                Err(Ec2Error::client(
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
                ))
            };
        }
        if !self.has_image(&request.image_id) {
            return Err(Ec2Error::image_not_found(&[&request.image_id]));
        }
        if let Some(pending) =
            self.reports.iter().find(|r| r.request.image_id == request.image_id && r.state == ReportState::Pending)
        {
            return Err(Ec2Error::client(
                "ResourceLimitExceeded",
                format!(
                    "A usage report for image {} is already pending ({}). Only one pending report per image is allowed.",
                    request.image_id, pending.id
                ),
            ));
        }
        let pending = self.reports.iter().filter(|r| r.state == ReportState::Pending).count();
        if pending >= MAX_PENDING_PER_ACCOUNT {
            return Err(Ec2Error::client(
                "ResourceLimitExceeded",
                format!("You have reached the limit of {MAX_PENDING_PER_ACCOUNT} pending usage reports."),
            ));
        }
        Ok(self.insert(request, client_token, ReportState::Pending))
    }

    /// A report that is available at once, as if created in the console some time ago and just finished.
    pub(crate) fn add_available_report(&mut self, image_id: &str) -> Option<String> {
        if !self.has_image(image_id) {
            return None;
        }
        let request = dataset::usual_request(&self.config.dataset, image_id);
        Some(self.insert(request, None, ReportState::Available))
    }

    /// Moves a report to `error` now, whatever its state; returns false for an unknown (or expired) report.
    pub(crate) fn fail_report(&mut self, id: &str, reason: &str) -> bool {
        let Some(report) = self.reports.iter_mut().find(|r| r.id == id) else {
            return false;
        };
        report.entries.clear();
        report.state = ReportState::Error(reason.to_string());
        true
    }

    pub(crate) fn delete_report(&mut self, id: &str) -> Result<(), Ec2Error> {
        let before = self.reports.len();
        self.reports.retain(|r| r.id != id);
        if self.reports.len() == before { Err(Ec2Error::unknown_report(id)) } else { Ok(()) }
    }

    pub(crate) fn reports(&self) -> &[Report] {
        &self.reports
    }

    pub(crate) fn images(&self) -> &[Image] {
        &self.images
    }

    pub(crate) fn has_image(&self, id: &str) -> bool {
        self.usage.contains_key(id)
    }

    pub(crate) fn accounts(&self) -> &[String] {
        &self.accounts
    }

    /// The entries of each image's newest available report: what a correct client reports.
    pub(crate) fn ground_truth(&self) -> Vec<TruthEntry> {
        let mut newest: BTreeMap<&str, &Report> = BTreeMap::new();
        for r in self.reports.iter().filter(|r| r.state == ReportState::Available) {
            // `reports` is sorted oldest first within an image, so the last one seen wins.
            newest.insert(&r.request.image_id, r);
        }
        let mut out: Vec<TruthEntry> = newest
            .values()
            .flat_map(|r| {
                r.entries.iter().map(|e| TruthEntry {
                    image_id: r.request.image_id.clone(),
                    report_id: r.id.clone(),
                    report_creation_time: r.creation_time,
                    account_id: e.account_id.clone(),
                    resource_type: e.resource_type.clone(),
                    usage_count: e.usage_count,
                })
            })
            .collect();
        out.sort();
        out
    }

    pub(crate) fn remove_account(&mut self, account_id: &str) {
        for usage in self.usage.values_mut() {
            usage.retain(|(account, _), _| account != account_id);
        }
    }

    /// Returns false for an unknown image. A count of zero or less removes the cell.
    pub(crate) fn set_usage(&mut self, image_id: &str, account_id: &str, resource_type: &str, count: i64) -> bool {
        let Some(usage) = self.usage.get_mut(image_id) else {
            return false;
        };
        let key = (account_id.to_string(), resource_type.to_string());
        if count > 0 {
            usage.insert(key, count);
        } else {
            usage.remove(&key);
        }
        true
    }

    /// Counts a request and remembers when it arrived.
    pub(crate) fn count_request(&mut self, action: &str) {
        *self.request_counts.entry(action.to_string()).or_insert(0) += 1;
        let times = self.request_times.entry(action.to_string()).or_default();
        if times.len() >= MAX_REQUEST_TIMES {
            times.pop_front();
        }
        times.push_back(Instant::now());
    }

    pub(crate) fn request_times(&self, action: &str) -> Vec<Instant> {
        self.request_times.get(action).map(|t| t.iter().copied().collect()).unwrap_or_default()
    }

    pub(crate) fn request_counts(&self) -> BTreeMap<String, u64> {
        self.request_counts.clone()
    }

    pub(crate) fn next_request_id(&mut self) -> String {
        self.ids.next_request_id()
    }
}
