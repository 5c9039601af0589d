//! Fault-layer tests on `Simulator::answer_now`: the same path as the HTTP server, minus the latency sleep and the
//! socket (tests/faults.rs covers those over real HTTP).

use std::collections::BTreeMap;

use super::{Answer, Delivery, Fault, FaultRule, NOT_XML_BODY, takes};
use crate::config::SimConfig;
use crate::model::ReportState;
use crate::sim::Simulator;
use crate::state::{MAX_REQUEST_TIMES, State};
use crate::xml::assert_well_formed;

const ENTRIES: &str = "DescribeImageUsageReportEntries";
const REPORTS: &str = "DescribeImageUsageReports";

fn sim_with(rules: Vec<FaultRule>) -> Simulator {
    Simulator::new(SimConfig { faults: rules, ..SimConfig::default() })
}

fn call(sim: &Simulator, pairs: &[(&str, &str)]) -> Answer {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("Version", "2016-11-15");
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    sim.answer_now(ser.finish().as_bytes(), None)
}

fn texts(doc: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

fn code(answer: &Answer) -> String {
    texts(&answer.response.body, "Code").pop().unwrap_or_default()
}

fn hits(sim: &Simulator, kind: &str) -> u64 {
    sim.fault_hits().get(kind).copied().unwrap_or(0)
}

/// Every page of an entries query, in order, as (reportId, accountId, resourceType) per item.
fn entry_pages(sim: &Simulator, base: &[(&str, &str)], max: usize) -> Vec<Vec<(String, String, String)>> {
    let max = max.to_string();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let mut pairs = base.to_vec();
        pairs.push(("MaxResults", &max));
        if let Some(t) = &token {
            pairs.push(("NextToken", t));
        }
        let answer = call(sim, &pairs);
        assert_eq!(answer.response.status, 200, "{}", answer.response.body);
        assert_well_formed(&answer.response.body);
        let body = &answer.response.body;
        let page: Vec<_> = texts(body, "reportId")
            .into_iter()
            .zip(texts(body, "accountId"))
            .zip(texts(body, "resourceType"))
            .map(|((r, a), t)| (r, a, t))
            .collect();
        pages.push(page);
        token = texts(body, "nextToken").pop();
        if token.is_none() {
            return pages;
        }
    }
    panic!("pagination did not end");
}

#[test]
fn share_strides_are_exact_for_every_phase() {
    for phase in [0u64, 1, 0x8000_0000, 0xffff_ffff, 0x1234_5678] {
        // 0.1 and 1/3 are not exact in binary: floor or ceil of the nearest 32-bit fraction.
        for (share, expected) in [(0.0, 0..=0), (0.1, 10..=11), (0.25, 25..=25), (0.5, 50..=50), (1.0, 100..=100)] {
            let n = (0..100u64).filter(|&n| takes(share, n, phase)).count();
            assert!(expected.contains(&n), "share {share} phase {phase}: {n} of 100");
        }
        // Any window of consecutive requests gets floor or ceil of its share.
        for start in [0u64, 7, 1_000_003] {
            let n = (start..start + 30).filter(|&n| takes(1.0 / 3.0, n, phase)).count();
            assert!((9..=10).contains(&n));
            let n = (start..start + 2).filter(|&n| takes(0.5, n, phase)).count();
            assert_eq!(n, 1);
        }
    }
    assert!(!takes(f64::NAN, 0, 0));
    assert!((0..10).all(|n| takes(7.0, n, 0)), "clamped to 1");
}

#[test]
fn share_half_hits_exactly_half_of_100_requests_deterministically() {
    let pattern = |sim: &Simulator| -> Vec<bool> {
        (0..100).map(|_| call(sim, &[("Action", "DescribeImages")]).response.status == 503).collect()
    };
    let rule = FaultRule::new(Fault::Throttle).on("DescribeImages").with_share(0.5);
    let a = sim_with(vec![rule.clone()]);
    let first = pattern(&a);
    assert_eq!(first.iter().filter(|t| **t).count(), 50);
    assert!(first.windows(2).all(|w| w[0] != w[1]), "every other one");
    assert_eq!(hits(&a, "throttle"), 50);
    assert_eq!(a.request_counts().get("DescribeImages"), Some(&100), "throttled requests are counted too");
    // Same seed, same pattern.
    assert_eq!(pattern(&sim_with(vec![rule])), first);
}

#[test]
fn a_limit_is_a_burst_then_normal_answers() {
    let sim = sim_with(vec![FaultRule::new(Fault::Throttle).on(REPORTS).with_limit(3)]);
    let statuses: Vec<u16> = (0..6).map(|_| call(&sim, &[("Action", REPORTS)]).response.status).collect();
    assert_eq!(statuses, [503, 503, 503, 200, 200, 200]);
    assert_eq!(sim.faults()[0].limit, Some(0), "spent, still listed");
    assert_eq!(hits(&sim, "throttle"), 3);
    assert_eq!(sim.request_counts().get(REPORTS), Some(&6));
    assert_eq!(sim.request_times(REPORTS).len(), 6);
}

#[test]
fn rules_match_their_operation_and_the_first_one_wins() {
    let sim = sim_with(vec![
        FaultRule::new(Fault::InternalError).on("DescribeImages"),
        FaultRule::new(Fault::Throttle),
        FaultRule::new(Fault::Unauthorized),
    ]);
    assert_eq!(call(&sim, &[("Action", "DescribeImages")]).response.status, 500);
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 503);
    assert_eq!(hits(&sim, "internal_error"), 1);
    assert_eq!(hits(&sim, "throttle"), 1);
    assert_eq!(hits(&sim, "unauthorized"), 0, "never reached");
    // Data faults only count the requests they can apply to.
    let sim = sim_with(vec![FaultRule::new(Fault::MissingFields).with_limit(1)]);
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 200);
    assert_eq!(sim.faults()[0].limit, Some(1));
    let body = call(&sim, &[("Action", ENTRIES)]).response.body;
    assert!(texts(&body, "usageCount").len() < texts(&body, "resourceType").len());
    assert_eq!(sim.faults()[0].limit, Some(0));
}

#[test]
fn refusals_have_the_ec2_envelope_and_do_not_run_the_operation() {
    let cases = [
        (Fault::Throttle, 503, "RequestLimitExceeded", "Request limit exceeded."),
        (Fault::InternalError, 500, "InternalError", "An internal error has occurred."),
        (
            Fault::Unauthorized,
            403,
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. User: arn:aws:iam::111111111111:user/x is not \
             authorized to perform: ec2:CreateImageUsageReport",
        ),
        (Fault::AuthFailure, 401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
    ];
    for (fault, status, expected_code, message) in cases {
        let sim = sim_with(vec![FaultRule::new(fault.clone())]);
        let before = sim.reports().len();
        let image = sim.image_ids()[0].clone();
        let answer = call(
            &sim,
            &[
                ("Action", "CreateImageUsageReport"),
                ("ImageId", &image),
                ("ResourceType.1.ResourceType", "ec2:Instance"),
            ],
        );
        assert_eq!(answer.delivery, Delivery::Normal);
        assert_eq!(answer.response.status, status, "{fault:?}");
        assert_eq!(code(&answer), expected_code);
        assert_eq!(texts(&answer.response.body, "Message"), vec![crate::xml::escape(message)]);
        assert_eq!(texts(&answer.response.body, "RequestID"), vec![answer.response.request_id.clone()]);
        assert!(answer.response.body.contains("<Response>\n    <Errors>\n        <Error>\n"));
        assert_well_formed(&answer.response.body);
        assert_eq!(sim.reports().len(), before, "{fault:?}: nothing created");
        assert_eq!(hits(&sim, fault.kind()), 1);
    }
}

#[test]
fn connection_faults_and_non_xml_are_left_to_the_server() {
    let sim = sim_with(vec![FaultRule::new(Fault::CloseConnection).with_limit(1)]);
    let image = sim.image_ids()[0].clone();
    let create =
        [("Action", "CreateImageUsageReport"), ("ImageId", &image), ("ResourceType.1.ResourceType", "ec2:Instance")];
    let before = sim.reports().len();
    assert_eq!(call(&sim, &create).delivery, Delivery::Close);
    assert_eq!(sim.reports().len(), before, "not run");

    sim.set_faults(vec![FaultRule::new(Fault::NotXml).with_limit(1)]);
    let answer = call(&sim, &create);
    assert_eq!((answer.delivery, answer.response.status), (Delivery::NotXml, 200));
    assert_eq!(answer.response.body, NOT_XML_BODY);
    assert_eq!(sim.reports().len(), before, "not run");

    sim.set_faults(vec![FaultRule::new(Fault::CloseMidResponse).with_limit(1)]);
    let answer = call(&sim, &create);
    assert_eq!((answer.delivery, answer.response.status), (Delivery::CloseMidResponse, 200));
    assert_eq!(sim.reports().len(), before + 1, "the operation ran; only its answer is lost");
    assert_eq!(hits(&sim, "close_connection") + hits(&sim, "not_xml") + hits(&sim, "close_mid_response"), 3);
}

#[test]
fn truncated_bodies_are_cut_in_half() {
    let sim = sim_with(vec![FaultRule::new(Fault::TruncatedBody).on(REPORTS).with_limit(1)]);
    let cut = call(&sim, &[("Action", REPORTS)]);
    let whole = call(&sim, &[("Action", REPORTS)]);
    assert_eq!(cut.delivery, Delivery::Normal);
    assert_eq!(cut.response.status, 200);
    let expected = whole.response.body.replace(&whole.response.request_id, &cut.response.request_id);
    assert_eq!(cut.response.body, expected[..expected.len() / 2]);
    assert!(!cut.response.body.contains("</DescribeImageUsageReportsResponse>"));
}

#[test]
fn repeat_token_points_back_at_the_page_just_served() {
    let sim = sim_with(vec![FaultRule::new(Fault::RepeatToken).on(ENTRIES)]);
    let base = [("Action", ENTRIES), ("MaxResults", "2")];
    let first = call(&sim, &base).response.body;
    let t0 = texts(&first, "nextToken").pop().expect("a token on the first page");
    let items = |body: &str| texts(body, "accountId");
    for _ in 0..5 {
        let again = call(&sim, &[base[0], base[1], ("NextToken", &t0)]).response.body;
        assert_eq!(texts(&again, "nextToken"), vec![t0.clone()], "the same token, forever");
        assert_eq!(items(&again), items(&first), "the same page, forever");
    }
    // Following a normal token: that token comes back.
    sim.clear_faults();
    let normal = texts(&call(&sim, &[base[0], base[1], ("NextToken", &t0)]).response.body, "nextToken").pop().unwrap();
    assert_ne!(normal, t0);
    sim.add_fault(FaultRule::new(Fault::RepeatToken));
    let repeated = call(&sim, &[base[0], base[1], ("NextToken", &normal)]).response.body;
    assert_eq!(texts(&repeated, "nextToken"), vec![normal]);
    // Even a single-page answer gets a token back to itself.
    let single = call(&sim, &[("Action", "DescribeImages")]).response.body;
    assert_eq!(texts(&single, "nextToken").len(), 1);
    assert_eq!(hits(&sim, "repeat_token"), 8);
}

#[test]
fn missing_fields_and_bad_usage_counts() {
    let sim = sim_with(vec![FaultRule::new(Fault::MissingFields).on(ENTRIES).with_limit(1)]);
    let body = call(&sim, &[("Action", ENTRIES), ("MaxResults", "5")]).response.body;
    assert_well_formed(&body);
    assert_eq!(texts(&body, "resourceType").len(), 5);
    assert_eq!(texts(&body, "usageCount").len(), 2, "dropped from items 0, 2, 4");
    assert_eq!(texts(&body, "accountId").len(), 3, "dropped from items 1, 3");

    for value in [-1, i64::MAX, i64::MIN, 0] {
        sim.set_faults(vec![FaultRule::new(Fault::UsageCount { value }).with_limit(1)]);
        let body = call(&sim, &[("Action", ENTRIES), ("MaxResults", "4")]).response.body;
        assert_well_formed(&body);
        assert_eq!(texts(&body, "usageCount"), vec![value.to_string(); 4]);
    }
    assert_eq!(hits(&sim, "usage_count"), 4);
}

#[test]
fn duplicate_entries_reappear_on_the_next_page() {
    let sim = sim_with(vec![]);
    let image = sim.image_ids()[0].clone();
    let base = [("Action", ENTRIES), ("ImageId.1", image.as_str())];
    let clean: Vec<_> = entry_pages(&sim, &base, 3).concat();
    assert!(clean.len() >= 6, "the test needs several pages");

    sim.set_faults(vec![FaultRule::new(Fault::DuplicateEntries)]);
    let pages = entry_pages(&sim, &base, 3);
    let mut counts: BTreeMap<&(String, String, String), usize> = BTreeMap::new();
    for item in pages.iter().flatten() {
        *counts.entry(item).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 2), "every entry exactly twice: {counts:?}");
    assert_eq!(counts.len(), clean.len());
    for pair in pages.windows(2) {
        let own = &pair[0][pair[0].len().saturating_sub(3)..];
        assert!(own.iter().all(|e| pair[1].contains(e)), "a page's entries are on the next page");
    }

    // A single page: twice on the page.
    let one = entry_pages(&sim, &base, 1000);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].len(), clean.len() * 2);
    assert_eq!(one[0][..clean.len()], one[0][clean.len()..]);
}

#[test]
fn expire_between_pages_deletes_the_page_reports() {
    let sim = sim_with(vec![FaultRule::new(Fault::ExpireBetweenPages).with_limit(1)]);
    // A single page has no "between": the rule is kept for later.
    assert!(texts(&call(&sim, &[("Action", REPORTS)]).response.body, "nextToken").is_empty());
    assert_eq!(sim.faults()[0].limit, Some(1));
    assert_eq!(hits(&sim, "expire_between_pages"), 0);

    let image = sim.image_ids()[0].clone();
    let base = [("Action", ENTRIES), ("ImageId.1", image.as_str()), ("MaxResults", "2")];
    let first = call(&sim, &base).response.body;
    let token = texts(&first, "nextToken").pop().expect("a next page");
    let gone = texts(&first, "reportId");
    assert!(sim.reports().iter().all(|r| !gone.contains(&r.id)), "deleted right after answering");
    let next = call(&sim, &[base[0], base[1], base[2], ("NextToken", &token)]);
    assert_eq!((next.response.status, code(&next).as_str()), (400, "InvalidParameterValue"));
    assert!(texts(&next.response.body, "Message")[0].contains(&gone[0]));
    assert_eq!(hits(&sim, "expire_between_pages"), 1);
    // A fresh start works, without the deleted reports.
    let again = call(&sim, &base).response.body;
    assert!(texts(&again, "reportId").iter().all(|r| !gone.contains(r)));

    // By report ID, on the reports listing.
    let sim = sim_with(vec![]);
    let ids: Vec<String> = sim.reports().iter().map(|r| r.id.clone()).take(3).collect();
    let before = sim.reports().len();
    sim.add_fault(FaultRule::new(Fault::ExpireBetweenPages).on(REPORTS));
    let base = [("Action", REPORTS), ("ReportId.1", &ids[0]), ("ReportId.2", &ids[1]), ("ReportId.3", &ids[2])];
    let first = call(&sim, &[base[0], base[1], base[2], base[3], ("MaxResults", "1")]).response.body;
    let token = texts(&first, "nextToken").pop().expect("a next page");
    let next = call(&sim, &[base[0], base[1], base[2], base[3], ("MaxResults", "1"), ("NextToken", &token)]);
    assert_eq!(code(&next), "InvalidParameterValue");
    assert_eq!(sim.reports().len(), before - 1, "only that page's report");
    assert!(sim.reports().iter().all(|r| r.id != ids[0]));
}

#[test]
fn switching_at_run_time_affects_the_very_next_request() {
    let sim = sim_with(vec![]);
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 200);
    sim.set_faults(vec![FaultRule::new(Fault::Throttle)]);
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 503);
    sim.clear_faults();
    assert!(sim.faults().is_empty());
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 200);
    sim.add_fault(FaultRule::new(Fault::InternalError).with_limit(2));
    sim.add_fault(FaultRule::new(Fault::AuthFailure));
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 500);
    assert_eq!(sim.faults()[0].limit, Some(1));
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 500);
    assert_eq!(call(&sim, &[("Action", REPORTS)]).response.status, 401);
    let expected: BTreeMap<String, u64> =
        [("auth_failure", 1), ("internal_error", 2), ("throttle", 1)].map(|(k, v)| (k.to_string(), v)).into();
    assert_eq!(sim.fault_hits(), expected);
}

#[test]
fn configured_faults_apply_from_the_start() {
    let rules = vec![FaultRule::new(Fault::Throttle).on("DescribeImages").with_limit(1)];
    let sim = sim_with(rules.clone());
    assert_eq!(sim.faults(), rules);
    assert_eq!(call(&sim, &[("Action", "DescribeImages")]).response.status, 503);
    assert_eq!(call(&sim, &[("Action", "DescribeImages")]).response.status, 200);
}

#[test]
fn installed_shares_are_clamped() {
    let sim = sim_with(vec![]);
    sim.set_faults(vec![
        FaultRule::new(Fault::Throttle).with_share(3.0),
        FaultRule::new(Fault::Throttle).with_share(-1.0),
        FaultRule::new(Fault::Throttle).with_share(f64::NAN),
    ]);
    let shares: Vec<f64> = sim.faults().iter().map(|r| r.share).collect();
    assert_eq!(shares, [1.0, 0.0, 0.0]);
}

#[test]
fn fail_report_and_expire_report() {
    let sim = sim_with(vec![]);
    let truth = sim.ground_truth();
    let newest = truth[0].report_id.clone();
    let image = truth[0].image_id.clone();
    sim.fail_report(&newest, "Reticulation failed");
    let view = sim.reports().into_iter().find(|r| r.id == newest).unwrap();
    assert_eq!(view.state, ReportState::Error("Reticulation failed".to_string()));
    let body = call(&sim, &[("Action", REPORTS), ("ReportId.1", &newest)]).response.body;
    assert_eq!(texts(&body, "state"), vec!["error"]);
    assert_eq!(texts(&body, "stateReason"), vec!["Reticulation failed"]);
    let entries = call(&sim, &[("Action", ENTRIES), ("ReportId.1", &newest)]).response.body;
    assert!(entries.contains("<imageUsageReportEntrySet/>"));
    assert!(sim.ground_truth().iter().filter(|t| t.image_id == image).all(|t| t.report_id != newest));

    // A pending report can fail too, and stays failed when its time comes.
    let pending = call(
        &sim,
        &[("Action", "CreateImageUsageReport"), ("ImageId", &image), ("ResourceType.1.ResourceType", "ec2:Instance")],
    );
    let id = texts(&pending.response.body, "reportId").pop().unwrap();
    sim.fail_report(&id, "x");
    sim.complete_pending();
    sim.advance_clock(std::time::Duration::from_secs(3600));
    assert_eq!(sim.reports().into_iter().find(|r| r.id == id).unwrap().state, ReportState::Error("x".into()));

    sim.expire_report(&id);
    assert!(sim.reports().iter().all(|r| r.id != id));
    let gone = call(&sim, &[("Action", REPORTS), ("ReportId.1", &id)]);
    assert_eq!(code(&gone), "InvalidParameterValue");
}

#[test]
#[should_panic(expected = "is not a report of this simulator")]
fn expiring_an_unknown_report_is_a_test_bug() {
    sim_with(vec![]).expire_report("amiur-00000000000000000");
}

#[test]
#[should_panic(expected = "is not a report of this simulator")]
fn failing_an_unknown_report_is_a_test_bug() {
    sim_with(vec![]).fail_report("amiur-00000000000000000", "x");
}

#[test]
fn rules_round_trip_through_json() {
    let all = vec![
        Fault::Latency { millis: 250 },
        Fault::Throttle,
        Fault::InternalError,
        Fault::Unauthorized,
        Fault::AuthFailure,
        Fault::CloseConnection,
        Fault::CloseMidResponse,
        Fault::NotXml,
        Fault::TruncatedBody,
        Fault::RepeatToken,
        Fault::MissingFields,
        Fault::UsageCount { value: i64::MAX },
        Fault::UsageCount { value: -5 },
        Fault::DuplicateEntries,
        Fault::ExpireBetweenPages,
        Fault::ExpireToken,
    ];
    let rules: Vec<FaultRule> = all
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let rule = FaultRule::new(f).with_share(i as f64 / 16.0);
            if i % 2 == 0 { rule.on(ENTRIES).with_limit(i as u64) } else { rule }
        })
        .collect();
    let json = serde_json::to_string(&rules).unwrap();
    let back: Vec<FaultRule> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rules);
    for rule in &rules {
        let one = serde_json::to_value(rule).unwrap();
        assert_eq!(one["fault"]["kind"], rule.fault.kind());
    }

    let example = r#"{"operation":"DescribeImageUsageReports","fault":{"kind":"throttle"},"share":0.5,"limit":null}"#;
    let rule: FaultRule = serde_json::from_str(example).unwrap();
    assert_eq!(rule, FaultRule::new(Fault::Throttle).on(REPORTS).with_share(0.5));
    assert_eq!(serde_json::to_string(&rule).unwrap(), example);
    let short: FaultRule = serde_json::from_str(r#"{"fault":{"kind":"latency","millis":5}}"#).unwrap();
    assert_eq!(short, FaultRule::new(Fault::Latency { millis: 5 }));
    let value: FaultRule =
        serde_json::from_str(r#"{"fault":{"kind":"usage_count","value":-9223372036854775808}}"#).unwrap();
    assert_eq!(value.fault, Fault::UsageCount { value: i64::MIN });

    for bad in [
        r#"{"fault":{"kind":"throttle"},"shar":0.5}"#,
        r#"{"fault":{"kind":"nope"}}"#,
        r#"{"fault":{"kind":"latency"}}"#,
        r#"{"fault":{"kind":"latency","millis":-1}}"#,
        r#"{"operation":"X"}"#,
    ] {
        assert!(serde_json::from_str::<FaultRule>(bad).is_err(), "{bad}");
    }
    assert!(FaultRule::new(Fault::Throttle).with_share(1.5).validate().is_err());
    assert!(FaultRule::new(Fault::Throttle).with_share(f64::NAN).validate().is_err());
    assert!(FaultRule::new(Fault::Throttle).on("").validate().is_err());
    assert!(FaultRule::new(Fault::Throttle).with_share(0.0).validate().is_ok());
}

#[test]
fn request_times_are_kept_per_operation_and_bounded() {
    let sim = sim_with(vec![FaultRule::new(Fault::Throttle).on(REPORTS)]);
    for _ in 0..3 {
        call(&sim, &[("Action", REPORTS)]);
    }
    call(&sim, &[("Action", "DescribeImages")]);
    let times = sim.request_times(REPORTS);
    assert_eq!(times.len(), 3);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(sim.request_times("DescribeImages").len(), 1);
    assert!(sim.request_times("Nope").is_empty());

    let mut state = State::new(SimConfig::default());
    let caller = state.caller(None);
    for _ in 0..MAX_REQUEST_TIMES + 5 {
        state.count_request("X", &caller);
    }
    assert_eq!(state.request_times("X").len(), MAX_REQUEST_TIMES);
    assert_eq!(state.request_counts().get("X"), Some(&(MAX_REQUEST_TIMES as u64 + 5)));
}
