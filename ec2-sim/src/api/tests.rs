//! Operation-level tests: requests go through `Simulator::handle_query`, exactly as the HTTP server sends them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::ApiResponse;
use crate::config::{CreateOutcome, SimConfig};
use crate::dataset::DatasetSpec;
use crate::model::ReportState;
use crate::sim::Simulator;
use crate::xml::assert_well_formed;

mod images;
mod references;

const DAY: Duration = Duration::from_secs(86_400);

fn sim() -> Simulator {
    Simulator::new(SimConfig::default())
}

/// A reference body from `fixtures/`.
fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/{name}.xml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn call(sim: &Simulator, pairs: &[(&str, &str)]) -> ApiResponse {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("Version", "2016-11-15");
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let resp = sim.handle_query(ser.finish().as_bytes());
    assert_well_formed(&resp.body);
    resp
}

fn ok(sim: &Simulator, pairs: &[(&str, &str)]) -> String {
    let resp = call(sim, pairs);
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

fn err(sim: &Simulator, pairs: &[(&str, &str)]) -> (u16, String) {
    let resp = call(sim, pairs);
    assert_ne!(resp.status, 200, "{}", resp.body);
    let code = texts(&resp.body, "Code").pop().unwrap_or_default();
    (resp.status, code)
}

/// Text of every `<tag>…</tag>` leaf, in document order.
pub(crate) fn texts(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        let text = &after[..j];
        if !text.contains('<') {
            out.push(text.to_string());
        }
        rest = &after[j + close.len()..];
    }
    out
}

/// Element paths in document order, first occurrence only: the "shape" of a document regardless of its data.
pub(crate) fn shape(doc: &str) -> Vec<String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut rest = doc.split_once("?>").map_or(doc, |(_, r)| r);
    while let Some(lt) = rest.find('<') {
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if tag.starts_with('/') {
            stack.pop();
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name = tag.trim_end_matches('/').split(' ').next().unwrap_or("");
        stack.push(name);
        let path = stack.join("/");
        if seen.insert(path.clone()) {
            out.push(path);
        }
        if self_closing {
            stack.pop();
        }
    }
    out
}

fn create(sim: &Simulator, image: &str, token: &str) -> String {
    let body = ok(
        sim,
        &[
            ("Action", "CreateImageUsageReport"),
            ("ImageId", image),
            ("ResourceType.1.ResourceType", "ec2:Instance"),
            ("ResourceType.2.ResourceType", "ec2:LaunchTemplate"),
            ("ClientToken", token),
        ],
    );
    texts(&body, "reportId").pop().expect("reportId")
}

fn entries_by(sim: &Simulator, key: &str, value: &str) -> Vec<(String, String, String, i64)> {
    let body = ok(sim, &[("Action", "DescribeImageUsageReportEntries"), (key, value)]);
    let reports = texts(&body, "reportId");
    let accounts = texts(&body, "accountId");
    let types = texts(&body, "resourceType");
    let counts = texts(&body, "usageCount");
    reports
        .into_iter()
        .zip(accounts)
        .zip(types)
        .zip(counts)
        .map(|(((r, a), t), c)| (r, a, t, c.parse().unwrap()))
        .collect()
}

#[test]
fn lazy_pending_to_available_transition() {
    // Long enough that the wall clock moving during the test cannot matter.
    let sim = Simulator::new(SimConfig { pending_for: Duration::from_secs(3600), ..SimConfig::default() });
    let image = sim.image_ids()[0].clone();
    let id = create(&sim, &image, "t1");
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert_eq!(texts(&body, "state"), vec!["pending"]);
    assert!(entries_by(&sim, "ReportId.1", &id).is_empty(), "pending reports have no entries");

    sim.advance_clock(Duration::from_secs(3540));
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert_eq!(texts(&body, "state"), vec!["pending"]);

    // Usage changes before the report becomes available are in it.
    let account = sim.account_ids()[0].clone();
    sim.set_usage(&image, &account, "ec2:Instance", 4242);
    sim.advance_clock(Duration::from_secs(60));
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert_eq!(texts(&body, "state"), vec!["available"]);
    let entries = entries_by(&sim, "ReportId.1", &id);
    assert!(entries.contains(&(id.clone(), account.clone(), "ec2:Instance".into(), 4242)));

    // ...and later changes are not: available reports are snapshots.
    sim.set_usage(&image, &account, "ec2:Instance", 7);
    assert_eq!(entries_by(&sim, "ReportId.1", &id), entries);
    let truth: Vec<_> = sim.ground_truth().into_iter().filter(|t| t.image_id == image).collect();
    assert!(truth.iter().all(|t| t.report_id == id));
    assert_eq!(truth.len(), entries.len());
}

#[test]
fn idempotent_create() {
    let sim = sim();
    let image = sim.image_ids()[1].clone();
    let before = sim.reports().len();
    let a = create(&sim, &image, "same-token");
    // A retry while the report is still pending gets the same ID, not a quota error.
    let b = create(&sim, &image, "same-token");
    assert_eq!(a, b);
    sim.complete_pending();
    let c = create(&sim, &image, "same-token");
    assert_eq!(a, c);
    assert_eq!(sim.reports().len(), before + 1);
    assert_eq!(sim.reports().iter().filter(|r| r.client_token.as_deref() == Some("same-token")).count(), 1);

    let other_image = sim.image_ids()[2].clone();
    assert_eq!(
        err(
            &sim,
            &[
                ("Action", "CreateImageUsageReport"),
                ("ImageId", &other_image),
                ("ResourceType.1.ResourceType", "ec2:Instance"),
                ("ClientToken", "same-token"),
            ]
        ),
        (400, "IdempotentParameterMismatch".into())
    );
    assert_eq!(sim.reports().len(), before + 1);
}

#[test]
fn one_pending_report_per_image() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let first = create(&sim, &image, "a");
    let resp = call(
        &sim,
        &[
            ("Action", "CreateImageUsageReport"),
            ("ImageId", &image),
            ("ResourceType.1.ResourceType", "ec2:Instance"),
            ("ClientToken", "b"),
        ],
    );
    assert_eq!(resp.status, 400);
    assert_eq!(texts(&resp.body, "Code"), vec!["ResourceLimitExceeded"]);
    assert!(texts(&resp.body, "Message")[0].contains(&image));
    assert!(texts(&resp.body, "Message")[0].contains("already pending"));
    // Other images are not affected.
    create(&sim, &sim.image_ids()[1], "c");
    sim.advance_clock(Duration::from_secs(2));
    let second = create(&sim, &image, "b");
    assert_ne!(first, second);
}

#[test]
fn pre_existing_pending_reports_block_creation() {
    let cfg =
        SimConfig { dataset: DatasetSpec { pending_reports: true, ..DatasetSpec::default() }, ..SimConfig::default() };
    let sim = Simulator::new(cfg);
    let images = sim.image_ids();
    assert_eq!(sim.reports().iter().filter(|r| r.state == ReportState::Pending).count(), 3);
    assert_eq!(
        err(
            &sim,
            &[
                ("Action", "CreateImageUsageReport"),
                ("ImageId", &images[0]),
                ("ResourceType.1.ResourceType", "ec2:Instance"),
            ]
        )
        .1,
        "ResourceLimitExceeded"
    );
    create(&sim, &images[1], "x");
    sim.complete_pending();
    assert!(sim.reports().iter().all(|r| r.state != ReportState::Pending));
}

#[test]
fn describing_entries_by_image_mixes_all_reports() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let by_image = entries_by(&sim, "ImageId.1", &image);
    let report_ids: BTreeSet<_> = by_image.iter().map(|e| e.0.clone()).collect();
    assert_eq!(report_ids.len(), 3, "entries of every available report of the image");

    let truth: Vec<_> = sim.ground_truth().into_iter().filter(|t| t.image_id == image).collect();
    let newest = truth[0].report_id.clone();
    let by_report = entries_by(&sim, "ReportId.1", &newest);
    let expected: Vec<_> = truth
        .iter()
        .map(|t| (t.report_id.clone(), t.account_id.clone(), t.resource_type.clone(), t.usage_count))
        .collect();
    let mut got = by_report.clone();
    got.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(got, expected_sorted);

    let sum = |v: &[(String, String, String, i64)]| v.iter().map(|e| e.3).sum::<i64>();
    assert_ne!(sum(&by_image), sum(&by_report), "mixing reports must give visibly wrong sums");

    // The error report of image 1 has no entries, and filters still apply.
    let image1 = sim.image_ids()[1].clone();
    let account = sim.ground_truth().into_iter().find(|t| t.image_id == image1).unwrap().account_id;
    let body = ok(
        &sim,
        &[
            ("Action", "DescribeImageUsageReportEntries"),
            ("ImageId.1", &image1),
            ("Filter.1.Name", "account-id"),
            ("Filter.1.Value.1", &account),
            ("Filter.2.Name", "resource-type"),
            ("Filter.2.Value.1", "ec2:*"),
        ],
    );
    assert!(texts(&body, "accountId").iter().all(|a| a == &account));
    assert!(!texts(&body, "accountId").is_empty());
}

#[test]
fn expiry_is_lazy_and_complete() {
    let sim = sim();
    let old: Vec<String> = sim.reports().iter().map(|r| r.id.clone()).collect();
    assert!(!sim.ground_truth().is_empty());
    sim.advance_clock(DAY * 30);
    assert!(sim.reports().is_empty(), "every pre-existing report is younger than 30 days but older than 2 hours");
    assert!(sim.ground_truth().is_empty());
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports")]);
    assert!(body.contains("<imageUsageReportSet/>"));
    let body = ok(&sim, &[("Action", "DescribeImageUsageReportEntries")]);
    assert!(body.contains("<imageUsageReportEntrySet/>"));
    let (status, code) = err(&sim, &[("Action", "DescribeImageUsageReportEntries"), ("ReportId.1", &old[0])]);
    assert_eq!((status, code.as_str()), (400, "InvalidParameterValue"));
    let resp = call(&sim, &[("Action", "DescribeImageUsageReportEntries"), ("ReportId.1", &old[0])]);
    assert!(texts(&resp.body, "Message")[0].contains(&old[0]));

    // A new report lives exactly report_ttl.
    let id = create(&sim, &sim.image_ids()[0], "t");
    let view = sim.reports().into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(view.expiration_time.duration_since(view.creation_time).unwrap(), DAY * 30);
    sim.advance_clock(DAY * 30 - Duration::from_secs(60));
    assert_eq!(sim.reports().len(), 1);
    sim.advance_clock(Duration::from_secs(60));
    assert!(sim.reports().is_empty());
}

#[test]
fn more_than_200_ids_is_an_error() {
    let sim = sim();
    let keys: Vec<String> = (1..=201).map(|i| format!("ImageId.{i}")).collect();
    let ids: Vec<String> = (0..201).map(|i| format!("ami-{i:017x}")).collect();
    for action in ["DescribeImageUsageReports", "DescribeImageUsageReportEntries"] {
        let mut pairs: Vec<(&str, &str)> = vec![("Action", action)];
        pairs.extend(keys.iter().map(String::as_str).zip(ids.iter().map(String::as_str)));
        assert_eq!(err(&sim, &pairs), (400, "InvalidParameterValue".into()));
        // 200 is fine.
        ok(&sim, &pairs[..201]);
        let rkeys: Vec<String> = (1..=201).map(|i| format!("ReportId.{i}")).collect();
        let mut pairs: Vec<(&str, &str)> = vec![("Action", action)];
        pairs.extend(rkeys.iter().map(String::as_str).zip(ids.iter().map(String::as_str)));
        assert_eq!(err(&sim, &pairs), (400, "InvalidParameterValue".into()));
    }
    let akeys: Vec<String> = (1..=201).map(|i| format!("AccountId.{i}")).collect();
    let accounts: Vec<String> = (0..201).map(|i| format!("{:012}", 100_000_000_000u64 + i)).collect();
    let image = sim.image_ids()[0].clone();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("Action", "CreateImageUsageReport"),
        ("ImageId", &image),
        ("ResourceType.1.ResourceType", "ec2:Instance"),
    ];
    pairs.extend(akeys.iter().map(String::as_str).zip(accounts.iter().map(String::as_str)));
    assert_eq!(err(&sim, &pairs), (400, "InvalidParameterValue".into()));
    ok(&sim, &pairs[..203]);
}

/// Every page of a paginated call, as bodies, following `nextToken` (bounded); with `max`, asks
/// for pages of at most `max` items (`item_tag`) and checks they are.
fn page_bodies(sim: &Simulator, base: &[(&str, &str)], item_tag: &str, max: Option<usize>) -> Vec<String> {
    let max_text = max.map(|m| m.to_string());
    let mut bodies = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let mut pairs = base.to_vec();
        if let Some(m) = &max_text {
            pairs.push(("MaxResults", m));
        }
        if let Some(t) = &token {
            pairs.push(("NextToken", t));
        }
        let body = ok(sim, &pairs);
        if let Some(m) = max {
            assert!(texts(&body, item_tag).len() <= m, "a page of more than {m}");
        }
        token = texts(&body, "nextToken").pop();
        bodies.push(body);
        if token.is_none() {
            return bodies;
        }
    }
    panic!("pagination did not end");
}

fn collect_pages(sim: &Simulator, base: &[(&str, &str)], item_tag: &str, max: usize) -> Vec<String> {
    page_bodies(sim, base, item_tag, Some(max)).iter().flat_map(|body| texts(body, item_tag)).collect()
}

#[test]
fn pagination_is_consistent_for_every_page_size() {
    let sim = Simulator::new(SimConfig {
        dataset: DatasetSpec { images: 4, accounts: 5, ..DatasetSpec::default() },
        ..SimConfig::default()
    });
    for (action, tag) in [
        ("DescribeImageUsageReports", "reportId"),
        ("DescribeImageUsageReportEntries", "usageCount"),
        ("DescribeImages", "imageId"),
    ] {
        let base = [("Action", action)];
        let everything = texts(&ok(&sim, &base), tag);
        assert!(everything.len() >= 4, "{action}");
        let everything_keyed: Vec<String> = if action == "DescribeImageUsageReportEntries" {
            let body = ok(&sim, &base);
            texts(&body, "reportId")
                .into_iter()
                .zip(texts(&body, "accountId"))
                .zip(texts(&body, "resourceType"))
                .map(|((a, b), c)| format!("{a}/{b}/{c}"))
                .collect()
        } else {
            everything.clone()
        };
        let unique: BTreeSet<_> = everything_keyed.iter().collect();
        assert_eq!(unique.len(), everything_keyed.len(), "no duplicates in {action}");
        for max in 1..=everything.len() + 1 {
            assert_eq!(collect_pages(&sim, &base, tag, max), everything, "{action} MaxResults={max}");
        }
    }
    // A token from one query is refused by another.
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("MaxResults", "1")]);
    let token = texts(&body, "nextToken").pop().unwrap();
    let image = sim.image_ids()[0].clone();
    assert_eq!(
        err(&sim, &[("Action", "DescribeImageUsageReports"), ("ImageId.1", &image), ("NextToken", &token)]).1,
        "InvalidPaginationToken"
    );
    assert_eq!(
        err(&sim, &[("Action", "DescribeImageUsageReportEntries"), ("NextToken", &token)]).1,
        "InvalidPaginationToken"
    );
    assert_eq!(err(&sim, &[("Action", "DescribeImageUsageReports"), ("MaxResults", "0")]).1, "InvalidParameterValue");
}

#[test]
fn same_seed_same_world() {
    let a = sim();
    let b = sim();
    assert_eq!(a.image_ids(), b.image_ids());
    assert_eq!(a.account_ids(), b.account_ids());
    let strip = |s: &Simulator| {
        s.ground_truth()
            .into_iter()
            .map(|t| (t.image_id, t.report_id, t.account_id, t.resource_type, t.usage_count))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.ground_truth(), a.ground_truth(), "ground truth is stable");
    // Report IDs minted later are deterministic too.
    assert_eq!(create(&a, &a.image_ids()[0], "x"), create(&b, &b.image_ids()[0], "x"));
    let c = Simulator::new(SimConfig {
        dataset: DatasetSpec { seed: 2, ..DatasetSpec::default() },
        ..SimConfig::default()
    });
    assert_ne!(a.image_ids(), c.image_ids());
}

#[test]
fn dry_run_does_nothing() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let before = sim.reports();
    let resp = call(
        &sim,
        &[
            ("Action", "CreateImageUsageReport"),
            ("ImageId", &image),
            ("ResourceType.1.ResourceType", "ec2:Instance"),
            ("DryRun", "true"),
        ],
    );
    assert_eq!(resp.status, 412);
    assert_eq!(texts(&resp.body, "Code"), vec!["DryRunOperation"]);
    assert_eq!(texts(&resp.body, "Message"), vec!["Request would have succeeded, but DryRun flag is set."]);
    assert_eq!(sim.reports(), before);
    for action in ["DescribeImageUsageReports", "DescribeImageUsageReportEntries", "DescribeImages"] {
        assert_eq!(err(&sim, &[("Action", action), ("DryRun", "true")]), (412, "DryRunOperation".into()));
    }
    let id = before[0].id.clone();
    assert_eq!(
        err(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", &id), ("DryRun", "true")]).1,
        "DryRunOperation"
    );
    assert_eq!(sim.reports(), before);
}

#[test]
fn create_validation_errors() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = vec![("Action", "CreateImageUsageReport".into()), ("ImageId", image.clone())];
        v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
        v
    };
    let run = |pairs: Vec<(&str, String)>| {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        err(&sim, &borrowed)
    };
    let rt = ("ResourceType.1.ResourceType", "ec2:LaunchTemplate");
    assert_eq!(run(base(&[])), (400, "MissingParameter".into()));
    assert_eq!(
        run(vec![("Action", "CreateImageUsageReport".into()), ("ResourceType.1.ResourceType", "ec2:Instance".into())])
            .1,
        "MissingParameter"
    );
    let mut p = base(&[rt]);
    p[1].1 = "ami-nothex".into();
    assert_eq!(run(p), (400, "InvalidAMIID.Malformed".into()));
    let mut p = base(&[rt]);
    p[1].1 = "ami-0123456789abcdef0".into();
    assert_eq!(run(p), (400, "InvalidAMIID.NotFound".into()));
    assert_eq!(run(base(&[("ResourceType.1.ResourceType", "ec2:Volume")])).1, "InvalidParameterValue");
    for depth in ["0", "10001", "abc", "-1"] {
        let p = base(&[
            rt,
            ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
            ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", depth),
        ]);
        assert_eq!(run(p).1, "InvalidParameterValue", "depth {depth}");
    }
    let p = base(&[
        ("ResourceType.1.ResourceType", "ec2:Instance"),
        ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
        ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "5"),
    ]);
    assert_eq!(run(p).1, "InvalidParameterValue", "version-depth only on launch templates");
    let p = base(&[
        rt,
        ("ResourceType.1.ResourceTypeOption.1.OptionName", "state-name"),
        ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "running"),
    ]);
    assert_eq!(run(p).1, "InvalidParameterValue");
    assert_eq!(run(base(&[rt, ("AccountId.1", "12345")])).1, "InvalidParameterValue");
    let long = "x".repeat(129);
    let mut p = base(&[rt]);
    p.push(("ClientToken", long));
    assert_eq!(run(p).1, "InvalidParameterValue");
    let p = base(&[rt, ("TagSpecification.1.ResourceType", "image"), ("TagSpecification.1.Tag.1.Key", "k")]);
    assert_eq!(run(p).1, "InvalidParameterValue");
    assert_eq!(run(base(&[rt, ("DryRun", "maybe")])).1, "InvalidParameterValue");
    assert!(sim.reports().iter().all(|r| r.state != ReportState::Pending), "no failed call created anything");

    // The boundaries themselves are fine.
    let p = base(&[
        rt,
        ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
        ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "10000"),
        ("ClientToken", "y"),
    ]);
    let borrowed: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(&sim, &borrowed);
}

#[test]
fn other_errors() {
    let sim = sim();
    assert_eq!(err(&sim, &[("Action", "RunInstances")]), (400, "InvalidAction".into()));
    assert_eq!(err(&sim, &[]), (400, "MissingParameter".into()));
    assert_eq!(
        err(&sim, &[("Action", "DescribeImageUsageReports"), ("Filter.1.Name", "image-id"), ("Filter.1.Value.1", "x")]),
        (400, "InvalidFilter".into())
    );
    assert_eq!(
        err(
            &sim,
            &[("Action", "DescribeImageUsageReportEntries"), ("Filter.1.Name", "state"), ("Filter.1.Value.1", "x")]
        )
        .1,
        "InvalidFilter"
    );
    assert_eq!(
        err(&sim, &[("Action", "DescribeImageUsageReports"), ("ImageId.1", "bogus")]).1,
        "InvalidAMIID.Malformed"
    );
    assert_eq!(
        err(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", "amiur-nope")]).1,
        "InvalidParameterValue"
    );
    assert_eq!(
        err(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", "amiur-nope")]).1,
        "InvalidParameterValue"
    );
    assert_eq!(err(&sim, &[("Action", "DeleteImageUsageReport")]).1, "MissingParameter");
    assert_eq!(
        err(&sim, &[("Action", "DescribeImages"), ("ImageId.1", "ami-0123456789abcdef0")]).1,
        "InvalidAMIID.NotFound"
    );
    let counts = sim.request_counts();
    assert_eq!(counts.get("RunInstances"), Some(&1));
    assert_eq!(counts.get("(none)"), Some(&1));
    assert_eq!(counts.get("DescribeImageUsageReports"), Some(&3));
    // Garbage bytes are just an unknown request, not a crash.
    let resp = sim.handle_query(b"\xff\xfe%%%&&=&Action=%E2%82");
    assert_eq!(resp.status, 400);
}

#[test]
fn delete_report() {
    let sim = sim();
    let id = sim.reports()[0].id.clone();
    let body = ok(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", &id)]);
    assert_eq!(texts(&body, "return"), vec!["true"]);
    assert!(sim.reports().iter().all(|r| r.id != id));
    assert_eq!(err(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", &id)]).1, "InvalidParameterValue");
}

#[test]
fn usage_changes_only_affect_later_reports() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let before = sim.ground_truth();
    let gone = before.iter().find(|t| t.image_id == image).unwrap().account_id.clone();
    sim.remove_account(&gone);
    assert_eq!(sim.ground_truth(), before, "existing reports are immutable");
    let id = sim.add_report(&image);
    let truth = sim.ground_truth();
    let mine: Vec<_> = truth.iter().filter(|t| t.image_id == image).collect();
    assert!(mine.iter().all(|t| t.report_id == id && t.account_id != gone));
    assert!(!mine.is_empty());
    // Two console reports in the same millisecond are still ordered.
    let id2 = sim.add_report(&image);
    assert!(sim.ground_truth().iter().filter(|t| t.image_id == image).all(|t| t.report_id == id2));
}

#[test]
fn reports_can_end_in_error() {
    let cfg = SimConfig {
        create_outcome: CreateOutcome::Error("quota <exceeded> & more".into()),
        pending_for: Duration::ZERO,
        ..SimConfig::default()
    };
    let sim = Simulator::new(cfg);
    let image = sim.image_ids()[0].clone();
    let truth_before = sim.ground_truth();
    let id = create(&sim, &image, "e");
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert_eq!(texts(&body, "state"), vec!["error"]);
    assert_eq!(texts(&body, "stateReason"), vec!["quota &lt;exceeded&gt; &amp; more"]);
    assert!(entries_by(&sim, "ReportId.1", &id).is_empty());
    assert_eq!(sim.ground_truth(), truth_before);
}

#[test]
fn describe_reports_filters() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    let id = ok(
        &sim,
        &[
            ("Action", "CreateImageUsageReport"),
            ("ImageId", &image),
            ("ResourceType.1.ResourceType", "ec2:Instance"),
            ("TagSpecification.1.ResourceType", "image-usage-report"),
            ("TagSpecification.1.Tag.1.Key", "Owner"),
            ("TagSpecification.1.Tag.1.Value", "Team <A> & \"B\""),
        ],
    );
    let id = texts(&id, "reportId").pop().unwrap();
    let by = |name: &str, value: &str| {
        texts(
            &ok(&sim, &[("Action", "DescribeImageUsageReports"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]),
            "reportId",
        )
    };
    assert_eq!(by("state", "pending"), vec![id.clone()]);
    assert_eq!(by("tag:Owner", "Team <A> & \"B\""), vec![id.clone()]);
    assert_eq!(by("tag:Owner", "Team*"), vec![id.clone()]);
    assert!(by("tag:Owner", "Other").is_empty());
    assert_eq!(by("tag-key", "Own*"), vec![id.clone()]);
    assert_eq!(by("state", "error").len(), 2);
    assert_eq!(by("state", "available").len(), 15);
    let view = sim.reports().into_iter().find(|r| r.id == id).unwrap();
    let day = crate::timefmt::format_millis(view.creation_time)[..11].to_string() + "*";
    assert!(by("creation-time", &day).contains(&id));
    assert_eq!(by("creation-time", &crate::timefmt::format_millis(view.creation_time)), vec![id.clone()]);
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert!(body.contains("<value>Team &lt;A&gt; &amp; &quot;B&quot;</value>"));
    // Values of one filter are ORed, filters are ANDed.
    let body = ok(
        &sim,
        &[
            ("Action", "DescribeImageUsageReports"),
            ("ImageId.1", &image),
            ("Filter.1.Name", "state"),
            ("Filter.1.Value.1", "pending"),
            ("Filter.1.Value.2", "available"),
        ],
    );
    assert_eq!(texts(&body, "reportId").len(), 4);
}

#[test]
fn describe_images() {
    let sim = sim();
    let ids = sim.image_ids();
    let all = ok(&sim, &[("Action", "DescribeImages"), ("Owner.1", "self")]);
    assert_eq!(texts(&all, "imageId"), ids);
    assert_eq!(texts(&all, "name")[0], "golden-base-1");
    let none = ok(&sim, &[("Action", "DescribeImages"), ("Owner.1", "amazon")]);
    assert!(none.contains("<imagesSet/>"));
    let named =
        ok(&sim, &[("Action", "DescribeImages"), ("Filter.1.Name", "name"), ("Filter.1.Value.1", "golden-base-[2]*")]);
    assert!(texts(&named, "imageId").is_empty());
    let named = ok(&sim, &[("Action", "DescribeImages"), ("Filter.1.Name", "name"), ("Filter.1.Value.1", "*-2")]);
    assert_eq!(texts(&named, "imageId"), vec![ids[1].clone()]);
    let tagged =
        ok(&sim, &[("Action", "DescribeImages"), ("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "golden-base-3")]);
    assert_eq!(texts(&tagged, "imageId"), vec![ids[2].clone()]);
    let by_id = ok(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[4]), ("Owner.1", "111111111111")]);
    assert_eq!(texts(&by_id, "imageId"), vec![ids[4].clone()]);
    assert_eq!(
        err(&sim, &[("Action", "DescribeImages"), ("Filter.1.Name", "foo"), ("Filter.1.Value.1", "x")]).1,
        "InvalidFilter"
    );
}

/// The element names and their order must be exactly those of the reference bodies (copied in `fixtures/`).
#[test]
fn responses_have_the_reference_shape() {
    let sim = Simulator::new(SimConfig { pending_for: Duration::ZERO, ..SimConfig::default() });
    let image = sim.image_ids()[1].clone();

    let create_body = ok(
        &sim,
        &[
            ("Action", "CreateImageUsageReport"),
            ("ImageId", &image),
            ("ResourceType.1.ResourceType", "ec2:Instance"),
            ("ResourceType.2.ResourceType", "ec2:LaunchTemplate"),
            ("ResourceType.2.ResourceTypeOption.1.OptionName", "version-depth"),
            ("ResourceType.2.ResourceTypeOption.1.OptionValue.1", "100"),
            ("AccountId.1", "111122223333"),
            ("AccountId.2", "444455556666"),
            ("ClientToken", "tok-1"),
            ("TagSpecification.1.ResourceType", "image-usage-report"),
            ("TagSpecification.1.Tag.1.Key", "Owner"),
            ("TagSpecification.1.Tag.1.Value", "TeamA"),
        ],
    );
    assert_eq!(shape(&create_body), shape(&fixture("CreateImageUsageReport")));
    let id = texts(&create_body, "reportId").pop().unwrap();

    // The tagged report first, then the image's error report, with a next page: the fixture's three features.
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]);
    assert!(body.contains("<optionValueSet>\n                                <item>100</item>"));
    let mut ours = shape(&body);
    let body = ok(
        &sim,
        &[
            ("Action", "DescribeImageUsageReports"),
            ("ImageId.1", &image),
            ("Filter.1.Name", "state"),
            ("Filter.1.Value.1", "error"),
        ],
    );
    ours.extend(shape(&body));
    let body = ok(&sim, &[("Action", "DescribeImageUsageReports"), ("MaxResults", "1")]);
    ours.extend(shape(&body));
    let expected = shape(&fixture("DescribeImageUsageReports"));
    let mut seen = BTreeSet::new();
    ours.retain(|p| seen.insert(p.clone()));
    // Same set of element paths; order checked on the full item from the first response.
    assert_eq!(ours.iter().collect::<BTreeSet<_>>(), expected.iter().collect::<BTreeSet<_>>());
    let first_item: Vec<_> = shape(&ok(&sim, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &id)]));
    let expected_item: Vec<_> = expected.iter().filter(|p| first_item.contains(p)).cloned().collect();
    assert_eq!(first_item.iter().filter(|p| !p.ends_with("nextToken")).cloned().collect::<Vec<_>>(), expected_item);

    let body = ok(&sim, &[("Action", "DescribeImageUsageReportEntries"), ("ImageId.1", &image), ("MaxResults", "2")]);
    assert_eq!(shape(&body), shape(&fixture("DescribeImageUsageReportEntries")));

    let body = ok(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", &id)]);
    assert_eq!(shape(&body), shape(&fixture("DeleteImageUsageReport")));

    let resp = call(&sim, &[("Action", "DeleteImageUsageReport"), ("ReportId", &id)]);
    assert_eq!(shape(&resp.body), shape(&fixture("Error")));
}

#[test]
fn request_counts_cover_every_call() {
    let sim = sim();
    for _ in 0..3 {
        ok(&sim, &[("Action", "DescribeImageUsageReports")]);
    }
    err(&sim, &[("Action", "DescribeImageUsageReportEntries"), ("MaxResults", "-5")]);
    let expected: BTreeMap<String, u64> =
        [("DescribeImageUsageReports".to_string(), 3), ("DescribeImageUsageReportEntries".to_string(), 1)].into();
    assert_eq!(sim.request_counts(), expected);
}
