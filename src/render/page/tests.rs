use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::snapshot::{
    Entry, ImageFacts, ImageStatus, PollProgress, PollSummary, References, ReportUsage, Snapshot, TargetStatus,
};

const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// What the hostile-string tests vary: every value on the page that comes from AWS or the
/// configuration.
#[derive(Debug, Clone)]
struct Values {
    image_name: String,
    account_name: String,
    reason: String,
    poll_error: String,
    resource_type: String,
    error_code: String,
}

impl Values {
    fn plain() -> Self {
        Self {
            image_name: "golden-base".into(),
            account_name: "payments".into(),
            reason: "Internal error".into(),
            poll_error: "DescribeImageUsageReports: timed out".into(),
            resource_type: "ec2:Instance".into(),
            error_code: "RequestLimitExceeded".into(),
        }
    }
}

fn options(values: &Values) -> RenderOptions {
    let yaml = format!(
        "accounts:\n  names: {{\"111122223333\": {name:?}}}\n  expected: [\"111122223333\"]\n\
         targets:\n  - region: us-east-1\n    images: [ami-12345678]\n",
        name = values.account_name
    );
    RenderOptions::from_config(&Config::from_yaml(&yaml).expect("valid"))
}

fn image(region: &str, id: &str, values: &Values, usage: &[(&str, u64)]) -> ImageStatus {
    let entries: Vec<Entry> = usage
        .iter()
        .map(|(account, n)| Entry {
            report_id: "amiur-1".into(),
            account_id: (*account).into(),
            resource_type: values.resource_type.as_str().into(),
            usage_count: *n,
        })
        .collect();
    ImageStatus {
        region: region.into(),
        owner: None,
        image_id: id.into(),
        poll_success: true,
        last_success: Some(now()),
        pending_since: None,
        report_failures: 0,
        report_error: None,
        poll_error: None,
        report: Some(Arc::new(ReportUsage::from_entries("amiur-1", now() - DAY, &entries))),
        facts: Some(Arc::new(ImageFacts {
            name: values.image_name.clone(),
            state: "available".into(),
            public: false,
            created: Some(now() - 200 * DAY),
            last_launched: Some(now() - DAY),
            deprecation: None,
        })),
        references: None,
    }
}

fn target(region: &str, values: &Values) -> TargetStatus {
    TargetStatus {
        region: region.into(),
        owner: None,
        last_poll: Some(PollSummary {
            started: now(),
            duration: Duration::from_millis(40),
            calls: 7,
            errors: BTreeMap::from([(values.error_code.clone(), 2)]),
        }),
        backing_off_until: None,
        references_measured: None,
    }
}

/// Three images in two Regions: one used by an unexpected account, one failing, one idle for
/// long (a retirement candidate).
fn snapshot(values: &Values) -> Snapshot {
    let used = image("us-east-1", "ami-00000001", values, &[("111122223333", 5), ("999988887777", 3)]);
    let mut failing = image("us-east-1", "ami-00000002", values, &[("111122223333", 1)]);
    failing.report_failures = 2;
    failing.report_error = Some(values.reason.as_str().into());
    failing.poll_success = false;
    failing.poll_error = Some(values.poll_error.as_str().into());
    let mut idle = image("eu-west-1", "ami-00000003", values, &[]);
    if let Some(facts) = &mut idle.facts {
        Arc::make_mut(facts).last_launched = Some(now() - 100 * DAY);
    }
    idle.references =
        Some(Arc::new(References { counts: BTreeMap::from([(values.resource_type.clone(), 0)]), measured: now() }));
    Snapshot::composed(vec![used, failing, idle], vec![target("us-east-1", values), target("eu-west-1", values)])
}

fn page_of(snapshot: &Snapshot, options: &RenderOptions, query: &str) -> String {
    let page = StatusPage::build(snapshot, options, now());
    let body = page.respond(&PageQuery::parse(Some(query)), &[], "/metrics");
    String::from_utf8(body.concat()).expect("utf-8")
}

fn rows(page: &str) -> Vec<&str> {
    page.match_indices("data-image=\"").map(|(i, _)| &page[i + 12..i + 24]).collect()
}

#[test]
fn the_page_shows_the_snapshot_figures() {
    let values = Values::plain();
    let page = page_of(&snapshot(&values), &options(&values), "");
    assert_eq!(rows(&page), ["ami-00000003", "ami-00000001", "ami-00000002"], "sorted by Region, then ID");
    assert!(page.contains("<dd id=\"total-resources\">9</dd>"), "5 + 3 + 1");
    assert!(page.contains("<dd id=\"total-unexpected\">3</dd>"), "999988887777 is not expected");
    assert!(page.contains("<dd id=\"total-candidates\">1</dd>"));
    assert!(page.contains("<dd id=\"total-not-refreshed\">1</dd>"));
    assert!(page.contains("payments <span class=\"muted\">111122223333</span>"), "accounts by name");
    assert!(page.contains("2 failed: Internal error"), "EC2's reason");
    assert!(page.contains("not refreshed: DescribeImageUsageReports: timed out"));
    assert!(page.contains("RequestLimitExceeded 2"), "errors by code");
    assert!(page.contains("class=\"image unexpected\""));
    assert!(page.contains("class=\"image candidate\""));
    assert!(page.contains("href=\"/metrics\"") && page.contains("href=\"/-/healthy\""));
    assert!(page.ends_with("</html>\n"));
}

#[test]
fn filters_pick_regions_images_and_names() {
    let values = Values::plain();
    let (snapshot, options) = (snapshot(&values), options(&values));
    let europe = page_of(&snapshot, &options, "region=eu-west-1");
    assert_eq!(rows(&europe), ["ami-00000003"]);
    assert_eq!(europe.matches("class=\"target\"").count(), 1, "and only its target");
    assert!(europe.contains("<option value=\"eu-west-1\" selected>"));
    let one = page_of(&snapshot, &options, "image=ami-00000001");
    assert!(one.contains("<section class=\"detail\" data-image=\"ami-00000001\">"), "an exact ID shows its detail");
    assert!(one.contains("<tr class=\"unexpected\"><td>999988887777"));
    let by_name = page_of(&snapshot, &options, "image=GOLDEN");
    assert_eq!(rows(&by_name).len(), 3, "part of a name, any case");
    assert!(!by_name.contains("class=\"detail\""));
    let none = page_of(&snapshot, &options, "region=ap-south-1");
    assert!(none.contains("No image matches."));
    assert_eq!(page_of(&snapshot, &options, "image=&page=x&other=1"), page_of(&snapshot, &options, ""));
}

#[test]
fn a_large_estate_is_served_a_page_at_a_time() {
    let values = Values::plain();
    let images: Vec<ImageStatus> = (0..10_000)
        .map(|i| image("us-east-1", &format!("ami-{i:08}"), &values, &[("111122223333", i % 7), ("999988887777", 1)]))
        .collect();
    let snapshot = Snapshot::composed(images, vec![target("us-east-1", &values)]);
    let options = options(&values);
    let first = page_of(&snapshot, &options, "");
    assert_eq!(rows(&first).len(), PAGE_SIZE);
    assert!(first.contains("Images 1–100 of 10,000, page 1 of 100"));
    assert!(first.len() < 200_000, "{} bytes", first.len());
    let second = page_of(&snapshot, &options, "page=2");
    assert_eq!(rows(&second).first().copied(), Some("ami-00000100"));
    assert!(second.contains("rel=\"prev\" href=\"?page=1\"") && second.contains("rel=\"next\" href=\"?page=3\""));
    let beyond = page_of(&snapshot, &options, "page=500");
    assert_eq!(rows(&beyond).last().copied(), Some("ami-00009999"), "the last page");
    let filtered = page_of(&snapshot, &options, "image=ami-0000012&page=1");
    assert_eq!(rows(&filtered).len(), 10, "ami-00000120 to ami-00000129");
}

#[test]
fn running_polls_show_how_far_they_are() {
    let values = Values::plain();
    let page = StatusPage::build(&snapshot(&values), &options(&values), now());
    let progress = Arc::new(PollProgress::default());
    let live = [LiveTarget { region: "us-east-1".into(), owner: None, progress: Arc::clone(&progress) }];
    let html = |page: &StatusPage| String::from_utf8(page.respond(&PageQuery::default(), &live, "/m").concat());
    assert!(!html(&page).expect("utf-8").contains("id=\"progress\""), "no poll runs");
    progress.start(SystemTime::now());
    progress.reading(4000);
    progress.read(120);
    let running = html(&page).expect("utf-8");
    assert!(running.contains("<span class=\"read\">120</span> of <span class=\"of\">4,000</span>"), "{running}");
    assert!(running.contains("<progress value=\"120\" max=\"4000\">"));
}

#[test]
fn the_empty_page_says_no_poll_finished() {
    let body = StatusPage::empty().respond(&PageQuery::default(), &[], "/metrics").concat();
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("No poll has finished yet."), "{page}");
    assert!(page.contains("Version "));
}

/// The tags of a page, in order: the structure, whatever the text.
fn tags(page: &str) -> Vec<&str> {
    page.split('<').skip(1).map(|t| t.split([' ', '>', '\n']).next().unwrap_or("")).collect()
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("</style><script>alert(1)</script>".to_owned()),
        Just("\" onmouseover=\"alert(1)".to_owned()),
        Just("'><img src=x onerror=alert(1)>".to_owned()),
        Just("&lt;already&gt; &amp; escaped".to_owned()),
        "[<>&\"'=/a-z ]{1,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Hostile values change no tag of the page: it has exactly the structure it has with
    /// plain values, and each value appears escaped, never raw.
    #[test]
    fn values_from_aws_or_the_configuration_never_become_markup(
        image_name in hostile(), account_name in hostile(), reason in hostile(),
        poll_error in hostile(), resource_type in hostile(), error_code in hostile(),
    ) {
        let values = Values { image_name, account_name, reason, poll_error, resource_type, error_code };
        // A name that YAML cannot hold as a quoted string is not a name the configuration can give.
        prop_assume!(!values.account_name.contains('\\'));
        let plain = Values::plain();
        for query in ["", "image=ami-00000001"] {
            let page = page_of(&snapshot(&values), &options(&values), query);
            let reference = page_of(&snapshot(&plain), &options(&plain), query);
            prop_assert_eq!(tags(&page), tags(&reference));
            // The failing image, the one with the reasons, is on the page of every image.
            let shown = if query.is_empty() { &[&values.image_name, &values.account_name, &values.reason, &values.poll_error][..] } else { &[&values.image_name, &values.account_name][..] };
            for value in shown {
                let mut escaped = String::new();
                html::escape_into(&mut escaped, value);
                prop_assert!(page.contains(&escaped), "{} is shown escaped", value);
            }
        }
    }

    /// Whatever a request sends in the query, it is shown escaped in the form and in links.
    /// (The `zz` keeps it from matching anything, so the page has the shape of the reference.)
    #[test]
    fn the_query_is_echoed_escaped(image in hostile(), region in hostile()) {
        let plain = Values::plain();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("image", &format!("zz{image}"))
            .append_pair("region", &format!("zz{region}"))
            .finish();
        let page = page_of(&snapshot(&plain), &options(&plain), &query);
        let reference = page_of(&snapshot(&plain), &options(&plain), "image=zzx&region=zzy");
        prop_assert_eq!(tags(&page), tags(&reference));
    }
}
