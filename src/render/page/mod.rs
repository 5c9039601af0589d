//! The status page at `/`: the same snapshot as `/metrics`, for a person.
//!
//! The page is written when a snapshot is published, not per request: the head and summary,
//! one row per target, and a row and a detail per image, each a finished fragment. A request
//! only picks fragments: the targets and images its filters match (`?region=`, `?image=`, an
//! image ID or part of one, or of an image's name), one page of at most `PAGE_SIZE` images
//! (`?page=`), the filter form, and the progress of polls running now. So a page stays small
//! and fast at 10,000 images (BENCHMARKS.md), and nothing a request sends is ever executed:
//! every value from AWS or the configuration is escaped once, when its fragment is written.
//!
//! No script, no external asset, one inline stylesheet: the page works under
//! `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'` (see `CSP`).

mod html;
mod image;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use bytes::Bytes;

use self::html::{Html, grouped, took};
use self::image::ImageView;
use super::RenderOptions;
use crate::snapshot::{LiveTarget, Snapshot, TargetStatus};

/// The page's policy: nothing may load or run, but the inline stylesheet; forms post back here.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Images listed per page.
pub const PAGE_SIZE: usize = 100;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#1d2330}\
h1{font-size:1.5em;margin:.6em 0 .1em}h2{font-size:1.15em;margin:1.4em 0 .4em}h3{margin:.8em 0 .3em}\
nav a{margin-right:1em}td.id,td.region,time,.report-id,.types,.account{white-space:nowrap}.meta,.muted,.age,.owner,.name{color:#5c6475}.age,.owner,.name,.types{font-size:.86em}\
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;vertical-align:top;padding:.3em .5em;border-bottom:1px solid #e3e6ec}\
th{background:#f4f6f9;font-weight:600}.num{text-align:right}tr.unexpected{background:#fff4f2}\
.account.unexpected,.bad{color:#b42318}.warn{color:#9a5b00}.badge{display:inline-block;padding:0 .45em;border-radius:.7em;\
font-size:.8em;background:#e8ebf0;color:#1d2330}.badge.ok{background:#e3f4e8;color:#17603a}.badge.bad{background:#fde4e1;color:#b42318}\
.badge.warn{background:#fff0d6;color:#7a4a00}.badge.candidate{background:#e6ecfb;color:#2a4bb0}\
dl.summary{display:flex;flex-wrap:wrap;gap:.4em 2em;margin:.6em 0}dl.summary div{min-width:8em}dt{color:#5c6475;font-size:.86em}\
dd{margin:0;font-size:1.2em;font-weight:600}.detail dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}\
.detail dd{font-size:1em;font-weight:400}form{margin:.5em 0;display:flex;gap:1em;align-items:end;flex-wrap:wrap}\
input,select,button{font:inherit}.progress{background:#eef3ff;padding:.5em 1em;border-radius:.4em;margin:.6em 0}\
code{font-size:.92em}";

/// One target's row, and its Region for the filter.
struct TargetRow {
    region: Arc<str>,
    html: Bytes,
}

/// One image's fragments, and what the filters match on.
struct ImageEntry {
    region: Arc<str>,
    image_id: Arc<str>,
    /// The image ID and name, lowercase: what `?image=` searches.
    haystack: String,
    row: Bytes,
    detail: Bytes,
}

/// The status page of one snapshot, ready to serve any filter.
pub struct StatusPage {
    /// The doctype, the stylesheet and the heading.
    head: Bytes,
    /// The figures of the whole snapshot.
    summary: Bytes,
    targets: Vec<TargetRow>,
    regions: Vec<String>,
    images: Vec<ImageEntry>,
    built: SystemTime,
}

/// What a request asks the page for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub region: Option<String>,
    /// An image ID, or part of an ID or a name.
    pub image: Option<String>,
    /// From 1.
    pub page: usize,
}

impl PageQuery {
    /// Reads `region`, `image` and `page` from a query string; anything else, or a value that
    /// is not a number for `page`, is ignored.
    pub fn parse(query: Option<&str>) -> Self {
        let mut out = Self { page: 1, ..Self::default() };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.trim();
            match &*key {
                "region" if !value.is_empty() => out.region = Some(value.to_owned()),
                "image" if !value.is_empty() => out.image = Some(value.to_owned()),
                "page" => out.page = value.parse().unwrap_or(1).max(1),
                _ => {}
            }
        }
        out
    }

    /// The query string of this query at another page.
    fn at_page(&self, page: usize) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(region) = &self.region {
            query.append_pair("region", region);
        }
        if let Some(image) = &self.image {
            query.append_pair("image", image);
        }
        query.append_pair("page", &page.to_string());
        query.finish()
    }
}

impl StatusPage {
    /// The page before any poll finished.
    pub fn empty() -> Self {
        Self::build(&Snapshot::default(), &RenderOptions::default(), SystemTime::now())
    }

    /// Writes every fragment of the page of `snapshot`, as of `now`.
    pub fn build(snapshot: &Snapshot, options: &RenderOptions, now: SystemTime) -> Self {
        let names: HashMap<&str, &str> = options.account_names().collect();
        let views: Vec<ImageView<'_>> = snapshot.images.iter().map(|i| ImageView::new(i, options, now)).collect();
        let images = views
            .iter()
            .map(|view| {
                let s = view.status;
                let name = s.facts.as_ref().map_or("", |f| f.name.as_str());
                ImageEntry {
                    region: s.region.clone(),
                    image_id: s.image_id.clone(),
                    haystack: format!("{} {}", s.image_id, name).to_lowercase(),
                    row: Bytes::from(view.row(&names, now)),
                    detail: Bytes::from(view.detail(&names, now)),
                }
            })
            .collect();
        let targets = snapshot
            .targets
            .iter()
            .map(|t| TargetRow { region: t.region.clone(), html: Bytes::from(target_row(t, snapshot, now)) })
            .collect();
        let regions: BTreeSet<String> = snapshot
            .targets
            .iter()
            .map(|t| t.region.to_string())
            .chain(snapshot.images.iter().map(|i| i.region.to_string()))
            .collect();
        let summary = Bytes::from(summary(snapshot, &views, options));
        Self { head: HEAD.clone(), summary, targets, regions: regions.into_iter().collect(), images, built: now }
    }

    /// The page for `query`: the fragments it matches, with the filters and the polls that run
    /// now (`live`). `telemetry_path` is where the metrics are served.
    pub fn respond(&self, query: &PageQuery, live: &[LiveTarget], telemetry_path: &str) -> Vec<Bytes> {
        let mut out = vec![self.head.clone(), Bytes::from(links(telemetry_path, self.built)), self.summary.clone()];
        if let Some(progress) = progress(live) {
            out.push(Bytes::from(progress));
        }
        let region_matches = |region: &str| query.region.as_deref().is_none_or(|r| r == region);
        out.push(Bytes::from_static(TARGETS_HEAD.as_bytes()));
        out.extend(self.targets.iter().filter(|t| region_matches(&t.region)).map(|t| t.html.clone()));
        out.push(Bytes::from_static(b"</tbody></table></section>\n"));

        // An exact image ID shows that image (in each matching Region) with its detail; any
        // other text is searched for in IDs and names.
        let in_region = || self.images.iter().filter(|i| region_matches(&i.region));
        let exact: Vec<&ImageEntry> = in_region().filter(|i| query.image.as_deref() == Some(&*i.image_id)).collect();
        let detailed = !exact.is_empty();
        let matching = if detailed {
            exact
        } else {
            let wanted = query.image.as_deref().map(str::to_lowercase);
            in_region().filter(|i| wanted.as_deref().is_none_or(|w| i.haystack.contains(w))).collect()
        };
        let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
        let page = query.page.clamp(1, pages);
        out.push(Bytes::from(self.filters(query, matching.len(), page, pages)));
        out.extend(matching.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).map(|i| i.row.clone()));
        out.push(Bytes::from_static(b"</tbody></table>\n"));
        out.push(Bytes::from(pager(query, page, pages)));
        if detailed {
            out.extend(matching.iter().map(|i| i.detail.clone()));
        }
        out.push(Bytes::from_static(b"</section>\n</body></html>\n"));
        out
    }

    /// The filter form (showing the query), the count, and the head of the image table.
    fn filters(&self, query: &PageQuery, matching: usize, page: usize, pages: usize) -> String {
        let mut html = Html::default();
        html.raw("<section id=\"images\"><h2>Images</h2>\n<form method=\"get\" action=\"/\">");
        html.raw("<label>Region<br><select name=\"region\"><option value=\"\">all</option>");
        for region in &self.regions {
            html.raw("<option value=\"").text(region).raw("\"");
            if query.region.as_deref() == Some(region) {
                html.raw(" selected");
            }
            html.raw(">").text(region).raw("</option>");
        }
        html.raw("</select></label><label>Image ID or name<br><input name=\"image\" value=\"");
        html.text(query.image.as_deref().unwrap_or("")).raw("\" placeholder=\"ami-…\"></label>");
        html.raw("<button type=\"submit\">Filter</button><a href=\"/\">Clear</a></form>\n");
        let first = if matching == 0 { 0 } else { (page - 1) * PAGE_SIZE + 1 };
        let last = (page * PAGE_SIZE).min(matching);
        html.raw("<p class=\"count\" data-matching=\"").raw(&matching.to_string()).raw("\">");
        if matching == 0 {
            html.raw("No image matches.");
        } else {
            html.raw("Images ").raw(&grouped(first as u64)).raw("–").raw(&grouped(last as u64));
            html.raw(" of ").raw(&grouped(matching as u64));
            if pages > 1 {
                html.raw(&format!(", page {page} of {pages}"));
            }
        }
        html.raw("</p>\n").raw(IMAGES_HEAD);
        html.into_string()
    }
}

const TARGETS_HEAD: &str = "<section id=\"targets\"><h2>Targets</h2>\n<table><thead><tr><th>Region</th><th>Owner</th>\
<th class=\"num\">Images</th><th>Last poll</th><th class=\"num\">Took</th><th class=\"num\">Calls</th><th>Errors</th>\
<th>Throttling</th><th>References counted</th></tr></thead><tbody>\n";
const IMAGES_HEAD: &str = "<table><thead><tr><th>Image</th><th>Region</th><th>State</th><th>Report</th>\
<th class=\"num\">Resources</th><th>Top accounts</th><th>References</th><th>Last launched</th><th>Deprecation</th>\
</tr></thead><tbody>\n";

/// The doctype, the stylesheet and the heading: the same on every page.
static HEAD: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>AMI Usage Exporter</title><style>{STYLE}</style></head>\n<body>\n<header><h1>AMI Usage Exporter</h1>\n"
    ))
});

/// The figures of the whole snapshot, whatever the filters.
fn summary(snapshot: &Snapshot, views: &[ImageView<'_>], options: &RenderOptions) -> String {
    let mut html = Html::default();
    let total: u64 = views.iter().map(|v| v.total).sum();
    let unexpected: u64 = views.iter().map(|v| v.unexpected).sum();
    let accounts: BTreeSet<&str> = snapshot
        .images
        .iter()
        .filter_map(|i| i.report.as_ref())
        .flat_map(|r| r.usage.keys())
        .map(|k| &*k.account_id)
        .collect();
    let stat = |html: &mut Html, id: &str, label: &str, value: u64| {
        html.raw("<div><dt>").raw(label).raw("</dt><dd id=\"").raw(id).raw("\">").count(value).raw("</dd></div>");
    };
    html.raw("<dl class=\"summary\">");
    stat(&mut html, "total-targets", "Targets", snapshot.targets.len() as u64);
    stat(&mut html, "total-images", "Images", snapshot.images.len() as u64);
    stat(&mut html, "total-resources", "Resources using them", total);
    stat(&mut html, "total-accounts", "Accounts", accounts.len() as u64);
    if options.tracks_unexpected() {
        stat(&mut html, "total-unexpected", "Unexpected resources", unexpected);
    }
    let not_refreshed = snapshot.images.iter().filter(|i| !i.poll_success).count();
    stat(&mut html, "total-not-refreshed", "Images not refreshed", not_refreshed as u64);
    let candidates = views.iter().filter(|v| v.candidate).count();
    stat(&mut html, "total-candidates", "Retirement candidates", candidates as u64);
    html.raw("</dl>\n");
    if snapshot.images.is_empty() && snapshot.targets.is_empty() {
        html.raw("<p class=\"muted\" id=\"waiting\">No poll has finished yet.</p>\n");
    }
    html.into_string()
}

/// The links and the version, after the summary (the telemetry path is the server's).
fn links(telemetry_path: &str, built: SystemTime) -> String {
    let mut html = Html::default();
    html.raw("<nav><a href=\"").text(telemetry_path).raw("\">Metrics</a><a href=\"/-/healthy\">Health</a>");
    html.raw("<a href=\"/-/ready\">Readiness</a></nav>\n<p class=\"meta\">Version ").text(crate::VERSION_LINE);
    html.raw(" · figures as of ").moment(built).raw("</p></header>\n");
    html.into_string()
}

/// The polls running now, with how far each has read.
fn progress(live: &[LiveTarget]) -> Option<String> {
    let now = SystemTime::now();
    let running: Vec<_> = live.iter().filter_map(|t| t.progress.now().map(|p| (t, p))).collect();
    if running.is_empty() {
        return None;
    }
    let mut html = Html::default();
    html.raw("<section class=\"progress\" id=\"progress\">");
    for (target, p) in running {
        html.raw("<div class=\"running\" data-region=\"").text(&target.region).raw("\">Polling ").text(&target.region);
        if let Some(owner) = &target.owner {
            html.raw(" (").text(owner).raw(")");
        }
        html.raw(" since ").time(p.started, now);
        if p.reports_total > 0 {
            html.raw(": reading usage reports, <span class=\"read\">").count(p.reports_read as u64);
            html.raw("</span> of <span class=\"of\">").count(p.reports_total as u64).raw("</span> ");
            html.raw(&format!("<progress value=\"{}\" max=\"{}\"></progress>", p.reports_read, p.reports_total));
        }
        html.raw("</div>");
    }
    html.raw("</section>\n");
    Some(html.into_string())
}

fn target_row(t: &TargetStatus, snapshot: &Snapshot, now: SystemTime) -> String {
    let images = snapshot.images.iter().filter(|i| i.region == t.region && i.owner == t.owner).count();
    let mut html = Html::default();
    html.raw("<tr class=\"target\" data-region=\"").text(&t.region).raw("\"><td>").link("region", &t.region, &t.region);
    html.raw("</td><td>").text(t.owner.as_deref().unwrap_or("")).raw("</td><td class=\"num\">");
    html.count(images as u64).raw("</td>");
    match &t.last_poll {
        Some(poll) => {
            html.raw("<td>").time(poll.started, now).raw("</td><td class=\"num\">").raw(&took(poll.duration));
            html.raw("</td><td class=\"num calls\">").count(poll.calls).raw("</td><td class=\"errors\">");
            for (i, (code, n)) in poll.errors.iter().enumerate() {
                html.raw(if i > 0 { ", " } else { "" }).raw("<span class=\"bad\">").text(code).raw(" ");
                html.count(*n).raw("</span>");
            }
            if poll.errors.is_empty() {
                html.raw("none");
            }
            html.raw("</td>");
        }
        None => {
            html.raw("<td colspan=\"4\" class=\"muted\">not polled yet</td>");
        }
    }
    html.raw("<td>");
    match t.backing_off_until {
        Some(until) => html.raw("<span class=\"warn\">backing off until ").time(until, now).raw("</span>"),
        None => html.raw("no"),
    };
    html.raw("</td><td>");
    match t.references_measured {
        Some(at) => html.time(at, now),
        None => html.raw("<span class=\"muted\">not measured</span>"),
    };
    html.raw("</td></tr>\n");
    html.into_string()
}

/// Previous and next links that keep the filters.
fn pager(query: &PageQuery, page: usize, pages: usize) -> String {
    if pages <= 1 {
        return String::new();
    }
    let mut html = Html::default();
    html.raw("<nav class=\"pager\">");
    if page > 1 {
        html.raw("<a rel=\"prev\" href=\"?").text(&query.at_page(page - 1)).raw("\">← Previous</a>");
    }
    if page < pages {
        html.raw("<a rel=\"next\" href=\"?").text(&query.at_page(page + 1)).raw("\">Next →</a>");
    }
    html.raw("</nav>\n");
    html.into_string()
}

#[cfg(test)]
mod tests;
