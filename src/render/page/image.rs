//! One image on the status page: its row in the list, and its detail when it is looked up
//! (`/?image=ami-…`). Both are written when the snapshot changes, never per request.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use super::html::Html;
use crate::render::RenderOptions;
use crate::snapshot::{ImageFacts, ImageStatus};

/// Usage older than this, with no use left, makes an image a retirement candidate: the
/// threshold of the `AmiUsageRetirementCandidate` alert (deploy/prometheus/rules.yml).
const RETIRE_AFTER: Duration = Duration::from_secs(90 * 86_400);
/// Accounts shown in a row; the detail shows more.
const ROW_ACCOUNTS: usize = 3;
const DETAIL_ACCOUNTS: usize = 25;

/// What the page tells of one image, computed once from its status.
pub(super) struct ImageView<'a> {
    pub(super) status: &'a ImageStatus,
    by_type: BTreeMap<&'a str, u64>,
    /// Per account: its total, and whether the use is unexpected; largest first.
    accounts: Vec<(&'a str, u64, bool)>,
    pub(super) total: u64,
    pub(super) unexpected: u64,
    pub(super) candidate: bool,
}

impl<'a> ImageView<'a> {
    pub(super) fn new(status: &'a ImageStatus, options: &RenderOptions, now: SystemTime) -> Self {
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_account: HashMap<&str, u64> = HashMap::new();
        if let Some(report) = &status.report {
            for (key, count) in &report.usage {
                *by_type.entry(&key.resource_type).or_default() += count;
                *by_account.entry(&key.account_id).or_default() += count;
            }
        }
        let mut accounts: Vec<(&str, u64, bool)> = by_account
            .into_iter()
            .map(|(account, n)| (account, n, options.is_unexpected(&status.image_id, account)))
            .collect();
        accounts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let total = by_type.values().sum();
        let unexpected = accounts.iter().filter(|a| a.2).map(|a| a.1).sum();
        let candidate = retirement_candidate(status, total, now);
        Self { status, by_type, accounts, total, unexpected, candidate }
    }

    /// The image's row of the list.
    pub(super) fn row(&self, names: &HashMap<&str, &str>, now: SystemTime) -> String {
        let s = self.status;
        let mut html = Html::default();
        html.raw("<tr class=\"image");
        if self.unexpected > 0 {
            html.raw(" unexpected");
        }
        if self.candidate {
            html.raw(" candidate");
        }
        html.raw("\" data-region=\"").text(&s.region).raw("\" data-image=\"").text(&s.image_id).raw("\">");
        html.raw("<td class=\"id\">").link("image", &s.image_id, &s.image_id);
        if let Some(facts) = &s.facts {
            html.raw("<div class=\"name\">").text(&facts.name).raw("</div>");
        }
        html.raw("</td><td class=\"region\">").text(&s.region);
        if let Some(owner) = &s.owner {
            html.raw("<div class=\"owner\">").text(owner).raw("</div>");
        }
        html.raw("</td><td class=\"state\">");
        state(&mut html, s.facts.as_deref(), now);
        if self.candidate {
            html.raw(" <span class=\"badge candidate\" title=\"available, no use and no reference, not launched for 90 days\">retirement candidate</span>");
        }
        html.raw("</td><td class=\"report\">");
        report(&mut html, s, now);
        html.raw("</td><td class=\"usage num\" data-total=\"").digits(self.total).raw("\">");
        self.usage(&mut html);
        html.raw("</td><td class=\"accounts\">");
        self.accounts(&mut html, names, ROW_ACCOUNTS);
        html.raw("</td><td class=\"references\">");
        references(&mut html, s);
        html.raw("</td><td class=\"launched\">");
        match s.facts.as_ref().map(|f| f.last_launched) {
            Some(Some(t)) => {
                html.date(t, now);
            }
            Some(None) => {
                html.raw("never");
            }
            None => {
                html.raw("—");
            }
        }
        html.raw("</td><td class=\"deprecation\">");
        match s.facts.as_ref().and_then(|f| f.deprecation) {
            Some(t) => html.date(t, now),
            None => html.raw("—"),
        };
        html.raw("</td></tr>\n");
        html.into_string()
    }

    /// The image looked up on its own: everything in its row, and more accounts.
    pub(super) fn detail(&self, names: &HashMap<&str, &str>, now: SystemTime) -> String {
        let s = self.status;
        let mut html = Html::default();
        html.raw("<section class=\"detail\" data-image=\"").text(&s.image_id).raw("\"><h3>").text(&s.image_id);
        html.raw(" in ").text(&s.region).raw("</h3>\n<dl>");
        if let Some(facts) = &s.facts {
            html.raw("<dt>Name</dt><dd>").text(&facts.name).raw("</dd>");
            html.raw("<dt>Visibility</dt><dd>").raw(if facts.public { "public" } else { "shared or private" });
            html.raw("</dd>");
            if let Some(t) = facts.created {
                html.raw("<dt>Created</dt><dd>").date(t, now).raw("</dd>");
            }
        }
        html.raw("<dt>Total use</dt><dd class=\"total\">").count(self.total).raw("</dd>");
        html.raw("<dt>Accounts</dt><dd class=\"account-count\">").count(self.accounts.len() as u64).raw("</dd>");
        html.raw("</dl>\n<table class=\"accounts\"><thead><tr><th>Account</th><th>Name</th><th class=\"num\">Resources</th><th></th></tr></thead><tbody>\n");
        for (account, n, unexpected) in self.accounts.iter().take(DETAIL_ACCOUNTS) {
            html.raw(if *unexpected { "<tr class=\"unexpected\"><td>" } else { "<tr><td>" }).text(account);
            html.raw("</td><td>").text(names.get(account).copied().unwrap_or(""));
            html.raw("</td><td class=\"num\">").count(*n).raw("</td><td>");
            if *unexpected {
                html.raw("<span class=\"badge bad\">unexpected</span>");
            }
            html.raw("</td></tr>\n");
        }
        html.raw("</tbody></table>\n");
        if self.accounts.len() > DETAIL_ACCOUNTS {
            html.raw("<p>and ").count((self.accounts.len() - DETAIL_ACCOUNTS) as u64).raw(" more accounts (all in ");
            html.raw("<code>ami_usage_resources</code>)</p>\n");
        }
        html.raw("</section>\n");
        html.into_string()
    }

    fn usage(&self, html: &mut Html) {
        html.raw("<span class=\"total\">").count(self.total).raw("</span>");
        if !self.by_type.is_empty() {
            for (resource_type, n) in &self.by_type {
                html.raw("<div class=\"types\">").text(resource_type).raw(" ").count(*n).raw("</div>");
            }
        }
    }

    fn accounts(&self, html: &mut Html, names: &HashMap<&str, &str>, limit: usize) {
        for (account, n, unexpected) in self.accounts.iter().take(limit) {
            html.raw(if *unexpected { "<div class=\"account unexpected\">" } else { "<div class=\"account\">" });
            if let Some(name) = names.get(account) {
                html.text(name).raw(" <span class=\"muted\">").text(account).raw("</span>");
            } else {
                html.text(account);
            }
            html.raw(" <b>").count(*n).raw("</b>");
            if *unexpected {
                html.raw(" <span class=\"badge bad\">unexpected</span>");
            }
            html.raw("</div>");
        }
        if self.accounts.len() > limit {
            html.raw("<div class=\"muted\">and ").count((self.accounts.len() - limit) as u64).raw(" more</div>");
        }
    }
}

fn state(html: &mut Html, facts: Option<&ImageFacts>, now: SystemTime) {
    let Some(facts) = facts else {
        html.raw("<span class=\"muted\">unknown</span>");
        return;
    };
    let class = match facts.state.as_str() {
        "available" => "ok",
        "disabled" | ImageFacts::DEREGISTERED => "bad",
        _ => "warn",
    };
    html.raw("<span class=\"badge ").raw(class).raw("\">").text(&facts.state).raw("</span>");
    if facts.deprecation.is_some_and(|t| t <= now) {
        html.raw(" <span class=\"badge warn\">deprecated</span>");
    }
    if facts.public {
        html.raw(" <span class=\"badge\">public</span>");
    }
}

fn report(html: &mut Html, s: &ImageStatus, now: SystemTime) {
    match &s.report {
        Some(report) => {
            html.raw("<span class=\"report-id\">").text(&report.report_id).raw("</span><div>created ");
            html.date(report.created, now).raw("</div>");
        }
        None if s.pending_since.is_none() => {
            html.raw("<span class=\"muted\">no report yet</span>");
        }
        None => {}
    }
    if let Some(t) = s.pending_since {
        html.raw("<div class=\"pending\">pending since ").time(t, now).raw("</div>");
    }
    if s.report_failures > 0 {
        html.raw("<div class=\"bad\">").count(s.report_failures as u64).raw(" failed");
        if let Some(reason) = &s.report_error {
            html.raw(": ").text(reason);
        }
        html.raw("</div>");
    }
    if !s.poll_success {
        html.raw("<div class=\"warn\">not refreshed");
        if let Some(error) = &s.poll_error {
            html.raw(": ").text(error);
        }
        html.raw("</div>");
    }
}

fn references(html: &mut Html, s: &ImageStatus) {
    let Some(references) = &s.references else {
        html.raw("<span class=\"muted\" title=\"not measured (references.enabled)\">—</span>");
        return;
    };
    let used: Vec<_> = references.counts.iter().filter(|(_, n)| **n > 0).collect();
    if used.is_empty() {
        html.raw("none");
    }
    for (i, (resource_type, n)) in used.into_iter().enumerate() {
        html.raw(if i > 0 { " · " } else { "" }).text(resource_type).raw(" ").count(*n);
    }
}

/// Mirrors `AmiUsageRetirementCandidate`: available, served by a report that counts no use, no
/// in-account reference (or none measured), and not launched for 90 days (or, never launched,
/// created more than 90 days ago).
fn retirement_candidate(s: &ImageStatus, total: u64, now: SystemTime) -> bool {
    let Some(facts) = &s.facts else { return false };
    let idle_since = facts.last_launched.or(facts.created);
    facts.state == "available"
        && s.report.is_some()
        && total == 0
        && s.references.as_ref().is_none_or(|r| r.counts.values().all(|n| *n == 0))
        && idle_since.is_some_and(|t| now.duration_since(t).is_ok_and(|idle| idle > RETIRE_AFTER))
}
