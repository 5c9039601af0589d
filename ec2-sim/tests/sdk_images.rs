//! The real AWS SDK against the simulator's image facts (`DescribeImages`) and in-account references
//! (`DescribeImageReferences`): every field parses into the SDK's types and says what the ground truth says.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::Image;
use ec2_sim::{DatasetSpec, ImageFacts, RunningSimulator, SimConfig, Simulator};

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
