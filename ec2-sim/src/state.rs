//! The mutable world behind the lock, and the rules that move it: report creation, the lazy pending -> available
//! transition, and lazy expiry.
//!
//! The world holds one `Owner` per owner account: its consumer accounts, images, usage and reports. Requests are
//! attributed to an owner by their access key (`caller`); the primary owner (`SimConfig::dataset`) comes first and
//! answers every key that STS did not issue.
//!
//! Nothing runs in the background. Every entry point calls `refresh` first, which applies every transition whose
//! time has come, so behaviour depends only on the clock and the order of calls, and tests need no sleeps (see
//! `advance_clock`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{CreateOutcome, SimConfig};
use crate::dataset::{self, DatasetSpec, Timing};
use crate::error::Ec2Error;
use crate::fault::FaultSet;
use crate::ids::{IdGen, unique_id};
use crate::model::{CreateRequest, Image, Report, ReportState, TruthEntry, Usage, snapshot};
use crate::references::{self, Reference, ReferenceKind};
use crate::rng::SplitMix64;
use crate::sigv4::CredentialScope;
use crate::sts::Sts;
use crate::timefmt::truncate_to_millis;

/// AWS quota: pending reports per account and Region.
pub(crate) const MAX_PENDING_PER_ACCOUNT: usize = 2000;
/// Arrival times kept per operation, enough for rate measurements over a long test without growing forever.
pub(crate) const MAX_REQUEST_TIMES: usize = 100_000;
/// The Region recorded for a request without a credential scope (unsigned).
pub(crate) const NO_REGION: &str = "(none)";

/// Index into `State::owners`; 0 is the primary owner.
pub(crate) type OwnerIx = usize;
pub(crate) const PRIMARY: OwnerIx = 0;

/// Who sent a request, as far as the simulator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Whose data the request sees.
    pub(crate) owner: OwnerIx,
    pub(crate) account: String,
    /// From the credential scope, or `NO_REGION`.
    pub(crate) region: String,
    /// The principal's ARN, as IAM names it in error messages.
    pub(crate) principal: String,
    /// The principal's unique ID, as `GetCallerIdentity` gives it.
    pub(crate) user_id: String,
    /// The credential scope's service (`ec2`, `sts`), empty when unsigned.
    pub(crate) service: String,
}

/// One owner account's world: its consumer accounts, its images and their current usage, and its reports.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) spec: DatasetSpec,
    accounts: Vec<String>,
    images: Vec<Image>,
    /// Keyed by image ID: exactly the registered images (a deregistered image loses its usage).
    usage: BTreeMap<String, Usage>,
    /// Kept sorted by `Report::sort_key`, the order of every listing.
    reports: Vec<Report>,
    /// References in the owner's account, to any image (its own or not), in the order they came to be.
    references: Vec<Reference>,
    /// Draws the resource IDs of references added later.
    reference_rng: SplitMix64,
    ids: IdGen,
    next_seq: u64,
    /// Index of the next registered image's ID. Never reused, not even after a deregistration.
    next_image: u64,
    /// Every `ClientToken` a report was created with, and that request and report: EC2's idempotency outlives the
    /// report, so a token repeated after the report was deleted gets the same (now unlisted) report ID.
    tokens: BTreeMap<String, (CreateRequest, String)>,
}

impl Owner {
    fn new(spec: DatasetSpec, mut ids: IdGen, timing: Timing) -> Owner {
        let data = dataset::generate(&spec, timing, &mut ids);
        let usage = data.images.iter().map(|i| i.id.clone()).zip(data.usage).collect();
        let mut owner = Owner {
            next_seq: data.reports.len() as u64,
            next_image: data.images.len() as u64,
            accounts: data.accounts,
            images: data.images,
            usage,
            reports: data.reports,
            references: data.references,
            reference_rng: data.reference_rng,
            ids,
            spec,
            tokens: BTreeMap::new(),
        };
        owner.sort_reports();
        owner
    }

    fn sort_reports(&mut self) {
        self.reports.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: SimConfig,
    /// The primary owner first, then `extra_owners` in order, then the accounts of roles without a dataset.
    owners: Vec<Owner>,
    clock_offset: Duration,
    request_counts: BTreeMap<String, u64>,
    /// (account, Region, Action) -> requests.
    request_counts_by: BTreeMap<(String, String, String), u64>,
    /// Real (not simulated) arrival times per Action, the newest `MAX_REQUEST_TIMES` of each.
    request_times: BTreeMap<String, VecDeque<Instant>>,
    request_ids: IdGen,
    pub(crate) sts: Sts,
    pub(crate) faults: FaultSet,
}

impl State {
    /// # Panics
    /// If the configuration does not pass `SimConfig::validate`.
    pub(crate) fn new(mut config: SimConfig) -> Self {
        if let Err(err) = config.validate() {
            panic!("invalid simulator configuration: {err}");
        }
        let seed = config.dataset.seed;
        // The rules live (and change) in the fault set; a copy left in the config would only go stale.
        let faults = FaultSet::new(seed, std::mem::take(&mut config.faults));
        let timing = Timing { now: SystemTime::now(), report_ttl: config.report_ttl, pending_for: config.pending_for };
        let mut owners = vec![Owner::new(config.dataset.clone(), IdGen::new(seed), timing)];
        for spec in &config.extra_owners {
            owners.push(Owner::new(spec.clone(), IdGen::for_owner(spec.seed, &spec.owner_account), timing));
        }
        for account in config.roles.iter().filter_map(|r| r.account()) {
            if !owners.iter().any(|o| o.spec.owner_account == account) {
                let spec = DatasetSpec {
                    images: 0,
                    accounts: 0,
                    reports_per_image: 0,
                    pending_reports: false,
                    ..config.dataset.for_owner(account)
                };
                let ids = IdGen::for_owner(spec.seed, account);
                owners.push(Owner::new(spec, ids, timing));
            }
        }
        let state = Self {
            owners,
            clock_offset: Duration::ZERO,
            request_counts: BTreeMap::new(),
            request_counts_by: BTreeMap::new(),
            request_times: BTreeMap::new(),
            request_ids: IdGen::new(seed),
            sts: Sts::new(seed),
            faults,
            config,
        };
        state.assert_unique_ids();
        state
    }

    /// Image and report IDs are derived from seed and account, so owners cannot share one except by a 2^-64
    /// accident; this makes even that loud instead of a silent mix-up.
    fn assert_unique_ids(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for owner in &self.owners {
            for id in owner.images.iter().map(|i| &i.id).chain(owner.reports.iter().map(|r| &r.id)) {
                assert!(seen.insert(id.as_str()), "ID {id} generated twice; choose another seed");
            }
        }
    }

    /// The simulated clock: wall time plus whatever tests skipped ahead, in whole milliseconds like the wire.
    pub(crate) fn now(&self) -> SystemTime {
        truncate_to_millis(SystemTime::now() + self.clock_offset)
    }

    pub(crate) fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
        self.refresh();
    }

    /// Who a request is from: an access key that `AssumeRole` issued belongs to its role's account, any other key
    /// (or none) to the primary owner.
    pub(crate) fn caller(&self, scope: Option<&CredentialScope>) -> Caller {
        let region = scope.map_or(NO_REGION, |s| s.region.as_str()).to_string();
        let service = scope.map(|s| s.service.clone()).unwrap_or_default();
        if let Some(session) = scope.and_then(|s| self.sts.session(&s.access_key_id))
            && let Some(owner) = self.owner_index(&session.account)
        {
            return Caller {
                owner,
                account: session.account.clone(),
                region,
                principal: session.arn.clone(),
                user_id: session.user_id.clone(),
                service,
            };
        }
        let account = self.owners[PRIMARY].spec.owner_account.clone();
        let principal = format!("arn:aws:iam::{account}:user/x");
        Caller { owner: PRIMARY, user_id: unique_id("AIDA", &principal), principal, account, region, service }
    }

    pub(crate) fn owner_index(&self, account: &str) -> Option<OwnerIx> {
        self.owners.iter().position(|o| o.spec.owner_account == account)
    }

    pub(crate) fn owner_accounts(&self) -> Vec<String> {
        self.owners.iter().map(|o| o.spec.owner_account.clone()).collect()
    }

    pub(crate) fn spec(&self, owner: OwnerIx) -> &DatasetSpec {
        &self.owners[owner].spec
    }

    /// Applies every transition that is due: pending reports whose time has come are completed against the usage
    /// as it is now, then reports past their expiration time disappear.
    pub(crate) fn refresh(&mut self) {
        let now = self.now();
        for o in 0..self.owners.len() {
            for i in 0..self.owners[o].reports.len() {
                let r = &self.owners[o].reports[i];
                if r.state == ReportState::Pending && r.ready_at <= now {
                    self.complete(o, i);
                }
            }
            self.owners[o].reports.retain(|r| r.expiration_time > now);
        }
    }

    fn complete(&mut self, owner: OwnerIx, index: usize) {
        let outcome = self.config.create_outcome.clone();
        let o = &mut self.owners[owner];
        let report = &mut o.reports[index];
        match outcome {
            CreateOutcome::Available => {
                report.entries = snapshot(o.usage.get(&report.request.image_id), &report.request);
                report.state = ReportState::Available;
            }
            CreateOutcome::Error(reason) => {
                report.entries.clear();
                report.state = ReportState::Error(reason);
            }
        }
    }

    /// Completes every pending report of every owner now; returns how many there were.
    pub(crate) fn complete_pending(&mut self) -> usize {
        self.refresh();
        let mut count = 0;
        for o in 0..self.owners.len() {
            for i in 0..self.owners[o].reports.len() {
                if self.owners[o].reports[i].state == ReportState::Pending {
                    self.complete(o, i);
                    count += 1;
                }
            }
        }
        count
    }

    /// Creation times are strictly increasing per image, so "the newest report" is never ambiguous, even for two
    /// reports created within one millisecond.
    fn next_creation_time(&self, owner: OwnerIx, image_id: &str) -> SystemTime {
        let now = self.now();
        let reports = &self.owners[owner].reports;
        let latest = reports.iter().filter(|r| r.request.image_id == image_id).map(|r| r.creation_time).max();
        match latest {
            Some(t) if t >= now => t + Duration::from_millis(1),
            _ => now,
        }
    }

    /// Whether another owner than `owner` uses the ID. An owner's own IDs never repeat (distinct counters give
    /// distinct IDs), so with a single owner this costs nothing.
    fn taken_elsewhere(&self, owner: OwnerIx, id: &str) -> bool {
        self.owners
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != owner)
            .any(|(_, o)| o.reports.iter().any(|r| r.id == id) || o.images.iter().any(|i| i.id == id))
    }

    /// The owner's next report ID that no other owner uses (see `assert_unique_ids`).
    fn fresh_report_id(&mut self, owner: OwnerIx) -> String {
        loop {
            let id = self.owners[owner].ids.next_report_id();
            if !self.taken_elsewhere(owner, &id) {
                return id;
            }
        }
    }

    fn insert(
        &mut self,
        owner: OwnerIx,
        request: CreateRequest,
        client_token: Option<String>,
        state: ReportState,
    ) -> String {
        let creation_time = self.next_creation_time(owner, &request.image_id);
        let id = self.fresh_report_id(owner);
        let (report_ttl, pending_for) = (self.config.report_ttl, self.config.pending_for);
        let o = &mut self.owners[owner];
        let entries = match state {
            ReportState::Available => snapshot(o.usage.get(&request.image_id), &request),
            _ => Vec::new(),
        };
        o.reports.push(Report {
            id: id.clone(),
            request,
            client_token,
            state,
            creation_time,
            expiration_time: creation_time + report_ttl,
            ready_at: creation_time + pending_for,
            entries,
            seq: o.next_seq,
        });
        o.next_seq += 1;
        o.sort_reports();
        id
    }

    /// `CreateImageUsageReport` after parameter validation: idempotency first (a retry of a request whose report is
    /// still pending must get the same ID, not a quota error), then existence, then the pending quotas.
    pub(crate) fn create_report(
        &mut self,
        owner: OwnerIx,
        request: CreateRequest,
        client_token: Option<String>,
    ) -> Result<String, Ec2Error> {
        let reports = &self.owners[owner].reports;
        if let Some(token) = client_token.as_deref()
            && let Some((first, id)) = self.owners[owner].tokens.get(token)
        {
            return if *first == request {
                Ok(id.clone())
            } else {
                Err(Ec2Error::client(
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
                ))
            };
        }
        if !self.has_image(owner, &request.image_id) {
            return Err(Ec2Error::image_not_found(&[&request.image_id]));
        }
        if let Some(pending) =
            reports.iter().find(|r| r.request.image_id == request.image_id && r.state == ReportState::Pending)
        {
            return Err(Ec2Error::client(
                "ResourceLimitExceeded",
                format!(
                    "A usage report for image {} is already pending ({}). Only one pending report per image is allowed.",
                    request.image_id, pending.id
                ),
            ));
        }
        let pending = reports.iter().filter(|r| r.state == ReportState::Pending).count();
        if pending >= MAX_PENDING_PER_ACCOUNT {
            return Err(Ec2Error::client(
                "ResourceLimitExceeded",
                format!("You have reached the limit of {MAX_PENDING_PER_ACCOUNT} pending usage reports."),
            ));
        }
        let remembered = client_token.clone().map(|token| (token, request.clone()));
        let id = self.insert(owner, request, client_token, ReportState::Pending);
        if let Some((token, request)) = remembered {
            self.owners[owner].tokens.insert(token, (request, id.clone()));
        }
        Ok(id)
    }

    /// A report that is available at once, as if created in the console some time ago and just finished.
    pub(crate) fn add_available_report(&mut self, image_id: &str) -> Option<String> {
        let owner = self.owner_of_image(image_id)?;
        let request = dataset::usual_request(&self.owners[owner].spec, image_id);
        Some(self.insert(owner, request, None, ReportState::Available))
    }

    /// Moves a report to `error` now, whatever its state; returns false for an unknown (or expired) report.
    pub(crate) fn fail_report(&mut self, id: &str, reason: &str) -> bool {
        let report = self.owners.iter_mut().flat_map(|o| o.reports.iter_mut()).find(|r| r.id == id);
        let Some(report) = report else {
            return false;
        };
        report.entries.clear();
        report.state = ReportState::Error(reason.to_string());
        true
    }

    /// Puts a report in a state of this name, one AWS does not document (yet); returns false for an unknown report.
    pub(crate) fn set_report_state(&mut self, id: &str, state: &'static str) -> bool {
        let report = self.owners.iter_mut().flat_map(|o| o.reports.iter_mut()).find(|r| r.id == id);
        let Some(report) = report else {
            return false;
        };
        report.entries.clear();
        report.state = ReportState::Unknown(state);
        true
    }

    /// Deletes one of the owner's reports; another owner's report is as unknown as a made-up ID.
    pub(crate) fn delete_report(&mut self, owner: OwnerIx, id: &str) -> Result<(), Ec2Error> {
        let reports = &mut self.owners[owner].reports;
        let before = reports.len();
        reports.retain(|r| r.id != id);
        if reports.len() == before { Err(Ec2Error::unknown_report(id)) } else { Ok(()) }
    }

    pub(crate) fn owner_of_report(&self, id: &str) -> Option<OwnerIx> {
        self.owners.iter().position(|o| o.reports.iter().any(|r| r.id == id))
    }

    pub(crate) fn reports(&self, owner: OwnerIx) -> &[Report] {
        &self.owners[owner].reports
    }

    /// The owner's registered images, in registration order.
    pub(crate) fn images(&self, owner: OwnerIx) -> &[Image] {
        &self.owners[owner].images
    }

    /// A registered image of any owner, to change its facts.
    pub(crate) fn image_mut(&mut self, id: &str) -> Option<&mut Image> {
        self.owners.iter_mut().flat_map(|o| o.images.iter_mut()).find(|i| i.id == id)
    }

    pub(crate) fn has_image(&self, owner: OwnerIx, id: &str) -> bool {
        self.owners[owner].usage.contains_key(id)
    }

    pub(crate) fn owner_of_image(&self, id: &str) -> Option<OwnerIx> {
        self.owners.iter().position(|o| o.usage.contains_key(id))
    }

    pub(crate) fn accounts(&self, owner: OwnerIx) -> &[String] {
        &self.owners[owner].accounts
    }

    /// A new image of the owner with the next ID of its sequence, created now, with no usage and no reports.
    pub(crate) fn register_image(&mut self, owner: OwnerIx, name: &str, tags: &[(&str, &str)]) -> String {
        let id = loop {
            let o = &mut self.owners[owner];
            let id = o.ids.image_id(o.next_image);
            o.next_image += 1;
            if !self.taken_elsewhere(owner, &id) {
                break id;
            }
        };
        let now = self.now();
        let o = &mut self.owners[owner];
        o.images.push(Image {
            id: id.clone(),
            name: name.to_string(),
            owner_id: o.spec.owner_account.clone(),
            creation_date: now,
            architecture: "x86_64",
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            state: "available".to_string(),
            public: false,
            deprecation_time: None,
            last_launched_time: None,
        });
        o.usage.insert(id.clone(), Usage::new());
        id
    }

    /// The owner's references, to any image, in the order they came to be.
    pub(crate) fn references(&self, owner: OwnerIx) -> &[Reference] {
        &self.owners[owner].references
    }

    /// A new reference in the owner's account, with a resource ID of its own; returns it.
    pub(crate) fn add_reference(&mut self, owner: OwnerIx, image_id: &str, kind: ReferenceKind) -> &Reference {
        let o = &mut self.owners[owner];
        let slot = o
            .references
            .iter()
            .filter(|r| r.image_id == image_id && r.kind.resource_type() == kind.resource_type())
            .count();
        // Parameter and recipe names carry the image's ID rather than a name, since the image need not be the
        // owner's; the slot keeps them apart, and past the named slots a random suffix does.
        let resource = references::mint_resource(&mut o.reference_rng, &kind, image_id, slot + 4);
        o.references.push(Reference { image_id: image_id.to_string(), kind, resource });
        &o.references[o.references.len() - 1]
    }

    /// The image and its usage disappear; its reports stay until they expire, and resources that reference it
    /// still do. False for an unknown image.
    pub(crate) fn deregister_image(&mut self, id: &str) -> bool {
        let Some(owner) = self.owner_of_image(id) else {
            return false;
        };
        let o = &mut self.owners[owner];
        o.images.retain(|i| i.id != id);
        o.usage.remove(id);
        true
    }

    /// The entries of each image's newest available report: what a correct client reports.
    pub(crate) fn ground_truth(&self, owner: OwnerIx) -> Vec<TruthEntry> {
        let mut newest: BTreeMap<&str, &Report> = BTreeMap::new();
        for r in self.owners[owner].reports.iter().filter(|r| r.state == ReportState::Available) {
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

    /// From the current usage of every image of every owner.
    pub(crate) fn remove_account(&mut self, account_id: &str) {
        for usage in self.owners.iter_mut().flat_map(|o| o.usage.values_mut()) {
            usage.retain(|(account, _), _| account != account_id);
        }
    }

    /// Returns false for an unknown image. A count of zero or less removes the cell.
    pub(crate) fn set_usage(&mut self, image_id: &str, account_id: &str, resource_type: &str, count: i64) -> bool {
        let Some(usage) = self.owners.iter_mut().find_map(|o| o.usage.get_mut(image_id)) else {
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

    /// Counts a request, by Action and by (account, Region, Action), and remembers when it arrived.
    pub(crate) fn count_request(&mut self, action: &str, caller: &Caller) {
        *self.request_counts.entry(action.to_string()).or_insert(0) += 1;
        let key = (caller.account.clone(), caller.region.clone(), action.to_string());
        *self.request_counts_by.entry(key).or_insert(0) += 1;
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

    pub(crate) fn request_counts_by(&self) -> BTreeMap<(String, String, String), u64> {
        self.request_counts_by.clone()
    }

    pub(crate) fn next_request_id(&mut self) -> String {
        self.request_ids.next_request_id()
    }
}
