//! `DescribeImageUsageReports`: lists reports by image, ID and filters, paginated.

use crate::error::Ec2Error;
use crate::model::{Report, ReportState};
use crate::pagination::paginate;
use crate::query::Params;
use crate::state::{OwnerIx, State};
use crate::timefmt::format_millis;
use crate::xml::XmlWriter;

use super::{check_filter_names, check_image_ids, tag_filter_matches, write_tags};

const MAX_IDS: usize = 200;

pub(super) fn handle(state: &mut State, owner: OwnerIx, params: &Params, request_id: &str) -> Result<String, Ec2Error> {
    let image_ids = params.id_list("ImageId", MAX_IDS)?;
    check_image_ids(&image_ids)?;
    let report_ids = params.id_list("ReportId", MAX_IDS)?;
    let filters = params.filters()?;
    check_filter_names(&filters, &["state", "creation-time", "tag-key"], true)?;
    params.max_results()?;
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    // Asking for a report that does not exist (or has expired) is an error, as with other EC2 IDs, rather than an
    // empty answer that would hide the mistake.
    if let Some(missing) = report_ids.iter().find(|id| !state.reports(owner).iter().any(|r| &r.id == *id)) {
        return Err(Ec2Error::unknown_report(missing));
    }
    let selected: Vec<&Report> = state
        .reports(owner)
        .iter()
        .filter(|r| image_ids.is_empty() || image_ids.contains(&r.request.image_id))
        .filter(|r| report_ids.is_empty() || report_ids.contains(&r.id))
        .filter(|r| {
            filters.iter().all(|f| match f.name.as_str() {
                "state" => f.matches(r.state.as_str()),
                "creation-time" => f.matches_time(r.creation_time),
                _ => tag_filter_matches(f, &r.request.tags).unwrap_or(false),
            })
        })
        .collect();
    let page = paginate(selected, params)?;

    let mut w = XmlWriter::success("DescribeImageUsageReportsResponse", request_id);
    w.set("imageUsageReportSet", &page.items, |w, r| write_report(w, r));
    if let Some(token) = &page.next_token {
        w.leaf("nextToken", token);
    }
    Ok(w.finish())
}

fn write_report(w: &mut XmlWriter, r: &Report) {
    w.leaf("imageId", &r.request.image_id);
    w.leaf("reportId", &r.id);
    w.set("resourceTypeSet", &r.request.resource_types, |w, rt| {
        w.leaf("resourceType", &rt.resource_type);
        if let Some(depth) = rt.version_depth {
            w.start("resourceTypeOptionSet");
            w.start("item");
            w.leaf("optionName", "version-depth");
            w.string_set("optionValueSet", &[depth.to_string()]);
            w.end();
            w.end();
        }
    });
    // Absent, not empty, when the report covers all accounts (as in the user guide's example).
    if !r.request.account_ids.is_empty() {
        w.string_set("accountIdSet", &r.request.account_ids);
    }
    w.leaf("state", r.state.as_str());
    if let ReportState::Error(reason) = &r.state {
        w.leaf("stateReason", reason);
    }
    w.leaf("creationTime", &format_millis(r.creation_time));
    w.leaf("expirationTime", &format_millis(r.expiration_time));
    if !r.request.tags.is_empty() {
        write_tags(w, &r.request.tags);
    }
}
