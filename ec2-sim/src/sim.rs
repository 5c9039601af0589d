//! The `Simulator` handle: a cheap, cloneable reference to one simulated EC2 (and STS), for the HTTP server and for
//! tests that want to look behind it (ground truth, request counts) or change the world (usage, new reports,
//! images, faults).
//!
//! Methods without an owner argument that read data (`image_ids`, `ground_truth`, `reports`, `account_ids`) are
//! about the primary owner (`SimConfig::dataset`); their `_of` variants take an owner account. Methods that take an
//! image or report ID find its owner by the ID.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

#[cfg(test)]
use crate::api::ApiResponse;
use crate::config::SimConfig;
use crate::fault::{self, Answer, FaultRule};
use crate::model::{Image, ImageFacts, ReportView, TruthEntry};
use crate::query::Params;
use crate::references::{INSTANCE_STATES, MAX_VERSION_DEPTH, ReferenceKind, ReferenceQuery, ReferenceView};
use crate::sigv4::CredentialScope;
use crate::state::{OwnerIx, PRIMARY, State};
use crate::timefmt::{round_to_minute, truncate_to_millis};

#[derive(Debug, Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

impl Simulator {
    /// # Panics
    /// If the configuration does not pass `SimConfig::validate` (e.g. a malformed role ARN).
    pub fn new(config: SimConfig) -> Simulator {
        Simulator { state: Arc::new(Mutex::new(State::new(config))) }
    }

    /// A panic while holding the lock (a bug) must not turn every later request into another panic: the state is
    /// only ever mutated through complete operations, so it is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state after applying due transitions, so every observer sees the same lazily-evaluated world.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.lock();
        state.refresh();
        f(&mut state)
    }

    /// Answers one Query request (the form-encoded body; EC2 or STS), faults included. `authorization` is the
    /// request's `Authorization` header, which says whose data it sees. The HTTP server is a thin shell around
    /// this. Latency is slept without holding the lock, so other requests go on meanwhile.
    pub(crate) async fn answer_query(&self, body: &[u8], authorization: Option<&str>) -> Answer {
        let params = Params::parse(body);
        let scope = CredentialScope::of_request(authorization, &params);
        let plan = fault::plan(&mut self.lock(), &params, scope.as_ref());
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        fault::execute(&mut self.lock(), &params, plan)
    }

    /// `answer_query` without the latency, for operation-level tests.
    #[cfg(test)]
    pub(crate) fn answer_now(&self, body: &[u8], authorization: Option<&str>) -> Answer {
        let params = Params::parse(body);
        let scope = CredentialScope::of_request(authorization, &params);
        let mut state = self.lock();
        let plan = fault::plan(&mut state, &params, scope.as_ref());
        fault::execute(&mut state, &params, plan)
    }

    #[cfg(test)]
    pub(crate) fn handle_query(&self, body: &[u8]) -> ApiResponse {
        self.answer_now(body, None).response
    }

    /// The index of an owner account.
    ///
    /// # Panics
    /// If the simulator has no such owner: a mistake in the calling test.
    fn owner(state: &State, account: &str) -> OwnerIx {
        match state.owner_index(account) {
            Some(owner) => owner,
            None => {
                panic!("{account} is not an owner account of this simulator (owners: {:?})", state.owner_accounts())
            }
        }
    }

    /// The owner accounts: the primary owner first, then `extra_owners` in order, then the accounts of roles that
    /// have no dataset (they own nothing).
    pub fn owners(&self) -> Vec<String> {
        self.lock().owner_accounts()
    }

    /// The primary owner's images, in registration order (`golden-base-1`, `golden-base-2`, …, then any
    /// `register_image`).
    pub fn image_ids(&self) -> Vec<String> {
        self.with(|s| s.images(PRIMARY).iter().map(|i| i.id.clone()).collect())
    }

    /// Like `image_ids`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn image_ids_of(&self, owner: &str) -> Vec<String> {
        self.with(|s| s.images(Self::owner(s, owner)).iter().map(|i| i.id.clone()).collect())
    }

    /// What `DescribeImages` says about each of the primary owner's images (disabled ones included), in
    /// registration order, exactly as the wire carries it.
    pub fn image_facts(&self) -> Vec<ImageFacts> {
        self.with(|s| s.images(PRIMARY).iter().map(Image::facts).collect())
    }

    /// Like `image_facts`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn image_facts_of(&self, owner: &str) -> Vec<ImageFacts> {
        self.with(|s| s.images(Self::owner(s, owner)).iter().map(Image::facts).collect())
    }

    /// Changes one fact of a registered image of any owner.
    ///
    /// # Panics
    /// If `image_id` is not a registered image: a mistake in the calling test.
    fn change_image(&self, what: &str, image_id: &str, change: impl FnOnce(&mut Image)) {
        let known = self.with(|s| s.image_mut(image_id).map(change).is_some());
        assert!(known, "{what}: {image_id} is not an image of this simulator");
    }

    /// Sets `imageState`: one of `IMAGE_STATES` (`disabled` hides the image unless `IncludeDisabled=true`), or any
    /// other name, as a state AWS might add one day. A deregistered image is gone: use `deregister_image`.
    ///
    /// # Panics
    /// If `image_id` is not a registered image, or `state` is empty.
    pub fn set_image_state(&self, image_id: &str, state: &str) {
        assert!(!state.is_empty(), "set_image_state: empty state");
        self.change_image("set_image_state", image_id, |i| i.state = state.to_string());
    }

    /// Sets `isPublic`.
    ///
    /// # Panics
    /// If `image_id` is not a registered image.
    pub fn set_public(&self, image_id: &str, public: bool) {
        self.change_image("set_public", image_id, |i| i.public = public);
    }

    /// Sets or clears the deprecation time, rounded to the nearest minute as EC2 does (`image_facts` shows the
    /// rounded value).
    ///
    /// # Panics
    /// If `image_id` is not a registered image.
    pub fn set_deprecation_time(&self, image_id: &str, time: Option<SystemTime>) {
        self.change_image("set_deprecation_time", image_id, |i| i.deprecation_time = time.map(round_to_minute));
    }

    /// Sets the last launch (to whole milliseconds), or None for an image that never launched an instance.
    ///
    /// # Panics
    /// If `image_id` is not a registered image.
    pub fn set_last_launched_time(&self, image_id: &str, time: Option<SystemTime>) {
        self.change_image("set_last_launched_time", image_id, |i| i.last_launched_time = time.map(truncate_to_millis));
    }

    /// The primary owner's in-account references (what `DescribeImageReferences` can list), in the order they
    /// came to be: the dataset's by image and resource type, then any `add_reference`. ARNs name
    /// `DEFAULT_REFERENCE_REGION`; `ReferenceView::arn_in` gives them for the Region a client signs for.
    pub fn references(&self) -> Vec<ReferenceView> {
        self.references_of_ix(None)
    }

    /// Like `references`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn references_of(&self, owner: &str) -> Vec<ReferenceView> {
        self.references_of_ix(Some(owner))
    }

    fn references_of_ix(&self, owner: Option<&str>) -> Vec<ReferenceView> {
        self.with(|s| {
            let o = owner.map_or(PRIMARY, |account| Self::owner(s, account));
            let account = s.spec(o).owner_account.clone();
            s.references(o).iter().map(|r| r.view(&account)).collect()
        })
    }

    /// How many references of the primary owner a `DescribeImageReferences` with this query would list, per
    /// (image ID, resource type), for every image (a client asking for some images sees their share). Zero counts
    /// are left out.
    pub fn reference_counts(&self, query: &ReferenceQuery) -> BTreeMap<(String, String), usize> {
        self.reference_counts_of_ix(None, query)
    }

    /// Like `reference_counts`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn reference_counts_of(&self, owner: &str, query: &ReferenceQuery) -> BTreeMap<(String, String), usize> {
        self.reference_counts_of_ix(Some(owner), query)
    }

    fn reference_counts_of_ix(&self, owner: Option<&str>, query: &ReferenceQuery) -> BTreeMap<(String, String), usize> {
        self.with(|s| {
            let o = owner.map_or(PRIMARY, |account| Self::owner(s, account));
            let mut counts = BTreeMap::new();
            for r in s.references(o).iter().filter(|r| query.matches(r)) {
                *counts.entry((r.image_id.clone(), r.kind.resource_type().to_string())).or_insert(0) += 1;
            }
            counts
        })
    }

    /// A new resource in `owner`'s account that references `image_id`, which may be any well-formed AMI ID (the
    /// owner's, another owner's, or none of this simulator's, like a public image). Returns it, with its new ARN.
    ///
    /// # Panics
    /// If `owner` is not an owner account, `image_id` is not a well-formed AMI ID, an instance state is not one of
    /// `INSTANCE_STATES`, or a launch template depth is not 1 to 10000.
    pub fn add_reference(&self, owner: &str, image_id: &str, kind: ReferenceKind) -> ReferenceView {
        assert!(crate::ids::is_image_id(image_id), "add_reference: {image_id} is not an AMI ID");
        match &kind {
            ReferenceKind::Instance { state } => {
                assert!(INSTANCE_STATES.contains(&state.as_str()), "add_reference: unknown instance state {state}");
            }
            ReferenceKind::LaunchTemplate { depth } => {
                assert!((1..=MAX_VERSION_DEPTH).contains(depth), "add_reference: depth {depth} is not 1 to 10000");
            }
            _ => {}
        }
        self.with(|s| {
            let o = Self::owner(s, owner);
            let account = s.spec(o).owner_account.clone();
            s.add_reference(o, image_id, kind).view(&account)
        })
    }

    /// The primary owner's consumer accounts, sorted. The owner account is not among them.
    pub fn account_ids(&self) -> Vec<String> {
        self.with(|s| s.accounts(PRIMARY).to_vec())
    }

    /// Like `account_ids`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn account_ids_of(&self, owner: &str) -> Vec<String> {
        self.with(|s| s.accounts(Self::owner(s, owner)).to_vec())
    }

    /// Ground truth of the primary owner: for each image, the entries of its NEWEST AVAILABLE unexpired report (by
    /// creationTime), sorted. Images without an available report, or whose newest one is empty, contribute nothing.
    /// A deregistered image's reports count until they expire.
    pub fn ground_truth(&self) -> Vec<TruthEntry> {
        self.with(|s| s.ground_truth(PRIMARY))
    }

    /// Like `ground_truth`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn ground_truth_of(&self, owner: &str) -> Vec<TruthEntry> {
        self.with(|s| s.ground_truth(Self::owner(s, owner)))
    }

    /// Requests served, per Action (including errors, and STS's `AssumeRole`), e.g.
    /// `{"DescribeImageUsageReports": 3}`. A request without an Action counts as `(none)`. Admin endpoints are not
    /// counted.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().request_counts()
    }

    /// Requests served per (account, Region, Action), counted like `request_counts`. The account is the one the
    /// request's access key belongs to (see README, "Owners and roles"); the Region is that of its credential
    /// scope, or `(none)` for an unsigned request.
    pub fn request_counts_by(&self) -> BTreeMap<(String, String, String), u64> {
        self.lock().request_counts_by()
    }

    /// Every well-formed STS `AssumeRole` request, granted or denied, oldest first (the newest 100,000):
    /// (role ARN, external ID, session name).
    pub fn assume_role_calls(&self) -> Vec<(String, Option<String>, String)> {
        self.lock().sts.calls()
    }

    /// Real arrival times of the requests of one Action (as counted by `request_counts`, faulted ones included),
    /// oldest first, the newest 100,000 at most: for measuring request rates, e.g. backoff after throttling. The
    /// simulated clock (`advance_clock`) does not affect them.
    pub fn request_times(&self, operation: &str) -> Vec<Instant> {
        self.lock().request_times(operation)
    }

    /// Adds a fault rule after the current ones. It applies from the next request on.
    pub fn add_fault(&self, rule: FaultRule) {
        self.lock().faults.add(rule);
    }

    /// Replaces every fault rule; the new ones count requests afresh.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.lock().faults.set(rules);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.set(Vec::new());
    }

    /// The current rules, in order, each with what is left of its limit (a spent rule shows `Some(0)`).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.rules()
    }

    /// Faults injected so far, by kind (`Fault::kind`, e.g. `{"throttle": 3}`); each latency rule that delayed a
    /// request counts once. Rules that matched a request but did not change its answer are not counted.
    pub fn fault_hits(&self) -> BTreeMap<String, u64> {
        self.lock().faults.hits()
    }

    /// Moves a report to `error` with this reason now (a report that fails after being pending or even
    /// available); its entries are gone.
    ///
    /// # Panics
    /// If there is no such report (unknown or expired).
    pub fn fail_report(&self, report_id: &str, reason: &str) {
        let known = self.with(|s| s.fail_report(report_id, reason));
        assert!(known, "fail_report: {report_id} is not a report of this simulator");
    }

    /// Puts a report in a state AWS does not document (e.g. "archiving"), as a future EC2 might: not readable,
    /// neither pending nor failed. Its entries are gone.
    ///
    /// # Panics
    /// If there is no such report (unknown or expired).
    pub fn set_report_state(&self, report_id: &str, state: &'static str) {
        let known = self.with(|s| s.set_report_state(report_id, state));
        assert!(known, "set_report_state: {report_id} is not a report of this simulator");
    }

    /// Deletes a report now, as EC2 does at expiry.
    ///
    /// # Panics
    /// If there is no such report (unknown or already expired).
    pub fn expire_report(&self, report_id: &str) {
        let known = self.with(|s| s.owner_of_report(report_id).is_some_and(|o| s.delete_report(o, report_id).is_ok()));
        assert!(known, "expire_report: {report_id} is not a report of this simulator");
    }

    /// All unexpired reports of the primary owner, by image then creation time.
    pub fn reports(&self) -> Vec<ReportView> {
        self.with(|s| s.reports(PRIMARY).iter().map(|r| r.view()).collect())
    }

    /// Like `reports`, for any owner account.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn reports_of(&self, owner: &str) -> Vec<ReportView> {
        self.with(|s| s.reports(Self::owner(s, owner)).iter().map(|r| r.view()).collect())
    }

    /// A new image of `owner`, created now, with these tags (and no others), no usage and no reports: `available`,
    /// private, not deprecated, never launched. Its ID is the next of the owner's deterministic sequence. Give it
    /// usage with `set_usage`.
    ///
    /// # Panics
    /// If `owner` is not an owner account of this simulator.
    pub fn register_image(&self, owner: &str, name: &str, tags: &[(&str, &str)]) -> String {
        self.with(|s| {
            let owner = Self::owner(s, owner);
            s.register_image(owner, name, tags)
        })
    }

    /// Deregisters an image, as EC2 does: it disappears from `DescribeImages`, and creating a report for it gets
    /// `InvalidAMIID.NotFound`; its reports stay until they expire (a pending one completes with no entries).
    ///
    /// # Panics
    /// If `image_id` is not a registered image of this simulator.
    pub fn deregister_image(&self, image_id: &str) {
        let known = self.with(|s| s.deregister_image(image_id));
        assert!(known, "deregister_image: {image_id} is not an image of this simulator");
    }

    /// Removes the account from the CURRENT usage of every image of every owner: reports that become available
    /// afterwards do not contain it; existing reports are immutable snapshots.
    pub fn remove_account(&self, account_id: &str) {
        self.with(|s| s.remove_account(account_id));
    }

    /// Sets the current usage of one (image, account, resource type), whoever owns the image; a count of zero or
    /// less removes it.
    ///
    /// # Panics
    /// If `image_id` is not a registered image of any owner: that is a mistake in the calling test, better reported loudly.
    pub fn set_usage(&self, image_id: &str, account_id: &str, resource_type: &str, count: i64) {
        let known = self.with(|s| s.set_usage(image_id, account_id, resource_type, count));
        assert!(known, "set_usage: {image_id} is not an image of this simulator");
    }

    /// As if someone created a report in the console and it just finished: available at once, entries = current
    /// usage, creation time now (strictly after the image's previous report), usual parameters. Returns its ID.
    /// The image may belong to any owner.
    ///
    /// # Panics
    /// If `image_id` is not a registered image of any owner.
    pub fn add_report(&self, image_id: &str) -> String {
        let id = self.with(|s| s.add_available_report(image_id));
        match id {
            Some(id) => id,
            None => panic!("add_report: {image_id} is not an image of this simulator"),
        }
    }

    /// Every pending report of every owner becomes available (or error, per `create_outcome`) now, without waiting
    /// `pending_for`.
    pub fn complete_pending(&self) {
        self.complete_pending_count();
    }

    pub(crate) fn complete_pending_count(&self) -> usize {
        self.lock().complete_pending()
    }

    /// Moves the simulated clock forward, e.g. past a report's expiration, without sleeping. Due transitions are
    /// applied immediately.
    pub fn advance_clock(&self, by: Duration) {
        self.lock().advance_clock(by);
    }
}
