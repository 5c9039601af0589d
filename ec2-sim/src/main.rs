//! `ec2-sim`: the simulator as a process, for users that are not Rust tests (benchmarks, the demo, curl).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ec2_sim::{CreateOutcome, DatasetSpec, FaultRule, SimConfig, Simulator};

/// Serve a simulated EC2 AMI usage report API over HTTP (EC2 Query protocol).
#[derive(Debug, Parser)]
#[command(name = "ec2-sim", version)]
struct Args {
    /// Address to listen on; loopback by default, because the simulator has no authentication.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed of the synthetic dataset: the same seed gives the same images, accounts and counts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 5)]
    images: usize,
    /// Consumer accounts.
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// Available reports per image at start.
    #[arg(long, default_value_t = 3)]
    reports_per_image: usize,
    /// Resource types of the dataset, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ec2:Instance,ec2:LaunchTemplate")]
    resource_types: Vec<String>,
    /// Account that owns the images.
    #[arg(long, default_value = "111111111111")]
    owner_account: String,
    /// Start with a pending report on every other image.
    #[arg(long)]
    pending_reports: bool,
    /// How long a created report stays pending (e.g. 2s, 500ms, 1m).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pending_for: Duration,
    /// Lifetime of a report.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    report_ttl: Duration,
    /// Make created reports end in `error` with this stateReason instead of `available`.
    #[arg(long, value_name = "REASON")]
    fail_reports: Option<String>,
    /// A fault rule as JSON, e.g. '{"operation":"DescribeImageUsageReports","fault":{"kind":"throttle"},"share":0.5}'.
    /// Repeatable; rules apply in order. See README.md for the kinds.
    #[arg(long = "fault", value_name = "JSON", value_parser = parse_fault)]
    faults: Vec<FaultRule>,
}

fn parse_fault(json: &str) -> Result<FaultRule, String> {
    let rule: FaultRule = serde_json::from_str(json).map_err(|e| format!("not a fault rule: {e}"))?;
    rule.validate()?;
    Ok(rule)
}

impl Args {
    fn config(self) -> SimConfig {
        SimConfig {
            dataset: DatasetSpec {
                seed: self.seed,
                images: self.images,
                accounts: self.accounts,
                resource_types: self.resource_types,
                reports_per_image: self.reports_per_image,
                owner_account: self.owner_account,
                pending_reports: self.pending_reports,
            },
            pending_for: self.pending_for,
            create_outcome: self.fail_reports.map_or(CreateOutcome::Available, CreateOutcome::Error),
            report_ttl: self.report_ttl,
            faults: self.faults,
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.owner_account.len() != 12 || !args.owner_account.bytes().all(|b| b.is_ascii_digit()) {
        eprintln!("ec2-sim: --owner-account must be 12 digits");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("ec2-sim: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(err) => {
            eprintln!("ec2-sim: {err}");
            return ExitCode::FAILURE;
        }
    };
    let sim = Simulator::new(args.config());
    // Wrappers wait for this exact line to learn the port; it must reach them even when stdout is a pipe.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ec2-sim listening on http://{addr}");
    let _ = out.flush();
    drop(out);
    match sim.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ec2-sim: {err}");
            ExitCode::FAILURE
        }
    }
}
