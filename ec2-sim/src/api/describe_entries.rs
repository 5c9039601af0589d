//! `DescribeImageUsageReportEntries`: the (account, resource type) counts of available reports.
//!
//! Faithful to AWS's trap: asked by `ImageIds`, it returns the entries of every unexpired available report of those
//! images, mixed together. A client must pick the newest report per image and ask by `ReportIds`.

use std::time::SystemTime;

use crate::error::Ec2Error;
use crate::model::{ReportState, UsageEntry};
use crate::pagination::paginate;
use crate::query::Params;
use crate::state::{OwnerIx, State};
use crate::timefmt::format_millis;
use crate::xml::XmlWriter;

use super::{check_filter_names, check_image_ids};

const MAX_IDS: usize = 200;

struct Row<'a> {
    image_id: &'a str,
    report_id: &'a str,
    report_creation_time: SystemTime,
    entry: &'a UsageEntry,
}

pub(super) fn handle(state: &mut State, owner: OwnerIx, params: &Params, request_id: &str) -> Result<String, Ec2Error> {
    let image_ids = params.id_list("ImageId", MAX_IDS)?;
    check_image_ids(&image_ids)?;
    let report_ids = params.id_list("ReportId", MAX_IDS)?;
    let filters = params.filters()?;
    check_filter_names(&filters, &["account-id", "creation-time", "resource-type"], false)?;
    params.max_results()?;
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    // AWS publishes no error code for this; see the README.
    if let Some(missing) = report_ids.iter().find(|id| !state.reports(owner).iter().any(|r| &r.id == *id)) {
        return Err(Ec2Error::unknown_report(missing));
    }
    let mut rows: Vec<Row<'_>> = state
        .reports(owner)
        .iter()
        .filter(|r| r.state == ReportState::Available)
        .filter(|r| image_ids.is_empty() || image_ids.contains(&r.request.image_id))
        .filter(|r| report_ids.is_empty() || report_ids.contains(&r.id))
        .filter(|r| filters.iter().filter(|f| f.name == "creation-time").all(|f| f.matches_time(r.creation_time)))
        .flat_map(|r| {
            r.entries.iter().map(move |entry| Row {
                image_id: &r.request.image_id,
                report_id: &r.id,
                report_creation_time: r.creation_time,
                entry,
            })
        })
        .filter(|row| {
            filters.iter().all(|f| match f.name.as_str() {
                "account-id" => f.matches(&row.entry.account_id),
                "resource-type" => f.matches(&row.entry.resource_type),
                _ => true,
            })
        })
        .collect();
    // Interleave the reports of one image (stable sort keeps oldest report first per key), so the mix is as
    // visible as it is on AWS, where nothing groups entries by report either.
    rows.sort_by(|a, b| {
        (a.image_id, &a.entry.account_id, &a.entry.resource_type).cmp(&(
            b.image_id,
            &b.entry.account_id,
            &b.entry.resource_type,
        ))
    });
    let page = paginate(rows, params)?;

    let mut w = XmlWriter::success("DescribeImageUsageReportEntriesResponse", request_id);
    w.set("imageUsageReportEntrySet", &page.items, |w, row| {
        w.leaf("resourceType", &row.entry.resource_type);
        w.leaf("reportId", row.report_id);
        w.leaf("usageCount", &row.entry.usage_count.to_string());
        w.leaf("accountId", &row.entry.account_id);
        w.leaf("imageId", row.image_id);
        w.leaf("reportCreationTime", &format_millis(row.report_creation_time));
    });
    if let Some(token) = &page.next_token {
        w.leaf("nextToken", token);
    }
    Ok(w.finish())
}
