//! `DeleteImageUsageReport`: removes a report before it expires.

use crate::error::Ec2Error;
use crate::query::Params;
use crate::state::{OwnerIx, State};
use crate::xml::XmlWriter;

pub(super) fn handle(state: &mut State, owner: OwnerIx, params: &Params, request_id: &str) -> Result<String, Ec2Error> {
    let report_id = params.get("ReportId").filter(|s| !s.is_empty()).ok_or_else(|| Ec2Error::missing("ReportId"))?;
    if params.dry_run()? {
        return Err(Ec2Error::dry_run());
    }
    state.delete_report(owner, report_id)?;
    let mut w = XmlWriter::success("DeleteImageUsageReportResponse", request_id);
    w.leaf("return", "true");
    Ok(w.finish())
}
