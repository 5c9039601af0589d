//! The Grafana dashboard `deploy/grafana/ami-usage.json` as the tests read it: its panels (those
//! nested in collapsed rows included), their queries, its template variables, and Grafana's
//! interpolation of variables into a query. Shared by tests/deploy.rs (offline checks) and
//! tests/prometheus.rs (every query against a real Prometheus).
#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;

pub const PATH: &str = "deploy/grafana/ami-usage.json";

/// The dashboard, parsed.
pub fn load() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PATH);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{PATH} is not JSON: {e}"))
}

/// Every panel, rows included, in order: the top-level ones, each row followed by the panels it
/// holds when collapsed (a collapsed row keeps its panels in its own `panels`).
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// One query of a panel.
#[derive(Debug, Clone)]
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// `legendFormat`, unless it is empty or `__auto` (Grafana then names series by their labels).
    pub legend: Option<String>,
}

/// Every target's `expr`, with the title of its panel.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else { continue };
            out.push(Query {
                panel: title.to_owned(),
                ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                expr: expr.to_owned(),
                legend: target["legendFormat"].as_str().filter(|l| !l.is_empty() && *l != "__auto").map(str::to_owned),
            });
        }
    }
    out
}

/// A series' name in the legend: `legend` with each `{{label}}` replaced by the label's value in
/// `labels` (a Prometheus result's `metric`), empty when the series has no such label.
pub fn legend_name(legend: &str, labels: &Value) -> String {
    let mut out = String::new();
    let mut rest = legend;
    while let Some((before, after)) = rest.split_once("{{") {
        out.push_str(before);
        let Some((name, after)) = after.split_once("}}") else {
            out.push_str("{{");
            rest = after;
            continue;
        };
        out.push_str(labels[name.trim()].as_str().unwrap_or_default());
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Grafana's built-in variables, as a panel 1000 pixels wide over the last hour gets them from a
/// data source whose scrape interval is the default 15 s.
pub fn built_ins() -> Vec<(&'static str, String)> {
    [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__interval_ms", "15000"),
        ("__range", "1h"),
        ("__range_s", "3600"),
        ("__range_ms", "3600000"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

/// The template variable `name`.
pub fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{PATH}: no template variable {name}"))
}

/// The query of a `query` variable: `query.query` (Grafana 10 and later), or a plain string.
pub fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"].as_str().or_else(|| variable["query"].as_str()).unwrap_or_default()
}

/// A `label_values(selector, label)` or `label_values(label)` variable query: the series
/// selector (if any) and the label. `label_values` is Grafana's, not PromQL: Prometheus answers
/// it with `/api/v1/label/<label>/values?match[]=<selector>`.
pub fn label_values(query: &str) -> Option<(Option<&str>, &str)> {
    let inner = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector.trim()), label.trim()),
        None => (None, inner.trim()),
    })
}

/// `expr` with Grafana's variables replaced, `${name}` and `$name` alike, longest names first
/// (so that `$__range` does not eat `$__range_s`).
pub fn interpolate(expr: &str, values: &[(&str, String)]) -> String {
    let mut values: Vec<&(&str, String)> = values.iter().collect();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    out
}

/// What Grafana's Prometheus data source puts in a query for a multi-value variable: one value
/// as it is, several as a regex alternation `(a|b)`. Regex characters are escaped for a regex
/// inside a PromQL string, as Grafana does: `.` becomes `\\.` in the query text.
pub fn multi_value(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            let mut out = String::new();
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\\\\\"),
                    c if "$^*{}[]'+?.()|".contains(c) => {
                        out.push_str("\\\\");
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out
        })
        .collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", escaped.join("|")),
    }
}
