//! The real AWS SDK against the simulator, as the exporter uses it for a (Region, owner account) target:
//! aws-config's `AssumeRoleProvider` calls STS `AssumeRole` on the simulator, and an EC2 client signed with the
//! credentials it hands out sees the role account's images and reports, and nothing of the primary owner's.

use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::Filter;
use ec2_sim::{DatasetSpec, RoleSpec, SimConfig, Simulator};

const OWNER_A: &str = "111111111111";
const OWNER_B: &str = "222222222222";
const ROLE_B: &str = "arn:aws:iam::222222222222:role/ami-usage";
const EXTERNAL_ID: &str = "exporter-external-id";
const SESSION: &str = "ami-usage-exporter";
const REGION: &str = "eu-west-1";

fn filter(name: &str, values: &[&str]) -> Filter {
    values.iter().fold(Filter::builder().name(name), |f, v| f.values(*v)).build()
}

async fn ec2_as_role(base: &aws_config::SdkConfig, external_id: &str) -> aws_sdk_ec2::Client {
    let provider = AssumeRoleProvider::builder(ROLE_B)
        .external_id(external_id)
        .session_name(SESSION)
        .configure(base)
        .build()
        .await;
    aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::config::Builder::from(base).credentials_provider(provider).build())
}

#[tokio::test]
async fn assume_role_provider_credentials_see_only_the_role_accounts_images() {
    let dataset = DatasetSpec::default();
    let config = SimConfig {
        extra_owners: vec![dataset.for_owner(OWNER_B)],
        roles: vec![RoleSpec::new(ROLE_B).with_external_id(EXTERNAL_ID)],
        dataset,
        ..SimConfig::default()
    };
    let running = Simulator::start(config).await.expect("start");
    let sim = &running.sim;
    // Static base credentials of the primary owner; one endpoint for both STS and EC2.
    let base = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(running.endpoint_url())
        .credentials_provider(Credentials::new("AKIDBASEEXAMPLE", "base-secret", None, None, "test"))
        .load()
        .await;
    let client = ec2_as_role(&base, EXTERNAL_ID).await;

    // Discovery, paginated: exactly B's images, with owner, names and tags as the SDK parses them.
    let images: Vec<aws_sdk_ec2::types::Image> = client
        .describe_images()
        .owners("self")
        .max_results(2)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));
    let ids: Vec<String> = images.iter().filter_map(|i| i.image_id().map(str::to_string)).collect();
    let b_images = sim.image_ids_of(OWNER_B);
    assert_eq!(ids, b_images);
    assert!(ids.iter().all(|id| !sim.image_ids().contains(id)), "none of the primary owner's images");
    for (n, image) in images.iter().enumerate() {
        assert_eq!(image.owner_id(), Some(OWNER_B));
        assert_eq!(image.name(), Some(format!("golden-base-{}", n + 1).as_str()));
        assert_eq!(image.state().map(|s| s.as_str()), Some("available"));
        let facts = &sim.image_facts_of(OWNER_B)[n];
        assert_eq!(image.public(), Some(facts.public));
        assert!(image.creation_date().is_some_and(|d| d.ends_with('Z')));
        let tag = |key: &str| image.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
        assert_eq!(tag("Team"), Some(if n % 2 == 0 { "platform" } else { "data" }));
        assert_eq!(tag("Channel"), Some(if n % 4 >= 2 { "beta" } else { "stable" }));
    }

    // Filters as the exporter's discovery sends them.
    let select = |filters: Vec<Filter>| {
        let request = client.describe_images().owners("self").owners(OWNER_B).set_filters(Some(filters));
        async move {
            let out = request.send().await.unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));
            out.images().iter().filter_map(|i| i.image_id().map(str::to_string)).collect::<Vec<_>>()
        }
    };
    let platform_beta = select(vec![
        filter("tag:Team", &["platform"]),
        filter("tag:Channel", &["beta"]),
        filter("state", &["available"]),
    ])
    .await;
    assert_eq!(platform_beta, [b_images[2].clone()]);
    assert_eq!(select(vec![filter("name", &["golden-base-?"]), filter("tag-key", &["Team"])]).await, b_images);
    assert!(select(vec![filter("name", &["golden-base-1?"])]).await.is_empty());

    // B's reports through the same credentials; A's report IDs are unknown to B.
    let image = &b_images[0];
    let reports = client.describe_image_usage_reports().image_ids(image).send().await.expect("reports");
    let got: Vec<&str> = reports.image_usage_reports().iter().filter_map(|r| r.report_id()).collect();
    let expected: Vec<String> =
        sim.reports_of(OWNER_B).into_iter().filter(|r| &r.image_id == image).map(|r| r.id).collect();
    assert_eq!(got, expected);
    let a_report = sim.ground_truth()[0].report_id.clone();
    let err = client.describe_image_usage_report_entries().report_ids(&a_report).send().await.expect_err("foreign");
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    // A permission preflight: DryRun answers DryRunOperation.
    let err = client.describe_images().owners("self").dry_run(true).send().await.expect_err("dry run");
    assert_eq!(err.code(), Some("DryRunOperation"));

    // One AssumeRole, cached by the SDK, with the external ID and session name given; requests in B's name.
    assert_eq!(sim.assume_role_calls(), [(ROLE_B.to_string(), Some(EXTERNAL_ID.to_string()), SESSION.to_string())]);
    let counts = sim.request_counts_by();
    let count = |account: &str, action: &str| counts.get(&(account.into(), REGION.into(), action.into())).copied();
    assert_eq!(count(OWNER_A, "AssumeRole"), Some(1), "{counts:?}");
    assert_eq!(count(OWNER_B, "DescribeImages"), Some(3 + 3 + 1));
    assert_eq!(count(OWNER_B, "DescribeImageUsageReports"), Some(1));
    assert_eq!(count(OWNER_A, "DescribeImages"), None);

    // A wrong external ID: STS refuses, and the EC2 call fails with the provider's error before it is sent.
    let sent = sim.request_counts().get("DescribeImages").copied();
    let refused = ec2_as_role(&base, "wrong-external-id").await;
    let err = refused.describe_images().owners("self").send().await.expect_err("no credentials");
    let text = format!("{}", DisplayErrorContext(&err));
    assert!(text.contains("AccessDenied") && text.contains(ROLE_B), "{text}");
    assert_eq!(sim.assume_role_calls().len(), 2);
    assert_eq!(sim.request_counts().get("DescribeImages").copied(), sent, "nothing reached EC2");
    running.shutdown().await;
}
