//! `ec2-sim`: the simulator as a process, for users that are not Rust tests (benchmarks, the demo, curl).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ec2_sim::{CreateOutcome, DatasetSpec, FaultRule, RoleSpec, SimConfig, Simulator};

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
    /// Account that owns the images: the primary owner, whose data every access key not issued by AssumeRole sees.
    #[arg(long, default_value = "111111111111")]
    owner_account: String,
    /// A further owner account with a dataset of the same sizes and a seed derived from --seed and the account.
    /// Only credentials from a role of that account (--role) see it. Repeatable.
    #[arg(long = "owner", value_name = "ACCOUNT")]
    owners: Vec<String>,
    /// A role that STS AssumeRole grants, optionally requiring an external ID, e.g.
    /// 'arn:aws:iam::222222222222:role/ami-usage,my-external-id'. Repeatable.
    #[arg(long = "role", value_name = "ARN[,EXTERNAL_ID]", value_parser = parse_role)]
    roles: Vec<RoleSpec>,
    /// Start with a pending report on every other image.
    #[arg(long)]
    pending_reports: bool,
    /// Every account uses every image with every resource type: exactly images x accounts x resource types
    /// usage series (for benchmarks). By default each image has a random subset and every seventh is unused.
    #[arg(long)]
    full_usage: bool,
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

fn parse_role(text: &str) -> Result<RoleSpec, String> {
    let role = match text.split_once(',') {
        Some((arn, external_id)) => RoleSpec::new(arn).with_external_id(external_id),
        None => RoleSpec::new(text),
    };
    if role.account().is_none() {
        return Err(format!("{:?} is not a role ARN (arn:aws:iam::123456789012:role/name)", role.role_arn));
    }
    if role.external_id.as_deref() == Some("") {
        return Err("the external ID after the comma must not be empty".to_string());
    }
    Ok(role)
}

impl Args {
    fn config(self) -> SimConfig {
        let dataset = DatasetSpec {
            seed: self.seed,
            images: self.images,
            accounts: self.accounts,
            resource_types: self.resource_types,
            reports_per_image: self.reports_per_image,
            owner_account: self.owner_account,
            pending_reports: self.pending_reports,
            full_usage: self.full_usage,
        };
        SimConfig {
            extra_owners: self.owners.iter().map(|account| dataset.for_owner(account)).collect(),
            roles: self.roles,
            dataset,
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
    let listen = args.listen;
    let config = args.config();
    if let Err(err) = config.validate() {
        eprintln!("ec2-sim: {err}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("ec2-sim: cannot listen on {listen}: {err}");
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
    let sim = Simulator::new(config);
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
