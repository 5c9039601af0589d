//! `ami-usage-demo`: the exporter's main job on a machine without an AWS account.
//!
//! It starts the bundled EC2 simulator on loopback with a sample dataset, points the AWS SDK
//! at it the way any user would (`AWS_ENDPOINT_URL_EC2` and static credentials), and runs the
//! unmodified exporter against it. The exporter's code does not know it is talking to a
//! simulator. The reports in the sample data are two hours old and the demo's `max_age` is one
//! hour, so the first poll also shows the report lifecycle: new reports are requested, stay
//! pending for 20 seconds, and then replace the old figures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener};
use std::process::ExitCode;
use std::time::Duration;

use ami_usage_exporter::cli::{Cli, DEFAULT_PORT};
use ami_usage_exporter::{app, logging};
use clap::Parser;
use ec2_sim::{DatasetSpec, SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.listen_addresses == [format!(":{DEFAULT_PORT}")] {
        // A demo has no business listening beyond this machine.
        cli.listen_addresses = vec![format!("127.0.0.1:{DEFAULT_PORT}")];
    }
    let listener = match StdListener::bind("127.0.0.1:0").and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot bind the simulator on loopback: {error}");
            return ExitCode::FAILURE;
        }
    };
    let endpoint = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(error) => {
            eprintln!("cannot read the simulator's address: {error}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: no other thread exists yet (the runtime is built below), so nothing can read the
    // environment while it changes.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL_EC2", &endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDDEMO");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "demo-secret");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(demo(cli, listener, endpoint))
}

async fn demo(mut cli: Cli, listener: StdListener, endpoint: String) -> ExitCode {
    logging::init(cli.log_level, cli.log_format);
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot use the simulator's socket: {error}");
            return ExitCode::FAILURE;
        }
    };
    let sim = Simulator::new(SimConfig {
        dataset: DatasetSpec { seed: 42, images: 6, accounts: 12, ..DatasetSpec::default() },
        pending_for: Duration::from_secs(20),
        ..SimConfig::default()
    });
    let stop_sim = CancellationToken::new();
    let stopped = stop_sim.clone();
    let server = sim.clone();
    tokio::spawn(async move { server.serve(listener, async move { stopped.cancelled().await }).await });

    let images: Vec<String> = sim.image_ids().iter().map(|i| format!("      - {i}\n")).collect();
    // A few named accounts, and all but two expected: the status page and
    // ami_usage_unexpected_resources then show what an unexpected account looks like.
    let accounts = sim.account_ids();
    let names: Vec<String> = accounts
        .iter()
        .zip(["platform", "data-pipeline", "web", "batch"])
        .map(|(id, name)| format!("\"{id}\": {name}"))
        .collect();
    let expected: Vec<String> =
        accounts.iter().take(accounts.len().saturating_sub(2)).map(|id| format!("\"{id}\"")).collect();
    // The simulator answers in microseconds: a call that takes seconds is hung, and must end well
    // within the 10 s between polls (attempt_timeout may not exceed operation_timeout).
    let config = format!(
        "# Written by ami-usage-demo.\npoll_interval: 10s\naws:\n  attempt_timeout: 2s\n  operation_timeout: 5s\n\
         reports:\n  max_age: 1h\naccounts:\n  names: {{{}}}\n  expected: [{}]\ntargets:\n  - region: us-east-1\n    images:\n{}",
        names.join(", "),
        expected.join(", "),
        images.concat()
    );
    let path = std::env::temp_dir().join(format!("ami-usage-demo-{}.yml", std::process::id()));
    if let Err(error) = std::fs::write(&path, config) {
        eprintln!("cannot write the demo configuration to {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    cli.config_file = path.clone();
    // Bound before printing, so that the addresses printed are the real ones, port 0 included.
    let listeners = match app::bind(&cli).await {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("{error}");
            stop_sim.cancel();
            let _ = std::fs::remove_file(&path);
            return ExitCode::FAILURE;
        }
    };
    let web: Vec<String> =
        listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| reachable(a).to_string()).collect();
    let urls: Vec<String> = web.iter().map(|a| format!("http://{a}{}", cli.telemetry_path)).collect();
    let targets: Vec<String> = web.iter().map(|a| format!("'{a}'")).collect();
    println!(
        "ami-usage-demo: EC2 simulator at {endpoint} with {} images; exporter config in {}\n\
         Metrics:    {}\n\
         Prometheus: scrape_configs: [{{job_name: ami-usage, static_configs: [{{targets: [{}]}}]}}]\n\
         Reports are refreshed on the first poll and become available after 20 s. Ctrl-C stops.",
        sim.image_ids().len(),
        cli.config_file.display(),
        urls.join(" "),
        targets.join(", "),
    );
    let outcome = app::run_on(cli, Some(listeners)).await;
    stop_sim.cancel();
    let _ = std::fs::remove_file(&path);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The address to connect to: a wildcard listener is reached on loopback.
fn reachable(mut address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => address.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => address.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    address
}
