//! The synthetic world: accounts, images, their current usage, and the reports that already exist when the
//! simulator starts.
//!
//! Everything is derived from the seed, so "seed 1" means the same IDs and counts everywhere. Only times are
//! relative to the moment the simulator is created, because reports expire.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::facts;
use crate::ids::IdGen;
use crate::model::{CreateRequest, Image, Report, ReportState, ResourceTypeSpec, Usage, UsageEntry, snapshot};
use crate::references::{self, Reference};
use crate::rng::{SplitMix64, mix64};
use crate::timefmt::truncate_to_millis;

/// The shape of the synthetic dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub seed: u64,
    pub images: usize,
    /// Consumer accounts (the owner is not among them).
    pub accounts: usize,
    pub resource_types: Vec<String>,
    /// Available reports per image that exist at start, newest about two hours old.
    pub reports_per_image: usize,
    pub owner_account: String,
    /// Also start with a pending report on every other image, to exercise "one pending report per AMI".
    pub pending_reports: bool,
    /// Every account uses every image with every resource type, so that a dataset has exactly
    /// images x accounts x resource types usage series: what benchmarks need to hit a size.
    pub full_usage: bool,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            images: 5,
            accounts: 8,
            resource_types: vec!["ec2:Instance".to_string(), "ec2:LaunchTemplate".to_string()],
            reports_per_image: 3,
            owner_account: "111111111111".to_string(),
            pending_reports: false,
            full_usage: false,
        }
    }
}

impl DatasetSpec {
    /// The same shape for another owner account, with a seed mixed from this one's and the account's: what
    /// `--owner` adds. Its IDs, consumer accounts and counts differ from this dataset's.
    pub fn for_owner(&self, account: &str) -> DatasetSpec {
        let number: u64 = account.parse().unwrap_or(0);
        DatasetSpec { seed: mix64(self.seed ^ mix64(number)), owner_account: account.to_string(), ..self.clone() }
    }
}

/// The `version-depth` AWS uses when none is given; pre-existing reports state it explicitly, as the console does.
pub(crate) const DEFAULT_VERSION_DEPTH: u32 = 20;

pub(crate) const ERROR_REASON: &str = "Internal error: the usage report could not be generated. Create a new report.";

const TEAMS: [&str; 2] = ["platform", "data"];
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Timing the dataset needs from the simulator configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) now: SystemTime,
    pub(crate) report_ttl: Duration,
    pub(crate) pending_for: Duration,
}

#[derive(Debug)]
pub(crate) struct Dataset {
    pub(crate) accounts: Vec<String>,
    pub(crate) images: Vec<Image>,
    /// Parallel to `images`.
    pub(crate) usage: Vec<Usage>,
    pub(crate) reports: Vec<Report>,
    /// In-account references to the images.
    pub(crate) references: Vec<Reference>,
    /// Where the references stream stands, for the resource IDs of references added later.
    pub(crate) reference_rng: SplitMix64,
}

/// The parameters of the reports that exist at start: all accounts, every resource type of the dataset, and
/// `version-depth` 20 on launch templates.
pub(crate) fn usual_request(spec: &DatasetSpec, image_id: &str) -> CreateRequest {
    CreateRequest {
        image_id: image_id.to_string(),
        resource_types: spec
            .resource_types
            .iter()
            .map(|rt| ResourceTypeSpec {
                resource_type: rt.clone(),
                version_depth: (rt == "ec2:LaunchTemplate").then_some(DEFAULT_VERSION_DEPTH),
            })
            .collect(),
        account_ids: Vec::new(),
        tags: Vec::new(),
    }
}

fn ago(now: SystemTime, d: Duration) -> SystemTime {
    truncate_to_millis(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
}

fn generate_accounts(rng: &mut SplitMix64, spec: &DatasetSpec) -> Vec<String> {
    let mut set = BTreeSet::new();
    while set.len() < spec.accounts {
        let id = format!("{:012}", 100_000_000_000 + rng.below(900_000_000_000));
        if id != spec.owner_account {
            set.insert(id);
        }
    }
    set.into_iter().collect()
}

fn generate_image(rng: &mut SplitMix64, ids: &IdGen, spec: &DatasetSpec, index: usize, facts: facts::Facts) -> Image {
    let name = format!("golden-base-{}", index + 1);
    // The creation date used to be drawn here; the draws stay so that a seed still gives the same counts, and the
    // date now comes from the facts stream with the image's other facts.
    let _ = rng.below(400);
    let _ = rng.below(86_400);
    let architecture = if rng.chance(1, 4) { "arm64" } else { "x86_64" };
    // Tags used to be drawn at random; the draw stays so that a seed still gives the same counts.
    let _ = rng.below(4);
    Image {
        id: ids.image_id(index as u64),
        owner_id: spec.owner_account.clone(),
        creation_date: facts.creation_date,
        architecture,
        tags: image_tags(&name, index),
        name,
        state: facts.state.to_string(),
        public: facts.public,
        deprecation_time: facts.deprecation_time,
        last_launched_time: facts.last_launched_time,
    }
}

/// `Name`, `Team` (platform, data, platform, …) and `Channel` (stable, stable, beta, beta, stable, …): every
/// combination of team and channel occurs among the first four images, for discovery tests.
fn image_tags(name: &str, index: usize) -> Vec<(String, String)> {
    let channel = if index % 4 >= 2 { "beta" } else { "stable" };
    vec![
        ("Name".to_string(), name.to_string()),
        ("Team".to_string(), TEAMS[index % 2].to_string()),
        ("Channel".to_string(), channel.to_string()),
    ]
}

/// Every seventh image (index 3, 10, 17, …) is used by nobody, so even the default five images include an unused
/// AMI; the others are used by a random subset of at least two accounts, each with one or more resource types.
fn generate_usage(rng: &mut SplitMix64, spec: &DatasetSpec, accounts: &[String], index: usize) -> Usage {
    let mut usage = Usage::new();
    if spec.full_usage {
        for account in accounts {
            for rt in &spec.resource_types {
                usage.insert((account.clone(), rt.clone()), rng.range_inclusive(1, 500) as i64);
            }
        }
        return usage;
    }
    if index % 7 == 3 || accounts.is_empty() || spec.resource_types.is_empty() {
        return usage;
    }
    let n = accounts.len() as u64;
    let k = rng.range_inclusive(n.min(2), n) as usize;
    let mut chosen: Vec<&String> = accounts.iter().collect();
    rng.shuffle(&mut chosen);
    for account in chosen.into_iter().take(k) {
        let mut any = false;
        for rt in &spec.resource_types {
            if rng.chance(2, 3) {
                usage.insert((account.clone(), rt.clone()), rng.range_inclusive(1, 500) as i64);
                any = true;
            }
        }
        if !any {
            let rt = &spec.resource_types[rng.below(spec.resource_types.len() as u64) as usize];
            usage.insert((account.clone(), rt.clone()), rng.range_inclusive(1, 500) as i64);
        }
    }
    usage
}

/// An older report must differ visibly from the newest one, so that a client mixing reports gets wrong sums:
/// every count differs, one current account may be missing, and an account that no longer uses the image appears.
fn older_entries(
    rng: &mut SplitMix64,
    spec: &DatasetSpec,
    accounts: &[String],
    current: &[UsageEntry],
) -> Vec<UsageEntry> {
    let mut out: Vec<UsageEntry> = current
        .iter()
        .map(|e| {
            let half = (e.usage_count / 2).max(1);
            let delta = rng.range_inclusive(0, 2 * half as u64) as i64 - half;
            let mut count = (e.usage_count + delta).max(1);
            if count == e.usage_count {
                count += 1;
            }
            UsageEntry { usage_count: count, ..e.clone() }
        })
        .collect();
    let current_accounts: BTreeSet<&str> = current.iter().map(|e| e.account_id.as_str()).collect();
    if current_accounts.len() >= 2 && rng.chance(1, 2) {
        let dropped = current_accounts.iter().nth(rng.below(current_accounts.len() as u64) as usize).copied();
        out.retain(|e| Some(e.account_id.as_str()) != dropped);
    }
    let former: Vec<&String> = accounts.iter().filter(|a| !current_accounts.contains(a.as_str())).collect();
    if !former.is_empty() && !spec.resource_types.is_empty() {
        let account = former[rng.below(former.len() as u64) as usize];
        let rt = &spec.resource_types[rng.below(spec.resource_types.len() as u64) as usize];
        out.push(UsageEntry {
            account_id: account.clone(),
            resource_type: rt.clone(),
            usage_count: rng.range_inclusive(1, 500) as i64,
        });
    }
    out.sort_by(|a, b| (&a.account_id, &a.resource_type).cmp(&(&b.account_id, &b.resource_type)));
    out
}

pub(crate) fn generate(spec: &DatasetSpec, timing: Timing, ids: &mut IdGen) -> Dataset {
    let mut rng = SplitMix64::new(spec.seed);
    let mut facts_rng = facts::stream(spec.seed);
    let accounts = generate_accounts(&mut rng, spec);
    let mut images = Vec::with_capacity(spec.images);
    let mut usage = Vec::with_capacity(spec.images);
    for index in 0..spec.images {
        let facts = facts::draw(&mut facts_rng, index, timing.now);
        images.push(generate_image(&mut rng, ids, spec, index, facts));
        usage.push(generate_usage(&mut rng, spec, &accounts, index));
    }

    let ttl = timing.report_ttl;
    let n = spec.reports_per_image;
    // Ages scale down with a short TTL so that every pre-existing report is alive at start.
    let base = HOUR.saturating_mul(2).min(ttl / 10);
    let step = if n == 0 {
        Duration::ZERO
    } else {
        DAY.saturating_mul(3).min(ttl.mul_f64(0.7) / u32::try_from(n).unwrap_or(u32::MAX))
    };

    let mut reports = Vec::new();
    let mut seq = 0u64;
    let mut push = |reports: &mut Vec<Report>,
                    ids: &mut IdGen,
                    request: CreateRequest,
                    state: ReportState,
                    created: SystemTime,
                    entries: Vec<UsageEntry>| {
        reports.push(Report {
            id: ids.next_report_id(),
            request,
            client_token: None,
            state,
            creation_time: created,
            expiration_time: created + ttl,
            ready_at: created + timing.pending_for,
            entries,
            seq,
        });
        seq += 1;
    };
    for (index, image) in images.iter().enumerate() {
        if n == 0 {
            break;
        }
        let request = usual_request(spec, &image.id);
        let current = snapshot(Some(&usage[index]), &request);
        if index % 3 == 1 {
            let created = ago(timing.now, base + step * (n as u32 - 1) + step / 2);
            let state = ReportState::Error(ERROR_REASON.to_string());
            push(&mut reports, ids, request.clone(), state, created, Vec::new());
        }
        for k in (0..n).rev() {
            let jitter = Duration::from_millis(rng.below((step / 4).as_millis().max(1) as u64));
            let (age, entries) = if k == 0 {
                let jitter = Duration::from_millis(rng.below((base / 10).as_millis().max(1) as u64));
                (base.saturating_sub(jitter), current.clone())
            } else {
                (base + step * k as u32 + jitter, older_entries(&mut rng, spec, &accounts, &current))
            };
            push(&mut reports, ids, request.clone(), ReportState::Available, ago(timing.now, age), entries);
        }
    }
    if spec.pending_reports {
        for image in images.iter().step_by(2) {
            let created = truncate_to_millis(timing.now);
            push(&mut reports, ids, usual_request(spec, &image.id), ReportState::Pending, created, Vec::new());
        }
    }
    let (references, reference_rng) = references::generate(spec.seed, &images);
    Dataset { accounts, images, usage, reports, references, reference_rng }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing { now: SystemTime::now(), report_ttl: Duration::from_secs(30 * 86_400), pending_for: Duration::ZERO }
    }

    #[test]
    fn same_seed_same_dataset() {
        let spec = DatasetSpec::default();
        let t = timing();
        let a = generate(&spec, t, &mut IdGen::new(spec.seed));
        let b = generate(&spec, t, &mut IdGen::new(spec.seed));
        assert_eq!(a.accounts, b.accounts);
        assert_eq!(a.images, b.images);
        assert_eq!(a.usage, b.usage);
        let ids = |d: &Dataset| {
            d.reports.iter().map(|r| (r.id.clone(), r.creation_time, r.entries.clone())).collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        let other = generate(&DatasetSpec { seed: 2, ..spec.clone() }, t, &mut IdGen::new(2));
        assert_ne!(a.accounts, other.accounts);
    }

    #[test]
    fn full_usage_has_every_account_on_every_image() {
        let spec = DatasetSpec { images: 8, accounts: 5, full_usage: true, ..DatasetSpec::default() };
        let d = generate(&spec, timing(), &mut IdGen::new(spec.seed));
        assert!(d.usage.iter().all(|u| u.len() == 5 * 2), "no unused image, no missing account or type");
        assert!(d.usage.iter().flat_map(|u| u.values()).all(|c| (1..=500).contains(c)));
    }

    #[test]
    fn shape_of_the_default_dataset() {
        let spec = DatasetSpec::default();
        let d = generate(&spec, timing(), &mut IdGen::new(spec.seed));
        assert_eq!(d.accounts.len(), 8);
        assert!(d.accounts.iter().all(|a| crate::ids::is_account_id(a) && a != &spec.owner_account));
        assert_eq!(d.images.len(), 5);
        assert!(d.usage[3].is_empty(), "image 3 is the unused one");
        for (i, u) in d.usage.iter().enumerate() {
            if i != 3 {
                let accounts: BTreeSet<_> = u.keys().map(|(a, _)| a).collect();
                assert!(accounts.len() >= 2);
                assert!(u.values().all(|c| (1..=500).contains(c)));
            }
        }
        // 3 available per image plus an error report on images 1 and 4.
        assert_eq!(d.reports.len(), 5 * 3 + 2);
        assert!(d.reports.iter().all(|r| r.request.account_ids.is_empty() && r.request.resource_types.len() == 2));
        let tag = |i: usize, key: &str| d.images[i].tags.iter().find(|(k, _)| k == key).unwrap().1.clone();
        let teams: Vec<String> = (0..5).map(|i| tag(i, "Team")).collect();
        assert_eq!(teams, ["platform", "data", "platform", "data", "platform"]);
        let channels: Vec<String> = (0..5).map(|i| tag(i, "Channel")).collect();
        assert_eq!(channels, ["stable", "stable", "beta", "beta", "stable"]);
        assert_eq!(tag(2, "Name"), "golden-base-3");
    }

    #[test]
    fn another_owner_gets_another_dataset() {
        let spec = DatasetSpec::default();
        let other = spec.for_owner("222222222222");
        assert_eq!((other.images, other.accounts, other.owner_account.as_str()), (5, 8, "222222222222"));
        assert_ne!(other.seed, spec.seed);
        assert_eq!(other, spec.for_owner("222222222222"));
        let a = generate(&spec, timing(), &mut IdGen::new(spec.seed));
        let b = generate(&other, timing(), &mut IdGen::for_owner(other.seed, &other.owner_account));
        assert!(b.images.iter().all(|i| i.owner_id == "222222222222" && !a.images.iter().any(|j| j.id == i.id)));
        assert_ne!(a.accounts, b.accounts);
    }

    #[test]
    fn older_reports_differ_from_the_newest() {
        let spec = DatasetSpec { images: 20, ..DatasetSpec::default() };
        let d = generate(&spec, timing(), &mut IdGen::new(spec.seed));
        for image in &d.images {
            let mut avail: Vec<&Report> = d
                .reports
                .iter()
                .filter(|r| r.request.image_id == image.id && r.state == ReportState::Available)
                .collect();
            avail.sort_by_key(|r| r.creation_time);
            let newest = avail.last().unwrap();
            for old in &avail[..avail.len() - 1] {
                assert!(old.creation_time < newest.creation_time);
                if !(newest.entries.is_empty() && old.entries.is_empty()) {
                    assert_ne!(old.entries, newest.entries);
                }
            }
        }
    }

    /// Everything the main stream decides, as text: IDs, accounts, names, tags, architectures, usage and reports
    /// (with ages relative to `now`). Image facts and references are drawn from streams of their own and are not in
    /// it, so adding such facts must leave it unchanged.
    fn main_stream_digest(spec: &DatasetSpec, ids: IdGen) -> u64 {
        let mut ids = ids;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let t = Timing { now, report_ttl: Duration::from_secs(30 * 86_400), pending_for: Duration::from_secs(2) };
        let d = generate(spec, t, &mut ids);
        let images: Vec<_> = d.images.iter().map(|i| (&i.id, &i.name, &i.owner_id, i.architecture, &i.tags)).collect();
        let reports: Vec<_> = d
            .reports
            .iter()
            .map(|r| {
                let age = now.duration_since(r.creation_time).unwrap_or_default();
                (
                    &r.id,
                    &r.request,
                    r.state.as_str(),
                    age,
                    r.expiration_time.duration_since(r.creation_time),
                    &r.entries,
                )
            })
            .collect();
        let text = format!("{:?}{images:?}{:?}{reports:?}", d.accounts, d.usage);
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    }

    /// Golden values of the generator as it was before image facts and references existed: existing tests (here
    /// and in the exporter) rely on the IDs, accounts and counts a seed gives.
    #[test]
    fn main_stream_is_unchanged_by_facts_and_references() {
        let default = DatasetSpec::default();
        let big = DatasetSpec { seed: 7, images: 20, accounts: 10, pending_reports: true, ..DatasetSpec::default() };
        let full = DatasetSpec { seed: 3, images: 6, accounts: 4, full_usage: true, ..DatasetSpec::default() };
        let other = default.for_owner("222222222222");
        let digests = [
            main_stream_digest(&default, IdGen::new(default.seed)),
            main_stream_digest(&big, IdGen::new(big.seed)),
            main_stream_digest(&full, IdGen::new(full.seed)),
            main_stream_digest(&other, IdGen::for_owner(other.seed, &other.owner_account)),
        ];
        assert_eq!(
            digests,
            [0xb8cf_80c7_bd9b_b7a4, 0xc7f9_f63a_f4eb_9403, 0x82d4_9188_1237_557d, 0x4969_b7b4_70c7_d440],
            "{digests:#x?}"
        );
    }

    #[test]
    fn short_ttl_keeps_reports_alive() {
        let spec = DatasetSpec { reports_per_image: 12, ..DatasetSpec::default() };
        let t = Timing { report_ttl: Duration::from_secs(60), ..timing() };
        let d = generate(&spec, t, &mut IdGen::new(1));
        assert!(d.reports.iter().all(|r| r.expiration_time > t.now));
    }
}
