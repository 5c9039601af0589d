//! ami-usage-exporter: a Prometheus exporter for EC2 AMI usage reports.
//!
//! Data flows one way: EC2 (`ec2`, through clients built in `aws`) is read by the `poller`, one
//! target (a Region of an owner account) at a time, which decides about reports (`report`) and
//! tells each image's status; `app` runs one task per target and composes their latest results
//! into a `snapshot`, which `metrics` renders when it changes; the `server` hands the rendered
//! bytes to every scrape. `app` also owns start-up, reloads and shutdown; the binaries are thin.

pub mod app;
pub mod aws;
pub mod cli;
pub mod config;
pub mod ec2;
pub mod exposition;
pub mod ids;
pub mod intern;
pub mod logging;
pub mod metrics;
pub mod poller;
pub mod preflight;
pub mod report;
pub mod server;
pub mod snapshot;
pub mod web_config;
pub mod yaml_scan;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("AMI_USAGE_REVISION");
pub const VERSION_LINE: &str = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("AMI_USAGE_REVISION"), ")");
