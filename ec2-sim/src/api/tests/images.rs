//! `DescribeImages` and the image facts: every element of the reference table, `IncludeDisabled`, the facts
//! setters, and the errors.

use std::time::{Duration, SystemTime};

use super::{call, err, fixture, ok, shape, sim, texts};
use crate::model::ImageFacts;
use crate::sim::Simulator;
use crate::timefmt::{format_millis, format_seconds, parse};

fn describe(sim: &Simulator, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![("Action", "DescribeImages")];
    pairs.extend_from_slice(extra);
    ok(sim, &pairs)
}

/// The `<item>` blocks of `imagesSet`, in order.
fn items(body: &str) -> Vec<String> {
    body.split("\n        <item>\n")
        .skip(1)
        .map(|b| b.split("\n        </item>\n").next().unwrap_or("").to_string())
        .collect()
}

fn leaf(item: &str, tag: &str) -> Option<String> {
    texts(item, tag).into_iter().next()
}

fn assert_item_says(item: &str, f: &ImageFacts) {
    assert_eq!(leaf(item, "imageId").as_deref(), Some(f.image_id.as_str()));
    assert_eq!(leaf(item, "name").as_deref(), Some(f.name.as_str()));
    assert_eq!(leaf(item, "imageOwnerId").as_deref(), Some(f.owner_id.as_str()));
    assert_eq!(leaf(item, "imageState").as_deref(), Some(f.state.as_str()));
    assert_eq!(leaf(item, "isPublic"), Some(f.public.to_string()));
    assert_eq!(leaf(item, "creationDate"), Some(format_millis(f.creation_date)));
    assert_eq!(leaf(item, "deprecationTime"), f.deprecation_time.map(format_seconds));
    assert_eq!(leaf(item, "lastLaunchedTime"), f.last_launched_time.map(format_millis));
    assert_eq!(leaf(item, "deregistrationProtection").as_deref(), Some("disabled"));
}

#[test]
fn the_default_dataset_has_every_kind_of_image() {
    let sim = sim();
    let facts = sim.image_facts();
    assert_eq!(facts.iter().map(|f| f.image_id.clone()).collect::<Vec<_>>(), sim.image_ids());
    let now = SystemTime::now();
    assert!(facts.iter().all(|f| f.state == "available"), "no disabled image among the first nine");
    let never: Vec<usize> = (0..5).filter(|i| facts[*i].last_launched_time.is_none()).collect();
    assert_eq!(never, [3], "index 3: never launched (and unused)");
    let deprecated: Vec<usize> = (0..5).filter(|i| facts[*i].deprecation_time.is_some()).collect();
    assert_eq!(deprecated, [1]);
    assert!(facts[1].deprecation_time.is_some_and(|t| t < now), "index 1 is deprecated already");
    let public: Vec<usize> = (0..5).filter(|i| facts[*i].public).collect();
    assert_eq!(public, [4]);
    for f in &facts {
        assert!(f.creation_date < now - Duration::from_secs(29 * 86_400));
        assert!(f.last_launched_time.is_none_or(|t| t >= f.creation_date && t <= now));
    }
}

#[test]
fn describe_images_carries_every_fact() {
    let sim = Simulator::new(crate::config::SimConfig {
        dataset: crate::dataset::DatasetSpec { images: 12, ..crate::dataset::DatasetSpec::default() },
        ..crate::config::SimConfig::default()
    });
    let body = describe(&sim, &[("IncludeDisabled", "true")]);
    let facts = sim.image_facts();
    let items = items(&body);
    assert_eq!(items.len(), 12);
    for (item, f) in items.iter().zip(&facts) {
        assert_item_says(item, f);
    }
    // The three kinds of deprecation, the disabled image 9 and the public images 4 and 10.
    let now = SystemTime::now();
    let deprecations: Vec<Option<SystemTime>> = [1, 5, 9].iter().map(|i| facts[*i].deprecation_time).collect();
    assert!(deprecations[0].is_some_and(|t| t < now));
    assert!(deprecations[1].is_some_and(|t| t > now && t < now + Duration::from_secs(14 * 86_400)));
    assert!(deprecations[2].is_some_and(|t| t > now + Duration::from_secs(58 * 86_400)));
    assert_eq!(facts[9].state, "disabled");
    assert!(facts[4].public && facts[10].public);
    // Formats: deprecationTime in whole seconds (and minutes), the others with milliseconds.
    let dep = leaf(&items[1], "deprecationTime").unwrap();
    assert_eq!(dep.len(), "2027-05-02T09:15:00Z".len());
    assert!(dep.ends_with(":00Z"), "{dep}");
    let launched = leaf(&items[0], "lastLaunchedTime").unwrap();
    assert_eq!(launched.len(), "2026-11-30T22:41:09.000Z".len());
    assert_eq!(parse(&launched), facts[0].last_launched_time);
    assert!(leaf(&items[3], "lastLaunchedTime").is_none());
    assert!(leaf(&items[0], "deprecationTime").is_none());
}

#[test]
fn disabled_images_only_with_include_disabled() {
    let sim = sim();
    let ids = sim.image_ids();
    sim.set_image_state(&ids[2], "disabled");
    let visible = |extra: &[(&str, &str)]| texts(&describe(&sim, extra), "imageId");
    let without: Vec<String> = ids.iter().filter(|i| *i != &ids[2]).cloned().collect();
    assert_eq!(visible(&[]), without);
    assert_eq!(visible(&[("IncludeDisabled", "false")]), without);
    assert_eq!(visible(&[("IncludeDisabled", "true")]), ids);
    // Even by ID: left out, not an error.
    assert!(visible(&[("ImageId.1", &ids[2])]).is_empty());
    assert_eq!(visible(&[("ImageId.1", &ids[2]), ("ImageId.2", &ids[0])]), [ids[0].clone()]);
    assert_eq!(visible(&[("ImageId.1", &ids[2]), ("IncludeDisabled", "true")]), [ids[2].clone()]);
    let state =
        |v: &'static str| vec![("Filter.1.Name", "state"), ("Filter.1.Value.1", v), ("IncludeDisabled", "true")];
    assert_eq!(visible(&state("disabled")), [ids[2].clone()]);
    assert_eq!(visible(&state("available")), without);
    // Deprecated images always appear: the caller owns them. IncludeDeprecated changes nothing.
    assert!(sim.image_facts()[1].deprecation_time.is_some());
    assert_eq!(visible(&[("IncludeDeprecated", "false")]), without);
    assert_eq!(visible(&[("IncludeDeprecated", "true")]), without);
    // Any other state shows as it is.
    sim.set_image_state(&ids[0], "pending");
    let body = describe(&sim, &[("ImageId.1", &ids[0])]);
    assert_eq!(texts(&body, "imageState"), ["pending"]);
}

#[test]
fn setters_change_what_describe_images_says() {
    let sim = sim();
    let id = sim.image_ids()[0].clone();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_830_000_000_321); // 2027-12-28T13:20:00.321Z
    sim.set_deprecation_time(&id, Some(at + Duration::from_secs(31)));
    sim.set_last_launched_time(&id, Some(at + Duration::from_nanos(999_999)));
    sim.set_public(&id, true);
    let f = sim.image_facts()[0].clone();
    assert_eq!(f.deprecation_time.map(format_seconds), Some("2027-12-28T13:21:00Z".to_string()));
    assert_eq!(f.last_launched_time, Some(at));
    let item = &items(&describe(&sim, &[("ImageId.1", &id)]))[0];
    assert_item_says(item, &f);
    assert_eq!(leaf(item, "lastLaunchedTime").as_deref(), Some("2027-12-28T13:20:00.321Z"));
    let public = describe(&sim, &[("Filter.1.Name", "is-public"), ("Filter.1.Value.1", "true")]);
    let expected: Vec<String> = sim.image_facts().into_iter().filter(|f| f.public).map(|f| f.image_id).collect();
    assert_eq!(texts(&public, "imageId"), expected);
    assert!(expected.contains(&id));

    sim.set_deprecation_time(&id, None);
    sim.set_last_launched_time(&id, None);
    let item = &items(&describe(&sim, &[("ImageId.1", &id)]))[0];
    assert!(leaf(item, "deprecationTime").is_none() && leaf(item, "lastLaunchedTime").is_none());
    assert_item_says(item, &sim.image_facts()[0]);

    let new = sim.register_image("111111111111", "fresh", &[]);
    let f = sim.image_facts().pop().unwrap();
    assert_eq!((f.image_id.as_str(), f.state.as_str(), f.public), (new.as_str(), "available", false));
    assert_eq!((f.deprecation_time, f.last_launched_time), (None, None));
}

#[test]
#[should_panic(expected = "is not an image of this simulator")]
fn setters_panic_on_unknown_images() {
    sim().set_image_state("ami-00000000000000000", "disabled");
}

#[test]
fn ids_pages_and_errors() {
    let sim = sim();
    let ids = sim.image_ids();
    // A call by ID answers all its images at once: MaxResults is refused beside ImageId.N.
    assert_eq!(
        err(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[0]), ("MaxResults", "5")]),
        (400, "InvalidParameterCombination".into())
    );
    let by_ids = describe(&sim, &[("ImageId.1", &ids[3]), ("ImageId.2", &ids[1])]);
    assert_eq!(texts(&by_ids, "imageId"), [ids[1].clone(), ids[3].clone()]);
    assert!(texts(&by_ids, "nextToken").is_empty());
    // More than a default page of IDs still comes in one answer.
    let many = Simulator::new(crate::config::SimConfig {
        dataset: crate::dataset::DatasetSpec { images: 1001, accounts: 2, reports_per_image: 0, ..Default::default() },
        ..crate::config::SimConfig::default()
    });
    let all_ids = many.image_ids();
    let keys: Vec<String> = (1..=all_ids.len()).map(|n| format!("ImageId.{n}")).collect();
    let mut pairs: Vec<(&str, &str)> =
        keys.iter().map(String::as_str).zip(all_ids.iter().map(String::as_str)).collect();
    pairs.push(("IncludeDisabled", "true"));
    let body = describe(&many, &pairs);
    assert_eq!(texts(&body, "imageId"), all_ids);
    assert!(texts(&body, "nextToken").is_empty());
    // One bad ID fails the whole call.
    let unknown = "ami-0123456789abcdef0";
    let resp = call(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[0]), ("ImageId.2", unknown)]);
    assert_eq!((resp.status, texts(&resp.body, "Code")), (400, vec!["InvalidAMIID.NotFound".to_string()]));
    assert!(texts(&resp.body, "Message")[0].contains(unknown));
    assert_eq!(
        err(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[0]), ("ImageId.2", "ami-xyz")]),
        (400, "InvalidAMIID.Malformed".into())
    );
    assert_eq!(
        err(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[0]), ("NextToken", "bogus")]).1,
        "InvalidPaginationToken",
        "a token beside IDs is checked, not ignored"
    );
    for bad in [("IncludeDisabled", "yes"), ("IncludeDeprecated", "1")] {
        assert_eq!(err(&sim, &[("Action", "DescribeImages"), bad]), (400, "InvalidParameterValue".into()));
    }
    // Deregistered: gone from the list, and NotFound by ID.
    sim.deregister_image(&ids[1]);
    assert!(!texts(&describe(&sim, &[]), "imageId").contains(&ids[1]));
    assert_eq!(err(&sim, &[("Action", "DescribeImages"), ("ImageId.1", &ids[1])]).1, "InvalidAMIID.NotFound");
    assert!(sim.image_facts().iter().all(|f| f.image_id != ids[1]));
    // Pages without IDs still work, disabled images left out of them too.
    sim.set_image_state(&ids[4], "disabled");
    let got = super::collect_pages(&sim, &[("Action", "DescribeImages")], "imageId", 2);
    assert_eq!(got, [ids[0].clone(), ids[2].clone(), ids[3].clone()]);
}

/// Every element of the reference example's items is there, in the example's order.
#[test]
fn describe_images_has_the_reference_shape() {
    let sim = sim();
    // Image 1 is deprecated and launched: every optional element present.
    let ours = shape(&describe(&sim, &[("ImageId.1", &sim.image_ids()[1])]));
    let reference: Vec<String> =
        shape(&fixture("DescribeImages")).into_iter().filter(|p| !p.ends_with("nextToken")).collect();
    let in_ours: Vec<&String> = ours.iter().filter(|p| reference.contains(p)).collect();
    assert_eq!(in_ours, reference.iter().collect::<Vec<_>>());
}
