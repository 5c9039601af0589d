//! ami-usage-exporter: a Prometheus exporter for EC2 AMI usage reports.
//!
//! The data flows one way, one module a step. The configuration ([`config`], valid by
//! construction) names the targets, Regions of owner accounts; [`aws`] is everything that
//! speaks to EC2, a client per target; [`poll`] reads each target, applying the pure rules of
//! [`report`] (which report serves, when to ask for a new one, what is superseded), and tells
//! each image's status; the statuses of every target make an immutable [`snapshot`], the
//! contract between polling and serving; [`render`] turns a snapshot into the bytes of
//! `/metrics`, cached while no report changes, and into the status page for people; [`http`]
//! serves those bytes and the exporter's own metrics ([`self_metrics`]) to every scrape, never
//! waiting for AWS, and the page at `/`. [`app`] alone knows all of
//! them: it wires them together, runs one poll task per target, and owns start-up, reloads and
//! shutdown. The binaries are thin, and the modules that are `pub` are those they, the
//! integration tests, the benches and the fuzz targets use.
//!
//! ```text
//! config ─▶ aws ─▶ poll (report, snapshot) ─▶ render ─▶ http
//!                                  ▲                      ▲
//!                                  └──────── app ─────────┘
//! ```

// The map above links to every module, private ones included: the docs are built with
// `--document-private-items` (README, .ci/run), since most of the code is crate-private.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub(crate) mod aws;
pub mod cli;
pub mod config;
pub(crate) mod http;
pub(crate) mod intern;
pub mod logging;
pub(crate) mod poll;
pub mod render;
pub mod report;
pub(crate) mod self_metrics;
pub mod shard;
pub mod snapshot;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("AMI_USAGE_REVISION");
pub const VERSION_LINE: &str = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("AMI_USAGE_REVISION"), ")");

/// The prefix of every metric the exporter serves.
pub(crate) const METRIC_PREFIX: &str = "ami_usage";
