//! The per-Region EC2 client: the calls the exporter makes, each through one semaphore per
//! Region so that the exporter never has more than `max_concurrent_requests` calls in flight
//! against EC2's per-account throttle, and every Describe call paginated to the end by one
//! helper (`paginate`) that refuses a repeated token and an endless run of pages.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::create_image_usage_report::builders::CreateImageUsageReportFluentBuilder;
use aws_sdk_ec2::operation::describe_image_references::DescribeImageReferencesOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::types::{
    Filter, ImageReferenceOptionName, ImageReferenceResourceType, ImageUsageResourceTypeOptionRequest,
    ImageUsageResourceTypeRequest, ResourceType as TagResourceType, ResourceTypeOption, ResourceTypeRequest, Tag,
    TagSpecification,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use tokio::sync::Semaphore;

use super::calls::{CallCounter, CallCounts};
use super::convert;
use super::error::{ApiError, Code};
use crate::config::{EntryQuery, ReferenceType, ReferenceTypes, ReportPolicy};
use crate::intern::Interner;
use crate::report::{CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE, Report};
use crate::snapshot::{Entry, ImageFacts};

/// A paginated call that needs more pages than this is treated as broken, not followed forever.
const MAX_PAGES: usize = 10_000;

/// Which reports to list: those of some images, or some reports by ID.
#[derive(Debug, Clone, Copy)]
pub enum ReportSelector<'a> {
    Images(&'a [String]),
    Reports(&'a [String]),
}

/// Images as DescribeImages told them: each ID with its facts, and what could not be used.
#[derive(Debug, Default)]
pub struct Described {
    pub images: Vec<(String, ImageFacts)>,
    pub skipped: Skipped,
}

impl Described {
    /// Takes in a page; returns its `NextToken`.
    fn add(&mut self, page: &DescribeImagesOutput) -> Option<String> {
        for image in page.images() {
            match convert::image(image) {
                Ok(found) => self.images.push(found),
                Err(why) => self.skipped.add(|| why),
            }
        }
        page.next_token().map(str::to_owned)
    }

    /// The IDs alone.
    pub fn ids(&self) -> Vec<String> {
        self.images.iter().map(|(id, _)| id.clone()).collect()
    }
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

    /// Adds what another answer skipped.
    pub fn merge(&mut self, other: Skipped) {
        self.count += other.count;
        self.example = self.example.take().or(other.example);
    }
}

/// The EC2 API of one Region, as the exporter calls it.
#[derive(Clone)]
pub struct Ec2Client {
    pub(super) client: aws_sdk_ec2::Client,
    limiter: Arc<Semaphore>,
    page_size: i32,
    /// Every call and failed call, and those the SDK never sees, such as a looping nextToken.
    calls: CallCounter,
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

impl Ec2Client {
    pub fn new(
        client: aws_sdk_ec2::Client,
        calls: CallCounter,
        max_concurrent_requests: usize,
        page_size: u32,
    ) -> Self {
        Self {
            client,
            limiter: Arc::new(Semaphore::new(max_concurrent_requests.max(1))),
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            calls,
        }
    }

    /// The calls this client (and its clones) made since the last take.
    pub fn take_calls(&self) -> CallCounts {
        self.calls.take()
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed; if it were, running unthrottled is the lesser evil.
        self.limiter.acquire().await.ok()
    }

    /// Makes one call under the Region's request limit.
    async fn call<O, E>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<O, SdkError<E, HttpResponse>>>,
    ) -> Result<O, ApiError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let _permit = self.permit().await;
        request.await.map_err(|e| ApiError::from_sdk(operation, e))
    }

    /// Calls for page after page, from where `pages` stands, until the last one. `request`
    /// builds the call for a `NextToken`; `read` takes in a page and returns its `NextToken`.
    ///
    /// The token is cloned into the request, not taken: after a failure `pages` still knows
    /// where it stood, so that calling again resumes at the failed page.
    async fn paginate<O, E, F>(
        &self,
        pages: &mut Pages,
        mut request: impl FnMut(Option<String>) -> F,
        mut read: impl FnMut(O) -> Option<String>,
    ) -> Result<(), ApiError>
    where
        F: Future<Output = Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        loop {
            let page = self.call(pages.operation, request(pages.next.clone())).await?;
            let next = read(page);
            // A looping token is a failed call like any other, though the SDK never sees it.
            let more =
                pages.advance(next.as_deref()).inspect_err(|e| self.calls.error(e.operation, e.code.as_str()))?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Lists reports, all pages. Reports missing a field we need are skipped and reported.
    pub async fn describe_reports(&self, selector: ReportSelector<'_>) -> Result<(Vec<Report>, Skipped), ApiError> {
        let (image_ids, report_ids) = match selector {
            ReportSelector::Images(ids) => (Some(ids.to_vec()), None),
            ReportSelector::Reports(ids) => (None, Some(ids.to_vec())),
        };
        let (mut reports, mut skipped) = (Vec::new(), Skipped::default());
        let request = |token| {
            self.client
                .describe_image_usage_reports()
                .set_image_ids(image_ids.clone())
                .set_report_ids(report_ids.clone())
                .max_results(self.page_size)
                .set_next_token(token)
                .send()
        };
        let read = |page: aws_sdk_ec2::operation::describe_image_usage_reports::DescribeImageUsageReportsOutput| {
            for listed in page.image_usage_reports() {
                match convert::report(listed) {
                    Ok(r) => reports.push(r),
                    Err(why) => skipped.add(|| why),
                }
            }
            page.next_token().map(str::to_owned)
        };
        self.paginate(&mut Pages::new("DescribeImageUsageReports"), request, read).await?;
        Ok((reports, skipped))
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
        let filters = entry_filters(query);
        let mut request = |token| {
            self.client
                .describe_image_usage_report_entries()
                .set_report_ids(Some(report_ids.to_vec()))
                .set_filters(filters.clone())
                .max_results(self.page_size)
                .set_next_token(token)
                .send()
        };
        let mut restarted = false;
        loop {
            let (entries, skipped) = (&mut chain.entries, &mut chain.skipped);
            let read = |page: aws_sdk_ec2::operation::describe_image_usage_report_entries::DescribeImageUsageReportEntriesOutput| {
                // One lock per page; released before the next call is awaited.
                let mut strings = strings.lock();
                for listed in page.image_usage_report_entries() {
                    match convert::entry(listed, &mut strings) {
                        Ok(e) => entries.push(e),
                        Err(why) => skipped.add(|| why),
                    }
                }
                page.next_token().map(str::to_owned)
            };
            match self.paginate(&mut chain.pages, &mut request, read).await {
                Ok(()) => {
                    chain.done = true;
                    return Ok(());
                }
                Err(error) if !restarted && chain.pages.fetched > 0 && error.code == Code::InvalidPaginationToken => {
                    tracing::debug!(aws_region = %self.calls.region(), pages = chain.pages.fetched, %error, "EC2 refused the saved nextToken; reading the entries from the first page");
                    *chain = EntryChain::default();
                    restarted = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Lists the available images of `owners` matching `filters`, all pages, with their facts.
    pub async fn describe_images(
        &self,
        owners: &[String],
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Described, ApiError> {
        let mut all: Vec<Filter> = filters
            .iter()
            .map(|(name, values)| Filter::builder().name(name).set_values(Some(values.clone())).build())
            .collect();
        if !filters.contains_key("state") {
            // A deregistered image is gone; a failed or pending one has no usage to report.
            all.push(Filter::builder().name("state").values("available").build());
        }
        let mut described = Described::default();
        let request = |token| {
            self.client
                .describe_images()
                .set_owners(Some(owners.to_vec()))
                .set_filters(Some(all.clone()))
                .max_results(self.page_size.clamp(5, 1000))
                .set_next_token(token)
                .send()
        };
        let read = |page: DescribeImagesOutput| described.add(&page);
        self.paginate(&mut Pages::new("DescribeImages"), request, read).await?;
        Ok(described)
    }

    /// The facts of the given images (at most 200), deprecated and disabled ones included. One
    /// unknown or malformed ID fails the whole call (`InvalidAMIID.*`): the caller splits.
    pub async fn describe_images_by_id(&self, image_ids: &[String]) -> Result<Described, ApiError> {
        let mut described = Described::default();
        // EC2 refuses MaxResults beside ImageIds: a call by ID answers all of them at once.
        let request = |token| {
            self.client
                .describe_images()
                .set_image_ids(Some(image_ids.to_vec()))
                .include_deprecated(true)
                .include_disabled(true)
                .set_next_token(token)
                .send()
        };
        let read = |page: DescribeImagesOutput| described.add(&page);
        self.paginate(&mut Pages::new("DescribeImages"), request, read).await?;
        Ok(described)
    }

    /// The caller's own resources that reference the given images (at most 10, EC2's limit), all
    /// pages: one (image, resource type) pair per referencing resource.
    pub async fn describe_image_references(
        &self,
        image_ids: &[String],
        types: &ReferenceTypes,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let requested = match types {
            ReferenceTypes::All => None,
            ReferenceTypes::Only(types) => Some(types.iter().map(reference_type_request).collect::<Vec<_>>()),
        };
        let mut references = Vec::new();
        let request = |token| {
            self.client
                .describe_image_references()
                .set_image_ids(Some(image_ids.to_vec()))
                .set_include_all_resource_types(requested.is_none().then_some(true))
                .set_resource_types(requested.clone())
                // EC2 wants at least 5.
                .max_results(self.page_size.max(5))
                .set_next_token(token)
                .send()
        };
        let read = |page: DescribeImageReferencesOutput| {
            references.extend(
                page.image_references()
                    .iter()
                    .filter_map(|r| Some((r.image_id()?.to_owned(), r.resource_type()?.as_str().to_owned()))),
            );
            page.next_token().map(str::to_owned)
        };
        self.paginate(&mut Pages::new("DescribeImageReferences"), request, read).await?;
        Ok(references)
    }

    /// The CreateImageUsageReport request for an image under the policy, tagged as ours.
    pub(super) fn create_request(
        &self,
        image_id: &str,
        policy: &ReportPolicy,
        client_token: Option<&str>,
    ) -> CreateImageUsageReportFluentBuilder {
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
        let out = self.call(OP, self.create_request(image_id, policy, Some(client_token)).send()).await?;
        out.report_id()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::broken(OP, "the answer carried no reportId".to_owned()))
    }

    /// Deletes a report before EC2 expires it. An unknown report ID (another replica deleted it
    /// first, or it expired) is an error like any other; the caller decides what it means.
    pub async fn delete_report(&self, report_id: &str) -> Result<(), ApiError> {
        const OP: &str = "DeleteImageUsageReport";
        let out = self.call(OP, self.client.delete_image_usage_report().report_id(report_id).send()).await?;
        match out.r#return() {
            Some(false) => Err(ApiError::broken(OP, format!("EC2 answered return=false for {report_id}"))),
            _ => Ok(()),
        }
    }
}

/// One resource type of a DescribeImageReferences request, with its options.
fn reference_type_request(t: &ReferenceType) -> ResourceTypeRequest {
    let option = |name: &str, values: Vec<String>| {
        ResourceTypeOption::builder()
            .option_name(ImageReferenceOptionName::from(name))
            .set_option_values(Some(values))
            .build()
    };
    let mut options = Vec::new();
    if !t.states.is_empty() {
        options.push(option("state-name", t.states.clone()));
    }
    if let Some(depth) = t.version_depth {
        options.push(option("version-depth", vec![depth.to_string()]));
    }
    ResourceTypeRequest::builder()
        .resource_type(ImageReferenceResourceType::from(t.name.as_str()))
        .set_resource_type_options((!options.is_empty()).then_some(options))
        .build()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_stops_on_a_repeated_token() {
        let mut pages = Pages::new("Op");
        assert_eq!(pages.advance(Some("a")).ok(), Some(true));
        assert_eq!(pages.advance(Some("b")).ok(), Some(true));
        let err = pages.advance(Some("a")).expect_err("loop detected");
        assert_eq!(err.code, Code::PaginationLoop);
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
        assert_eq!(outcome.expect_err("limit").code, Code::PaginationLoop);
    }
}
