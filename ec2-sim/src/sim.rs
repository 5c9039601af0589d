//! The `Simulator` handle: a cheap, cloneable reference to one simulated EC2 Region, for the HTTP server and for
//! tests that want to look behind it (ground truth, request counts) or change the world (usage, new reports).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::api::{self, ApiResponse};
use crate::config::SimConfig;
use crate::model::{ReportView, TruthEntry};
use crate::query::Params;
use crate::state::State;

#[derive(Debug, Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

impl Simulator {
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

    /// Answers one EC2 Query request (the form-encoded body). The HTTP server is a thin shell around this.
    pub(crate) fn handle_query(&self, body: &[u8]) -> ApiResponse {
        let params = Params::parse(body);
        api::dispatch(&mut self.lock(), &params)
    }

    /// In generation order (`golden-base-1`, `golden-base-2`, …).
    pub fn image_ids(&self) -> Vec<String> {
        self.with(|s| s.images().iter().map(|i| i.id.clone()).collect())
    }

    /// Sorted. The owner account is not among them.
    pub fn account_ids(&self) -> Vec<String> {
        self.with(|s| s.accounts().to_vec())
    }

    /// Ground truth: for each image, the entries of its NEWEST AVAILABLE unexpired report (by creationTime), sorted.
    /// Images without an available report, or whose newest one is empty, contribute nothing.
    pub fn ground_truth(&self) -> Vec<TruthEntry> {
        self.with(|s| s.ground_truth())
    }

    /// Requests served, per Action (including errors), e.g. `{"DescribeImageUsageReports": 3}`. A request without
    /// an Action counts as `(none)`. Admin endpoints are not counted.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.lock().request_counts()
    }

    /// All unexpired reports, by image then creation time.
    pub fn reports(&self) -> Vec<ReportView> {
        self.with(|s| s.reports().iter().map(|r| r.view()).collect())
    }

    /// Removes the account from the CURRENT usage of every image: reports that become available afterwards do not
    /// contain it; existing reports are immutable snapshots.
    pub fn remove_account(&self, account_id: &str) {
        self.with(|s| s.remove_account(account_id));
    }

    /// Sets the current usage of one (image, account, resource type); a count of zero or less removes it.
    ///
    /// # Panics
    /// If `image_id` is not an image of the dataset: that is a mistake in the calling test, better reported loudly.
    pub fn set_usage(&self, image_id: &str, account_id: &str, resource_type: &str, count: i64) {
        let known = self.with(|s| s.set_usage(image_id, account_id, resource_type, count));
        assert!(known, "set_usage: {image_id} is not an image of this simulator");
    }

    /// As if someone created a report in the console and it just finished: available at once, entries = current
    /// usage, creation time now (strictly after the image's previous report), usual parameters. Returns its ID.
    ///
    /// # Panics
    /// If `image_id` is not an image of the dataset.
    pub fn add_report(&self, image_id: &str) -> String {
        let id = self.with(|s| s.add_available_report(image_id));
        match id {
            Some(id) => id,
            None => panic!("add_report: {image_id} is not an image of this simulator"),
        }
    }

    /// Every pending report becomes available (or error, per `create_outcome`) now, without waiting `pending_for`.
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
