//! The EC2 calls the exporter makes, and the translation of their answers into our types.
//!
//! Every Describe call here is paginated to the end, guarded against a token that repeats and
//! against an endless run of pages, and passes through one semaphore per Region so that the
//! exporter never has more than `max_concurrent_requests` calls in flight against EC2's
//! per-account throttle.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, ImageUsageReport, ImageUsageReportEntry, ImageUsageResourceTypeOptionRequest,
    ImageUsageResourceTypeRequest, ResourceType as TagResourceType, Tag, TagSpecification,
};
use tokio::sync::Semaphore;

use crate::aws::{CREDENTIALS_ERROR, IncompleteAnswer, RESPONSE_ERROR, caused_by, error_chain, is_credentials_error};
use crate::config::{EntryQuery, ReportPolicy};
use crate::intern::{Interner, Locked};
use crate::metrics::ApiMetrics;
use crate::report::{CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE, ReportParams, ReportState, UsageReport};
use crate::snapshot::Entry;

/// A well-formed report ID that names no report, for the DryRun permission check of
/// DeleteImageUsageReport.
const DRY_RUN_REPORT_ID: &str = "amiur-00000000000000000";
/// A paginated call that needs more pages than this is treated as broken, not followed forever.
const MAX_PAGES: usize = 10_000;
/// No account runs a billion resources from one AMI (EC2 quotas are in the thousands); a larger
/// count is a broken answer, and exporting it would wreck every sum built on it.
pub const MAX_PLAUSIBLE_USAGE: u64 = 1_000_000_000;

/// A failed EC2 call, with what the operator needs to act on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct ApiError {
    pub operation: &'static str,
    /// EC2's error code (e.g. `UnauthorizedOperation`), or the kind of failure when EC2 did not
    /// answer (`Timeout`, `ConnectionError`, `ResponseError`, `ClientError`, `PaginationLoop`).
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn from_sdk<E>(operation: &'static str, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let SdkError::ServiceError(e) = &err {
            let code = e.err().code().unwrap_or(RESPONSE_ERROR).to_owned();
            return Self { operation, code, message: e.err().message().unwrap_or("no message").to_owned() };
        }
        let code = match &err {
            _ if caused_by::<IncompleteAnswer>(&err) => RESPONSE_ERROR,
            SdkError::TimeoutError(_) => "Timeout",
            SdkError::DispatchFailure(_) if is_credentials_error(&err) => CREDENTIALS_ERROR,
            SdkError::DispatchFailure(_) => "ConnectionError",
            SdkError::ResponseError(_) => RESPONSE_ERROR,
            _ => "ClientError",
        };
        Self { operation, code: code.to_owned(), message: error_chain(&err) }
    }

    fn pagination(operation: &'static str, message: String) -> Self {
        Self { operation, code: "PaginationLoop".to_owned(), message }
    }

    /// The task running the call was cancelled (the runtime is shutting down).
    pub fn cancelled(operation: &'static str, message: String) -> Self {
        Self { operation, code: "Cancelled".to_owned(), message }
    }
}

/// Which reports to list: those of some images, or some reports by ID.
#[derive(Debug, Clone, Copy)]
pub enum ReportSelector<'a> {
    Images(&'a [String]),
    Reports(&'a [String]),
}

/// What a Describe answer held that could not be used, so the caller can count and log it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    pub example: Option<String>,
}

impl Skipped {
    fn add(&mut self, why: impl FnOnce() -> String) {
        self.count += 1;
        if self.example.is_none() {
            self.example = Some(why());
        }
    }
}

/// The report API of one Region.
#[derive(Clone)]
pub struct Ec2Reports {
    client: aws_sdk_ec2::Client,
    limiter: Arc<Semaphore>,
    page_size: i32,
    region: String,
    /// For failures the SDK never sees, such as a looping nextToken.
    metrics: ApiMetrics,
}

/// Whether EC2 refused a `NextToken` it handed out earlier (it expired, or the query changed):
/// the code EC2's API reference lists for it. (`ExpiredToken` is not one: that is an expired
/// security token, which a fresh chain would not cure.)
fn is_refused_token(code: &str) -> bool {
    code == "InvalidPaginationToken"
}

/// A DescribeImageUsageReportEntries chain read so far: the entries of its pages, and where the
/// next page starts. Kept across polls when a page fails, so that a long chain under faults
/// makes progress instead of starting over every poll.
#[derive(Debug)]
pub struct EntryChain {
    pages: Pages,
    entries: Vec<Entry>,
    skipped: Skipped,
    done: bool,
}

impl Default for EntryChain {
    fn default() -> Self {
        Self {
            pages: Pages::new("DescribeImageUsageReportEntries"),
            entries: Vec::new(),
            skipped: Skipped::default(),
            done: false,
        }
    }
}

impl EntryChain {
    /// Pages read so far.
    pub fn pages(&self) -> usize {
        self.pages.fetched
    }

    /// The entries and what was skipped, once the last page has been read; `None` before, so
    /// that the entries of an unfinished chain can never be served.
    pub fn finish(self) -> Option<(Vec<Entry>, Skipped)> {
        self.done.then_some((self.entries, self.skipped))
    }
}

/// Follows `nextToken` until the last page, refusing a token seen before.
#[derive(Debug, Default)]
struct Pages {
    operation: &'static str,
    seen: HashSet<String>,
    next: Option<String>,
    fetched: usize,
}

impl Pages {
    fn new(operation: &'static str) -> Self {
        Self { operation, ..Self::default() }
    }

    /// Records a page's token; `Ok(false)` when that was the last page.
    fn advance(&mut self, token: Option<&str>) -> Result<bool, ApiError> {
        self.fetched += 1;
        let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(false) };
        if !self.seen.insert(token.to_owned()) {
            return Err(ApiError::pagination(
                self.operation,
                format!("nextToken repeated after {} pages", self.fetched),
            ));
        }
        if self.fetched >= MAX_PAGES {
            return Err(ApiError::pagination(self.operation, format!("gave up after {MAX_PAGES} pages")));
        }
        self.next = Some(token.to_owned());
        Ok(true)
    }
}

impl Ec2Reports {
    pub fn new(
        client: aws_sdk_ec2::Client,
        region: &str,
        metrics: ApiMetrics,
        max_concurrent_requests: usize,
        page_size: u32,
    ) -> Self {
        Self {
            client,
            limiter: Arc::new(Semaphore::new(max_concurrent_requests.max(1))),
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            region: region.to_owned(),
            metrics,
        }
    }

    /// Counts a pagination failure like any other failed call.
    fn advance(&self, pages: &mut Pages, token: Option<&str>) -> Result<bool, ApiError> {
        pages.advance(token).inspect_err(|e| self.metrics.error(&self.region, e.operation, &e.code))
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; if it were, running unthrottled is the lesser evil.
        self.limiter.acquire().await.ok()
    }

    /// Lists reports, all pages. Reports missing a field we need are skipped and reported.
    pub async fn describe_reports(
        &self,
        selector: ReportSelector<'_>,
    ) -> Result<(Vec<UsageReport>, Skipped), ApiError> {
        const OP: &str = "DescribeImageUsageReports";
        let (image_ids, report_ids) = match selector {
            ReportSelector::Images(ids) => (Some(ids.to_vec()), None),
            ReportSelector::Reports(ids) => (None, Some(ids.to_vec())),
        };
        let mut pages = Pages::new(OP);
        let (mut reports, mut skipped) = (Vec::new(), Skipped::default());
        loop {
            let permit = self.permit().await;
            let page = self
                .client
                .describe_image_usage_reports()
                .set_image_ids(image_ids.clone())
                .set_report_ids(report_ids.clone())
                .max_results(self.page_size)
                .set_next_token(pages.next.take())
                .send()
                .await
                .map_err(|e| ApiError::from_sdk(OP, e))?;
            drop(permit);
            for report in page.image_usage_reports() {
                match convert_report(report) {
                    Ok(r) => reports.push(r),
                    Err(why) => skipped.add(|| why),
                }
            }
            if !self.advance(&mut pages, page.next_token())? {
                return Ok((reports, skipped));
            }
        }
    }

    /// Reads the entries of the given reports (by report ID, never by image ID, which would mix
    /// every report of the image together), all pages, into `chain`. Their strings are taken from
    /// `strings`.
    ///
    /// A failure leaves `chain` where it stood: calling again with it resumes at the page that
    /// failed, with its `NextToken`, instead of reading the pages before it again. Should EC2
    /// refuse that token (it expired, or belongs to no query it knows), the chain starts over
    /// once, from the first page.
    pub async fn describe_entries(
        &self,
        report_ids: &[String],
        query: &EntryQuery,
        strings: &Interner,
        chain: &mut EntryChain,
    ) -> Result<(), ApiError> {
        match self.follow_entries(report_ids, query, strings, chain).await {
            Err(error) if chain.pages.fetched > 0 && is_refused_token(&error.code) => {
                tracing::debug!(aws_region = %self.region, pages = chain.pages.fetched, %error, "EC2 refused the saved nextToken; reading the entries from the first page");
                *chain = EntryChain::default();
                self.follow_entries(report_ids, query, strings, chain).await
            }
            outcome => outcome,
        }
    }

    async fn follow_entries(
        &self,
        report_ids: &[String],
        query: &EntryQuery,
        strings: &Interner,
        chain: &mut EntryChain,
    ) -> Result<(), ApiError> {
        const OP: &str = "DescribeImageUsageReportEntries";
        let filters = entry_filters(query);
        loop {
            let permit = self.permit().await;
            let page = self
                .client
                .describe_image_usage_report_entries()
                .set_report_ids(Some(report_ids.to_vec()))
                .set_filters(filters.clone())
                .max_results(self.page_size)
                // Cloned, not taken: after a failure the chain still knows where it stood.
                .set_next_token(chain.pages.next.clone())
                .send()
                .await
                .map_err(|e| ApiError::from_sdk(OP, e))?;
            drop(permit);
            {
                // One lock per page; released before the next call is awaited.
                let mut strings = strings.lock();
                for entry in page.image_usage_report_entries() {
                    match convert_entry(entry, &mut strings) {
                        Ok(e) => chain.entries.push(e),
                        Err(why) => chain.skipped.add(|| why),
                    }
                }
            }
            if !self.advance(&mut chain.pages, page.next_token())? {
                chain.done = true;
                return Ok(());
            }
        }
    }

    /// The CreateImageUsageReport request for an image under the policy, tagged as ours.
    fn create_request(
        &self,
        image_id: &str,
        policy: &ReportPolicy,
        client_token: Option<&str>,
    ) -> aws_sdk_ec2::operation::create_image_usage_report::builders::CreateImageUsageReportFluentBuilder {
        let resource_types = policy
            .resource_types
            .iter()
            .map(|rt| {
                let options = rt.version_depth().map(|depth| {
                    vec![
                        ImageUsageResourceTypeOptionRequest::builder()
                            .option_name("version-depth")
                            .option_values(depth.to_string())
                            .build(),
                    ]
                });
                ImageUsageResourceTypeRequest::builder()
                    .resource_type(rt.name())
                    .set_resource_type_options(options)
                    .build()
            })
            .collect();
        let accounts: Vec<String> = policy.account_ids.iter().map(|a| a.as_str().to_owned()).collect();
        let tags = std::iter::once((CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE))
            .chain(policy.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tagging =
            TagSpecification::builder().resource_type(TagResourceType::ImageUsageReport).set_tags(Some(tags)).build();
        self.client
            .create_image_usage_report()
            .image_id(image_id)
            .set_resource_types(Some(resource_types))
            .set_account_ids((!accounts.is_empty()).then_some(accounts))
            .set_client_token(client_token.map(str::to_owned))
            .tag_specifications(tagging)
    }

    /// Asks EC2 for a new report of the image; returns its ID. The report starts `pending`.
    pub async fn create_report(
        &self,
        image_id: &str,
        policy: &ReportPolicy,
        client_token: &str,
    ) -> Result<String, ApiError> {
        const OP: &str = "CreateImageUsageReport";
        let permit = self.permit().await;
        let out = self
            .create_request(image_id, policy, Some(client_token))
            .send()
            .await
            .map_err(|e| ApiError::from_sdk(OP, e))?;
        drop(permit);
        out.report_id().map(str::to_owned).ok_or_else(|| ApiError {
            operation: OP,
            code: RESPONSE_ERROR.to_owned(),
            message: "the answer carried no reportId".to_owned(),
        })
    }
}

impl Ec2Reports {
    /// Deletes a report before EC2 expires it. An unknown report ID (another replica deleted it
    /// first, or it expired) is an error like any other; the caller decides what it means.
    pub async fn delete_report(&self, report_id: &str) -> Result<(), ApiError> {
        const OP: &str = "DeleteImageUsageReport";
        let permit = self.permit().await;
        let out = self
            .client
            .delete_image_usage_report()
            .report_id(report_id)
            .send()
            .await
            .map_err(|e| ApiError::from_sdk(OP, e))?;
        drop(permit);
        match out.r#return() {
            Some(false) => Err(ApiError {
                operation: OP,
                code: RESPONSE_ERROR.to_owned(),
                message: format!("EC2 answered return=false for {report_id}"),
            }),
            _ => Ok(()),
        }
    }
}

/// What a DryRun call said about one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    Allowed,
    /// EC2 refused: the IAM action is missing (or credentials are rejected); the code says which.
    Denied(String),
    /// Something else answered (throttling, network): the permission is unknown.
    Unknown(String),
}

/// Whether an error code means the call is not allowed (a missing IAM permission, rejected or
/// missing credentials), so that repeating it soon is pointless.
pub fn is_denied(code: &str) -> bool {
    ["UnauthorizedOperation", "AuthFailure", "Blocked", "OptInRequired", "AccessDenied", CREDENTIALS_ERROR]
        .contains(&code)
}

impl Permission {
    fn from_dry_run<T>(result: Result<T, ApiError>) -> Self {
        match result {
            // DryRun never succeeds: EC2 answers DryRunOperation when the call would have.
            Ok(_) => Permission::Allowed,
            Err(e) if e.code == "DryRunOperation" => Permission::Allowed,
            Err(e) if is_denied(&e.code) => Permission::Denied(e.code),
            Err(e) => Permission::Unknown(format!("{}: {}", e.code, e.message)),
        }
    }
}

impl Ec2Reports {
    /// Lists the IDs of available images of `owners` matching `filters`, all pages.
    pub async fn describe_images(
        &self,
        owners: &[String],
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<String>, ApiError> {
        const OP: &str = "DescribeImages";
        let mut all: Vec<Filter> = filters
            .iter()
            .map(|(name, values)| Filter::builder().name(name).set_values(Some(values.clone())).build())
            .collect();
        if !filters.contains_key("state") {
            // A deregistered image is gone; a failed or pending one has no usage to report.
            all.push(Filter::builder().name("state").values("available").build());
        }
        let mut pages = Pages::new(OP);
        let mut images = Vec::new();
        loop {
            let permit = self.permit().await;
            let page = self
                .client
                .describe_images()
                .set_owners(Some(owners.to_vec()))
                .set_filters(Some(all.clone()))
                .max_results(self.page_size.clamp(5, 1000))
                .set_next_token(pages.next.take())
                .send()
                .await
                .map_err(|e| ApiError::from_sdk(OP, e))?;
            drop(permit);
            images.extend(page.images().iter().filter_map(|i| i.image_id().map(str::to_owned)));
            if !self.advance(&mut pages, page.next_token())? {
                return Ok(images);
            }
        }
    }

    /// Asks EC2, with `DryRun`, whether each call the exporter makes is permitted.
    pub async fn check_permissions(
        &self,
        image: Option<&str>,
        policy: &ReportPolicy,
        discovery: bool,
    ) -> Vec<(&'static str, Permission)> {
        let mut checks = vec![
            (
                "DescribeImageUsageReports",
                Permission::from_dry_run(
                    self.client
                        .describe_image_usage_reports()
                        .dry_run(true)
                        .send()
                        .await
                        .map_err(|e| ApiError::from_sdk("DescribeImageUsageReports", e)),
                ),
            ),
            (
                "DescribeImageUsageReportEntries",
                Permission::from_dry_run(
                    self.client
                        .describe_image_usage_report_entries()
                        .dry_run(true)
                        .send()
                        .await
                        .map_err(|e| ApiError::from_sdk("DescribeImageUsageReportEntries", e)),
                ),
            ),
        ];
        if discovery {
            let result = self.client.describe_images().owners("self").dry_run(true).send().await;
            checks.push((
                "DescribeImages",
                Permission::from_dry_run(result.map_err(|e| ApiError::from_sdk("DescribeImages", e))),
            ));
        }
        if policy.create {
            let outcome = match image {
                Some(image) => Permission::from_dry_run(
                    self.create_request(image, policy, None)
                        .dry_run(true)
                        .send()
                        .await
                        .map_err(|e| ApiError::from_sdk("CreateImageUsageReport", e)),
                ),
                None => Permission::Unknown("no image known yet to try it with".to_owned()),
            };
            checks.push(("CreateImageUsageReport", outcome));
        }
        if policy.create && policy.delete_superseded {
            // No report is needed: DryRun checks the permission before the ID.
            let result = self
                .client
                .delete_image_usage_report()
                .report_id(DRY_RUN_REPORT_ID)
                .dry_run(true)
                .send()
                .await
                .map_err(|e| ApiError::from_sdk("DeleteImageUsageReport", e));
            checks.push(("DeleteImageUsageReport", Permission::from_dry_run(result)));
        }
        checks
    }
}

fn entry_filters(query: &EntryQuery) -> Option<Vec<Filter>> {
    let filter = |name: &str, values: Vec<String>| {
        (!values.is_empty()).then(|| Filter::builder().name(name).set_values(Some(values)).build())
    };
    let filters: Vec<Filter> = [
        filter("account-id", query.account_ids.iter().map(|a| a.as_str().to_owned()).collect()),
        filter("resource-type", query.resource_types.clone()),
        filter("creation-time", query.creation_times.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!filters.is_empty()).then_some(filters)
}

fn to_system_time(t: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

fn convert_report(r: &ImageUsageReport) -> Result<UsageReport, String> {
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
    Ok(UsageReport {
        id: id.to_owned(),
        image_id: image_id.to_owned(),
        state: ReportState::parse(state, r.state_reason()),
        created,
        params,
        created_by_exporter,
    })
}

fn convert_entry(e: &ImageUsageReportEntry, strings: &mut Locked<'_>) -> Result<Entry, String> {
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
    use super::*;

    #[test]
    fn pagination_stops_on_a_repeated_token() {
        let mut pages = Pages::new("Op");
        assert_eq!(pages.advance(Some("a")).ok(), Some(true));
        assert_eq!(pages.advance(Some("b")).ok(), Some(true));
        let err = pages.advance(Some("a")).expect_err("loop detected");
        assert_eq!(err.code, "PaginationLoop");
    }

    #[test]
    fn pagination_ends_on_missing_or_empty_token() {
        assert_eq!(Pages::new("Op").advance(None).ok(), Some(false));
        assert_eq!(Pages::new("Op").advance(Some("")).ok(), Some(false));
    }

    #[test]
    fn pagination_gives_up_after_the_page_limit() {
        let mut pages = Pages::new("Op");
        let mut outcome = Ok(true);
        for i in 0..MAX_PAGES {
            outcome = pages.advance(Some(&i.to_string()));
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome.expect_err("limit").code, "PaginationLoop");
    }

    #[test]
    fn entries_missing_fields_or_negative_are_refused() {
        let interner = Interner::new();
        let mut strings = interner.lock();
        let mut convert_entry = |e: &ImageUsageReportEntry| convert_entry(e, &mut strings);
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
        let entry = |account: &str, rt: &str| {
            let e = ImageUsageReportEntry::builder()
                .report_id("amiur-1")
                .account_id(account)
                .resource_type(rt)
                .usage_count(1)
                .build();
            convert_entry(&e, &mut interner.lock()).expect("valid")
        };
        let a = entry("111122223333", "ec2:Instance");
        let b = entry("111122223333", "ec2:LaunchTemplate");
        let c = entry("444455556666", "ec2:Instance");
        assert!(Arc::ptr_eq(&a.report_id, &c.report_id));
        assert!(Arc::ptr_eq(&a.account_id, &b.account_id));
        assert!(Arc::ptr_eq(&a.resource_type, &c.resource_type));
        assert_eq!(interner.len(), 5);
    }

    #[test]
    fn report_conversion_reads_parameters_and_marker_tag() {
        let report = ImageUsageReport::builder()
            .report_id("amiur-1")
            .image_id("ami-12345678")
            .state("error")
            .state_reason("Internal error")
            .creation_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .tags(Tag::builder().key(CREATED_BY_TAG_KEY).value(CREATED_BY_TAG_VALUE).build())
            .build();
        let r = convert_report(&report).expect("valid");
        assert_eq!(r.state, ReportState::Error { reason: "Internal error".into() });
        assert!(r.created_by_exporter);
        let no_time =
            ImageUsageReport::builder().report_id("amiur-1").image_id("ami-12345678").state("available").build();
        assert!(convert_report(&no_time).is_err_and(|e| e.contains("creationTime")));
    }
}
