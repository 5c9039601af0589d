use std::process::ExitCode;

use ami_usage_exporter::cli::Cli;
use ami_usage_exporter::config::Config;
use ami_usage_exporter::{app, logging, preflight, web_config};
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
            Ok(findings) => {
                print!("{}", preflight::table(&findings));
                if preflight::all_allowed(&findings) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
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
    let config = match Config::load(&cli.config_file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    println!("{}: valid", cli.config_file.display());
    if let Some(path) = &cli.web_config_file {
        if let Err(error) = web_config::WebConfig::load(path) {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
        println!("{}: valid", path.display());
    }
    ExitCode::SUCCESS
}
