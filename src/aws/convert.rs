//! EC2's answers translated into the exporter's types. A report or entry that lacks a field the
//! exporter needs, or carries an impossible count, is refused with the reason, never guessed.

use std::time::SystemTime;

use aws_sdk_ec2::types::{Image, ImageUsageReport, ImageUsageReportEntry};
use aws_smithy_types::date_time::Format;

use crate::intern::Locked;
use crate::report::{CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE, Report, ReportParams, ReportState};
use crate::snapshot::{Entry, ImageFacts, MAX_PLAUSIBLE_USAGE};

fn to_system_time(t: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// An image and its facts. Times EC2 writes as strings (`creationDate` and `lastLaunchedTime` in
/// ISO 8601 with milliseconds, `deprecationTime` without); one that does not parse is refused.
pub(super) fn image(i: &Image) -> Result<(String, ImageFacts), String> {
    let id = i.image_id().ok_or("an image without imageId")?;
    let time = |field: &str, value: Option<&str>| -> Result<Option<SystemTime>, String> {
        value
            .map(|text| {
                aws_smithy_types::DateTime::from_str(text, Format::DateTimeWithOffset)
                    .ok()
                    .and_then(|t| to_system_time(&t))
                    .ok_or_else(|| format!("image {id} has an invalid {field} {text:?}"))
            })
            .transpose()
    };
    let facts = ImageFacts {
        name: i.name().unwrap_or_default().to_owned(),
        state: i.state().map_or("unknown", |s| s.as_str()).to_owned(),
        public: i.public().unwrap_or(false),
        created: time("creationDate", i.creation_date())?,
        last_launched: time("lastLaunchedTime", i.last_launched_time())?,
        deprecation: time("deprecationTime", i.deprecation_time())?,
    };
    Ok((id.to_owned(), facts))
}

pub(super) fn report(r: &ImageUsageReport) -> Result<Report, String> {
    let id = r.report_id().ok_or("a report without reportId")?;
    let missing = |field: &str| format!("report {id} has no {field}");
    let image_id = r.image_id().ok_or_else(|| missing("imageId"))?;
    let state = r.state().ok_or_else(|| missing("state"))?;
    let created = r.creation_time().and_then(to_system_time).ok_or_else(|| missing("valid creationTime"))?;
    let resource_types = r.resource_types().iter().filter_map(|rt| {
        let depth = rt
            .resource_type_options()
            .iter()
            .find(|o| o.option_name() == Some("version-depth"))
            .and_then(|o| o.option_values().first())
            .and_then(|v| v.parse().ok());
        rt.resource_type().map(|name| (name, depth))
    });
    let params = ReportParams::from_report(resource_types, r.account_ids().iter().map(String::as_str));
    let created_by_exporter =
        r.tags().iter().any(|t| t.key() == Some(CREATED_BY_TAG_KEY) && t.value() == Some(CREATED_BY_TAG_VALUE));
    Ok(Report {
        id: id.to_owned(),
        image_id: image_id.to_owned(),
        state: ReportState::parse(state, r.state_reason()),
        created,
        params,
        created_by_exporter,
    })
}

/// An entry, its strings shared through `strings` (see `intern`).
pub(super) fn entry(e: &ImageUsageReportEntry, strings: &mut Locked<'_>) -> Result<Entry, String> {
    let report_id = e.report_id().ok_or("an entry without reportId")?;
    let missing = |field: &str| format!("an entry of report {report_id} has no {field}");
    let account_id = e.account_id().ok_or_else(|| missing("accountId"))?;
    let resource_type = e.resource_type().ok_or_else(|| missing("resourceType"))?;
    let count = e.usage_count().ok_or_else(|| missing("usageCount"))?;
    let usage_count = u64::try_from(count)
        .ok()
        .filter(|n| *n <= MAX_PLAUSIBLE_USAGE)
        .ok_or_else(|| format!("an entry of report {report_id} has an impossible usageCount {count}"))?;
    Ok(Entry {
        report_id: strings.intern(report_id),
        account_id: strings.intern(account_id),
        resource_type: strings.intern(resource_type),
        usage_count,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_ec2::types::Tag;

    use super::*;
    use crate::intern::Interner;

    #[test]
    fn entries_missing_fields_or_negative_are_refused() {
        let interner = Interner::new();
        let mut strings = interner.lock();
        let mut convert_entry = |e: &ImageUsageReportEntry| entry(e, &mut strings);
        let good = ImageUsageReportEntry::builder()
            .report_id("amiur-1")
            .account_id("111122223333")
            .resource_type("ec2:Instance")
            .usage_count(3)
            .build();
        assert_eq!(convert_entry(&good).map(|e| e.usage_count), Ok(3));
        let no_count =
            ImageUsageReportEntry::builder().report_id("amiur-1").account_id("111122223333").resource_type("x").build();
        assert!(convert_entry(&no_count).is_err_and(|e| e.contains("usageCount")));
        let negative = ImageUsageReportEntry::builder()
            .report_id("amiur-1")
            .account_id("111122223333")
            .resource_type("ec2:Instance")
            .usage_count(-1)
            .build();
        assert!(convert_entry(&negative).is_err_and(|e| e.contains("impossible usageCount -1")));
        let huge = ImageUsageReportEntry::builder()
            .report_id("amiur-1")
            .account_id("111122223333")
            .resource_type("ec2:Instance")
            .usage_count(i64::MAX)
            .build();
        assert!(convert_entry(&huge).is_err_and(|e| e.contains("impossible")));
    }

    #[test]
    fn entries_share_their_strings() {
        let interner = Interner::new();
        let convert = |account: &str, rt: &str| {
            let e = ImageUsageReportEntry::builder()
                .report_id("amiur-1")
                .account_id(account)
                .resource_type(rt)
                .usage_count(1)
                .build();
            entry(&e, &mut interner.lock()).expect("valid")
        };
        let a = convert("111122223333", "ec2:Instance");
        let b = convert("111122223333", "ec2:LaunchTemplate");
        let c = convert("444455556666", "ec2:Instance");
        assert!(Arc::ptr_eq(&a.report_id, &c.report_id));
        assert!(Arc::ptr_eq(&a.account_id, &b.account_id));
        assert!(Arc::ptr_eq(&a.resource_type, &c.resource_type));
        assert_eq!(interner.len(), 5);
    }

    #[test]
    fn image_facts_read_every_time_format_ec2_writes() {
        let described = Image::builder()
            .image_id("ami-0abcdef1234567890")
            .name("golden-al2023-2026-11")
            .state(aws_sdk_ec2::types::ImageState::Disabled)
            .public(true)
            .creation_date("2026-11-02T09:15:27.000Z")
            .deprecation_time("2027-05-02T09:15:00Z")
            .last_launched_time("2026-11-30T22:41:09.000Z")
            .build();
        let (id, facts) = image(&described).expect("valid");
        assert_eq!(id, "ami-0abcdef1234567890");
        assert_eq!(
            (facts.name.as_str(), facts.state.as_str(), facts.public),
            ("golden-al2023-2026-11", "disabled", true)
        );
        let secs =
            |t: Option<SystemTime>| t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        assert_eq!(secs(facts.created), Some(1_793_610_927));
        assert_eq!(secs(facts.deprecation), Some(1_809_249_300));
        assert_eq!(secs(facts.last_launched), Some(1_796_078_469));
        let never = Image::builder().image_id("ami-12345678").state(aws_sdk_ec2::types::ImageState::Available).build();
        let (_, facts) = image(&never).expect("valid");
        assert_eq!((facts.last_launched, facts.deprecation, facts.public), (None, None, false));
        let broken = Image::builder().image_id("ami-12345678").deprecation_time("soon").build();
        assert!(image(&broken).is_err_and(|e| e.contains("deprecationTime")));
    }

    #[test]
    fn report_conversion_reads_parameters_and_marker_tag() {
        let listed = ImageUsageReport::builder()
            .report_id("amiur-1")
            .image_id("ami-12345678")
            .state("error")
            .state_reason("Internal error")
            .creation_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .tags(Tag::builder().key(CREATED_BY_TAG_KEY).value(CREATED_BY_TAG_VALUE).build())
            .build();
        let r = report(&listed).expect("valid");
        assert_eq!(r.state, ReportState::Error { reason: "Internal error".into() });
        assert!(r.created_by_exporter);
        let no_time =
            ImageUsageReport::builder().report_id("amiur-1").image_id("ami-12345678").state("available").build();
        assert!(report(&no_time).is_err_and(|e| e.contains("creationTime")));
    }
}
