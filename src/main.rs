use std::process::ExitCode;

use ami_usage_exporter::cli::Cli;
use ami_usage_exporter::{app, logging};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    if cli.check_config {
        return check_config(&cli);
    }
    if cli.check_permissions {
        return match app::check_permissions(&cli.config_file).await {
            Ok(preflight) => {
                print!("{}", preflight.table());
                if preflight.all_allowed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    match app::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the configuration file, and the web configuration file when given.
fn check_config(cli: &Cli) -> ExitCode {
    match app::check_config(&cli.config_file, cli.web_config_file.as_deref()) {
        Ok(warnings) => {
            for warning in warnings {
                println!("warning: {warning}");
            }
            println!("{}: valid", cli.config_file.display());
            if let Some(path) = &cli.web_config_file {
                println!("{}: valid", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
