//! The simulator's nouns: images and their facts, usage, reports, and the views handed to library users.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Current usage of one image: (account ID, resource type) -> count. Zero counts are not stored, because whether
/// AWS lists accounts with zero usage is undocumented and leaving them out is the cautious reading.
pub(crate) type Usage = BTreeMap<(String, String), i64>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) owner_id: String,
    pub(crate) creation_date: SystemTime,
    pub(crate) architecture: &'static str,
    pub(crate) tags: Vec<(String, String)>,
    /// `imageState`: the dataset uses `available` and `disabled`; tests may set any other (see `IMAGE_STATES`).
    pub(crate) state: String,
    pub(crate) public: bool,
    /// Whole minutes, as EC2 stores it.
    pub(crate) deprecation_time: Option<SystemTime>,
    /// Whole milliseconds; None for an image that never launched an instance.
    pub(crate) last_launched_time: Option<SystemTime>,
}

/// The `imageState` values AWS documents.
pub const IMAGE_STATES: [&str; 8] =
    ["pending", "available", "invalid", "deregistered", "transient", "failed", "error", "disabled"];

impl Image {
    pub(crate) fn facts(&self) -> ImageFacts {
        ImageFacts {
            image_id: self.id.clone(),
            owner_id: self.owner_id.clone(),
            name: self.name.clone(),
            state: self.state.clone(),
            public: self.public,
            creation_date: self.creation_date,
            deprecation_time: self.deprecation_time,
            last_launched_time: self.last_launched_time,
        }
    }
}

/// What `DescribeImages` says about an image (`Simulator::image_facts`). Times are exactly what the wire carries:
/// `creation_date` and `last_launched_time` in whole milliseconds, `deprecation_time` in whole minutes, so they
/// compare equal to parsed responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub image_id: String,
    pub owner_id: String,
    pub name: String,
    /// `imageState`, e.g. `available` or `disabled`.
    pub state: String,
    /// `isPublic`.
    pub public: bool,
    pub creation_date: SystemTime,
    /// None: no deprecation is set (`deprecationTime` absent).
    pub deprecation_time: Option<SystemTime>,
    /// None: the image never launched an instance (`lastLaunchedTime` absent).
    pub last_launched_time: Option<SystemTime>,
}

/// A report's life cycle as `DescribeImageUsageReports` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportState {
    Pending,
    Available,
    /// With the `stateReason` text (AWS does not document the values).
    Error(String),
    /// A state AWS might add one day (`Simulator::set_report_state`): clients must survive it.
    Unknown(&'static str),
}

impl ReportState {
    /// The wire value of `state`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportState::Pending => "pending",
            ReportState::Available => "available",
            ReportState::Error(_) => "error",
            ReportState::Unknown(state) => state,
        }
    }
}

/// One `ResourceTypes` member of a report. `version-depth` is the only option AWS defines (and only for
/// `ec2:LaunchTemplate`), so it is a field rather than a generic option list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceTypeSpec {
    pub resource_type: String,
    pub version_depth: Option<u32>,
}

/// What a create request asked for, normalised: the unit of comparison for `ClientToken` idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateRequest {
    pub(crate) image_id: String,
    pub(crate) resource_types: Vec<ResourceTypeSpec>,
    /// Empty means all accounts.
    pub(crate) account_ids: Vec<String>,
    pub(crate) tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageEntry {
    pub(crate) account_id: String,
    pub(crate) resource_type: String,
    pub(crate) usage_count: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) id: String,
    pub(crate) request: CreateRequest,
    pub(crate) client_token: Option<String>,
    pub(crate) state: ReportState,
    pub(crate) creation_time: SystemTime,
    pub(crate) expiration_time: SystemTime,
    /// When a pending report turns available (or error); meaningless in other states.
    pub(crate) ready_at: SystemTime,
    /// Frozen at the moment the report became available; empty otherwise.
    pub(crate) entries: Vec<UsageEntry>,
    /// Creation order, to break ties between reports created in the same millisecond.
    pub(crate) seq: u64,
}

impl Report {
    /// The stable order of every listing: by image, then oldest first.
    pub(crate) fn sort_key(&self) -> (&str, SystemTime, u64) {
        (&self.request.image_id, self.creation_time, self.seq)
    }

    pub(crate) fn view(&self) -> ReportView {
        ReportView {
            id: self.id.clone(),
            image_id: self.request.image_id.clone(),
            state: self.state.clone(),
            creation_time: self.creation_time,
            expiration_time: self.expiration_time,
            client_token: self.client_token.clone(),
            tags: self.request.tags.clone(),
            account_ids: self.request.account_ids.clone(),
            resource_types: self.request.resource_types.clone(),
        }
    }
}

/// The frozen contents of a report, as a snapshot of the current usage restricted to what the report asked for.
pub(crate) fn snapshot(usage: Option<&Usage>, request: &CreateRequest) -> Vec<UsageEntry> {
    let Some(usage) = usage else {
        return Vec::new();
    };
    usage
        .iter()
        .filter(|((account, rtype), count)| {
            **count != 0
                && (request.account_ids.is_empty() || request.account_ids.contains(account))
                && request.resource_types.iter().any(|rt| &rt.resource_type == rtype)
        })
        .map(|((account, rtype), count)| UsageEntry {
            account_id: account.clone(),
            resource_type: rtype.clone(),
            usage_count: *count,
        })
        .collect()
}

/// A report as library users see it (`Simulator::reports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportView {
    pub id: String,
    pub image_id: String,
    pub state: ReportState,
    pub creation_time: SystemTime,
    pub expiration_time: SystemTime,
    pub client_token: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Empty when the report covers all accounts.
    pub account_ids: Vec<String>,
    pub resource_types: Vec<ResourceTypeSpec>,
}

/// One line of the answer a correct exporter should arrive at: an entry of the newest available report of an image.
/// Times are whole milliseconds, exactly what the wire carries, so they compare equal to parsed responses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TruthEntry {
    pub image_id: String,
    pub report_id: String,
    #[serde(with = "crate::timefmt::rfc3339_millis")]
    pub report_creation_time: SystemTime,
    pub account_id: String,
    pub resource_type: String,
    pub usage_count: i64,
}
