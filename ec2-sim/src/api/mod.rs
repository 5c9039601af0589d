//! The EC2 operations, and the one place requests are dispatched to them.
//!
//! `dispatch` is the seam for the fault-injection layer (`crate::fault`): everything from form parameters to the
//! final status and body happens behind it, so the layer in front can delay, throttle, fail or mangle any operation
//! without touching the operations themselves. The layer also counts requests, at arrival, so that a request that
//! is delayed, refused or mangled is counted exactly once.
//!
//! STS requests arrive on the same port and pass the same seam; `dispatch` hands them to `crate::sts`. Every EC2
//! operation sees only the data of the caller's owner account (`Caller::owner`).

mod create_report;
mod delete_report;
mod describe_entries;
mod describe_images;
mod describe_references;
mod describe_reports;

use crate::error::Ec2Error;
use crate::filter::Filter;
use crate::query::Params;
use crate::state::{Caller, State};
use crate::sts::{self, STS_VERSION};
use crate::xml;

/// Which API a request is for: they differ in their error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Ec2,
    Sts,
}

impl Service {
    /// STS when the request says STS's API version or is signed for `sts`; EC2 otherwise.
    pub(crate) fn of(params: &Params, caller: &Caller) -> Service {
        if params.get("Version") == Some(STS_VERSION) || caller.service == "sts" { Service::Sts } else { Service::Ec2 }
    }

    fn error_body(self, err: &Ec2Error, request_id: &str) -> String {
        match self {
            Service::Ec2 => xml::error_body(err, request_id),
            Service::Sts => xml::sts_error_body(err, request_id),
        }
    }
}

/// One answer to a Query request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Also sent as the `x-amzn-requestid` header, which is where the SDK looks for it.
    pub(crate) request_id: String,
    pub(crate) action: String,
    pub(crate) service: Service,
}

/// The Action a request is counted and matched under: `(none)` without one, and at most 64 characters, so a
/// client sending junk actions cannot grow the counter map with huge strings.
pub(crate) fn action_name(params: &Params) -> String {
    match params.get("Action") {
        None | Some("") => "(none)".to_string(),
        Some(action) => action.chars().take(64).collect(),
    }
}

/// Applies due state transitions, runs the operation on the caller's data and renders the success or error body.
/// `action` is `action_name(params)`; the fault layer has counted the request.
pub(crate) fn dispatch(state: &mut State, params: &Params, action: String, caller: &Caller) -> ApiResponse {
    state.refresh();
    let request_id = state.next_request_id();
    let service = Service::of(params, caller);
    let owner = caller.owner;
    let result = match (service, params.get("Action").unwrap_or("")) {
        (Service::Sts, _) => sts::handle(state, params, caller, &request_id),
        (_, "CreateImageUsageReport") => create_report::handle(state, owner, params, &request_id),
        (_, "DescribeImageUsageReports") => describe_reports::handle(state, owner, params, &request_id),
        (_, "DescribeImageUsageReportEntries") => describe_entries::handle(state, owner, params, &request_id),
        (_, "DeleteImageUsageReport") => delete_report::handle(state, owner, params, &request_id),
        (_, "DescribeImages") => describe_images::handle(state, owner, params, &request_id),
        (_, "DescribeImageReferences") => describe_references::handle(state, caller, params, &request_id),
        (_, "") => Err(Ec2Error::missing("Action")),
        (_, other) => {
            Err(Ec2Error::client("InvalidAction", format!("The action {other} is not valid for this web service.")))
        }
    };
    match result {
        Ok(body) => ApiResponse { status: 200, body, request_id, action, service },
        Err(err) => {
            ApiResponse { status: err.status, body: service.error_body(&err, &request_id), request_id, action, service }
        }
    }
}

/// Answers with `err` without running the operation (a refusal by the fault layer), in the service's envelope.
pub(crate) fn reject(state: &mut State, service: Service, action: String, err: &Ec2Error) -> ApiResponse {
    let request_id = state.next_request_id();
    ApiResponse { status: err.status, body: service.error_body(err, &request_id), request_id, action, service }
}

/// Rejects filter names an operation does not know, as EC2 does, instead of silently matching everything.
fn check_filter_names(filters: &[Filter], known: &[&str], allow_tags: bool) -> Result<(), Ec2Error> {
    for f in filters {
        let ok = known.contains(&f.name.as_str()) || (allow_tags && f.name.starts_with("tag:"));
        if !ok {
            return Err(Ec2Error::invalid_filter(&f.name));
        }
    }
    Ok(())
}

/// `tag:<key>` and `tag-key` filters against a tag list.
fn tag_filter_matches(filter: &Filter, tags: &[(String, String)]) -> Option<bool> {
    if let Some(key) = filter.name.strip_prefix("tag:") {
        return Some(tags.iter().any(|(k, v)| k == key && filter.matches(v)));
    }
    if filter.name == "tag-key" {
        return Some(filter.matches_any(tags.iter().map(|(k, _)| k.as_str())));
    }
    None
}

fn check_image_ids(ids: &[String]) -> Result<(), Ec2Error> {
    match ids.iter().find(|id| !crate::ids::is_image_id(id)) {
        Some(bad) => Err(Ec2Error::malformed_image(bad)),
        None => Ok(()),
    }
}

fn write_tags(w: &mut xml::XmlWriter, tags: &[(String, String)]) {
    w.set("tagSet", tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
}

#[cfg(test)]
pub(crate) mod tests;
