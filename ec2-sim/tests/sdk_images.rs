//! The real AWS SDK against the simulator's image facts (`DescribeImages`) and in-account references
//! (`DescribeImageReferences`): every field parses into the SDK's types and says what the ground truth says.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::operation::describe_image_references::builders::DescribeImageReferencesFluentBuilder;
use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Image, ImageReference, ImageReferenceOptionName, ImageReferenceResourceType, ResourceTypeOption,
    ResourceTypeRequest,
};
use ec2_sim::{
    DatasetSpec, ImageFacts, ReferenceKind, ReferenceQuery, ReferenceTypeQuery, RunningSimulator, SimConfig, Simulator,
};

const REGION: &str = "eu-west-1";

async fn start(images: usize) -> (RunningSimulator, aws_sdk_ec2::Client) {
    let config = SimConfig { dataset: DatasetSpec { images, ..DatasetSpec::default() }, ..SimConfig::default() };
    let running = Simulator::start(config).await.expect("start");
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(running.endpoint_url())
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
        .load()
        .await;
    (running, aws_sdk_ec2::Client::new(&sdk))
}

fn parse(text: Option<&str>) -> Option<SystemTime> {
    text.map(|t| humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")))
}

fn assert_says(image: &Image, f: &ImageFacts) {
    assert_eq!(image.image_id(), Some(f.image_id.as_str()));
    assert_eq!(image.name(), Some(f.name.as_str()));
    assert_eq!(image.owner_id(), Some(f.owner_id.as_str()));
    assert_eq!(image.state().map(|s| s.as_str()), Some(f.state.as_str()));
    let known = aws_sdk_ec2::types::ImageState::values();
    assert!(image.state().is_some_and(|s| known.contains(&s.as_str())), "a state the SDK knows");
    assert_eq!(image.public(), Some(f.public));
    assert_eq!(parse(image.creation_date()), Some(f.creation_date));
    assert_eq!(parse(image.deprecation_time()), f.deprecation_time);
    assert_eq!(parse(image.last_launched_time()), f.last_launched_time);
    assert_eq!(image.deregistration_protection(), Some("disabled"));
}

#[tokio::test]
async fn describe_images_facts_parse_into_the_sdk_types() {
    let (running, client) = start(12).await;
    let sim = &running.sim;
    let facts = sim.image_facts();
    let all: Vec<Image> = client
        .describe_images()
        .owners("self")
        .include_disabled(true)
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));
    assert_eq!(all.len(), 12);
    for (image, f) in all.iter().zip(&facts) {
        assert_says(image, f);
    }
    assert!(all[1].deprecation_time().is_some_and(|t| t.ends_with(":00Z") && !t.contains('.')));
    assert!(all[3].last_launched_time().is_none() && all[3].deprecation_time().is_none());
    assert_eq!(all[9].state().map(|s| s.as_str()), Some("disabled"));

    // Without IncludeDisabled the disabled image is left out, also by ID.
    let ids: Vec<String> = sim.image_ids();
    let listed = client.describe_images().owners("self").send().await.expect("list");
    assert_eq!(listed.images().len(), 11);
    let by_id = client.describe_images().image_ids(&ids[9]).image_ids(&ids[1]).send().await.expect("by id");
    assert_eq!(by_id.images().iter().filter_map(|i| i.image_id()).collect::<Vec<_>>(), [ids[1].as_str()]);

    // Setters show through the SDK.
    let at = SystemTime::now() + Duration::from_secs(86_400);
    sim.set_deprecation_time(&ids[0], Some(at));
    sim.set_last_launched_time(&ids[0], None);
    sim.set_image_state(&ids[0], "disabled");
    let one = client.describe_images().image_ids(&ids[0]).include_disabled(true).send().await.expect("one");
    assert_says(&one.images()[0], &sim.image_facts()[0]);
    assert!(one.images()[0].last_launched_time().is_none());

    // The errors, as the SDK reports them.
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(str::to_string);
    let e = client.describe_images().image_ids(&ids[1]).max_results(5).send().await.expect_err("combination");
    assert_eq!(code(&e).as_deref(), Some("InvalidParameterCombination"));
    let e =
        client.describe_images().image_ids(&ids[1]).image_ids("ami-0123456789abcdef0").send().await.expect_err("nf");
    assert_eq!(code(&e).as_deref(), Some("InvalidAMIID.NotFound"));
    let e = client.describe_images().image_ids("ami-nope").send().await.expect_err("malformed");
    assert_eq!(code(&e).as_deref(), Some("InvalidAMIID.Malformed"));
    sim.deregister_image(&ids[2]);
    let e = client.describe_images().image_ids(&ids[2]).send().await.expect_err("deregistered");
    assert_eq!(code(&e).as_deref(), Some("InvalidAMIID.NotFound"));
    running.shutdown().await;
}

fn counts(items: &[ImageReference]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in items {
        let rtype = r.resource_type().map(|t| t.as_str().to_string()).unwrap_or_default();
        *out.entry((r.image_id().unwrap_or_default().to_string(), rtype)).or_insert(0) += 1;
    }
    out
}

/// Every page of a request for these images, five items at a time.
async fn pages(request: DescribeImageReferencesFluentBuilder, ids: &[String]) -> Vec<ImageReference> {
    request
        .set_image_ids(Some(ids.to_vec()))
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<ImageReference>, _>>()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)))
}

fn option(name: ImageReferenceOptionName, values: &[&str]) -> ResourceTypeOption {
    values.iter().fold(ResourceTypeOption::builder().option_name(name), |b, v| b.option_values(*v)).build()
}

#[tokio::test]
async fn describe_image_references_through_the_sdk() {
    let (running, client) = start(12).await;
    let sim = &running.sim;
    let ids10 = sim.image_ids()[..10].to_vec();
    let in_ten = |counts: BTreeMap<(String, String), usize>| -> BTreeMap<(String, String), usize> {
        counts.into_iter().filter(|((image, _), _)| ids10.contains(image)).collect()
    };

    // Everything, in pages of five: each item parses, with a type the SDK knows and an ARN of the Region signed for.
    let all = pages(client.describe_image_references().include_all_resource_types(true), &ids10).await;
    assert!(all.len() > 10, "several pages: {}", all.len());
    assert_eq!(counts(&all), in_ten(sim.reference_counts(&ReferenceQuery::all())));
    for r in &all {
        assert!(!r.resource_type().is_some_and(|t| t.as_str().is_empty()));
        assert!(ImageReferenceResourceType::values().contains(&r.resource_type().map(|t| t.as_str()).unwrap_or("")));
        let arn = r.arn().unwrap_or_default();
        assert!(arn.starts_with("arn:aws:") && arn.contains(&format!(":{REGION}:111111111111:")), "{arn}");
    }
    let mut expected: Vec<String> = sim
        .references()
        .into_iter()
        .filter(|v| {
            ids10.contains(&v.image_id)
                && v.launch_template_depth.is_none_or(|d| d <= ec2_sim::DEFAULT_REFERENCE_VERSION_DEPTH)
        })
        .map(|v| v.arn_in(REGION))
        .collect();
    let mut got: Vec<String> = all.iter().filter_map(|r| r.arn().map(str::to_string)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // Resource types with options.
    let running_instances = ResourceTypeRequest::builder()
        .resource_type(ImageReferenceResourceType::Ec2Instance)
        .resource_type_options(option(ImageReferenceOptionName::StateName, &["running", "pending"]))
        .build();
    let deep_templates = ResourceTypeRequest::builder()
        .resource_type(ImageReferenceResourceType::Ec2LaunchTemplate)
        .resource_type_options(option(ImageReferenceOptionName::VersionDepth, &["10000"]))
        .build();
    let recipes =
        ResourceTypeRequest::builder().resource_type(ImageReferenceResourceType::ImageBuilderImageRecipe).build();
    let some = pages(
        client
            .describe_image_references()
            .resource_types(running_instances)
            .resource_types(deep_templates)
            .resource_types(recipes),
        &ids10,
    )
    .await;
    let query = ReferenceQuery::of(vec![
        ReferenceTypeQuery::new("ec2:Instance").with_state_names(&["running", "pending"]),
        ReferenceTypeQuery::new("ec2:LaunchTemplate").with_version_depth(10_000),
        ReferenceTypeQuery::new("imagebuilder:ImageRecipe"),
    ]);
    assert_eq!(counts(&some), in_ten(sim.reference_counts(&query)));
    assert!(!some.is_empty());

    // An added reference to an image of nobody here.
    let foreign = "ami-0abcdef1234567890";
    let added = sim.add_reference("111111111111", foreign, ReferenceKind::ContainerRecipe);
    let out = client
        .describe_image_references()
        .image_ids(foreign)
        .include_all_resource_types(true)
        .send()
        .await
        .expect("foreign");
    assert_eq!(out.image_references().len(), 1);
    assert_eq!(out.image_references()[0].arn(), Some(added.arn_in(REGION).as_str()));
    assert!(out.next_token().is_none());

    // The errors.
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(str::to_string);
    let eleven: Vec<String> = (0..11).map(|i| format!("ami-{i:017x}")).collect();
    let request = || client.describe_image_references().include_all_resource_types(true);
    let e = request().set_image_ids(Some(eleven)).send().await.expect_err("eleven");
    assert_eq!(code(&e).as_deref(), Some("InvalidParameterValue"));
    let e = request().send().await.expect_err("no IDs");
    assert_eq!(code(&e).as_deref(), Some("MissingParameter"));
    let e = client.describe_image_references().image_ids(foreign).send().await.expect_err("no types");
    assert_eq!(code(&e).as_deref(), Some("MissingParameter"));
    let e = request().image_ids(foreign).max_results(4).send().await.expect_err("max 4");
    assert_eq!(code(&e).as_deref(), Some("InvalidParameterValue"));
    let e = request().image_ids("ami-bad").send().await.expect_err("malformed");
    assert_eq!(code(&e).as_deref(), Some("InvalidAMIID.Malformed"));
    let odd = ResourceTypeRequest::builder().resource_type(ImageReferenceResourceType::from("ec2:Volume")).build();
    let e = client.describe_image_references().image_ids(foreign).resource_types(odd).send().await.expect_err("type");
    assert_eq!(code(&e).as_deref(), Some("InvalidParameterValue"));
    let e = request().image_ids(foreign).dry_run(true).send().await.expect_err("dry run");
    assert_eq!(code(&e).as_deref(), Some("DryRunOperation"));
    running.shutdown().await;
}
