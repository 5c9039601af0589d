//! `render_snapshot` with arbitrary label values and counts, under arbitrary rendering options
//! (account names, expected accounts, sums over accounts, a series limit): every sample must
//! parse back, with the text format's escaping (`\\`, `\"`, `\n` in label values), to exactly
//! what a model of the documented metrics says, in order.

#![no_main]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ami_usage_exporter::config::Config;
use ami_usage_exporter::render::{RenderOptions, render_snapshot};
use ami_usage_exporter::snapshot::{ImageStatus, ReportUsage, Snapshot, UsageKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Valid IDs, which the options can name; labels are either one of these or any string.
const ACCOUNTS: &[&str] = &["111122223333", "444455556666", "777788889999"];
const IMAGES: &[&str] = &["ami-12345678", "ami-0123456789abcdef0"];

#[derive(Debug, Arbitrary)]
struct Input {
    images: Vec<Image>,
    options: Options,
}

#[derive(Debug, Arbitrary)]
struct Options {
    names: Vec<(u8, String)>,
    expected: Vec<u8>,
    expected_per_image: Vec<(u8, Vec<u8>)>,
    sum_accounts: bool,
    sum_accounts_for: Vec<u8>,
    max_series: u8,
}

/// A label value: one of the valid IDs, or arbitrary text.
#[derive(Debug, Arbitrary)]
enum Label {
    Known(u8),
    Text(String),
}

impl Label {
    fn text(self, known: &[&str]) -> String {
        match self {
            Label::Known(i) => known[usize::from(i) % known.len()].to_owned(),
            Label::Text(s) => s,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Image {
    region: String,
    owner: Option<String>,
    image_id: Label,
    poll_success: bool,
    last_success: Option<(u32, u32)>,
    pending_since: Option<(u32, u32)>,
    report: Option<Report>,
}

#[derive(Debug, Arbitrary)]
struct Report {
    report_id: String,
    created: (u32, u32),
    usage: Vec<(Label, String, u64)>,
}

/// The options as plain data, for the model.
#[derive(Debug, Default)]
struct Model {
    names: BTreeMap<String, String>,
    expected: Vec<String>,
    expected_per_image: BTreeMap<String, Vec<String>>,
    sum_accounts: bool,
    sum_accounts_for: Vec<String>,
    max_series: u64,
}

fn pick(i: u8, from: &[&str]) -> String {
    from[usize::from(i) % from.len()].to_owned()
}

impl Model {
    fn new(o: Options) -> Self {
        Self {
            names: o.names.into_iter().take(4).map(|(i, name)| (pick(i, ACCOUNTS), name)).collect(),
            expected: o.expected.into_iter().take(4).map(|i| pick(i, ACCOUNTS)).collect(),
            expected_per_image: o
                .expected_per_image
                .into_iter()
                .take(3)
                .map(|(i, accounts)| {
                    (pick(i, IMAGES), accounts.into_iter().take(4).map(|a| pick(a, ACCOUNTS)).collect())
                })
                .collect(),
            sum_accounts: o.sum_accounts,
            sum_accounts_for: o.sum_accounts_for.into_iter().take(3).map(|i| pick(i, IMAGES)).collect(),
            max_series: u64::from(o.max_series % 12),
        }
    }

    /// The options, through the configuration file as an operator would write them.
    fn render_options(&self) -> RenderOptions {
        let list = |items: &[String]| items.iter().map(|i| double_quoted(i)).collect::<Vec<_>>().join(", ");
        let mut yaml = String::from("accounts:\n  names: {");
        let names: Vec<String> =
            self.names.iter().map(|(id, name)| format!("{}: {}", double_quoted(id), double_quoted(name))).collect();
        let _ = writeln!(yaml, "{}}}\n  expected: [{}]", names.join(", "), list(&self.expected));
        let per_image: Vec<String> =
            self.expected_per_image.iter().map(|(image, accounts)| format!("{image}: [{}]", list(accounts))).collect();
        let _ = writeln!(yaml, "  expected_per_image: {{{}}}", per_image.join(", "));
        let _ = writeln!(
            yaml,
            "cardinality: {{sum_accounts: {}, sum_accounts_for: [{}], max_series: {}}}",
            self.sum_accounts,
            self.sum_accounts_for.join(", "),
            self.max_series
        );
        yaml.push_str("targets: [{region: us-east-1, images: [ami-12345678]}]\n");
        let config = Config::from_yaml(&yaml).unwrap_or_else(|(f, m)| panic!("{f}: {m}\n{yaml}"));
        RenderOptions::from_config(&config)
    }

    fn tracks_unexpected(&self) -> bool {
        !self.expected.is_empty() || !self.expected_per_image.is_empty()
    }

    fn is_unexpected(&self, image: &str, account: &str) -> bool {
        self.tracks_unexpected()
            && !self.expected.iter().any(|a| a == account)
            && !self.expected_per_image.get(image).is_some_and(|list| list.iter().any(|a| a == account))
    }
}

/// A YAML double-quoted scalar for any string: printable ASCII as is, the rest escaped.
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

fn time((secs, nanos): (u32, u32)) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(secs), nanos % 1_000_000_000)
}

/// The snapshot, with (Region, owner, image) made unique as the poller makes them.
fn snapshot(images: Vec<Image>) -> Snapshot {
    let mut unique = BTreeMap::new();
    for image in images.into_iter().take(16) {
        let report = image.report.map(|r| {
            let usage = r
                .usage
                .into_iter()
                .take(32)
                // Counts as EC2 reports them: convert_entry refuses more than 10^9.
                .map(|(account, resource_type, n)| {
                    let key =
                        UsageKey { account_id: account.text(ACCOUNTS).into(), resource_type: resource_type.into() };
                    (key, n % 1_000_000_001)
                })
                .collect();
            Arc::new(ReportUsage { report_id: r.report_id, created: time(r.created), usage })
        });
        let image_id = image.image_id.text(IMAGES);
        let status = ImageStatus {
            region: image.region.as_str().into(),
            owner: image.owner.as_deref().map(Into::into),
            image_id: image_id.as_str().into(),
            poll_success: image.poll_success,
            last_success: image.last_success.map(time),
            pending_since: image.pending_since.map(time),
            report_failures: usize::from(image.poll_success),
            report_error: None,
            poll_error: None,
            report,
            facts: None,
            references: None,
        };
        unique.insert((image.region, image.owner, image_id), status);
    }
    Snapshot::new(unique.into_values().collect())
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// What the exposition must hold, family by family in the order they are written.
fn expected(snapshot: &Snapshot, o: &Model) -> Vec<Sample> {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let sample = |name: &str, labels: &[(&str, &str)], value: f64| Sample {
        name: format!("ami_usage_{name}"),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        value,
    };
    let (mut resources, mut unexpected, mut created, mut info) = (vec![], vec![], vec![], vec![]);
    let (mut success, mut last, mut pending, mut failures) = (vec![], vec![], vec![], vec![]);
    for image in &snapshot.images {
        let mut l = vec![("aws_region", &*image.region)];
        if let Some(owner) = &image.owner {
            l.push(("owner_account_id", owner));
        }
        l.push(("image_id", &*image.image_id));
        success.push(sample("image_poll_success", &l, if image.poll_success { 1.0 } else { 0.0 }));
        if let Some(t) = image.last_success {
            last.push(sample("last_success_timestamp_seconds", &l, secs(t)));
        }
        if let Some(t) = image.pending_since {
            pending.push(sample("pending_report_creation_timestamp_seconds", &l, secs(t)));
        }
        failures.push(sample("image_report_failures", &l, image.report_failures as f64));
        let Some(report) = &image.report else { continue };
        created.push(sample("report_creation_timestamp_seconds", &l, secs(report.created)));
        info.push(sample("report_info", &[l.as_slice(), &[("report_id", &report.report_id)]].concat(), 1.0));
        if o.sum_accounts || o.sum_accounts_for.iter().any(|i| **i == *image.image_id) {
            let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for (key, n) in &report.usage {
                let t = totals.entry(&key.resource_type).or_default();
                t.0 += n;
                if o.is_unexpected(&image.image_id, &key.account_id) {
                    t.1 += n;
                }
            }
            for (rt, (all, other)) in totals {
                let labels = [l.as_slice(), &[("resource_type", rt)]].concat();
                resources.push(sample("resources", &labels, all as f64));
                if o.tracks_unexpected() && other > 0 {
                    unexpected.push(sample("unexpected_resources", &labels, other as f64));
                }
            }
        } else {
            for (key, n) in &report.usage {
                let labels =
                    [l.as_slice(), &[("account_id", &key.account_id), ("resource_type", &key.resource_type)]].concat();
                resources.push(sample("resources", &labels, *n as f64));
                if o.is_unexpected(&image.image_id, &key.account_id) {
                    unexpected.push(sample("unexpected_resources", &labels, *n as f64));
                }
            }
        }
    }
    let mut dropped = 0;
    for family in [&mut resources, &mut unexpected] {
        if o.max_series > 0 && family.len() as u64 > o.max_series {
            dropped += family.len() as u64 - o.max_series;
            family.truncate(o.max_series as usize);
        }
    }
    let mut out = resources;
    if o.tracks_unexpected() {
        out.extend(unexpected);
    }
    for family in [created, info] {
        out.extend(family);
    }
    for (id, name) in &o.names {
        out.push(sample("account_info", &[("account_id", id), ("account_name", name)], 1.0));
    }
    if o.max_series > 0 {
        out.push(sample("series_dropped", &[], dropped as f64));
    }
    // The status families come last: they are the part rendered anew every poll.
    for family in [success, last, pending, failures] {
        out.extend(family);
    }
    out
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The text format 0.0.4 as Prometheus reads it; see tests/properties.rs for the same parser.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut samples = Vec::new();
    let mut typed = std::collections::BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            if !is_metric_name(name) || kind != "gauge" || !typed.insert(name.to_owned()) {
                return Err(at("bad or repeated TYPE".into()));
            }
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        if current.as_deref() != Some(sample.name.as_str()) {
            return Err(at("a sample outside its family".into()));
        }
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = s.strip_prefix('}') {
                s = after;
                break;
            }
            let eq = s.find('=').ok_or("label without =")?;
            let label = &s[..eq];
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = s[eq + 1..].strip_prefix('"').ok_or("label value without quote")?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            s = &s[eq + 1 + 1 + end + 1..];
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err("labels not separated by a comma".into());
            }
        }
        rest = s;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if value.contains(' ') {
        return Err("a timestamp or trailing text".into());
    }
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

fuzz_target!(|input: Input| {
    let model = Model::new(input.options);
    let options = model.render_options();
    let snapshot = snapshot(input.images);
    let text = String::from_utf8(render_snapshot(&snapshot, &options)).expect("the exposition is UTF-8");
    let parsed = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed, expected(&snapshot, &model), "{text}");
});
