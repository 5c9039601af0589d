//! A local simulator of the EC2 AMI usage report API, speaking the EC2 Query protocol over HTTP so that the real
//! `aws-sdk-ec2` client can be pointed at it, with STS `AssumeRole` on the same port for several owner accounts.
//! See README.md for what it simulates and where it deviates from AWS.

mod api;
mod body;
mod config;
mod dataset;
mod error;
mod facts;
mod fault;
mod filter;
mod ids;
mod model;
mod pagination;
mod query;
mod references;
mod rng;
mod running;
mod server;
mod sigv4;
mod sim;
mod state;
mod sts;
mod timefmt;
mod xml;

pub use config::{CreateOutcome, RoleSpec, SimConfig};
pub use dataset::DatasetSpec;
pub use fault::{Fault, FaultRule};
pub use model::{IMAGE_STATES, ImageFacts, ReportState, ReportView, ResourceTypeSpec, TruthEntry};
pub use references::{
    DEFAULT_REFERENCE_REGION, DEFAULT_REFERENCE_VERSION_DEPTH, INSTANCE_STATES, REFERENCE_RESOURCE_TYPES,
    ReferenceKind, ReferenceQuery, ReferenceTypeQuery, ReferenceView,
};
pub use running::RunningSimulator;
pub use sim::Simulator;
