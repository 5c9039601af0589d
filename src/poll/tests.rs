//! In-process tests of whole polls: a `TargetPoller` against the simulator library on a
//! loopback port, no exporter binary spawned, so that every fault of the simulator can be tried
//! on every call of a poll in a few seconds. What they hold a poll to:
//! - a clean poll serves exactly the simulator's ground truth;
//! - a poll under a fault never serves wrong figures: an image is refreshed with the truth, or
//!   keeps its last good data marked unrefreshed;
//! - once the fault is gone, the next polls converge to the truth.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ec2_sim::{
    DatasetSpec, Fault, FaultRule, ReferenceQuery, ReferenceTypeQuery, RunningSimulator, SimConfig, Simulator,
};

use super::cycle::TargetPoll;
use super::{Poller, Target, TargetPoller};
use crate::aws;
use crate::config::Config;
use crate::self_metrics::SelfMetrics;
use crate::snapshot::{ImageFacts, ImageStatus};

const REPORTS: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";

/// (image, account, resource type) to count.
type Usage = BTreeMap<(String, String, String), u64>;

struct Harness {
    running: RunningSimulator,
    target: TargetPoller,
    /// The time of the next poll: each poll is one poll interval (and a second) after the last,
    /// as the schedule would run it, so that backoffs end as they would.
    clock: SystemTime,
    poll_interval: Duration,
}

impl Harness {
    /// A simulator with `images` images of reports already made (as after a restart), and a
    /// target watching all of them; small pages, so that every call has several, and no SDK
    /// retries, so that a fault fails its call at once.
    async fn new(images: usize, yaml: &str) -> Self {
        Self::with(DatasetSpec { seed: 11, images, accounts: 6, ..DatasetSpec::default() }, yaml).await
    }

    async fn with(dataset: DatasetSpec, yaml: &str) -> Self {
        let running = Simulator::start(SimConfig { dataset, pending_for: Duration::ZERO, ..SimConfig::default() })
            .await
            .expect("the simulator starts");
        let ids: Vec<String> = running.sim.image_ids();
        let text = format!(
            "poll_interval: 1m\n{yaml}\naws:\n  page_size: 5\n  max_attempts: 1\n  attempt_timeout: 2s\n  operation_timeout: 5s\n\
             targets:\n  - region: us-east-1\n    images: [{}]\n",
            ids.join(", ")
        );
        let config = Config::from_yaml(&text).expect("a valid configuration");
        let metrics = SelfMetrics::new("0", "test", false).expect("metrics register");
        let sdk = aws::test_config(&config.aws, &running.endpoint_url()).await;
        let target = Target {
            region: "us-east-1".into(),
            owner: None,
            key: "us-east-1 ".into(),
            api: aws::region_client(&sdk, "us-east-1", &config.aws, &metrics.api),
            images: ids,
            report_ids: Vec::new(),
            discovery: None,
            shard: crate::shard::Shard::default(),
            hash_owner: String::new(),
        };
        let target = Poller::new(&config, vec![target], metrics).into_targets().pop().expect("one target");
        Self { running, target, clock: SystemTime::now(), poll_interval: config.poll_interval.get() }
    }

    fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    async fn poll(&mut self) -> TargetPoll {
        let now = self.clock;
        self.clock += self.poll_interval + Duration::from_secs(1);
        self.target.poll(now).await
    }

    fn truth(&self) -> Usage {
        self.sim()
            .ground_truth()
            .into_iter()
            .map(|e| ((e.image_id, e.account_id, e.resource_type), e.usage_count as u64))
            .collect()
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.sim().request_counts()
    }
}

/// The usage a poll serves, image by image.
fn served(images: &[ImageStatus]) -> Usage {
    images
        .iter()
        .flat_map(|image| {
            image.report.iter().flat_map(move |report| {
                report.usage.iter().map(move |(key, count)| {
                    let key = (image.image_id.to_string(), key.account_id.to_string(), key.resource_type.to_string());
                    (key, *count)
                })
            })
        })
        .collect()
}

/// The truth restricted to some images.
fn of_images(usage: &Usage, images: &[&str]) -> Usage {
    usage.iter().filter(|((image, _, _), _)| images.contains(&image.as_str())).map(|(k, v)| (k.clone(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_poll_serves_the_ground_truth_at_the_documented_cost() {
    // 12 images of 3 reports each, listed 5 to a page.
    let mut h = Harness::new(12, "").await;
    let first = h.poll().await;
    assert!(first.images.iter().all(|i| i.poll_success && i.report.is_some()), "every image refreshed");
    assert_eq!(served(&first.images), h.truth());
    assert_eq!(first.stats.reports_read, 12, "each image's newest report, once");
    assert_eq!(first.stats.reports_created, 0, "the reports are fresh");
    assert_eq!(first.stats.reports_deleted, 0, "reports made elsewhere are never deleted");
    assert_eq!(h.calls()[REPORTS], 36_u64.div_ceil(5), "3 reports an image, 5 to a page");
    let before = h.calls();
    let second = h.poll().await;
    assert_eq!(served(&second.images), h.truth());
    assert_eq!(second.stats.reports_read, 0, "an available report never changes: not read again");
    let after = h.calls();
    assert_eq!(after[REPORTS] - before[REPORTS], before[REPORTS], "a steady poll lists as the first did");
    assert_eq!(after.get(ENTRIES), before.get(ENTRIES), "a steady poll reads no entries");
}

/// Every fault that fails a call, on each of the two calls of a poll, at the first poll (no
/// previous data) and at a later one (last good data to keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_fault_a_poll_serves_the_truth_or_its_last_good_data_and_then_converges() {
    let faults = [
        Fault::Throttle,
        Fault::InternalError,
        Fault::Unauthorized,
        Fault::AuthFailure,
        Fault::CloseConnection,
        Fault::CloseMidResponse,
        Fault::NotXml,
        Fault::TruncatedBody,
        Fault::RepeatToken,
    ];
    let mut cases = 0;
    for fault in faults {
        for operation in [REPORTS, ENTRIES] {
            for after_a_good_poll in [false, true] {
                let case = format!("{} on {operation}, after a good poll: {after_a_good_poll}", fault.kind());
                let mut h = Harness::new(7, "").await;
                let before = h.truth();
                if after_a_good_poll {
                    assert_eq!(served(&h.poll().await.images), before, "{case}: the good poll");
                    // Make the next poll read entries too: every image gets a newer report.
                    for image in h.sim().image_ids() {
                        h.sim().add_report(&image);
                    }
                }
                let truth = h.truth();
                h.sim().add_fault(FaultRule::new(fault.clone()).on(operation));
                let faulty = h.poll().await;
                assert!(faulty.images.iter().any(|i| !i.poll_success), "{case}: the fault is seen");
                for image in &faulty.images {
                    let usage = served(std::slice::from_ref(image));
                    if image.poll_success {
                        assert_eq!(usage, of_images(&truth, &[&image.image_id]), "{case}: refreshed means true");
                    } else {
                        // Its last good data: the previous report's figures, or nothing yet.
                        let last_good =
                            if after_a_good_poll { of_images(&before, &[&image.image_id]) } else { Usage::new() };
                        assert_eq!(usage, last_good, "{case}: the last good data of {}", image.image_id);
                    }
                }
                h.sim().clear_faults();
                let mut converged = false;
                for _ in 0..3 {
                    let poll = h.poll().await;
                    if poll.images.iter().all(|i| i.poll_success) && served(&poll.images) == truth {
                        converged = true;
                        break;
                    }
                }
                assert!(converged, "{case}: converges once the fault is gone");
                h.running.shutdown().await;
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 36);
}

/// A refused saved token (it expired) restarts the chain once, from page 1, within the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_restarts_the_chain_once() {
    let dataset = DatasetSpec { seed: 11, images: 1, accounts: 6, full_usage: true, ..DatasetSpec::default() };
    let mut h = Harness::with(dataset, "").await;
    let pages = h.truth().len().div_ceil(5) as u64;
    assert!(pages >= 2, "a chain of several pages");
    h.sim().add_fault(FaultRule::new(Fault::ExpireToken).on(ENTRIES).with_limit(1));
    let poll = h.poll().await;
    assert_eq!(served(&poll.images), h.truth(), "the restarted chain read every page");
    assert_eq!(h.calls()[ENTRIES], 1 + 1 + pages, "page 1, the refused page 2, then the whole chain");
}

/// A 50-page chain whose pages fail three times in ten (500s: throttling would space the polls
/// out, which is another test's subject): each poll resumes the chain at the page
/// that failed, so that no page is read twice, and the usage is served once the chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_under_faults_resumes_where_it_failed_and_reads_no_page_twice() {
    // 125 accounts x 2 resource types = 250 entries: 50 pages of 5.
    let dataset = DatasetSpec { seed: 3, images: 1, accounts: 125, full_usage: true, ..DatasetSpec::default() };
    let mut h = Harness::with(dataset, "").await;
    h.sim().add_fault(FaultRule::new(Fault::InternalError).on(ENTRIES).with_share(0.3));
    let mut polls = 0;
    let served_at_last = loop {
        polls += 1;
        let poll = h.poll().await;
        let usage = served(&poll.images);
        assert!(usage.is_empty() || usage == h.truth(), "never the entries of an unfinished chain");
        if !usage.is_empty() || polls == 60 {
            break usage;
        }
    };
    assert_eq!(served_at_last, h.truth(), "converged within {polls} polls");
    let faulted = h.sim().fault_hits().get("internal_error").copied().unwrap_or(0);
    assert!(faulted > 0, "the fault hit");
    assert_eq!(h.calls()[ENTRIES] - faulted, 50, "every page read once: {faulted} faulted, {polls} polls");
}

/// Each watched image's facts, from the last poll.
fn facts_of(poll: &TargetPoll) -> BTreeMap<String, ImageFacts> {
    poll.images.iter().filter_map(|i| Some((i.image_id.to_string(), (**i.facts.as_ref()?).clone()))).collect()
}

/// The simulator's facts as the exporter should tell them.
fn true_facts(sim: &Simulator) -> BTreeMap<String, ImageFacts> {
    sim.image_facts()
        .into_iter()
        .map(|f| {
            let facts = ImageFacts {
                name: f.name,
                state: f.state,
                public: f.public,
                created: Some(f.creation_date),
                last_launched: f.last_launched_time,
                deprecation: f.deprecation_time,
            };
            (f.image_id, facts)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_facts_equal_the_ground_truth_and_a_gone_image_shows_deregistered_once() {
    // Ten images: one never launched, deprecated ones, a public one and a disabled one.
    let mut h = Harness::new(10, "images:\n  refresh_interval: 1m").await;
    let truth = true_facts(h.sim());
    assert!(truth.values().any(|f| f.state == "disabled") && truth.values().any(|f| f.last_launched.is_none()));
    let first = h.poll().await;
    assert_eq!(facts_of(&first), truth, "every image, disabled and deprecated ones included");
    assert_eq!(h.calls()["DescribeImages"], 1, "one call for 10 images");

    let gone = h.sim().image_ids()[4].clone();
    h.sim().deregister_image(&gone);
    let before = h.calls()["DescribeImages"];
    let second = facts_of(&h.poll().await);
    assert_eq!(second[&gone], truth[&gone].deregistered(), "shown as deregistered, with its last name");
    let others: BTreeMap<_, _> =
        truth.iter().filter(|(id, _)| **id != gone).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        second.into_iter().filter(|(id, _)| *id != gone).collect::<BTreeMap<_, _>>(),
        others,
        "the others keep theirs"
    );
    assert!(h.calls()["DescribeImages"] - before > 1, "the batch the gone image failed was split");
    let third = facts_of(&h.poll().await);
    assert!(!third.contains_key(&gone), "then dropped");
    assert_eq!(third, others);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_images_the_facts_are_absent_and_the_usage_is_intact() {
    let mut h = Harness::new(6, "").await;
    h.sim().add_fault(FaultRule::new(Fault::Unauthorized).on("DescribeImages"));
    let poll = h.poll().await;
    assert!(facts_of(&poll).is_empty(), "absent, not made up");
    assert_eq!(served(&poll.images), h.truth(), "usage does not depend on the facts");
    assert!(poll.images.iter().all(|i| i.poll_success));
}

/// The references served, per image and type.
fn references_of(poll: &TargetPoll) -> BTreeMap<(String, String), u64> {
    poll.images
        .iter()
        .flat_map(|i| {
            let image = i.image_id.to_string();
            i.references.iter().flat_map(move |r| {
                let image = image.clone();
                r.counts.iter().map(move |(t, n)| ((image.clone(), t.clone()), *n))
            })
        })
        .collect()
}

/// The simulator's counts for `query`, with 0 for every image and type it has none of.
fn true_references(sim: &Simulator, query: &ReferenceQuery, types: &[&str]) -> BTreeMap<(String, String), u64> {
    let counts = sim.reference_counts(query);
    sim.image_ids()
        .into_iter()
        .flat_map(|image| types.iter().map(move |t| (image.clone(), (*t).to_owned())))
        .map(|key| {
            let n = counts.get(&key).copied().unwrap_or(0) as u64;
            (key, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_equal_the_ground_truth_across_pages_and_batches_of_ten() {
    let all = crate::config::REFERENCE_TYPES;
    let mut h = Harness::new(23, "references:\n  enabled: true").await;
    let poll = h.poll().await;
    assert_eq!(references_of(&poll), true_references(h.sim(), &ReferenceQuery::all(), &all));
    // Batches of 10 sorted images, each read in pages of 5 references (one page when empty).
    let mut images = h.sim().image_ids();
    images.sort();
    let counts = h.sim().reference_counts(&ReferenceQuery::all());
    let pages: u64 = images
        .chunks(10)
        .map(|batch| {
            let refs: usize = counts.iter().filter(|((image, _), _)| batch.contains(image)).map(|(_, n)| *n).sum();
            refs.div_ceil(5).max(1) as u64
        })
        .sum();
    assert_eq!(h.calls()["DescribeImageReferences"], pages, "⌈23/10⌉ batches × their pages, nothing more");
    assert!(references_of(&poll).values().any(|n| *n == 0), "types with none are exported as 0");

    let options = "references:\n  enabled: true\n  resource_types:\n    - {type: ec2:Instance, states: [running]}\n    - {type: ec2:LaunchTemplate, version_depth: 2}";
    let mut h = Harness::new(23, options).await;
    let query = ReferenceQuery::of(vec![
        ReferenceTypeQuery::new("ec2:Instance").with_state_names(&["running"]),
        ReferenceTypeQuery::new("ec2:LaunchTemplate").with_version_depth(2),
    ]);
    let poll = h.poll().await;
    assert_eq!(references_of(&poll), true_references(h.sim(), &query, &["ec2:Instance", "ec2:LaunchTemplate"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reference_count_keeps_the_last_counts_and_their_time() {
    let mut h = Harness::new(12, "references:\n  enabled: true\n  refresh_interval: 1m").await;
    let first = h.poll().await;
    let measured = first.images[0].references.as_ref().map(|r| r.measured);
    h.sim().add_fault(FaultRule::new(Fault::InternalError).on("DescribeImageReferences").with_limit(1));
    let second = h.poll().await;
    assert_eq!(references_of(&second), references_of(&first), "the last good counts stay");
    assert_eq!(second.images[0].references.as_ref().map(|r| r.measured), measured, "marked by their time");
    let third = h.poll().await;
    assert!(third.images[0].references.as_ref().map(|r| r.measured) > measured, "counted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_image_references_usage_and_facts_are_intact() {
    let mut h = Harness::new(6, "references:\n  enabled: true").await;
    h.sim().add_fault(FaultRule::new(Fault::Unauthorized).on("DescribeImageReferences"));
    let poll = h.poll().await;
    assert!(references_of(&poll).is_empty(), "not measured: absent");
    assert_eq!(served(&poll.images), h.truth());
    assert_eq!(facts_of(&poll), true_facts(h.sim()));
    assert!(poll.images.iter().all(|i| i.poll_success), "the images themselves were refreshed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_in_a_batch_does_not_hide_the_others_facts() {
    let mut h = Harness::new(5, "").await;
    // The configuration refuses such an ID; a target built otherwise could still hold one.
    h.target.target.images.push("ami-nothex!".to_owned());
    let facts = facts_of(&h.poll().await);
    assert_eq!(facts, true_facts(h.sim()), "the five real images have their facts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_images_take_their_facts_from_discovery_s_own_answer() {
    let mut h = Harness::new(6, "").await;
    h.target.target.images.clear();
    h.target.target.discovery = Some(crate::config::Discovery {
        owners: vec!["self".to_owned()],
        filters: Default::default(),
        refresh_interval: crate::config::PositiveDuration::try_from("1h".to_owned()).expect("a duration"),
    });
    let poll = h.poll().await;
    let available: BTreeMap<_, _> = true_facts(h.sim()).into_iter().filter(|(_, f)| f.state == "available").collect();
    assert_eq!(facts_of(&poll), available, "discovery selects available images, with their facts");
    // Discovery lists 5 images to a page (the harness's page size): 2 pages, and no call by ID.
    assert_eq!(h.calls()["DescribeImages"], 6_u64.div_ceil(5), "discovery's pages, nothing more for the facts");
}
