//! `DescribeImageReferences`: parameter validation, what each query lists (against `reference_counts`), pages,
//! ARNs by Region, `add_reference`, and the fault layer in front of it.

use std::collections::BTreeMap;

use super::{call, err, fixture, ok, page_bodies, shape, sim, texts};
use crate::config::SimConfig;
use crate::dataset::DatasetSpec;
use crate::fault::{Fault, FaultRule};
use crate::references::{ReferenceKind, ReferenceQuery, ReferenceTypeQuery, ReferenceView};
use crate::sim::Simulator;

const ACTION: (&str, &str) = ("Action", "DescribeImageReferences");
const ALL: (&str, &str) = ("IncludeAllResourceTypes", "true");

fn with_ids<'a>(ids: &'a [String], extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
    let mut pairs = vec![(ACTION.0.to_string(), ACTION.1.to_string())];
    pairs.extend(ids.iter().enumerate().map(|(i, id)| (format!("ImageId.{}", i + 1), id.clone())));
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    pairs
}

fn borrow(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// (imageId, resourceType, arn) of every item of every page.
fn all_pages(sim: &Simulator, pairs: &[(String, String)], max: Option<usize>) -> Vec<(String, String, String)> {
    page_bodies(sim, &borrow(pairs), "imageId", max)
        .iter()
        .flat_map(|body| {
            let items: Vec<_> = texts(body, "imageId")
                .into_iter()
                .zip(texts(body, "resourceType"))
                .zip(texts(body, "arn"))
                .map(|((i, t), a)| (i, t, a))
                .collect();
            items
        })
        .collect()
}

fn counts(items: &[(String, String, String)]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for (image, rtype, _) in items {
        *out.entry((image.clone(), rtype.clone())).or_insert(0) += 1;
    }
    out
}

/// What `IncludeAllResourceTypes=true` lists: every instance, launch templates within the newest 10 versions.
fn listed_by_default(v: &ReferenceView) -> bool {
    v.launch_template_depth.is_none_or(|d| d <= crate::references::DEFAULT_REFERENCE_VERSION_DEPTH)
}

fn code(sim: &Simulator, pairs: &[(String, String)]) -> (u16, String) {
    err(sim, &borrow(pairs))
}

#[test]
fn parameter_validation() {
    let sim = sim();
    let ids = sim.image_ids();
    let one = &ids[..1];
    let ipv = (400, "InvalidParameterValue".to_string());
    let missing = (400, "MissingParameter".to_string());
    assert_eq!(err(&sim, &[ACTION, ALL]), missing, "no ImageId");
    assert_eq!(code(&sim, &with_ids(one, &[])), missing, "neither IncludeAllResourceTypes nor ResourceType");
    assert_eq!(code(&sim, &with_ids(one, &[("IncludeAllResourceTypes", "false")])), missing);
    assert_eq!(code(&sim, &with_ids(one, &[("IncludeAllResourceTypes", "maybe")])), ipv);
    let eleven: Vec<String> = (0..11).map(|i| format!("ami-{i:017x}")).collect();
    assert_eq!(code(&sim, &with_ids(&eleven, &[ALL])), ipv, "more than 10 IDs");
    ok(&sim, &borrow(&with_ids(&eleven[..10], &[ALL])));
    assert_eq!(
        code(&sim, &with_ids(&[ids[0].clone(), "ami-123".into()], &[ALL])),
        (400, "InvalidAMIID.Malformed".into())
    );
    let rt = |t: &'static str| ("ResourceType.1.ResourceType", t);
    let opt = |n: &'static str| ("ResourceType.1.ResourceTypeOption.1.OptionName", n);
    let val = |k: usize, v: &'static str| -> (&'static str, &'static str) {
        let key: &'static str = [
            "",
            "ResourceType.1.ResourceTypeOption.1.OptionValue.1",
            "ResourceType.1.ResourceTypeOption.1.OptionValue.2",
        ][k];
        (key, v)
    };
    for bad in [
        vec![rt("ec2:Volume")],
        vec![rt("ec2:instance")],
        vec![rt("ec2:LaunchTemplate"), opt("state-name"), val(1, "running")],
        vec![rt("ec2:Instance"), opt("version-depth"), val(1, "5")],
        vec![rt("ssm:Parameter"), opt("version-depth"), val(1, "5")],
        vec![rt("ec2:Instance"), opt("color"), val(1, "red")],
        vec![rt("ec2:Instance"), opt("state-name"), val(1, "running"), val(2, "sleeping")],
        vec![rt("ec2:Instance"), opt("state-name")],
        vec![rt("ec2:LaunchTemplate"), opt("version-depth"), val(1, "0")],
        vec![rt("ec2:LaunchTemplate"), opt("version-depth"), val(1, "10001")],
        vec![rt("ec2:LaunchTemplate"), opt("version-depth"), val(1, "ten")],
        vec![rt("ec2:LaunchTemplate"), opt("version-depth"), val(1, "3"), val(2, "4")],
        vec![rt("ec2:Instance"), ("ResourceType.2.ResourceType", "ec2:Instance")],
        vec![ALL, ("MaxResults", "4")],
        vec![ALL, ("MaxResults", "0")],
    ] {
        assert_eq!(code(&sim, &with_ids(one, &bad)), ipv, "{bad:?}");
    }
    assert_eq!(
        code(&sim, &with_ids(one, &[("ResourceType.1.ResourceTypeOption.1.OptionName", "state-name")])),
        missing
    );
    assert_eq!(
        code(&sim, &with_ids(one, &[rt("ec2:Instance"), val(1, "running")])),
        missing,
        "an option without a name"
    );
    for good in [
        vec![rt("ec2:LaunchTemplate"), opt("version-depth"), val(1, "10000")],
        vec![rt("ec2:Instance"), opt("state-name"), val(1, "running"), val(2, "stopped")],
        vec![ALL, ("MaxResults", "5")],
        vec![ALL, rt("imagebuilder:ContainerRecipe")],
    ] {
        ok(&sim, &borrow(&with_ids(one, &good)));
    }
    // DryRun after validation, before anything else.
    assert_eq!(code(&sim, &with_ids(one, &[ALL, ("DryRun", "true")])), (412, "DryRunOperation".into()));
    assert_eq!(code(&sim, &with_ids(one, &[("DryRun", "true")])), missing);
    // Unknown but well-formed IDs have no references.
    let body = ok(&sim, &borrow(&with_ids(&eleven[..3], &[ALL])));
    assert!(body.contains("<imageReferenceSet/>"), "{body}");
}

#[test]
fn each_query_lists_what_reference_counts_says() {
    let sim = Simulator::new(SimConfig {
        dataset: DatasetSpec { images: 10, ..DatasetSpec::default() },
        ..SimConfig::default()
    });
    let ids = sim.image_ids();
    let lt = |d: u32| ReferenceTypeQuery::new("ec2:LaunchTemplate").with_version_depth(d);
    let cases: Vec<(Vec<(&str, &str)>, ReferenceQuery)> = vec![
        (vec![ALL], ReferenceQuery::all()),
        (
            vec![("ResourceType.1.ResourceType", "ec2:Instance")],
            ReferenceQuery::of(vec![ReferenceTypeQuery::new("ec2:Instance")]),
        ),
        (
            vec![
                ("ResourceType.1.ResourceType", "ec2:Instance"),
                ("ResourceType.1.ResourceTypeOption.1.OptionName", "state-name"),
                ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "running"),
                ("ResourceType.1.ResourceTypeOption.1.OptionValue.2", "stopped"),
                ("ResourceType.2.ResourceType", "ssm:Parameter"),
            ],
            ReferenceQuery::of(vec![
                ReferenceTypeQuery::new("ec2:Instance").with_state_names(&["running", "stopped"]),
                ReferenceTypeQuery::new("ssm:Parameter"),
            ]),
        ),
        (vec![("ResourceType.1.ResourceType", "ec2:LaunchTemplate")], ReferenceQuery::of(vec![lt(10)])),
        (
            vec![
                ("ResourceType.1.ResourceType", "ec2:LaunchTemplate"),
                ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
                ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "10000"),
            ],
            ReferenceQuery::of(vec![lt(10_000)]),
        ),
        (
            vec![
                ALL,
                ("ResourceType.1.ResourceType", "ec2:LaunchTemplate"),
                ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
                ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "20"),
            ],
            ReferenceQuery { include_all_resource_types: true, resource_types: vec![lt(20)] },
        ),
    ];
    let all_counts = |q: &ReferenceQuery| sim.reference_counts(q);
    for (params, query) in &cases {
        let got = counts(&all_pages(&sim, &with_ids(&ids, params), None));
        assert_eq!(got, all_counts(query), "{params:?}");
    }
    // The default depth of 10 misses the deep launch templates that a depth of 10000 finds (image 0 has one).
    let lt_count = |q: &ReferenceQuery| all_counts(q).get(&(ids[0].clone(), "ec2:LaunchTemplate".into())).copied();
    assert!(lt_count(&ReferenceQuery::all()) < lt_count(&ReferenceQuery::of(vec![lt(10_000)])));
    // Image 3 has none; image 0 has every type.
    let every_type = crate::references::REFERENCE_RESOURCE_TYPES.iter().map(|t| ReferenceTypeQuery::new(t));
    let everything = all_counts(&ReferenceQuery::of(
        every_type.skip(2).chain([lt(10_000)]).chain([ReferenceTypeQuery::new("ec2:Instance")]).collect(),
    ));
    assert!(everything.keys().all(|(image, _)| image != &ids[3]));
    assert_eq!(everything.keys().filter(|(image, _)| image == &ids[0]).count(), 5);
    assert_eq!(everything.values().sum::<usize>(), sim.references().len());
}

#[test]
fn pages_of_ten_ids() {
    let sim = Simulator::new(SimConfig {
        dataset: DatasetSpec { images: 10, ..DatasetSpec::default() },
        ..SimConfig::default()
    });
    let ids = sim.image_ids();
    let pairs = with_ids(&ids, &[ALL]);
    let whole = all_pages(&sim, &pairs, None);
    assert!(whole.len() > 20, "{}", whole.len());
    // In the order of the request's IDs.
    let mut order: Vec<&String> = whole.iter().map(|(i, _, _)| i).collect();
    order.dedup();
    let expected: Vec<&String> = ids.iter().filter(|id| order.contains(id)).collect();
    assert_eq!(order, expected);
    for max in [5, 6, 7, whole.len() - 1, whole.len(), whole.len() + 1] {
        assert_eq!(all_pages(&sim, &pairs, Some(max)), whole, "MaxResults={max}");
    }
    // A token belongs to its query.
    let first = ok(&sim, &[&borrow(&pairs)[..], &[("MaxResults", "5")]].concat());
    let token = texts(&first, "nextToken").pop().unwrap();
    let other = with_ids(&ids[..9], &[ALL, ("NextToken", &token)]);
    assert_eq!(code(&sim, &other), (400, "InvalidPaginationToken".into()));
}

#[test]
fn arns_name_the_callers_account_and_region() {
    let sim = sim();
    let ids = sim.image_ids();
    let views = sim.references();
    let unsigned = all_pages(&sim, &with_ids(&ids, &[ALL]), None);
    let mut expected: Vec<String> = views.iter().filter(|v| listed_by_default(v)).map(|v| v.arn.clone()).collect();
    let mut got: Vec<String> = unsigned.iter().map(|(_, _, a)| a.clone()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert!(
        got.iter().all(|a| a.split(':').nth(3) == Some("us-east-1") && a.split(':').nth(4) == Some("111111111111"))
    );

    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in with_ids(&ids[..1], &[ALL, ("Version", "2016-11-15")]) {
        ser.append_pair(&k, &v);
    }
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/eu-west-1/ec2/aws4_request, SignedHeaders=host, \
                Signature=0";
    let answer = sim.answer_now(ser.finish().as_bytes(), Some(auth));
    let arns = texts(&answer.response.body, "arn");
    assert!(!arns.is_empty());
    let of_image: Vec<String> =
        views.iter().filter(|v| v.image_id == ids[0] && listed_by_default(v)).map(|v| v.arn_in("eu-west-1")).collect();
    assert_eq!(arns, of_image);
    assert_eq!(sim.request_counts_by().get(&("111111111111".into(), "eu-west-1".into(), ACTION.1.into())), Some(&1));
}

#[test]
fn added_references_and_deregistered_images() {
    let sim = sim();
    let ids = sim.image_ids();
    let foreign = "ami-0abcdef1234567890";
    let added = sim.add_reference("111111111111", foreign, ReferenceKind::Instance { state: "stopping".into() });
    assert!(added.arn.starts_with("arn:aws:ec2:us-east-1:111111111111:instance/i-"), "{}", added.arn);
    assert_eq!((added.instance_state.as_deref(), added.launch_template_depth), (Some("stopping"), None));
    let deep = sim.add_reference("111111111111", foreign, ReferenceKind::LaunchTemplate { depth: 42 });
    let recipe = sim.add_reference("111111111111", &ids[3], ReferenceKind::ImageRecipe);
    let param = sim.add_reference("111111111111", &ids[3], ReferenceKind::SsmParameter);
    assert!(recipe.arn.starts_with("arn:aws:imagebuilder:us-east-1:111111111111:image-recipe/"));
    assert!(param.arn.starts_with("arn:aws:ssm:us-east-1:111111111111:parameter/"));
    assert_eq!(&sim.references()[sim.references().len() - 4..], [added.clone(), deep.clone(), recipe, param]);
    let listed = all_pages(&sim, &with_ids(&[foreign.to_string()], &[ALL]), None);
    assert_eq!(listed, [(foreign.to_string(), "ec2:Instance".to_string(), added.arn.clone())], "depth 42 > 10");
    let deeper = with_ids(
        &[foreign.to_string()],
        &[
            ("ResourceType.1.ResourceType", "ec2:LaunchTemplate"),
            ("ResourceType.1.ResourceTypeOption.1.OptionName", "version-depth"),
            ("ResourceType.1.ResourceTypeOption.1.OptionValue.1", "42"),
        ],
    );
    assert_eq!(texts(&ok(&sim, &borrow(&deeper)), "arn"), [deep.arn]);
    // A deregistered image's resources still reference it.
    let before = all_pages(&sim, &with_ids(&ids[..1], &[ALL]), None);
    sim.deregister_image(&ids[0]);
    assert_eq!(all_pages(&sim, &with_ids(&ids[..1], &[ALL]), None), before);
}

#[test]
#[should_panic(expected = "unknown instance state")]
fn add_reference_refuses_unknown_states() {
    sim().add_reference("111111111111", "ami-0abcdef1234567890", ReferenceKind::Instance { state: "asleep".into() });
}

#[test]
fn has_the_reference_shape() {
    let sim = sim();
    let ids = sim.image_ids();
    let body = ok(&sim, &borrow(&with_ids(&ids, &[ALL, ("MaxResults", "5")])));
    let expected: Vec<String> = shape(&fixture("DescribeImageReferences"));
    let ours: Vec<String> = shape(&body);
    assert_eq!(ours.iter().filter(|p| !p.ends_with("nextToken")).cloned().collect::<Vec<_>>(), expected);
    assert!(ours.last().is_some_and(|p| p.ends_with("nextToken")));
    let resp = call(&sim, &borrow(&with_ids(&ids, &[])));
    assert_eq!(shape(&resp.body), shape(&fixture("Error")));
}

#[test]
fn faults_of_paginated_describe_calls_apply() {
    let sim = sim();
    let ids = sim.image_ids();
    let pairs = with_ids(&ids, &[ALL, ("MaxResults", "5")]);
    sim.add_fault(FaultRule::new(Fault::Throttle).on(ACTION.1).with_limit(1));
    assert_eq!(code(&sim, &pairs), (503, "RequestLimitExceeded".into()));
    let first = ok(&sim, &borrow(&pairs));
    let token = texts(&first, "nextToken").pop().unwrap();
    let next = [&pairs[..], &[("NextToken".to_string(), token.clone())]].concat();
    sim.set_faults(vec![FaultRule::new(Fault::ExpireToken).with_limit(1)]);
    assert_eq!(code(&sim, &next), (400, "InvalidPaginationToken".into()));
    ok(&sim, &borrow(&next));
    sim.set_faults(vec![FaultRule::new(Fault::RepeatToken).on(ACTION.1).with_limit(1)]);
    assert_eq!(texts(&ok(&sim, &borrow(&next)), "nextToken"), [token]);
    assert_eq!(sim.fault_hits().get("repeat_token"), Some(&1));
    assert_eq!(sim.request_counts().get(ACTION.1), Some(&5));
}

#[test]
fn same_seed_same_facts_and_references() {
    let a = sim();
    let b = sim();
    assert_eq!(a.references(), b.references());
    assert!(!a.references().is_empty());
    let timeless = |s: &Simulator| {
        s.image_facts()
            .into_iter()
            .map(|f| {
                (f.image_id, f.name, f.state, f.public, f.deprecation_time.is_some(), f.last_launched_time.is_some())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(timeless(&a), timeless(&b));
    // Times are relative to the start: two simulators started together agree within a minute
    // (deprecation times are rounded to the minute, so a start across a minute's edge moves them).
    for (x, y) in a.image_facts().iter().zip(b.image_facts()) {
        let close = |p: std::time::SystemTime, q: std::time::SystemTime| {
            p.duration_since(q).or_else(|_| q.duration_since(p)).is_ok_and(|d| d.as_secs() < 61)
        };
        assert!(close(x.creation_date, y.creation_date));
        assert!(x.last_launched_time.zip(y.last_launched_time).is_none_or(|(p, q)| close(p, q)));
        assert!(x.deprecation_time.zip(y.deprecation_time).is_none_or(|(p, q)| close(p, q)));
    }
    let c = Simulator::new(SimConfig {
        dataset: DatasetSpec { seed: 2, ..DatasetSpec::default() },
        ..SimConfig::default()
    });
    assert_ne!(
        a.references().iter().map(|v| &v.arn).collect::<Vec<_>>(),
        c.references().iter().map(|v| &v.arn).collect::<Vec<_>>()
    );
    // Another owner gets references of its own, in its own account.
    let spec = DatasetSpec::default();
    let two = Simulator::new(SimConfig { extra_owners: vec![spec.for_owner("222222222222")], ..SimConfig::default() });
    let theirs = two.references_of("222222222222");
    assert!(!theirs.is_empty() && theirs.iter().all(|v| v.arn.contains(":222222222222:")));
    assert!(theirs.iter().all(|v| two.image_ids_of("222222222222").contains(&v.image_id)));
    assert_eq!(two.references(), a.references(), "the primary owner's are those of a single-owner simulator");
}
