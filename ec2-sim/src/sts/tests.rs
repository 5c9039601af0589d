//! STS and owner attribution on `Simulator::answer_now`, with the `Authorization` header a signed request carries:
//! which owner's data a key sees, what `AssumeRole` grants and answers, and the library methods that change images.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::api::tests::{shape, texts};
use crate::api::{ApiResponse, Service};
use crate::config::{RoleSpec, SimConfig};
use crate::dataset::DatasetSpec;
use crate::fault::{Fault, FaultRule};
use crate::ids::account_of_access_key;
use crate::sim::Simulator;
use crate::xml::assert_well_formed;

const A: &str = "111111111111";
const B: &str = "222222222222";
/// Has a role but no dataset.
const C: &str = "333333333333";
const ROLE_B: &str = "arn:aws:iam::222222222222:role/ami-usage";
const ROLE_B_STRICT: &str = "arn:aws:iam::222222222222:role/team/ami-usage-strict";
const ROLE_C: &str = "arn:aws:iam::333333333333:role/nothing";
const EXTERNAL_ID: &str = "ext-123";
/// A key AssumeRole never issued: the primary owner's.
const BASE_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn config() -> SimConfig {
    let dataset = DatasetSpec::default();
    SimConfig {
        extra_owners: vec![dataset.for_owner(B)],
        roles: vec![
            RoleSpec::new(ROLE_B),
            RoleSpec::new(ROLE_B_STRICT).with_external_id(EXTERNAL_ID),
            RoleSpec::new(ROLE_C),
        ],
        dataset,
        pending_for: Duration::ZERO,
        ..SimConfig::default()
    }
}

fn sim() -> Simulator {
    Simulator::new(config())
}

fn authorization(key: &str, region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={key}/20261126/{region}/{service}/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef"
    )
}

/// A request signed with `key` for `region` (None: unsigned).
fn send(sim: &Simulator, signed: Option<(&str, &str, &str)>, version: &str, pairs: &[(&str, &str)]) -> ApiResponse {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("Version", version);
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let header = signed.map(|(key, region, service)| authorization(key, region, service));
    let resp = sim.answer_now(ser.finish().as_bytes(), header.as_deref()).response;
    assert_well_formed(&resp.body);
    resp
}

fn ec2(sim: &Simulator, key: &str, pairs: &[(&str, &str)]) -> ApiResponse {
    send(sim, Some((key, "us-east-1", "ec2")), "2016-11-15", pairs)
}

fn ec2_ok(sim: &Simulator, key: &str, pairs: &[(&str, &str)]) -> String {
    let resp = ec2(sim, key, pairs);
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

fn code(resp: &ApiResponse) -> String {
    texts(&resp.body, "Code").pop().unwrap_or_default()
}

fn sts(sim: &Simulator, key: &str, pairs: &[(&str, &str)]) -> ApiResponse {
    let resp = send(sim, Some((key, "us-east-1", "sts")), "2011-06-15", pairs);
    assert_eq!(resp.service, Service::Sts);
    resp
}

fn assume_role(sim: &Simulator, role: &str, external_id: Option<&str>) -> ApiResponse {
    let mut pairs = vec![("Action", "AssumeRole"), ("RoleArn", role), ("RoleSessionName", "exporter")];
    if let Some(id) = external_id {
        pairs.push(("ExternalId", id));
    }
    sts(sim, BASE_KEY, &pairs)
}

/// The access key ID of a granted `AssumeRole`.
fn key_for(sim: &Simulator, role: &str, external_id: Option<&str>) -> String {
    let resp = assume_role(sim, role, external_id);
    assert_eq!(resp.status, 200, "{}", resp.body);
    texts(&resp.body, "AccessKeyId").pop().expect("AccessKeyId")
}

fn image_ids(sim: &Simulator, key: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut all = vec![("Action", "DescribeImages")];
    all.extend_from_slice(pairs);
    texts(&ec2_ok(sim, key, &all), "imageId")
}

#[test]
fn assume_role_answers_as_sts_does() {
    let sim = sim();
    let before = SystemTime::now();
    let resp = assume_role(&sim, ROLE_B, None);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body.contains("<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
    assert_eq!(
        shape(&resp.body),
        [
            "AssumeRoleResponse",
            "AssumeRoleResponse/AssumeRoleResult",
            "AssumeRoleResponse/AssumeRoleResult/AssumedRoleUser",
            "AssumeRoleResponse/AssumeRoleResult/AssumedRoleUser/AssumedRoleId",
            "AssumeRoleResponse/AssumeRoleResult/AssumedRoleUser/Arn",
            "AssumeRoleResponse/AssumeRoleResult/Credentials",
            "AssumeRoleResponse/AssumeRoleResult/Credentials/AccessKeyId",
            "AssumeRoleResponse/AssumeRoleResult/Credentials/SecretAccessKey",
            "AssumeRoleResponse/AssumeRoleResult/Credentials/SessionToken",
            "AssumeRoleResponse/AssumeRoleResult/Credentials/Expiration",
            "AssumeRoleResponse/ResponseMetadata",
            "AssumeRoleResponse/ResponseMetadata/RequestId",
        ]
    );
    assert_eq!(texts(&resp.body, "RequestId"), vec![resp.request_id.clone()]);
    assert_eq!(texts(&resp.body, "Arn"), vec!["arn:aws:sts::222222222222:assumed-role/ami-usage/exporter"]);
    let role_id = texts(&resp.body, "AssumedRoleId").pop().unwrap();
    assert!(role_id.starts_with("AROA") && role_id.ends_with(":exporter") && role_id.len() == 21 + 9, "{role_id}");
    let key = texts(&resp.body, "AccessKeyId").pop().unwrap();
    assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
    assert_eq!(account_of_access_key(&key).as_deref(), Some(B), "the key encodes its account as AWS's do");
    assert_eq!(texts(&resp.body, "SecretAccessKey")[0].len(), 40);
    assert!(texts(&resp.body, "SessionToken")[0].len() > 100);
    let expiration = crate::timefmt::parse(&texts(&resp.body, "Expiration")[0]).unwrap();
    assert!(texts(&resp.body, "Expiration")[0].ends_with('Z'));
    let lifetime = expiration.duration_since(before).unwrap();
    assert!(lifetime > Duration::from_secs(3590) && lifetime <= Duration::from_secs(3601), "{lifetime:?}");

    // DurationSeconds is honoured, and every call gets a new key.
    let resp = sts(
        &sim,
        BASE_KEY,
        &[("Action", "AssumeRole"), ("RoleArn", ROLE_B), ("RoleSessionName", "s2"), ("DurationSeconds", "900")],
    );
    let expiration = crate::timefmt::parse(&texts(&resp.body, "Expiration")[0]).unwrap();
    assert!(expiration.duration_since(before).unwrap() <= Duration::from_secs(901));
    let keys: BTreeSet<String> = (0..50).map(|_| key_for(&sim, ROLE_B, None)).collect();
    assert_eq!(keys.len(), 50);
    assert!(!keys.contains(&key));
    // A role with a path: the assumed-role ARN names the role without it.
    let resp = assume_role(&sim, ROLE_B_STRICT, Some(EXTERNAL_ID));
    assert_eq!(texts(&resp.body, "Arn"), vec!["arn:aws:sts::222222222222:assumed-role/ami-usage-strict/exporter"]);
}

#[test]
fn unknown_roles_and_wrong_external_ids_are_denied() {
    let sim = sim();
    let denied = |resp: ApiResponse, role: &str| {
        assert_eq!(resp.status, 403, "{}", resp.body);
        assert_eq!(
            shape(&resp.body),
            [
                "ErrorResponse",
                "ErrorResponse/Error",
                "ErrorResponse/Error/Type",
                "ErrorResponse/Error/Code",
                "ErrorResponse/Error/Message",
                "ErrorResponse/RequestId"
            ]
        );
        assert!(resp.body.contains("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
        assert_eq!(texts(&resp.body, "Type"), vec!["Sender"]);
        assert_eq!(code(&resp), "AccessDenied");
        assert_eq!(
            texts(&resp.body, "Message"),
            vec![format!(
                "User: arn:aws:iam::111111111111:user/x is not authorized to perform: sts:AssumeRole on resource: {role}"
            )]
        );
        assert_eq!(texts(&resp.body, "RequestId"), vec![resp.request_id]);
    };
    denied(assume_role(&sim, "arn:aws:iam::222222222222:role/other", None), "arn:aws:iam::222222222222:role/other");
    denied(
        assume_role(&sim, "arn:aws:iam::444444444444:role/ami-usage", None),
        "arn:aws:iam::444444444444:role/ami-usage",
    );
    denied(assume_role(&sim, ROLE_B_STRICT, None), ROLE_B_STRICT);
    denied(assume_role(&sim, ROLE_B_STRICT, Some("ext-124")), ROLE_B_STRICT);
    assert_eq!(assume_role(&sim, ROLE_B_STRICT, Some(EXTERNAL_ID)).status, 200);
    // A role whose trust policy has no external ID condition ignores one that is sent.
    assert_eq!(assume_role(&sim, ROLE_B, Some("anything")).status, 200);

    // Every call is recorded, granted or not.
    let calls = sim.assume_role_calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[2], (ROLE_B_STRICT.to_string(), None, "exporter".to_string()));
    assert_eq!(calls[4], (ROLE_B_STRICT.to_string(), Some(EXTERNAL_ID.to_string()), "exporter".to_string()));

    // Chained: a principal from another role is named as that assumed role.
    let key_b = key_for(&sim, ROLE_B, None);
    let resp = sts(&sim, &key_b, &[("Action", "AssumeRole"), ("RoleArn", ROLE_B_STRICT), ("RoleSessionName", "x1")]);
    assert!(texts(&resp.body, "Message")[0].starts_with("User: arn:aws:sts::222222222222:assumed-role/ami-usage/"));
}

#[test]
fn assume_role_validates_its_parameters() {
    let sim = sim();
    let invalid = |pairs: &[(&str, &str)], member: &str| {
        let mut all = vec![("Action", "AssumeRole")];
        all.extend_from_slice(pairs);
        let resp = sts(&sim, BASE_KEY, &all);
        assert_eq!((resp.status, code(&resp).as_str()), (400, "ValidationError"), "{pairs:?}: {}", resp.body);
        assert!(texts(&resp.body, "Message")[0].contains(member), "{}", resp.body);
    };
    invalid(&[("RoleSessionName", "s1")], "roleArn");
    invalid(&[("RoleArn", "arn:aws:iam::1:x"), ("RoleSessionName", "s1")], "roleArn");
    invalid(&[("RoleArn", ROLE_B)], "roleSessionName");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s")], "roleSessionName");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "has space")], "roleSessionName");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", &"s".repeat(65))], "roleSessionName");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s1"), ("DurationSeconds", "899")], "durationSeconds");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s1"), ("DurationSeconds", "x")], "durationSeconds");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s1"), ("DurationSeconds", "43201")], "MaxSessionDuration");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s1"), ("ExternalId", "x")], "externalId");
    invalid(&[("RoleArn", ROLE_B), ("RoleSessionName", "s1"), ("ExternalId", "a b")], "externalId");
    assert!(sim.assume_role_calls().is_empty(), "malformed requests are not recorded");

    let resp = sts(&sim, BASE_KEY, &[("Action", "GetSessionToken")]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidAction"));
    let resp = sts(&sim, BASE_KEY, &[]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "MissingAction"));
    // STS's version alone makes a request STS's, whatever it is signed for.
    let resp = send(&sim, None, "2011-06-15", &[("Action", "DescribeImages")]);
    assert_eq!((resp.status, code(&resp).as_str(), resp.service), (400, "InvalidAction", Service::Sts));
}

#[test]
fn get_caller_identity_names_the_key_owner() {
    let sim = sim();
    let identity = |key: &str| {
        let body = sts(&sim, key, &[("Action", "GetCallerIdentity")]).body;
        (texts(&body, "Account").pop().unwrap(), texts(&body, "Arn").pop().unwrap(), texts(&body, "UserId")[0].clone())
    };
    let (account, arn, user) = identity(BASE_KEY);
    assert_eq!((account.as_str(), arn.as_str()), (A, "arn:aws:iam::111111111111:user/x"));
    assert!(user.starts_with("AIDA"));
    let (account, arn, user) = identity(&key_for(&sim, ROLE_B, None));
    assert_eq!((account.as_str(), arn.as_str()), (B, "arn:aws:sts::222222222222:assumed-role/ami-usage/exporter"));
    assert!(user.starts_with("AROA") && user.ends_with(":exporter"));
}

#[test]
fn the_access_key_chooses_the_owner() {
    let sim = sim();
    assert_eq!(sim.owners(), [A, B, C]);
    let key_b = key_for(&sim, ROLE_B, None);
    let a_images = sim.image_ids();
    let b_images = sim.image_ids_of(B);
    assert_eq!(sim.image_ids_of(A), a_images);
    assert_eq!(b_images.len(), 5);
    assert!(a_images.iter().all(|i| !b_images.contains(i)), "owners share no image IDs");

    // Any key STS did not issue is the primary owner's, and so is an unsigned request.
    assert_eq!(image_ids(&sim, BASE_KEY, &[]), a_images);
    assert_eq!(image_ids(&sim, "AKIAANYTHINGELSE0000", &[("Owner.1", "self")]), a_images);
    let unsigned = send(&sim, None, "2016-11-15", &[("Action", "DescribeImages")]);
    assert_eq!(texts(&unsigned.body, "imageId"), a_images);

    let body = ec2_ok(&sim, &key_b, &[("Action", "DescribeImages"), ("Owner.1", "self")]);
    assert_eq!(texts(&body, "imageId"), b_images);
    assert!(texts(&body, "imageOwnerId").iter().all(|o| o == B));
    assert_eq!(texts(&body, "name")[0], "golden-base-1");
    assert_eq!(image_ids(&sim, &key_b, &[("Owner.1", B)]), b_images);
    assert!(image_ids(&sim, &key_b, &[("Owner.1", A)]).is_empty(), "images are not shared");
    assert!(image_ids(&sim, BASE_KEY, &[("Owner.1", B)]).is_empty());

    // Reports, entries and ground truth are B's own.
    let body = ec2_ok(&sim, &key_b, &[("Action", "DescribeImageUsageReports")]);
    let b_reports: Vec<String> = sim.reports_of(B).iter().map(|r| r.id.clone()).collect();
    assert_eq!(texts(&body, "reportId"), b_reports);
    let a_reports: BTreeSet<String> = sim.reports().iter().map(|r| r.id.clone()).collect();
    assert!(b_reports.iter().all(|r| !a_reports.contains(r)), "owners share no report IDs");
    let truth = sim.ground_truth_of(B);
    assert!(!truth.is_empty() && truth.iter().all(|t| b_images.contains(&t.image_id)));
    assert_ne!(truth, sim.ground_truth());
    assert_ne!(sim.account_ids_of(B), sim.account_ids());
    let report = &truth[0].report_id;
    let body = ec2_ok(&sim, &key_b, &[("Action", "DescribeImageUsageReportEntries"), ("ReportId.1", report)]);
    let counts: Vec<i64> = texts(&body, "usageCount").iter().map(|c| c.parse().unwrap()).collect();
    let expected: Vec<i64> = truth.iter().filter(|t| &t.report_id == report).map(|t| t.usage_count).collect();
    assert_eq!(counts, expected);

    // Keys stay valid however far the simulated clock moves (see README).
    sim.advance_clock(Duration::from_secs(2 * 86_400));
    assert_eq!(image_ids(&sim, &key_b, &[]), b_images);
}

#[test]
fn one_owner_cannot_see_or_touch_anothers_reports() {
    let sim = sim();
    let key_b = key_for(&sim, ROLE_B, None);
    let a_image = sim.image_ids()[0].clone();
    let a_report = sim.ground_truth()[0].report_id.clone();
    let a_before = sim.reports();

    let resp = ec2(&sim, &key_b, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &a_report)]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidParameterValue"));
    let resp = ec2(&sim, &key_b, &[("Action", "DescribeImageUsageReportEntries"), ("ReportId.1", &a_report)]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidParameterValue"));
    for action in ["DescribeImageUsageReports", "DescribeImageUsageReportEntries"] {
        let body = ec2_ok(&sim, &key_b, &[("Action", action), ("ImageId.1", &a_image)]);
        assert!(!body.contains("<item>"), "{action} by B for A's image: {body}");
    }
    let resp = ec2(&sim, &key_b, &[("Action", "DeleteImageUsageReport"), ("ReportId", &a_report)]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidParameterValue"));
    let resp = ec2(
        &sim,
        &key_b,
        &[("Action", "CreateImageUsageReport"), ("ImageId", &a_image), ("ResourceType.1.ResourceType", "ec2:Instance")],
    );
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidAMIID.NotFound"));
    let resp = ec2(&sim, &key_b, &[("Action", "DescribeImages"), ("ImageId.1", &a_image)]);
    assert_eq!((resp.status, code(&resp).as_str()), (400, "InvalidAMIID.NotFound"));
    assert_eq!(sim.reports(), a_before, "A's reports are untouched");

    // B creates a report for its own image: only B sees it, and idempotency tokens are per owner.
    let b_image = sim.image_ids_of(B)[1].clone();
    let create = |key: &str, image: &str| {
        ec2(
            &sim,
            key,
            &[
                ("Action", "CreateImageUsageReport"),
                ("ImageId", image),
                ("ResourceType.1.ResourceType", "ec2:Instance"),
                ("ClientToken", "same-token"),
            ],
        )
    };
    let b_report = texts(&create(&key_b, &b_image).body, "reportId").pop().expect("created");
    assert!(sim.reports_of(B).iter().any(|r| r.id == b_report));
    assert!(!sim.reports().iter().any(|r| r.id == b_report));
    let a_created = create(BASE_KEY, &a_image);
    assert_eq!(a_created.status, 200, "{}", a_created.body);
    assert_ne!(texts(&a_created.body, "reportId").pop().unwrap(), b_report);
    let resp = ec2(&sim, BASE_KEY, &[("Action", "DescribeImageUsageReports"), ("ReportId.1", &b_report)]);
    assert_eq!(code(&resp), "InvalidParameterValue");
    // Test-side methods find the owner by ID.
    sim.fail_report(&b_report, "broken");
    sim.expire_report(&b_report);
    assert!(!sim.reports_of(B).iter().any(|r| r.id == b_report));
}

#[test]
fn a_role_without_a_dataset_owns_nothing() {
    let sim = sim();
    let key_c = key_for(&sim, ROLE_C, None);
    assert!(image_ids(&sim, &key_c, &[]).is_empty());
    assert!(sim.image_ids_of(C).is_empty() && sim.ground_truth_of(C).is_empty() && sim.account_ids_of(C).is_empty());
    let body = ec2_ok(&sim, &key_c, &[("Action", "DescribeImageUsageReports")]);
    assert!(body.contains("<imageUsageReportSet/>"));
    let image = sim.register_image(C, "solo", &[("Team", "data")]);
    assert_eq!(image_ids(&sim, &key_c, &[]), vec![image]);
}

#[test]
#[should_panic(expected = "not an owner account")]
fn unknown_owners_are_a_test_mistake() {
    sim().image_ids_of("999999999999");
}

#[test]
#[should_panic(expected = "invalid simulator configuration")]
fn malformed_roles_are_refused() {
    Simulator::new(SimConfig { roles: vec![RoleSpec::new("arn:aws:iam::2222:role/x")], ..SimConfig::default() });
}

#[test]
fn owners_with_the_same_seed_still_have_their_own_ids() {
    let same_seed = DatasetSpec { owner_account: B.to_string(), ..DatasetSpec::default() };
    let sim = Simulator::new(SimConfig { extra_owners: vec![same_seed], ..SimConfig::default() });
    let a: BTreeSet<String> = sim.image_ids().into_iter().chain(sim.reports().into_iter().map(|r| r.id)).collect();
    let b: BTreeSet<String> =
        sim.image_ids_of(B).into_iter().chain(sim.reports_of(B).into_iter().map(|r| r.id)).collect();
    assert_eq!(a.len(), b.len());
    assert!(a.is_disjoint(&b));
    // The primary owner's IDs are those of a simulator without extra owners.
    assert_eq!(sim.image_ids(), Simulator::new(SimConfig::default()).image_ids());
}

#[test]
fn images_can_be_registered_and_deregistered() {
    let sim = sim();
    let key_b = key_for(&sim, ROLE_B, None);
    let new = sim.register_image(B, "golden-base-new", &[("Team", "platform"), ("Channel", "canary")]);
    assert!(crate::ids::is_image_id(&new));
    assert_eq!(new, Simulator::new(config()).register_image(B, "other name", &[]), "IDs are deterministic");
    assert_eq!(sim.image_ids_of(B).last(), Some(&new));
    assert!(!sim.image_ids().contains(&new));
    assert_eq!(
        image_ids(&sim, &key_b, &[("Filter.1.Name", "tag:Channel"), ("Filter.1.Value.1", "canary")]),
        [new.as_str()]
    );
    assert_eq!(image_ids(&sim, &key_b, &[("Filter.1.Name", "name"), ("Filter.1.Value.1", "*-new")]), [new.as_str()]);
    let body = ec2_ok(&sim, &key_b, &[("Action", "DescribeImages"), ("ImageId.1", &new)]);
    assert_eq!(texts(&body, "key"), ["Team", "Channel"], "exactly the given tags");
    // No usage and no reports yet; then usage, and a report that holds it.
    let body = ec2_ok(&sim, &key_b, &[("Action", "DescribeImageUsageReports"), ("ImageId.1", &new)]);
    assert!(body.contains("<imageUsageReportSet/>"));
    let consumer = sim.account_ids_of(B)[0].clone();
    sim.set_usage(&new, &consumer, "ec2:Instance", 42);
    let created = ec2_ok(
        &sim,
        &key_b,
        &[("Action", "CreateImageUsageReport"), ("ImageId", &new), ("ResourceType.1.ResourceType", "ec2:Instance")],
    );
    let report = texts(&created, "reportId").pop().unwrap();
    let truth: Vec<_> = sim.ground_truth_of(B).into_iter().filter(|t| t.image_id == new).collect();
    assert_eq!(truth.len(), 1);
    assert_eq!(
        (truth[0].report_id.as_str(), truth[0].account_id.as_str(), truth[0].usage_count),
        (report.as_str(), consumer.as_str(), 42)
    );

    // Deregistering: gone from DescribeImages, no new reports, but the old ones stay.
    let old = sim.image_ids()[0].clone();
    let reports_before = sim.reports().iter().filter(|r| r.image_id == old).count();
    sim.deregister_image(&old);
    assert!(!sim.image_ids().contains(&old));
    assert!(!image_ids(&sim, BASE_KEY, &[]).contains(&old));
    let resp = ec2(&sim, BASE_KEY, &[("Action", "DescribeImages"), ("ImageId.1", &old)]);
    assert_eq!(code(&resp), "InvalidAMIID.NotFound");
    let resp = ec2(
        &sim,
        BASE_KEY,
        &[("Action", "CreateImageUsageReport"), ("ImageId", &old), ("ResourceType.1.ResourceType", "ec2:Instance")],
    );
    assert_eq!(code(&resp), "InvalidAMIID.NotFound");
    let body = ec2_ok(&sim, BASE_KEY, &[("Action", "DescribeImageUsageReports"), ("ImageId.1", &old)]);
    assert_eq!(texts(&body, "reportId").len(), reports_before);
    assert!(sim.ground_truth().iter().any(|t| t.image_id == old));
    // A new image never takes a deregistered one's ID.
    let again = sim.register_image(A, "golden-base-1", &[]);
    assert!(again != old && !sim.image_ids_of(B).contains(&again));
}

#[test]
#[should_panic(expected = "is not an image of this simulator")]
fn deregistered_images_have_no_usage() {
    let sim = sim();
    let image = sim.image_ids()[0].clone();
    sim.deregister_image(&image);
    sim.set_usage(&image, "123456789012", "ec2:Instance", 1);
}

#[test]
fn test_methods_work_for_any_owner() {
    let sim = sim();
    let image = sim.image_ids_of(B)[0].clone();
    let consumer = "123412341234";
    sim.set_usage(&image, consumer, "ec2:Instance", 7);
    let report = sim.add_report(&image);
    assert!(sim.reports_of(B).iter().any(|r| r.id == report));
    let mine = |sim: &Simulator| sim.ground_truth_of(B).into_iter().filter(|t| t.account_id == consumer).count();
    assert_eq!(mine(&sim), 1);
    sim.remove_account(consumer);
    sim.add_report(&image);
    assert_eq!(mine(&sim), 0);
}

#[test]
fn requests_are_counted_per_account_and_region() {
    let sim = sim();
    let key_b = key_for(&sim, ROLE_B, None);
    let in_region = |key: &str, region: &str, action: &str| {
        send(&sim, Some((key, region, "ec2")), "2016-11-15", &[("Action", action)]);
    };
    in_region(BASE_KEY, "us-east-1", "DescribeImages");
    in_region(BASE_KEY, "eu-west-1", "DescribeImages");
    in_region(&key_b, "eu-west-1", "DescribeImages");
    in_region(&key_b, "eu-west-1", "DescribeImages");
    in_region(&key_b, "ap-south-1", "DescribeImageUsageReports");
    send(&sim, None, "2016-11-15", &[("Action", "DescribeImages")]);
    let row = |account: &str, region: &str, action: &str, n: u64| {
        ((account.to_string(), region.to_string(), action.to_string()), n)
    };
    let expected: BTreeMap<_, _> = [
        row(A, "us-east-1", "AssumeRole", 1),
        row(A, "us-east-1", "DescribeImages", 1),
        row(A, "eu-west-1", "DescribeImages", 1),
        row(A, "(none)", "DescribeImages", 1),
        row(B, "eu-west-1", "DescribeImages", 2),
        row(B, "ap-south-1", "DescribeImageUsageReports", 1),
    ]
    .into();
    assert_eq!(sim.request_counts_by(), expected);
    assert_eq!(sim.request_counts().get("DescribeImages"), Some(&5));
}

/// A valid request of each EC2 operation, for the caller's own data.
fn every_operation(image: &str, report: &str) -> Vec<Vec<(&'static str, String)>> {
    let p = |k: &'static str, v: &str| (k, v.to_string());
    vec![
        vec![p("Action", "DescribeImageUsageReports"), p("ImageId.1", image)],
        vec![p("Action", "DescribeImageUsageReportEntries"), p("ReportId.1", report)],
        vec![
            p("Action", "CreateImageUsageReport"),
            p("ImageId", image),
            p("ResourceType.1.ResourceType", "ec2:Instance"),
        ],
        vec![p("Action", "DeleteImageUsageReport"), p("ReportId", report)],
        vec![p("Action", "DescribeImages"), p("Owner.1", "self")],
    ]
}

#[test]
fn dry_run_on_every_operation_and_owner() {
    let sim = sim();
    let key_b = key_for(&sim, ROLE_B, None);
    for (key, owner) in [(BASE_KEY, A), (key_b.as_str(), B)] {
        let image = sim.image_ids_of(owner)[0].clone();
        let report = sim.ground_truth_of(owner)[0].report_id.clone();
        let before = sim.reports_of(owner);
        for request in every_operation(&image, &report) {
            let mut pairs: Vec<(&str, &str)> = request.iter().map(|(k, v)| (*k, v.as_str())).collect();
            pairs.push(("DryRun", "true"));
            let resp = ec2(&sim, key, &pairs);
            assert_eq!((resp.status, code(&resp).as_str()), (412, "DryRunOperation"), "{pairs:?}");
            assert_eq!(texts(&resp.body, "Message"), ["Request would have succeeded, but DryRun flag is set."]);
            // Parameters are validated first.
            pairs.push(("MaxResults", "0"));
            pairs.push(("ImageId.201", "junk"));
            pairs.retain(|(k, _)| !matches!(*k, "ImageId" | "ReportId"));
            let resp = ec2(&sim, key, &pairs);
            assert_eq!(resp.status, 400, "{pairs:?}: {}", resp.body);
        }
        assert_eq!(sim.reports_of(owner), before, "dry runs change nothing");
    }

    // The Unauthorized fault stands in front: even a dry run gets 403, naming the caller.
    sim.set_faults(vec![FaultRule::new(Fault::Unauthorized)]);
    let image = sim.image_ids_of(B)[0].clone();
    let report = sim.ground_truth_of(B)[0].report_id.clone();
    for request in every_operation(&image, &report) {
        let mut pairs: Vec<(&str, &str)> = request.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.push(("DryRun", "true"));
        let resp = ec2(&sim, &key_b, &pairs);
        assert_eq!((resp.status, code(&resp).as_str()), (403, "UnauthorizedOperation"), "{pairs:?}");
        let message = texts(&resp.body, "Message").pop().unwrap();
        assert!(message.contains("User: arn:aws:sts::222222222222:assumed-role/ami-usage/exporter"), "{message}");
        assert!(message.ends_with(&format!("ec2:{}", pairs[0].1)), "{message}");
    }
    // A rule for every operation leaves STS alone.
    assert_eq!(assume_role(&sim, ROLE_B, None).status, 200);
}

#[test]
fn faults_reach_sts_only_when_they_name_it() {
    let sim = sim();
    sim.set_faults(vec![FaultRule::new(Fault::Throttle)]);
    assert_eq!(assume_role(&sim, ROLE_B, None).status, 200);
    let refused = |fault: Fault, status: u16, code_: &str| {
        sim.set_faults(vec![FaultRule::new(fault).on("AssumeRole").with_limit(1)]);
        let resp = assume_role(&sim, ROLE_B, None);
        assert_eq!((resp.status, code(&resp).as_str()), (status, code_), "{}", resp.body);
        assert!(resp.body.contains("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"));
        assert_eq!(assume_role(&sim, ROLE_B, None).status, 200, "the limit is spent");
        resp
    };
    let throttled = refused(Fault::Throttle, 400, "Throttling");
    assert_eq!(texts(&throttled.body, "Message"), ["Rate exceeded"]);
    let failed = refused(Fault::InternalError, 500, "InternalFailure");
    assert_eq!(texts(&failed.body, "Type"), ["Receiver"]);
    refused(Fault::AuthFailure, 403, "InvalidClientTokenId");
    let denied = refused(Fault::Unauthorized, 403, "AccessDenied");
    assert!(texts(&denied.body, "Message")[0].ends_with("is not authorized to perform: sts:AssumeRole"));
    assert_eq!(sim.fault_hits().get("throttle"), Some(&1));
}
