//! Which images and which accounts: discovery by DescribeImages, several owner accounts through
//! assumed roles, and the IAM permission preflight.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Exporter, Exposition, TempFile, WAIT, aws_command, scraped_usage};
use ec2_sim::{DatasetSpec, Fault, FaultRule, RoleSpec, SimConfig, Simulator};

fn images_of(e: &Exposition) -> BTreeSet<String> {
    e.metric("ami_usage_image_poll_success").into_iter().map(|(l, _)| l["image_id"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_images_come_and_go_with_describe_images() {
    let running = common::simulator(3, 4, Duration::from_secs(60)).await;
    let sim = &running.sim;
    let owner = sim.owners().first().cloned().expect("an owner");
    let first = sim.register_image(&owner, "canary-1", &[("Team", "canary")]);
    sim.set_usage(&first, &sim.account_ids()[0], "ec2:Instance", 7);
    sim.add_report(&first);
    let config = "poll_interval: 1s\nreports:\n  create: false\ntargets:\n  - region: us-east-1\n    discover:\n      filters:\n        \"tag:Team\": [canary]\n      refresh_interval: 1s\n";
    let exporter = Exporter::start(config, &running.endpoint_url());
    let e =
        exporter.scrape_until(WAIT, "the discovered image", |e| images_of(e) == BTreeSet::from([first.clone()])).await;
    assert_eq!(e.sum("ami_usage_resources", &[("image_id", &first)]), 7.0);

    let second = sim.register_image(&owner, "canary-2", &[("Team", "canary")]);
    exporter.scrape_until(WAIT, "the second image", |e| images_of(e).contains(&second)).await;
    sim.deregister_image(&first);
    let e = exporter.scrape_until(WAIT, "the deregistered image to drop out", |e| !images_of(e).contains(&first)).await;
    assert!(scraped_usage(&e).keys().all(|(image, _, _)| *image != first), "its series vanish too");
    assert!(sim.request_counts().get("DescribeImages").is_some_and(|n| *n >= 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_owner_account_is_read_through_its_role_and_labelled() {
    let primary = DatasetSpec { seed: 11, images: 2, accounts: 4, ..DatasetSpec::default() };
    let other = primary.for_owner("222233334444");
    let role = "arn:aws:iam::222233334444:role/ami-usage";
    let config = SimConfig {
        dataset: primary.clone(),
        extra_owners: vec![other],
        roles: vec![RoleSpec::new(role).with_external_id("shared-secret")],
        ..SimConfig::default()
    };
    let running = Simulator::start(config).await.expect("simulator");
    let sim = &running.sim;
    let list = |images: Vec<String>| images.iter().map(|i| format!("      - {i}\n")).collect::<String>();
    let exporter_config = format!(
        "poll_interval: 1s\ntargets:\n  - region: us-east-1\n    owner_account_id: '{}'\n    images:\n{}  - region: us-east-1\n    role_arn: {role}\n    external_id: shared-secret\n    images:\n{}",
        primary.owner_account,
        list(sim.image_ids_of(&primary.owner_account)),
        list(sim.image_ids_of("222233334444")),
    );
    let exporter = Exporter::start(&exporter_config, &running.endpoint_url());
    exporter.wait_ready().await;
    let e = exporter
        .scrape_until(WAIT, "three polls", |e| e.value("ami_usage_polls_total", &[]).is_some_and(|n| n >= 3.0))
        .await;
    for owner in [primary.owner_account.as_str(), "222233334444"] {
        let expected: common::Usage = sim
            .ground_truth_of(owner)
            .into_iter()
            .map(|t| ((t.image_id, t.account_id, t.resource_type), t.usage_count as f64))
            .collect();
        let got: common::Usage = e
            .metric("ami_usage_resources")
            .into_iter()
            .filter(|(l, _)| l.get("owner_account_id").map(String::as_str) == Some(owner))
            .map(|(l, v)| ((l["image_id"].clone(), l["account_id"].clone(), l["resource_type"].clone()), v))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "owner {owner}");
    }
    let calls = sim.assume_role_calls();
    assert!(!calls.is_empty() && calls.len() <= 2, "credentials are cached, not fetched per poll: {calls:?}");
    assert!(calls.iter().all(|(arn, id, session)| arn == role
        && id.as_deref() == Some("shared-secret")
        && session == "ami-usage-exporter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_names_missing_permissions() {
    let running = common::simulator(2, 3, Duration::from_secs(60)).await;
    let sim = &running.sim;
    sim.add_fault(FaultRule::new(Fault::Unauthorized).on("CreateImageUsageReport"));
    let config = TempFile::new(&common::config_for(&sim.image_ids(), "poll_interval: 1h"));
    let out = aws_command(&running.endpoint_url())
        .arg("--check-permissions")
        .arg(format!("--config.file={}", config.0.display()))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |action: &str| stdout.lines().find(|l| l.contains(action)).unwrap_or_default().to_owned();
    assert!(line("ec2:CreateImageUsageReport").contains("MISSING (UnauthorizedOperation)"), "{stdout}");
    assert!(line("ec2:DescribeImageUsageReports ").contains("allowed"), "{stdout}");
    assert!(line("ec2:DescribeImageUsageReportEntries").contains("allowed"), "{stdout}");

    let everything_allowed = aws_command(&running.endpoint_url());
    sim.clear_faults();
    let out = {
        let mut cmd = everything_allowed;
        cmd.arg("--check-permissions").arg(format!("--config.file={}", config.0.display())).output().expect("runs")
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
