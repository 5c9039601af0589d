//! `DescribeImages`: the caller's own images by ID, owner, filters and pages, with the facts of the reference
//! table (state, visibility, creation, deprecation, last launch).
//!
//! The caller owns every image it can see, so deprecated images always appear (AWS hides them only from others
//! unless `IncludeDeprecated`); disabled ones appear only with `IncludeDisabled=true`, even when asked for by ID.

use crate::error::Ec2Error;
use crate::model::Image;
use crate::pagination::{Page, paginate};
use crate::query::Params;
use crate::state::{OwnerIx, State};
use crate::timefmt::{format_millis, format_seconds};
use crate::xml::XmlWriter;

use super::{check_filter_names, check_image_ids, tag_filter_matches, write_tags};

const FILTERS: [&str; 7] = ["name", "state", "image-id", "owner-id", "architecture", "is-public", "image-type"];

pub(super) fn handle(state: &mut State, owner: OwnerIx, params: &Params, request_id: &str) -> Result<String, Ec2Error> {
    let image_ids = params.id_list("ImageId", usize::MAX)?;
    check_image_ids(&image_ids)?;
    let owners = params.list("Owner");
    let filters = params.filters()?;
    check_filter_names(&filters, &[&FILTERS[..], &["tag-key"]].concat(), true)?;
    if params.max_results()?.is_some() && !image_ids.is_empty() {
        return Err(Ec2Error::client(
            "InvalidParameterCombination",
            "The parameter imageIdsSet cannot be used with the parameter maxResults",
        ));
    }
    // Validated for the error a client would get; owners see their deprecated images anyway.
    params.bool("IncludeDeprecated")?;
    let include_disabled = params.bool("IncludeDisabled")?;
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    let missing: Vec<&str> = image_ids.iter().filter(|id| !state.has_image(owner, id)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(Ec2Error::image_not_found(&missing));
    }
    let selected: Vec<&Image> = state
        .images(owner)
        .iter()
        .filter(|i| image_ids.is_empty() || image_ids.contains(&i.id))
        .filter(|i| include_disabled || i.state != "disabled")
        // `self` means the caller, which owns every image it can see (images are never shared between owners).
        .filter(|i| owners.is_empty() || owners.iter().any(|o| o == "self" || o == &i.owner_id))
        .filter(|i| {
            filters.iter().all(|f| match f.name.as_str() {
                "name" => f.matches(&i.name),
                "state" => f.matches(&i.state),
                "image-id" => f.matches(&i.id),
                "owner-id" => f.matches(&i.owner_id),
                "architecture" => f.matches(i.architecture),
                "is-public" => f.matches(if i.public { "true" } else { "false" }),
                "image-type" => f.matches("machine"),
                _ => tag_filter_matches(f, &i.tags).unwrap_or(false),
            })
        })
        .collect();
    // A call by ID cannot carry MaxResults, so it answers all its images at once, however many;
    // a token it cannot have been given is refused all the same.
    let page = if image_ids.is_empty() {
        paginate(selected, params)?
    } else {
        crate::pagination::position(params).ok_or_else(Ec2Error::invalid_token)?;
        Page { items: selected, next_token: None }
    };

    let mut w = XmlWriter::success("DescribeImagesResponse", request_id);
    w.set("imagesSet", &page.items, |w, i| write_image(w, i));
    if let Some(token) = &page.next_token {
        w.leaf("nextToken", token);
    }
    Ok(w.finish())
}

/// The elements in the order of the reference example; optional facts are absent when unset.
fn write_image(w: &mut XmlWriter, i: &Image) {
    w.leaf("imageId", &i.id);
    w.leaf("imageLocation", &format!("{}/{}", i.owner_id, i.name));
    w.leaf("imageState", &i.state);
    w.leaf("imageOwnerId", &i.owner_id);
    w.leaf("creationDate", &format_millis(i.creation_date));
    w.leaf("isPublic", if i.public { "true" } else { "false" });
    w.leaf("architecture", i.architecture);
    w.leaf("imageType", "machine");
    w.leaf("platformDetails", "Linux/UNIX");
    w.leaf("usageOperation", "RunInstances");
    w.leaf("name", &i.name);
    w.leaf("rootDeviceType", "ebs");
    w.leaf("rootDeviceName", "/dev/xvda");
    w.leaf("virtualizationType", "hvm");
    write_tags(w, &i.tags);
    w.leaf("hypervisor", "xen");
    w.leaf("enaSupport", "true");
    if let Some(t) = i.deprecation_time {
        w.leaf("deprecationTime", &format_seconds(t));
    }
    w.leaf("deregistrationProtection", "disabled");
    if let Some(t) = i.last_launched_time {
        w.leaf("lastLaunchedTime", &format_millis(t));
    }
}
