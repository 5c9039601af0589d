//! `CreateImageUsageReport`: validates the request as EC2 documents it, then hands it to the state.
//!
//! Syntax is checked before `DryRun` and semantics (image existence, idempotency, quotas) after it, so a dry run
//! of a well-formed request succeeds the way a permission check should.

use std::collections::BTreeSet;

use crate::error::Ec2Error;
use crate::ids::{is_account_id, is_image_id};
use crate::model::{CreateRequest, ResourceTypeSpec};
use crate::query::Params;
use crate::state::{OwnerIx, State};
use crate::xml::XmlWriter;

const KNOWN_RESOURCE_TYPES: [&str; 4] =
    ["ec2:Instance", "ec2:LaunchTemplate", "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe"];
const MAX_ACCOUNT_IDS: usize = 200;
const MAX_CLIENT_TOKEN: usize = 128;
const MAX_TAGS: usize = 50;

pub(super) fn handle(state: &mut State, owner: OwnerIx, params: &Params, request_id: &str) -> Result<String, Ec2Error> {
    let extra_types = &state.spec(owner).resource_types;
    let (request, client_token) = parse(params, extra_types)?;
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    let report_id = state.create_report(owner, request, client_token)?;
    let mut w = XmlWriter::success("CreateImageUsageReportResponse", request_id);
    w.leaf("reportId", &report_id);
    Ok(w.finish())
}

pub(super) fn parse(params: &Params, extra_types: &[String]) -> Result<(CreateRequest, Option<String>), Ec2Error> {
    let image_id = params.get("ImageId").filter(|s| !s.is_empty()).ok_or_else(|| Ec2Error::missing("ImageId"))?;
    if !is_image_id(image_id) {
        return Err(Ec2Error::malformed_image(image_id));
    }
    let resource_types = parse_resource_types(params, extra_types)?;
    let account_ids = parse_account_ids(params)?;
    let client_token = match params.get("ClientToken") {
        None | Some("") => None,
        Some(t) if t.chars().count() > MAX_CLIENT_TOKEN => {
            return Err(Ec2Error::invalid_value(format!(
                "The ClientToken is too long: at most {MAX_CLIENT_TOKEN} characters are allowed."
            )));
        }
        Some(t) => Some(t.to_string()),
    };
    let tags = parse_tags(params)?;
    Ok((CreateRequest { image_id: image_id.to_string(), resource_types, account_ids, tags }, client_token))
}

fn parse_resource_types(params: &Params, extra_types: &[String]) -> Result<Vec<ResourceTypeSpec>, Ec2Error> {
    let groups = params.groups("ResourceType");
    if groups.is_empty() {
        return Err(Ec2Error::missing("ResourceTypes"));
    }
    let mut out: Vec<ResourceTypeSpec> = Vec::new();
    for group in groups {
        let name = group
            .get("ResourceType")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Ec2Error::missing("ResourceType.N.ResourceType"))?;
        if !KNOWN_RESOURCE_TYPES.contains(&name) && !extra_types.iter().any(|t| t == name) {
            return Err(Ec2Error::invalid_value(format!("The resource type '{name}' is not supported.")));
        }
        if out.iter().any(|rt| rt.resource_type == name) {
            return Err(Ec2Error::invalid_value(format!("The resource type '{name}' is specified more than once.")));
        }
        let mut version_depth = None;
        for option in group.groups("ResourceTypeOption") {
            let option_name = option.get("OptionName").unwrap_or("");
            if option_name != "version-depth" {
                return Err(Ec2Error::invalid_value(format!(
                    "The resource type option '{option_name}' is not valid. The only valid option is 'version-depth'."
                )));
            }
            if name != "ec2:LaunchTemplate" {
                return Err(Ec2Error::invalid_value(format!(
                    "The option 'version-depth' is only valid for resource type 'ec2:LaunchTemplate', not '{name}'."
                )));
            }
            if version_depth.is_some() {
                return Err(Ec2Error::invalid_value("The option 'version-depth' is specified more than once."));
            }
            let values = option.list("OptionValue");
            let depth = match values.as_slice() {
                [one] => one.trim().parse::<u32>().ok().filter(|d| (1..=10_000).contains(d)),
                _ => None,
            };
            match depth {
                Some(d) => version_depth = Some(d),
                None => {
                    return Err(Ec2Error::invalid_value(format!(
                        "The value of 'version-depth' must be a single integer from 1 to 10000, got {values:?}."
                    )));
                }
            }
        }
        out.push(ResourceTypeSpec { resource_type: name.to_string(), version_depth });
    }
    Ok(out)
}

fn parse_account_ids(params: &Params) -> Result<Vec<String>, Ec2Error> {
    let ids = params.list("AccountId");
    if ids.len() > MAX_ACCOUNT_IDS {
        return Err(Ec2Error::invalid_value(format!(
            "Too many AccountIds: {} given, at most {MAX_ACCOUNT_IDS} allowed.",
            ids.len()
        )));
    }
    if let Some(bad) = ids.iter().find(|id| !is_account_id(id)) {
        return Err(Ec2Error::invalid_value(format!("Invalid account ID '{bad}': expected 12 digits.")));
    }
    let mut seen = BTreeSet::new();
    Ok(ids.into_iter().filter(|id| seen.insert(id.clone())).collect())
}

fn check_tag_text(what: &str, text: &str, max: usize) -> Result<(), Ec2Error> {
    if text.chars().count() > max || text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(Ec2Error::invalid_value(format!(
            "The tag {what} '{text}' is invalid: at most {max} characters, no control characters."
        )));
    }
    Ok(())
}

fn parse_tags(params: &Params) -> Result<Vec<(String, String)>, Ec2Error> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for spec in params.groups("TagSpecification") {
        let resource_type = spec.get("ResourceType").unwrap_or("");
        if resource_type != "image-usage-report" {
            return Err(Ec2Error::invalid_value(format!(
                "'{resource_type}' is not a valid taggable resource type for this operation. \
                 Use 'image-usage-report'."
            )));
        }
        for tag in spec.groups("Tag") {
            let key = tag.get("Key").unwrap_or("");
            let value = tag.get("Value").unwrap_or("");
            if key.is_empty() {
                return Err(Ec2Error::invalid_value("Tag keys must not be empty."));
            }
            check_tag_text("key", key, 128)?;
            check_tag_text("value", value, 256)?;
            if tags.iter().any(|(k, _)| k == key) {
                return Err(Ec2Error::invalid_value(format!("Duplicate tag key '{key}'.")));
            }
            tags.push((key.to_string(), value.to_string()));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(Ec2Error::invalid_value(format!("Too many tags: at most {MAX_TAGS} are allowed.")));
    }
    Ok(tags)
}
