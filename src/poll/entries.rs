//! Step 4: read the entries of the serving reports never read before. An available report
//! never changes, so each is read once, and its usage is cached for as long as it serves.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::bounded::bounded_tasks;
use super::decide::Decision;
use super::target::TargetPoller;
use crate::aws::{ApiError, EntryChain, Skipped};
use crate::config::MAX_IDS_PER_CALL;
use crate::report::Report;
use crate::snapshot::{Entry, PollProgress, ReportUsage};

/// The fewest reports a call is split down to (see `entry_batches`).
const MIN_REPORTS_PER_SPLIT: usize = 50;

/// The reports one entry call reads (ID and creation time), and its chain so far.
type Call = (Vec<(String, SystemTime)>, EntryChain);

impl TargetPoller {
    /// Reads the serving reports not in the cache, and caches their usage. Returns how many
    /// were to be read, and the reports whose chain failed (kept, to resume at the next poll).
    pub(super) async fn read_serving(
        &mut self,
        decisions: &HashMap<String, Decision>,
    ) -> (usize, HashMap<String, ApiError>) {
        let unread: Vec<Report> = {
            let mut seen = HashSet::new();
            decisions
                .values()
                .filter_map(|d| d.serving.as_ref())
                .filter(|r| !self.cache.contains_key(&r.id) && seen.insert(r.id.as_str()))
                .cloned()
                .collect()
        };
        let (read, failed) = self.read_entries(&unread).await;
        for (id, usage) in read {
            self.cache.insert(id, Arc::new(usage));
        }
        (unread.len(), failed)
    }

    /// Reads the entries of the given reports. Chains that failed part-way at an earlier poll
    /// are resumed first, as the same calls; the other reports are split as `entry_batches`
    /// says. Returns the usage of every report whose chain finished, and the reports whose
    /// chain failed.
    async fn read_entries(&mut self, unread: &[Report]) -> (Vec<(String, ReportUsage)>, HashMap<String, ApiError>) {
        self.progress.reading(unread.len());
        let tasks: Vec<_> = self
            .entry_calls(unread)
            .into_iter()
            .map(|(wanted, mut chain)| {
                let (api, query, strings) =
                    (self.target.api.clone(), self.settings.entry_query.clone(), Arc::clone(&self.strings));
                let progress = Arc::clone(&self.progress);
                async move {
                    let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
                    let outcome = api.describe_entries(&ids, &query, &strings, &mut chain).await;
                    progress.read(ids.len());
                    (wanted, chain, outcome)
                }
            })
            .collect();
        let (mut read, mut failed, mut skipped) = (Vec::new(), HashMap::new(), Skipped::default());
        let reading = bounded_tasks(tasks, self.settings.concurrency);
        let results = with_progress(reading, &self.target.region, &self.progress).await;
        for (_, result) in results {
            let (wanted, chain, outcome) = match result {
                Ok(done) => done,
                // A panic stays a panic of the poll (caught, counted and logged by the schedule).
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled (shutdown): nothing to keep.
                Err(_) => continue,
            };
            match outcome {
                Ok(()) => {
                    let Some((entries, chain_skipped)) = chain.finish() else { continue };
                    let (usage, chain_skipped) = fold_entries(&wanted, &entries, chain_skipped);
                    skipped.merge(chain_skipped);
                    read.extend(usage);
                }
                Err(error) => {
                    tracing::warn!(aws_region = %self.target.region, reports = wanted.len(), pages_read = chain.pages(), error = %error, "cannot read usage report entries; the next poll resumes at the failed page");
                    for (id, _) in &wanted {
                        failed.insert(id.clone(), error.clone());
                    }
                    self.memory.chains.insert(wanted.into_iter().map(|(id, _)| id).collect(), chain);
                }
            }
        }
        self.note_skipped(&skipped, "entries");
        (read, failed)
    }

    /// The calls that read `unread`: saved chains first, resumed while every report they read
    /// is still to be read, then new chains for the rest.
    fn entry_calls(&mut self, unread: &[Report]) -> Vec<Call> {
        let by_id: HashMap<&str, &Report> = unread.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut saved = std::mem::take(&mut self.memory.chains);
        saved.retain(|ids, _| ids.iter().all(|id| by_id.contains_key(id.as_str())));
        let resumed: HashSet<&str> = saved.keys().flatten().map(String::as_str).collect();
        let fresh: Vec<&Report> = unread.iter().filter(|r| !resumed.contains(r.id.as_str())).collect();
        let mut calls: Vec<Call> = Vec::new();
        for (ids, chain) in saved {
            let wanted =
                ids.iter().filter_map(|id| by_id.get(id.as_str())).map(|r| (r.id.clone(), r.created)).collect();
            calls.push((wanted, chain));
        }
        for batch in entry_batches(&fresh, self.settings.concurrency) {
            calls.push((batch.iter().map(|r| (r.id.clone(), r.created)).collect(), EntryChain::default()));
        }
        calls
    }
}

/// How often a long read of entries (a cold start of a large estate) logs how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Awaits `reading`, logging every `PROGRESS_EVERY` how many reports of the poll's total have
/// been read, so that a first poll that takes minutes shows that it moves (the status page
/// reads the same `progress`).
async fn with_progress<F: Future>(reading: F, region: &str, progress: &PollProgress) -> F::Output {
    let mut reading = std::pin::pin!(reading);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            output = &mut reading => return output,
            _ = ticks.tick() => {
                if let Some(now) = progress.now() {
                    tracing::info!(aws_region = %region, reports_read = now.reports_read, reports_total = now.reports_total, "reading usage report entries");
                }
            }
        }
    }
}

/// Splits the reports to read into DescribeImageUsageReportEntries calls of at most 200 reports
/// (EC2's limit), sizes differing by one at most, and as many calls as request slots
/// (`concurrency`), or a multiple of it, whenever there are that many reports.
///
/// The pages of one call follow one another. 200 unread reports in one call of 40 pages take 40
/// page latencies while 3 of the 4 slots idle; 1000 in 5 calls of 200 take 80 (4 calls side by
/// side, then the fifth alone). In 4 calls of 50, or 8 calls of 125, every slot works to the end:
/// 10 and 50 latencies, the ideal of pages / slots. It matters when many reports are new at
/// once: a cold start, or a refresh of every image.
///
/// Calls are not split below `MIN_REPORTS_PER_SPLIT` reports: 50 reports of 20 entries (10
/// accounts, 2 resource types) already fill a 1000-entry page, so a split costs at most one
/// partly filled page per call, while splitting 10 small reports four ways would turn one call
/// into four.
fn entry_batches<T>(reports: &[T], concurrency: usize) -> Vec<&[T]> {
    if reports.is_empty() {
        return Vec::new();
    }
    let slots = concurrency.max(1);
    let fewest = reports.len().div_ceil(MAX_IDS_PER_CALL);
    let worth_splitting = (reports.len() / MIN_REPORTS_PER_SPLIT).max(fewest);
    let count = fewest.div_ceil(slots).saturating_mul(slots).min(worth_splitting);
    let (size, larger) = (reports.len() / count, reports.len() % count);
    let mut rest = reports;
    (0..count)
        .map(|i| {
            let (batch, tail) = rest.split_at(size + usize::from(i < larger));
            rest = tail;
            batch
        })
        .collect()
}

/// Groups a call's entries by report into usage counts, one per report asked for (a report
/// without entries is read as no usage); entries of reports not asked for are skipped.
fn fold_entries(
    wanted: &[(String, SystemTime)],
    entries: &[Entry],
    mut skipped: Skipped,
) -> (Vec<(String, ReportUsage)>, Skipped) {
    let mut by_report: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in entries {
        by_report.entry(&entry.report_id).or_default().push(entry);
    }
    let usage = wanted
        .iter()
        .map(|(id, created)| {
            let mine = by_report.remove(id.as_str()).unwrap_or_default();
            (id.clone(), ReportUsage::from_entries(id, *created, mine))
        })
        .collect();
    let strays: usize = by_report.values().map(Vec::len).sum();
    if strays > 0 {
        skipped.count += strays as u64;
        skipped.example.get_or_insert_with(|| "entries of a report that was not asked for".to_owned());
    }
    (usage, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(unread: usize, concurrency: usize) -> Vec<usize> {
        let reports: Vec<usize> = (0..unread).collect();
        let split = entry_batches(&reports, concurrency);
        assert_eq!(split.concat(), reports, "every report once, in order");
        split.iter().map(|b| b.len()).collect()
    }

    #[test]
    fn entry_batches_give_every_request_slot_work() {
        assert_eq!(batches(200, 4), [50; 4], "not one call of 200 with three slots idle");
        assert_eq!(batches(800, 4), [200; 4]);
        assert_eq!(batches(1000, 4), [125; 8], "two full rounds, not four calls and then one alone");
        assert_eq!(batches(1000, 16), [63, 63, 63, 63, 63, 63, 63, 63, 62, 62, 62, 62, 62, 62, 62, 62]);
        assert_eq!(batches(1000, 1), [200; 5], "never more than EC2's 200 IDs per call");
        assert_eq!(batches(120, 4), [60, 60], "no call under 50 reports");
        assert_eq!(batches(10, 4), [10], "a few reports: one call");
        assert_eq!(batches(1, 4), [1]);
        assert!(batches(0, 4).is_empty());
        assert_eq!(batches(9, 0), [9], "a zero limit is treated as one");
        for unread in 1..=1200 {
            for concurrency in 1..=16 {
                let b = batches(unread, concurrency);
                let fewest = unread.div_ceil(MAX_IDS_PER_CALL);
                assert!(b.len() >= fewest && b.len() < fewest + concurrency, "{unread}/{concurrency}: {b:?}");
                if b.len() > fewest {
                    assert!(b.iter().all(|n| *n >= MIN_REPORTS_PER_SPLIT), "{unread}/{concurrency}: {b:?}");
                }
                if unread >= MIN_REPORTS_PER_SPLIT * concurrency {
                    assert_eq!(b.len() % concurrency, 0, "whole rounds: {unread}/{concurrency}: {b:?}");
                }
                assert!(b.iter().all(|n| (1..=MAX_IDS_PER_CALL).contains(n)), "{unread}/{concurrency}: {b:?}");
                assert!(b.iter().max().unwrap_or(&0) - b.iter().min().unwrap_or(&0) <= 1, "balanced: {b:?}");
            }
        }
    }
}
