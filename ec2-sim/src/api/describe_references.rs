//! `DescribeImageReferences`: the resources of the caller's own account and Region that reference the given
//! images (whoever owns them), one item per resource, paginated.

use crate::error::Ec2Error;
use crate::pagination::paginate;
use crate::query::Params;
use crate::references::{
    INSTANCE, INSTANCE_STATES, LAUNCH_TEMPLATE, MAX_VERSION_DEPTH, REFERENCE_RESOURCE_TYPES, Reference, ReferenceQuery,
    ReferenceTypeQuery,
};
use crate::state::{Caller, NO_REGION, State};
use crate::xml::XmlWriter;

use super::check_image_ids;

const MAX_IDS: usize = 10;
const MIN_RESULTS: usize = 5;

pub(super) fn handle(
    state: &mut State,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<String, Ec2Error> {
    let image_ids = params.id_list("ImageId", MAX_IDS)?;
    if image_ids.is_empty() {
        return Err(Ec2Error::missing("ImageId"));
    }
    check_image_ids(&image_ids)?;
    let query = parse_query(params)?;
    if let Some(max) = params.max_results()?
        && max < MIN_RESULTS
    {
        return Err(Ec2Error::invalid_value(format!(
            "Value ({max}) for parameter maxResults is invalid. Expecting a value greater than or equal to {MIN_RESULTS}."
        )));
    }
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    let references = state.references(caller.owner);
    // In the order of the request's IDs; an unknown (well-formed) ID simply has no references.
    let selected: Vec<&Reference> = image_ids
        .iter()
        .flat_map(|id| references.iter().filter(move |r| &r.image_id == id))
        .filter(|r| query.matches(r))
        .collect();
    let page = paginate(selected, params)?;

    let region =
        if caller.region == NO_REGION { crate::references::DEFAULT_REFERENCE_REGION } else { caller.region.as_str() };
    let mut w = XmlWriter::success("DescribeImageReferencesResponse", request_id);
    w.set("imageReferenceSet", &page.items, |w, r| {
        w.leaf("imageId", &r.image_id);
        w.leaf("resourceType", r.kind.resource_type());
        w.leaf("arn", &r.arn(region, &caller.account));
    });
    if let Some(token) = &page.next_token {
        w.leaf("nextToken", token);
    }
    Ok(w.finish())
}

/// `IncludeAllResourceTypes` and `ResourceType.N`: at least one of them, known types each at most once, and only
/// the options AWS defines for them.
fn parse_query(params: &Params) -> Result<ReferenceQuery, Ec2Error> {
    let include_all_resource_types = params.bool("IncludeAllResourceTypes")?;
    let mut resource_types: Vec<ReferenceTypeQuery> = Vec::new();
    for (n, group) in params.groups("ResourceType").iter().enumerate() {
        let q = parse_type(group, n + 1)?;
        if resource_types.iter().any(|seen| seen.resource_type == q.resource_type) {
            return Err(Ec2Error::invalid_value(format!("The resource type '{}' is given twice", q.resource_type)));
        }
        resource_types.push(q);
    }
    if !include_all_resource_types && resource_types.is_empty() {
        return Err(Ec2Error::client(
            "MissingParameter",
            "The request must contain the parameter IncludeAllResourceTypes or ResourceType",
        ));
    }
    Ok(ReferenceQuery { include_all_resource_types, resource_types })
}

fn parse_type(group: &Params, n: usize) -> Result<ReferenceTypeQuery, Ec2Error> {
    let Some(rtype) = group.get("ResourceType") else {
        return Err(Ec2Error::missing(&format!("ResourceType.{n}.ResourceType")));
    };
    if !REFERENCE_RESOURCE_TYPES.contains(&rtype) {
        return Err(Ec2Error::invalid_value(format!(
            "The resource type '{rtype}' is not supported. Supported: {}",
            REFERENCE_RESOURCE_TYPES.join(", ")
        )));
    }
    let mut q = ReferenceTypeQuery::new(rtype);
    for (m, option) in group.groups("ResourceTypeOption").iter().enumerate() {
        let Some(name) = option.get("OptionName") else {
            return Err(Ec2Error::missing(&format!("ResourceType.{n}.ResourceTypeOption.{}.OptionName", m + 1)));
        };
        let values = option.list("OptionValue");
        if values.is_empty() {
            return Err(Ec2Error::invalid_value(format!("The option '{name}' must have at least one value")));
        }
        match (name, rtype) {
            ("state-name", INSTANCE) => {
                if let Some(bad) = values.iter().find(|v| !INSTANCE_STATES.contains(&v.as_str())) {
                    return Err(Ec2Error::invalid_value(format!(
                        "The value '{bad}' for option state-name is invalid. Valid values: {}",
                        INSTANCE_STATES.join(", ")
                    )));
                }
                q.state_names = values;
            }
            ("version-depth", LAUNCH_TEMPLATE) => q.version_depth = Some(parse_depth(&values)?),
            _ => {
                return Err(Ec2Error::invalid_value(format!(
                    "The option '{name}' is not valid for resource type '{rtype}'"
                )));
            }
        }
    }
    Ok(q)
}

fn parse_depth(values: &[String]) -> Result<u32, Ec2Error> {
    let invalid = || {
        Ec2Error::invalid_value(format!(
            "The value '{}' for option version-depth is invalid. Expecting one integer from 1 to {MAX_VERSION_DEPTH}.",
            values.join(",")
        ))
    };
    match values {
        [one] => one.trim().parse::<u32>().ok().filter(|d| (1..=MAX_VERSION_DEPTH).contains(d)).ok_or_else(invalid),
        _ => Err(invalid()),
    }
}
