use std::process::ExitCode;

use ami_usage_exporter::cli::Cli;
use ami_usage_exporter::config::Config;
use ami_usage_exporter::{app, logging};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    if cli.check_config {
        return match Config::load(&cli.config_file) {
            Ok(config) => {
                for warning in config.warnings() {
                    println!("warning: {warning}");
                }
                println!("{}: valid", cli.config_file.display());
                ExitCode::SUCCESS
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
