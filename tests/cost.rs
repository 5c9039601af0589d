//! What a poll costs in EC2 calls, against the simulator: the entries of many new reports are
//! read in as many parallel calls as there are request slots.

mod common;

use std::time::Duration;

use common::{Exporter, config_for, scraped_usage, truth};
use ec2_sim::{DatasetSpec, RunningSimulator, SimConfig, Simulator};

const LIST: &str = "DescribeImageUsageReports";
const ENTRIES: &str = "DescribeImageUsageReportEntries";

async fn simulator(images: usize, reports_per_image: usize, pending_for: Duration) -> RunningSimulator {
    let config = SimConfig {
        dataset: DatasetSpec { seed: 11, images, accounts: 3, reports_per_image, ..DatasetSpec::default() },
        pending_for,
        ..SimConfig::default()
    };
    Simulator::start(config).await.expect("simulator starts")
}

/// Ten new reports and four request slots: four entry calls, not one call of ten reports whose
/// pages would follow one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_reads_entries_in_one_call_per_request_slot() {
    for (slots, calls) in [(4, 4), (1, 1)] {
        let running = simulator(10, 1, Duration::from_secs(60)).await;
        let sim = &running.sim;
        let config = config_for(
            &sim.image_ids(),
            &format!("poll_interval: 1h\naws:\n  max_concurrent_requests: {slots}\nreports:\n  create: false"),
        );
        let exporter = Exporter::start(&config, &running.endpoint_url());
        exporter.wait_ready().await;
        let e = exporter.scrape().await;
        assert_eq!(scraped_usage(&e), truth(sim).0);
        let served = sim.request_counts();
        // Each call's entries fit in one page (1000), so calls and pages are the same here.
        assert_eq!(served.get(ENTRIES), Some(&calls), "{slots} slots: {served:?}");
        assert_eq!(served.get(LIST), Some(&1), "10 images: one list call, whatever the slots");
    }
}
