//! Checks of the deploy kit: the Dockerfile, `.dockerignore` and everything under `deploy/`.
//!
//! Every YAML and JSON file parses; the copies that must agree do (PrometheusRule and rules.yml,
//! ConfigMap and the exporter's configuration, ports, paths and names across the manifests); every
//! `ami_usage_*` metric the rules and the dashboard use is documented in README.md; the dashboard
//! follows Grafana's current schema (its variables, data sources, grid, panel ids and refIds);
//! and, when `promtool` is installed, the rules pass `promtool check rules` and their unit tests,
//! and the dashboard's queries parse. Set
//! `AMI_USAGE_REQUIRE_PROMTOOL=1` (CI does) to fail instead of skipping when promtool is missing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ami_usage_exporter::config::Config;
use serde::Deserialize;
use serde_yaml::Value;

#[path = "common/dashboard.rs"]
mod dashboard;

/// Metrics the rules or the dashboard already use but README.md does not list yet, because the
/// feature is being added at the same time. Remove a name once the README's metrics table has it
/// (the test says so).
const COMING_METRICS: &[&str] = &[];

const CONFIG_PATH_IN_IMAGE: &str = "/etc/ami-usage-exporter/config.yml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Files under `dir` (recursively) whose extension is one of `extensions`, sorted.
fn files_with_extension(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// All documents of a (possibly multi-document) YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, document)| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: document {} is not valid YAML: {e}", relative(path), i + 1))
        })
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{}: expected exactly one YAML document", relative(path));
    documents.remove(0)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", relative(path)))
}

/// The value at `keys` (mapping keys, or sequence indexes written as numbers), with a message
/// naming the file and the path when it is missing.
fn at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a Value {
    let mut current = value;
    for (depth, key) in keys.iter().enumerate() {
        let next = match key.parse::<usize>() {
            Ok(index) => current.get(index),
            Err(_) => current.get(*key),
        };
        current = next.unwrap_or_else(|| panic!("{file}: no {}", keys[..=depth].join(".")));
    }
    current
}

fn str_at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a str {
    at(value, keys, file).as_str().unwrap_or_else(|| panic!("{file}: {} is not a string", keys.join(".")))
}

fn seq_at<'a>(value: &'a Value, keys: &[&str], file: &str) -> &'a [Value] {
    at(value, keys, file).as_sequence().unwrap_or_else(|| panic!("{file}: {} is not a list", keys.join(".")))
}

fn manifest(name: &str) -> (Value, String) {
    let path = root().join("deploy/kubernetes").join(name);
    (yaml(&path), relative(&path))
}

/// The lines of README.md's section `heading` (up to the next heading of the same level).
fn readme_section(heading: &str) -> Vec<String> {
    let readme = read(&root().join("README.md"));
    let level = heading.split(' ').next().unwrap_or_default();
    let mut lines = readme.lines().skip_while(|l| l.trim() != heading);
    assert!(lines.next().is_some(), "README.md has no section {heading:?}");
    lines.take_while(|l| !(l.starts_with(level) && l[level.len()..].starts_with(' '))).map(str::to_owned).collect()
}

/// The text between the first pair of backticks in `cell`.
fn backticked(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// Metric names of the README's metrics table (the first column of each row, in backticks).
fn documented_metrics() -> BTreeSet<String> {
    let names: BTreeSet<String> = readme_section("## Metrics")
        .iter()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1).and_then(backticked).map(str::to_owned))
        .filter(|name| name.starts_with("ami_usage_"))
        .collect();
    assert!(
        names.contains("ami_usage_resources") && names.len() >= 10,
        "README.md's metrics table could not be read (found {names:?})"
    );
    names
}

/// Every `ami_usage_*` word in `text`.
fn mentioned_metrics(text: &str) -> BTreeSet<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("ami_usage_") {
        if text[..start].chars().next_back().is_some_and(is_word) {
            continue;
        }
        let len = text[start..].find(|c: char| !is_word(c)).unwrap_or(text.len() - start);
        names.insert(text[start..start + len].to_owned());
    }
    names
}

/// The port of the README's default `--web.listen-address` (`:10264`).
fn documented_port() -> u16 {
    let row = readme_section("### Flags")
        .into_iter()
        .find(|l| l.starts_with("| `--web.listen-address`"))
        .expect("README.md's flags table has a --web.listen-address row");
    let default = row.split('|').nth(2).and_then(backticked).expect("--web.listen-address has a default in backticks");
    let port = default.rsplit(':').next().unwrap_or_default();
    port.parse().unwrap_or_else(|_| panic!("README.md: default listen address {default:?} has no port"))
}

/// Dockerfile instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read(&root().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instruction, arguments) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                instructions.push((instruction.to_ascii_uppercase(), arguments.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// Instructions of the last stage (the image that ships).
fn final_stage() -> Vec<(String, String)> {
    let instructions = dockerfile_instructions();
    let start = instructions.iter().rposition(|(i, _)| i == "FROM").expect("the Dockerfile has a FROM");
    instructions[start..].to_vec()
}

fn version_numbers(version: &str) -> Vec<u32> {
    version.split('.').map(|n| n.parse().unwrap_or_else(|_| panic!("{version:?} is not a version"))).collect()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_with_extension(&root().join("deploy"), &["yml", "yaml"]);
    assert!(files.len() >= 10, "expected the deploy kit's YAML files, found {files:?}");
    for file in files {
        let documents = yaml_documents(&file);
        assert!(!documents.is_empty(), "{}: no YAML document", relative(&file));
        for (i, document) in documents.iter().enumerate() {
            assert!(document.is_mapping(), "{}: document {} is not a mapping", relative(&file), i + 1);
        }
    }
}

#[test]
fn every_json_file_under_deploy_parses() {
    let files = files_with_extension(&root().join("deploy"), &["json"]);
    assert!(files.len() >= 7, "expected the IAM policies and the dashboard, found {files:?}");
    for file in files {
        json(&file);
    }
}

/// The actions a permission policy allows, whether written as one string or a list.
fn allowed_actions(file: &str) -> BTreeSet<String> {
    let policy = json(&root().join("deploy/iam").join(file));
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    statements
        .iter()
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::String(action) => vec![action.clone()],
            serde_json::Value::Array(actions) => actions.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// `snake_case` to `PascalCase`: an SDK method's name to its API action's.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The sources of the exporter (src/, recursively), whitespace removed, so that a call chain split
/// over lines (`self\n.client\n.describe_images()`) reads as one.
fn sources_without_whitespace() -> String {
    let files = files_with_extension(&root().join("src"), &["rs"]);
    assert!(files.len() >= 10, "expected the exporter's sources, found {files:?}");
    files.iter().map(|f| read(f)).collect::<String>().chars().filter(|c| !c.is_whitespace()).collect()
}

/// The EC2 actions the exporter calls: every `client.<operation>(` in src/, as `ec2:Operation`.
fn called_actions() -> BTreeSet<String> {
    let code = sources_without_whitespace();
    let mut actions = BTreeSet::new();
    for (start, _) in code.match_indices("client.") {
        let rest = &code[start + "client.".len()..];
        let len = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
        let (method, after) = rest.split_at(len);
        if after.starts_with('(')
            && ["describe_", "create_", "delete_", "modify_"].iter().any(|v| method.starts_with(v))
        {
            actions.insert(format!("ec2:{}", pascal_case(method)));
        }
    }
    actions
}

/// The actions `--check-permissions` checks: the action names in `check` of src/aws/dry_run.rs.
fn preflight_actions() -> BTreeSet<String> {
    let code = read(&root().join("src/aws/dry_run.rs"));
    let start = code.find("pub async fn check(").expect("src/aws/dry_run.rs has check");
    let body = &code[start..];
    let body = &body[..body.find("\n}\n").expect("check ends")];
    body.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 1 && s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphabetic())
        })
        .map(|s| format!("ec2:{s}"))
        .collect()
}

/// The policies allow every EC2 action the code calls, each in the mode that needs it, and
/// `--check-permissions` checks exactly those actions. Reading (the `Describe` calls, discovery's
/// DescribeImages included) is in both policies; creating, tagging on creation and deleting only in
/// the report-managing one.
#[test]
fn iam_policies_allow_every_call_the_code_makes() {
    let called = called_actions();
    for action in [
        "ec2:DescribeImageUsageReports",
        "ec2:DescribeImageUsageReportEntries",
        "ec2:DescribeImages",
        "ec2:CreateImageUsageReport",
        "ec2:DeleteImageUsageReport",
    ] {
        assert!(called.contains(action), "the scan of src/ did not find {action} (found {called:?}); fix the scan");
    }
    assert_eq!(
        preflight_actions(),
        called,
        "--check-permissions (src/aws/dry_run.rs) must check every action the code calls"
    );

    let reads: BTreeSet<String> = called.iter().filter(|a| a.starts_with("ec2:Describe")).cloned().collect();
    assert_eq!(allowed_actions("read-only-policy.json"), reads, "read-only-policy.json: exactly the reading calls");
    let managing = allowed_actions("report-managing-policy.json");
    let mut needed = called.clone();
    // Reports are tagged in the CreateImageUsageReport call (TagSpecifications): that needs CreateTags.
    if sources_without_whitespace().contains("TagSpecification::builder()") {
        needed.insert("ec2:CreateTags".to_owned());
    }
    let missing: Vec<&String> = needed.iter().filter(|a| !managing.contains(*a)).collect();
    assert!(missing.is_empty(), "report-managing-policy.json does not allow {missing:?}");
    let unused: Vec<&String> = managing.iter().filter(|a| !needed.contains(*a)).collect();
    assert!(unused.is_empty(), "report-managing-policy.json allows {unused:?}, which the code never needs");

    // Targets with role_arn assume a role: the exporter's role must be allowed to.
    if sources_without_whitespace().contains("AssumeRoleProvider::builder(") {
        assert!(allowed_actions("assume-role-policy.json").contains("sts:AssumeRole"), "assume-role-policy.json");
    }

    // The README's IAM section names the same actions.
    let section = readme_section("## IAM").join("\n");
    let named: BTreeSet<String> = section
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| w.starts_with("ec2:") && w.len() > 4 && w[4..].starts_with(|c: char| c.is_ascii_uppercase()))
        .map(str::to_owned)
        .collect();
    let policies: BTreeSet<String> = managing.union(&allowed_actions("read-only-policy.json")).cloned().collect();
    let unnamed: Vec<&String> = policies.difference(&named).collect();
    assert!(unnamed.is_empty(), "README.md's IAM section does not name {unnamed:?}");
    // Not actions: a condition key, and the managed policies' `ec2:Describe*`.
    let other: Vec<&String> =
        named.difference(&policies).filter(|w| !["ec2:CreateAction", "ec2:Describe"].contains(&w.as_str())).collect();
    assert!(other.is_empty(), "README.md's IAM section names {other:?}, which no policy of deploy/iam allows");
}

/// The roles in the examples are those deploy/iam sets up: the exporter's role in the monitoring
/// account (the IRSA annotation), and `ami-usage-reports` in each AMI-owning account.
fn owner_roles() -> BTreeSet<String> {
    let policy = json(&root().join("deploy/iam/assume-role-policy.json"));
    let roles: BTreeSet<String> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Resource"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    assert!(!roles.is_empty(), "assume-role-policy.json lists no role");
    roles
}

/// config/example.yml's commented examples of a target (discovery, a role) are valid when written
/// out, and its `role_arn` is a role of an AMI-owning account, not the exporter's own role.
#[test]
fn example_config_target_options_validate_and_name_an_owner_role() {
    let text = read(&root().join("config/example.yml"));
    let targets = text.find("\ntargets:\n").expect("config/example.yml has targets") + 1;
    let is_key = |rest: &str| {
        let rest = rest.trim_start();
        let key_len = rest.find(':').unwrap_or(0);
        key_len > 0
            && rest[..key_len].chars().all(|c| c.is_ascii_alphanumeric() || "_-\"".contains(c))
            && rest[..1].chars().all(|c| c.is_ascii_lowercase() || c == '"')
            && rest[key_len + 1..].chars().next().is_none_or(|c| c == ' ')
    };
    let mut uncommented = text[..targets].to_owned();
    let mut written_out = Vec::new();
    for line in text[targets..].lines() {
        let indent = line.len() - line.trim_start().len();
        match line.trim_start().strip_prefix("# ") {
            Some(rest) if is_key(rest) => {
                written_out.push(rest.trim_start().split(':').next().unwrap_or_default().to_owned());
                uncommented.push_str(&format!("{}{rest}\n", &line[..indent]));
            }
            _ => uncommented.push_str(&format!("{line}\n")),
        }
    }
    for key in ["discover", "owners", "filters", "refresh_interval", "role_arn", "external_id", "session_name"] {
        assert!(
            written_out.iter().any(|k| k == key),
            "config/example.yml: no commented example of {key} ({written_out:?})"
        );
    }
    let config = Config::from_yaml(&uncommented).unwrap_or_else(|(field, reason)| {
        panic!("config/example.yml with its examples written out: {field}: {reason}\n{uncommented}")
    });
    let role = config.targets[0].role_arn.as_ref().expect("the example target has a role_arn").as_str().to_owned();
    let owner_roles = owner_roles();
    assert!(
        owner_roles.contains(&role),
        "config/example.yml: role_arn {role} is not a role of an AMI-owning account (deploy/iam/assume-role-policy.json: {owner_roles:?})"
    );
    let trust = json(&root().join("deploy/iam/trust-policy-cross-account.json"));
    let external_id = trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"].as_str();
    assert_eq!(
        config.targets[0].external_id.as_deref(),
        external_id,
        "config/example.yml: external_id of the trust policy"
    );
}

#[test]
fn iam_policies_are_well_formed() {
    let files = files_with_extension(&root().join("deploy/iam"), &["json"]);
    for name in [
        "read-only-policy.json",
        "report-managing-policy.json",
        "trust-policy-irsa.json",
        "trust-policy-pod-identity.json",
        "trust-policy-cross-account.json",
        "assume-role-policy.json",
    ] {
        assert!(files.iter().any(|f| f.ends_with(name)), "deploy/iam/{name} is missing");
    }
    for file in &files {
        let name = relative(file);
        let policy = json(file);
        assert_eq!(policy["Version"], "2012-10-17", "{name}: Version");
        let statements = policy["Statement"].as_array().unwrap_or_else(|| panic!("{name}: Statement is not a list"));
        assert!(!statements.is_empty(), "{name}: no statement");
        let trust = file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("trust-policy"));
        for statement in statements {
            assert_eq!(statement["Effect"], "Allow", "{name}: Effect");
            assert!(statement["Action"].is_string() || statement["Action"].is_array(), "{name}: Action");
            // A trust policy names who may assume the role; a permission policy names resources.
            if trust {
                assert!(statement["Principal"].is_object(), "{name}: a trust policy needs a Principal");
            } else {
                assert!(!statement["Resource"].is_null(), "{name}: a permission policy needs a Resource");
            }
        }
    }
    let irsa = json(&root().join("deploy/iam/trust-policy-irsa.json"));
    let irsa = &irsa["Statement"][0];
    assert_eq!(irsa["Action"], "sts:AssumeRoleWithWebIdentity");
    let conditions = irsa["Condition"]["StringEquals"].as_object().expect("the IRSA trust has StringEquals conditions");
    let condition = |suffix: &str| conditions.iter().find(|(k, _)| k.ends_with(suffix)).map(|(_, v)| v.clone());
    assert_eq!(condition(":sub"), Some("system:serviceaccount:monitoring:ami-usage-exporter".into()));
    assert_eq!(condition(":aud"), Some("sts.amazonaws.com".into()));
    let cross = json(&root().join("deploy/iam/trust-policy-cross-account.json"));
    assert!(
        cross["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"].is_string(),
        "the cross-account trust requires an external ID"
    );
}

#[test]
fn prometheus_rule_equals_rules_file() {
    let rules = yaml(&root().join("deploy/prometheus/rules.yml"));
    let (rule, file) = manifest("prometheusrule.yaml");
    assert_eq!(str_at(&rule, &["apiVersion"], &file), "monitoring.coreos.com/v1");
    assert_eq!(str_at(&rule, &["kind"], &file), "PrometheusRule");
    assert!(
        at(&rule, &["spec", "groups"], &file) == at(&rules, &["groups"], "deploy/prometheus/rules.yml"),
        "{file}: spec.groups differs from the groups of deploy/prometheus/rules.yml; copy them over"
    );
}

#[test]
fn every_alert_is_complete_and_unit_tested() {
    let rules_file = "deploy/prometheus/rules.yml";
    let rules = yaml(&root().join(rules_file));
    let groups = seq_at(&rules, &["groups"], rules_file);
    assert_eq!(groups.len(), 1, "{rules_file}: one group");
    assert_eq!(str_at(&groups[0], &["name"], rules_file), "ami-usage-exporter");
    let tests_file = "deploy/prometheus/rules_test.yml";
    let tests = yaml(&root().join(tests_file));
    let cases: Vec<&Value> = seq_at(&tests, &["tests"], tests_file)
        .iter()
        .flat_map(|t| seq_at(t, &["alert_rule_test"], tests_file))
        .collect();
    let mut alerts = Vec::new();
    for rule in seq_at(&groups[0], &["rules"], rules_file) {
        // A recording rule has no alert's fields; promtool checks it, and rules_test.yml its value.
        if rule.get("record").is_some() {
            continue;
        }
        let alert = str_at(rule, &["alert"], rules_file);
        for keys in [
            &["expr"][..],
            &["for"],
            &["labels", "severity"],
            &["annotations", "summary"],
            &["annotations", "description"],
        ] {
            assert!(
                !str_at(rule, keys, rules_file).is_empty(),
                "{rules_file}: {alert} has an empty {}",
                keys.join(".")
            );
        }
        // Annotations name what fired, from its labels; an absent() alert has none to name.
        if !str_at(rule, &["expr"], rules_file).starts_with("absent(") {
            let summary = str_at(rule, &["annotations", "summary"], rules_file);
            assert!(summary.contains("{{ $labels."), "{rules_file}: {alert}'s summary uses no label");
        }
        let expected: Vec<usize> = cases
            .iter()
            .filter(|c| str_at(c, &["alertname"], tests_file) == alert)
            .map(|c| c.get("exp_alerts").and_then(Value::as_sequence).map_or(0, Vec::len))
            .collect();
        assert!(expected.iter().any(|&n| n > 0), "{tests_file}: no test shows {alert} firing");
        assert!(expected.contains(&0), "{tests_file}: no test shows {alert} silent");
        alerts.push(alert);
    }
    for alert in [
        "AmiUsageUnexpectedAccount",
        "AmiUsageReportStale",
        "AmiUsagePollStale",
        "AmiUsageImagePollFailing",
        "AmiUsageExporterDown",
        "AmiUsageThrottled",
        "AmiUsageCreateFailing",
    ] {
        assert!(alerts.contains(&alert), "{rules_file}: alert {alert} is missing");
    }
}

#[test]
fn rules_and_dashboard_use_documented_metrics() {
    let documented = documented_metrics();
    for name in COMING_METRICS {
        if documented.contains(*name) {
            let _ = writeln!(
                std::io::stderr(),
                "note: README.md now documents {name}; remove it from COMING_METRICS in tests/deploy.rs"
            );
        }
    }
    for file in ["deploy/prometheus/rules.yml", "deploy/grafana/ami-usage.json"] {
        let used = mentioned_metrics(&read(&root().join(file)));
        assert!(!used.is_empty(), "{file} mentions no ami_usage_ metric");
        let unknown: Vec<&String> =
            used.iter().filter(|m| !documented.contains(*m) && !COMING_METRICS.contains(&m.as_str())).collect();
        assert!(unknown.is_empty(), "{file} uses metrics README.md's metrics table does not document: {unknown:?}");
    }
}

/// A panel's place on Grafana's grid of 24 columns: x, y, w, h.
fn grid_position(panel: &serde_json::Value, file: &str) -> [u64; 4] {
    let title = panel["title"].as_str().unwrap_or_default();
    let position = ["x", "y", "w", "h"]
        .map(|k| panel["gridPos"][k].as_u64().unwrap_or_else(|| panic!("{file}: panel {title:?} has no gridPos.{k}")));
    let [x, _, w, h] = position;
    assert!(w > 0 && h > 0 && x + w <= 24, "{file}: panel {title:?} gridPos {position:?} leaves the 24 columns");
    position
}

/// Panels whose places on the grid overlap, by title.
fn overlapping<'a>(panels: &[(&'a str, [u64; 4])]) -> Vec<(&'a str, &'a str)> {
    let mut overlaps = Vec::new();
    for (i, (a, [ax, ay, aw, ah])) in panels.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &panels[i + 1..] {
            if ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah) {
                overlaps.push((*a, *b));
            }
        }
    }
    overlaps
}

#[test]
fn dashboard_is_well_formed() {
    let file = dashboard::PATH;
    let dashboard = dashboard::load();
    // Grafana 11 writes schema 39 and 40, Grafana 12 writes 41.
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion is a number");
    assert!((39..=41).contains(&schema), "{file}: schemaVersion {schema}, not a current one (39 to 41)");
    let source = dashboard::variable(&dashboard, "datasource");
    assert_eq!(source["type"], "datasource", "{file}: variable datasource");
    assert_eq!(source["query"], "prometheus", "{file}: variable datasource");
    for name in ["aws_region", "image_id"] {
        let variable = dashboard::variable(&dashboard, name);
        assert_eq!(variable["type"], "query", "{file}: variable {name}");
        let query = dashboard::variable_query(variable);
        let label = dashboard::label_values(query).map(|(_, label)| label);
        assert_eq!(label, Some(name), "{file}: variable {name} is not label_values(<metric>, {name}): {query:?}");
        assert_eq!(variable["definition"], query, "{file}: variable {name}'s definition is its query");
        assert_eq!(variable["datasource"]["uid"], "${datasource}", "{file}: variable {name}'s datasource");
        assert!(
            variable["multi"] == true && variable["includeAll"] == true,
            "{file}: variable {name} takes several values"
        );
    }

    let mut ids = BTreeSet::new();
    let mut top_level = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels is a list") {
        let title = panel["title"].as_str().unwrap_or_default();
        top_level.push((title, grid_position(panel, file)));
        // A collapsed row holds its panels, placed as they are when it opens.
        let inside: Vec<(&str, [u64; 4])> = panel["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["title"].as_str().unwrap_or_default(), grid_position(p, file)))
            .collect();
        assert!(overlapping(&inside).is_empty(), "{file}: panels of row {title:?} overlap: {:?}", overlapping(&inside));
    }
    assert!(overlapping(&top_level).is_empty(), "{file}: panels overlap: {:?}", overlapping(&top_level));
    for panel in dashboard::panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{file}: panel {title:?} has no numeric id"));
        assert!(ids.insert(id), "{file}: panel {title:?} repeats id {id}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{file}: panel {title:?} datasource");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{file}: panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "{file}: panel {title:?} has no targets");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            assert!(!ref_id.is_empty(), "{file}: panel {title:?} has a target without a refId");
            assert!(ref_ids.insert(ref_id), "{file}: panel {title:?} repeats refId {ref_id}");
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{file}: panel {title:?} target {ref_id} datasource"
            );
            assert!(target["expr"].is_string(), "{file}: panel {title:?} target {ref_id} has no expr");
        }
    }
    let exprs: Vec<String> = dashboard::queries(&dashboard).into_iter().map(|q| q.expr).collect();
    for wanted in [
        "sum by (image_id) (ami_usage_resources",
        "topk(10, sum by (account_id) (ami_usage_resources",
        "ami_usage_unexpected_resources",
        "time() - ami_usage_report_creation_timestamp_seconds",
        "time() - ami_usage_last_success_timestamp_seconds",
        "ami_usage_image_poll_success",
        "sum by (operation) (rate(ami_usage_api_requests_total",
        "sum by (operation, code) (rate(ami_usage_api_errors_total",
        "ami_usage_poll_duration_seconds",
        "(ami_usage_image_info{",
        "(ami_usage_image_last_launched_timestamp_seconds{",
        "(ami_usage_image_deprecation_timestamp_seconds{",
        "sum by (resource_type) (ami_usage_references",
    ] {
        assert!(exprs.iter().any(|e| e.contains(wanted)), "{file}: no panel queries {wanted:?}");
    }
}

#[test]
fn configmap_holds_a_valid_exporter_config() {
    let (configmap, file) = manifest("configmap.yaml");
    assert_eq!(str_at(&configmap, &["kind"], &file), "ConfigMap");
    let key = CONFIG_PATH_IN_IMAGE.rsplit('/').next().unwrap_or_default();
    let text = str_at(&configmap, &["data", key], &file);
    if let Err((field, reason)) = Config::from_yaml(text) {
        panic!("{file}: data.{key} is not a valid exporter configuration: {field}: {reason}");
    }
}

/// The ConfigMap's comment says how a change gets applied: SIGHUP or POST /-/reload (which needs
/// `--web.enable-lifecycle`), the kubelet's delay, and a reload sidecar or a rollout restart. The
/// mount is a directory, because the kubelet never updates a subPath mount.
#[test]
fn configmap_says_how_a_change_is_applied() {
    let path = root().join("deploy/kubernetes/configmap.yaml");
    let comment: String = read(&path)
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ");
    for words in [
        "SIGHUP",
        "POST",
        "/-/reload",
        "--web.enable-lifecycle",
        "403 \"Lifecycle API is not enabled.\"",
        "kubelet",
        "delay",
        "reload sidecar",
        "`kubectl rollout restart deployment/ami-usage-exporter`",
    ] {
        assert!(comment.contains(words), "deploy/kubernetes/configmap.yaml: the comment does not mention {words:?}");
    }
    let (deployment, dfile) = manifest("deployment.yaml");
    let containers = seq_at(&deployment, &["spec", "template", "spec", "containers"], &dfile);
    for mount in containers.iter().flat_map(|c| seq_at(c, &["volumeMounts"], &dfile)) {
        assert!(mount.get("subPath").is_none(), "{dfile}: a subPath mount is never updated by the kubelet");
    }
}

/// Whether every label of `selector` (a mapping) has the same value in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_mapping().is_some_and(|m| m.iter().all(|(k, v)| labels.get(k.as_str().unwrap_or_default()) == Some(v)))
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_exporter() {
    let port = documented_port();
    let (deployment, dfile) = manifest("deployment.yaml");
    let (service, sfile) = manifest("service.yaml");
    let (account, afile) = manifest("serviceaccount.yaml");
    let (monitor, mfile) = manifest("servicemonitor.yaml");
    let (configmap, cfile) = manifest("configmap.yaml");

    assert_eq!(at(&deployment, &["spec", "replicas"], &dfile).as_u64(), Some(1), "{dfile}: one replica");
    let pod = at(&deployment, &["spec", "template", "spec"], &dfile);
    assert_eq!(str_at(pod, &["serviceAccountName"], &dfile), str_at(&account, &["metadata", "name"], &afile));
    assert_eq!(at(pod, &["securityContext", "runAsNonRoot"], &dfile).as_bool(), Some(true), "{dfile}: runAsNonRoot");
    let containers = seq_at(pod, &["containers"], &dfile);
    assert_eq!(containers.len(), 1, "{dfile}: one container");
    let container = &containers[0];
    let security = at(container, &["securityContext"], &dfile);
    assert_eq!(at(security, &["readOnlyRootFilesystem"], &dfile).as_bool(), Some(true), "{dfile}: read-only root");
    assert_eq!(at(security, &["allowPrivilegeEscalation"], &dfile).as_bool(), Some(false));
    assert!(
        seq_at(security, &["capabilities", "drop"], &dfile).iter().any(|c| c.as_str() == Some("ALL")),
        "{dfile}: drop ALL capabilities"
    );
    at(container, &["resources", "requests"], &dfile);
    at(container, &["resources", "limits"], &dfile);
    // The image's ENTRYPOINT passes --config.file already; the exporter refuses it twice.
    if let Some(args) = container.get("args").and_then(Value::as_sequence) {
        assert!(
            !args.iter().filter_map(Value::as_str).any(|a| a.starts_with("--config.file")),
            "{dfile}: --config.file is set by the image"
        );
    }

    let container_port = &seq_at(container, &["ports"], &dfile)[0];
    assert_eq!(at(container_port, &["containerPort"], &dfile).as_u64(), Some(u64::from(port)));
    let port_name = str_at(container_port, &["name"], &dfile);
    assert_eq!(port_name, "http-metrics");
    for (probe, path) in [("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")] {
        assert_eq!(str_at(container, &[probe, "httpGet", "path"], &dfile), path, "{dfile}: {probe}");
        let probe_port = at(container, &[probe, "httpGet", "port"], &dfile);
        assert!(
            probe_port.as_str() == Some(port_name) || probe_port.as_u64() == Some(u64::from(port)),
            "{dfile}: {probe} port"
        );
    }
    let readme_endpoints = readme_section("## HTTP endpoints").join("\n");
    assert!(readme_endpoints.contains("`/-/healthy`") && readme_endpoints.contains("`/-/ready`"));

    // The ConfigMap is mounted where the image's ENTRYPOINT reads the configuration.
    let mount_dir = CONFIG_PATH_IN_IMAGE.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mount = seq_at(container, &["volumeMounts"], &dfile)
        .iter()
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(mount_dir))
        .unwrap_or_else(|| panic!("{dfile}: nothing is mounted at {mount_dir}"));
    let volume_name = str_at(mount, &["name"], &dfile);
    let volume = seq_at(pod, &["volumes"], &dfile)
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(volume_name))
        .unwrap_or_else(|| panic!("{dfile}: no volume {volume_name}"));
    assert_eq!(str_at(volume, &["configMap", "name"], &dfile), str_at(&configmap, &["metadata", "name"], &cfile));

    // Service and ServiceMonitor select the pods and scrape the named port.
    let pod_labels = at(&deployment, &["spec", "template", "metadata", "labels"], &dfile);
    assert!(
        selects(at(&service, &["spec", "selector"], &sfile), pod_labels),
        "{sfile}: selector does not match the pods"
    );
    let service_port = &seq_at(&service, &["spec", "ports"], &sfile)[0];
    assert_eq!(at(service_port, &["port"], &sfile).as_u64(), Some(u64::from(port)));
    assert_eq!(str_at(service_port, &["name"], &sfile), port_name);
    let service_labels = at(&service, &["metadata", "labels"], &sfile);
    let monitor_selector = at(&monitor, &["spec", "selector", "matchLabels"], &mfile);
    assert!(selects(monitor_selector, service_labels), "{mfile}: selector does not match the Service");
    assert_eq!(str_at(&monitor, &["apiVersion"], &mfile), "monitoring.coreos.com/v1");
    assert_eq!(str_at(&monitor, &["spec", "endpoints", "0", "port"], &mfile), port_name);

    // IRSA annotation.
    assert_eq!(
        str_at(&account, &["metadata", "annotations", "eks.amazonaws.com/role-arn"], &afile),
        "arn:aws:iam::111122223333:role/ami-usage-exporter"
    );

    // The example scrape config targets the documented port.
    let prometheus = read(&root().join("deploy/prometheus/prometheus.yml"));
    assert!(prometheus.contains(&format!(":{port}")), "deploy/prometheus/prometheus.yml does not scrape port {port}");
}

#[test]
fn kustomization_lists_every_manifest_and_none_sets_a_namespace() {
    let dir = root().join("deploy/kubernetes");
    let (kustomization, file) = manifest("kustomization.yaml");
    let listed: BTreeSet<&str> = seq_at(&kustomization, &["resources"], &file)
        .iter()
        .map(|r| r.as_str().expect("resources are paths"))
        .collect();
    // The files of deploy/kubernetes itself: the overlays below it have their own kustomization.
    let present: BTreeSet<String> = files_with_extension(&dir, &["yaml", "yml"])
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .filter(|n| n != "kustomization.yaml")
        .collect();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(listed, present, "{file}: resources must list exactly the manifests of deploy/kubernetes");
    for name in present {
        let (resource, resource_file) = manifest(name);
        assert!(
            at(&resource, &["metadata"], &resource_file).get("namespace").is_none(),
            "{resource_file}: manifests are namespace-agnostic (set the namespace with kustomize or kubectl -n)"
        );
    }
}

/// An object's kind and name.
fn kind_and_name(object: &Value, file: &str) -> (String, String) {
    (str_at(object, &["kind"], file).to_owned(), str_at(object, &["metadata", "name"], file).to_owned())
}

/// Merges the mapping `patch` into `target`, as a strategic-merge patch does for mappings. Lists are
/// merged by key in a strategic-merge patch, which this model leaves out: a patch with a list fails.
fn merge_patch(target: &mut Value, patch: &Value, file: &str) {
    let Some(patch) = patch.as_mapping() else { panic!("{file}: this model of kustomize merges mappings only") };
    let Some(target) = target.as_mapping_mut() else { panic!("{file}: the patch's target is not a mapping") };
    for (key, value) in patch {
        assert!(
            !value.is_sequence(),
            "{file}: a patch with a list ({key:?}): extend kustomize_build in tests/deploy.rs"
        );
        match target.get_mut(key) {
            Some(existing) if value.is_mapping() => merge_patch(existing, value, file),
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// What `kustomize build dir` makes of the kit, each object with the file it comes from, for the part
/// of kustomize the kit uses: `resources` (files, and directories with a kustomization.yaml), and
/// `patches` given inline or by `path` without `target`, which are strategic-merge patches that delete
/// a whole object (`$patch: delete`) or merge mappings into one. `images` changes nothing checked
/// here. Anything else fails, so that the model never quietly differs from kustomize: like it, a
/// patch without a target and two objects of the same kind and name are errors.
fn kustomize_build(dir: &Path) -> Vec<(Value, String)> {
    let path = dir.join("kustomization.yaml");
    let file = relative(&path);
    let kustomization = yaml(&path);
    for key in kustomization.as_mapping().expect("a kustomization is a mapping").keys() {
        let key = key.as_str().unwrap_or_default();
        assert!(
            ["apiVersion", "kind", "resources", "patches", "images", "namespace"].contains(&key),
            "{file}: {key} is not modelled by kustomize_build in tests/deploy.rs"
        );
    }
    assert_eq!(str_at(&kustomization, &["kind"], &file), "Kustomization");
    let mut objects: Vec<(Value, String)> = Vec::new();
    for resource in seq_at(&kustomization, &["resources"], &file) {
        let resource = dir.join(resource.as_str().unwrap_or_else(|| panic!("{file}: resources are paths")));
        let found = if resource.is_dir() {
            kustomize_build(&resource)
        } else {
            yaml_documents(&resource).into_iter().map(|o| (o, relative(&resource))).collect()
        };
        for (object, source) in found {
            let key = kind_and_name(&object, &source);
            assert!(!objects.iter().any(|(o, f)| kind_and_name(o, f) == key), "{file}: {key:?} twice");
            objects.push((object, source));
        }
    }
    for patch in kustomization.get("patches").and_then(Value::as_sequence).into_iter().flatten() {
        assert!(patch.get("target").is_none(), "{file}: a patch with a target is not modelled by kustomize_build");
        let text = match (patch.get("patch").and_then(Value::as_str), patch.get("path").and_then(Value::as_str)) {
            (Some(text), None) => text.to_owned(),
            (None, Some(path)) => read(&dir.join(path)),
            _ => panic!("{file}: a patch has either patch or path"),
        };
        let patch: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: a patch is not YAML: {e}"));
        let key = kind_and_name(&patch, &file);
        let api_version = str_at(&patch, &["apiVersion"], &file);
        let position = objects
            .iter()
            .position(|(o, f)| kind_and_name(o, f) == key && str_at(o, &["apiVersion"], f) == api_version)
            .unwrap_or_else(|| panic!("{file}: the patch of {key:?} ({api_version}) matches no resource"));
        if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
            objects.remove(position);
        } else {
            assert!(patch.get("$patch").is_none(), "{file}: only $patch: delete is modelled");
            merge_patch(&mut objects[position].0, &patch, &file);
        }
    }
    objects
}

/// The value of `--name=value` among `args`, which must hold the flag exactly once.
fn flag_value<'a>(args: &[&'a str], name: &str, file: &str) -> &'a str {
    let prefix = format!("{name}=");
    let values: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(prefix.as_str())).collect();
    assert!(
        values.len() == 1 && !args.contains(&name),
        "{file}: {name}=<value> exactly once in the args, found {args:?}"
    );
    values[0]
}

/// deploy/kubernetes/sharded: the base with a StatefulSet of shards instead of the Deployment,
/// behind the base Service made headless, with a PodDisruptionBudget. Checked on what kustomize
/// builds from it, in the model of `kustomize_build`.
#[test]
fn sharded_overlay_runs_a_statefulset_of_shards_instead_of_the_deployment() {
    let dir = root().join("deploy/kubernetes/sharded");
    let kpath = dir.join("kustomization.yaml");
    let kfile = relative(&kpath);
    let kustomization = yaml(&kpath);
    assert!(kustomization.get("namespace").is_none(), "{kfile}: set the namespace with kubectl -n, as for the base");
    // Every file of the overlay is a resource or a patch of it.
    let mut used: BTreeSet<String> =
        seq_at(&kustomization, &["resources"], &kfile).iter().filter_map(|r| r.as_str().map(str::to_owned)).collect();
    assert!(used.contains("../"), "{kfile}: builds on the base (../)");
    for patch in kustomization.get("patches").and_then(Value::as_sequence).into_iter().flatten() {
        used.extend(patch.get("path").and_then(Value::as_str).map(str::to_owned));
    }
    for file in files_with_extension(&dir, &["yaml", "yml"]) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert!(
            name == "kustomization.yaml" || used.contains(&name),
            "{kfile}: {name} is neither a resource nor a patch"
        );
    }

    let base = kustomize_build(&root().join("deploy/kubernetes"));
    assert!(base.iter().any(|(o, f)| str_at(o, &["kind"], f) == "Deployment"), "the model builds the base");
    let objects = kustomize_build(&dir);
    for (object, file) in &objects {
        assert!(
            at(object, &["metadata"], file).get("namespace").is_none(),
            "{file}: manifests are namespace-agnostic (set the namespace with kustomize or kubectl -n)"
        );
    }
    let one = |kind: &str| {
        let found: Vec<&(Value, String)> = objects.iter().filter(|(o, f)| str_at(o, &["kind"], f) == kind).collect();
        assert_eq!(found.len(), 1, "{kfile}: builds exactly one {kind}, found {}", found.len());
        (&found[0].0, found[0].1.as_str())
    };
    assert!(
        !objects.iter().any(|(o, f)| str_at(o, &["kind"], f) == "Deployment"),
        "{kfile}: the base Deployment must not run beside the StatefulSet"
    );
    let (set, setfile) = one("StatefulSet");
    let (service, sfile) = one("Service");
    let (monitor, mfile) = one("ServiceMonitor");
    let (budget, bfile) = one("PodDisruptionBudget");
    let (account, afile) = one("ServiceAccount");
    let (configmap, cfile) = one("ConfigMap");
    one("PrometheusRule");
    assert_eq!(str_at(set, &["apiVersion"], setfile), "apps/v1");

    // As many shards as pods, each pod's shard from its name.
    let replicas = at(set, &["spec", "replicas"], setfile).as_u64().expect("spec.replicas is a number");
    assert!(replicas > 1, "{setfile}: a sharded exporter has more than one replica");
    let containers = seq_at(set, &["spec", "template", "spec", "containers"], setfile);
    assert_eq!(containers.len(), 1, "{setfile}: one container");
    let container = &containers[0];
    let args: Vec<&str> = seq_at(container, &["args"], setfile).iter().filter_map(Value::as_str).collect();
    let total = flag_value(&args, "--total-shards", setfile);
    assert_eq!(total.parse::<u64>().ok(), Some(replicas), "{setfile}: --total-shards={total} must equal replicas");
    assert_eq!(flag_value(&args, "--shard", setfile), "$(POD_NAME)", "{setfile}: each pod's shard is its name");
    let env = seq_at(container, &["env"], setfile);
    let pod_name: Vec<&Value> =
        env.iter().filter(|e| e.get("name").and_then(Value::as_str) == Some("POD_NAME")).collect();
    assert_eq!(pod_name.len(), 1, "{setfile}: POD_NAME once in env");
    assert_eq!(
        str_at(pod_name[0], &["valueFrom", "fieldRef", "fieldPath"], setfile),
        "metadata.name",
        "{setfile}: POD_NAME is the pod's name (downward API)"
    );
    assert!(pod_name[0].get("value").is_none(), "{setfile}: POD_NAME comes from the downward API only");
    assert_eq!(str_at(set, &["spec", "podManagementPolicy"], setfile), "Parallel");

    // The pod is the Deployment's, with POD_NAME and the two flags added.
    let (deployment, dfile) = manifest("deployment.yaml");
    let without_args_and_env = |template: &Value| {
        let mut template = template.clone();
        if let Some(container) = template["spec"]["containers"][0].as_mapping_mut() {
            container.remove("args");
            container.remove("env");
        }
        template
    };
    let template = at(set, &["spec", "template"], setfile);
    assert!(
        without_args_and_env(template) == without_args_and_env(at(&deployment, &["spec", "template"], &dfile)),
        "{setfile}: the pod template must be {dfile}'s but for args and env"
    );
    let base_args: Vec<&str> = seq_at(&deployment, &["spec", "template", "spec", "containers", "0", "args"], &dfile)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let total_flag = format!("--total-shards={replicas}");
    let mut expected_args = base_args.clone();
    expected_args.extend(["--shard=$(POD_NAME)", total_flag.as_str()]);
    assert_eq!(args, expected_args, "{setfile}: the Deployment's args, then --shard and --total-shards");
    let pod = at(template, &["spec"], setfile);
    assert_eq!(str_at(pod, &["serviceAccountName"], setfile), str_at(account, &["metadata", "name"], afile));
    let volume = &seq_at(pod, &["volumes"], setfile)[0];
    assert_eq!(str_at(volume, &["configMap", "name"], setfile), str_at(configmap, &["metadata", "name"], cfile));

    // The headless Service, the ServiceMonitor and the budget select the shards' pods.
    let pod_labels = at(template, &["metadata", "labels"], setfile);
    let set_selector = at(set, &["spec", "selector", "matchLabels"], setfile);
    assert!(selects(set_selector, pod_labels), "{setfile}: selector does not match its pods");
    assert_eq!(str_at(set, &["spec", "serviceName"], setfile), str_at(service, &["metadata", "name"], sfile));
    assert_eq!(str_at(service, &["spec", "clusterIP"], sfile), "None", "{sfile}: headless in the overlay");
    assert!(
        selects(at(service, &["spec", "selector"], sfile), pod_labels),
        "{sfile}: selector does not match the pods"
    );
    let monitor_selector = at(monitor, &["spec", "selector", "matchLabels"], mfile);
    assert!(
        selects(monitor_selector, at(service, &["metadata", "labels"], sfile)),
        "{mfile}: does not select the Service"
    );
    assert_eq!(str_at(budget, &["apiVersion"], bfile), "policy/v1");
    assert_eq!(at(budget, &["spec", "maxUnavailable"], bfile).as_u64(), Some(1), "{bfile}: maxUnavailable 1");
    assert!(budget["spec"].get("minAvailable").is_none(), "{bfile}: maxUnavailable, not minAvailable");
    let budget_selector = at(budget, &["spec", "selector", "matchLabels"], bfile);
    assert!(selects(budget_selector, pod_labels), "{bfile}: selector does not match the shards' pods");
    assert_eq!(budget_selector, set_selector, "{bfile}: the StatefulSet's selector");

    // One port name from the container to the ServiceMonitor; the probes use it.
    let port = documented_port();
    let container_port = &seq_at(container, &["ports"], setfile)[0];
    assert_eq!(at(container_port, &["containerPort"], setfile).as_u64(), Some(u64::from(port)));
    let port_name = str_at(container_port, &["name"], setfile);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(str_at(container, &[probe, "httpGet", "port"], setfile), port_name, "{setfile}: {probe} port");
    }
    let service_port = &seq_at(service, &["spec", "ports"], sfile)[0];
    assert_eq!(str_at(service_port, &["name"], sfile), port_name);
    assert_eq!(str_at(service_port, &["targetPort"], sfile), port_name);
    assert_eq!(str_at(monitor, &["spec", "endpoints", "0", "port"], mfile), port_name);
}

/// The README says when and how to run more than one exporter, and its deploy table names the overlay.
#[test]
fn readme_explains_running_more_than_one() {
    let section = readme_section("## Running more than one").join("\n");
    for words in [
        "deploy/kubernetes/sharded",
        "`--total-shards`",
        "`--shard`",
        "replicas",
        "BENCHMARKS.md",
        "client token",
        "hashmod",
        "AmiUsageShardsMissing",
        "AmiUsageShardingMismatch",
    ] {
        assert!(section.contains(words), "README.md's \"Running more than one\" does not mention {words:?}");
    }
    assert!(section.contains("```yaml") && section.contains("relabel_configs"), "a relabel_configs example");
    let row = readme_section("## Deploy")
        .into_iter()
        .find(|l| l.starts_with("| [`deploy/kubernetes/`]"))
        .expect("README.md's deploy table has a deploy/kubernetes/ row");
    assert!(row.contains("deploy/kubernetes/sharded"), "README.md's deploy/kubernetes/ row names the sharded overlay");
}

#[test]
fn dockerfile_exposes_the_documented_port_and_runs_as_non_root() {
    let port = documented_port();
    let stage = final_stage();
    let exposed: Vec<&str> = stage.iter().filter(|(i, _)| i == "EXPOSE").map(|(_, a)| a.as_str()).collect();
    assert!(
        exposed.iter().any(|a| a.split_whitespace().any(|p| p.trim_end_matches("/tcp") == port.to_string())),
        "Dockerfile: the final stage must EXPOSE {port}, found {exposed:?}"
    );
    let user = stage
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.clone())
        .expect("Dockerfile: the final stage must set USER to a non-root user");
    let user_name = user.split(':').next().unwrap_or_default();
    assert!(!["root", "0", ""].contains(&user_name), "Dockerfile: USER {user} is root");
    let (_, entrypoint) =
        stage.iter().find(|(i, _)| i == "ENTRYPOINT").expect("Dockerfile: the final stage has an ENTRYPOINT");
    assert!(entrypoint.starts_with('['), "Dockerfile: ENTRYPOINT in exec form, so signals reach the exporter");
    assert!(
        entrypoint.contains(&format!("\"--config.file={CONFIG_PATH_IN_IMAGE}\"")),
        "Dockerfile: ENTRYPOINT must pass --config.file={CONFIG_PATH_IN_IMAGE}"
    );
}

#[test]
fn dockerfile_builds_with_a_recent_enough_rust_and_stubs_every_target() {
    let instructions = dockerfile_instructions();
    let builder = instructions
        .iter()
        .find(|(i, a)| i == "FROM" && a.starts_with("rust:"))
        .map(|(_, a)| a.clone())
        .expect("Dockerfile: a rust: builder stage");
    let tag = builder.split_whitespace().next().unwrap_or_default().trim_start_matches("rust:");
    let builder_version = version_numbers(tag.split('-').next().unwrap_or_default());
    let cargo_toml = read(&root().join("Cargo.toml"));
    let required = cargo_toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("Cargo.toml has a rust-version");
    let mut required = version_numbers(&required);
    required.truncate(builder_version.len());
    assert!(builder_version >= required, "Dockerfile: builder {builder} is older than rust-version {required:?}");

    // The dependency layer builds with stub sources: every target file the manifests name must get
    // one, or cargo cannot read the manifests.
    let dockerfile = read(&root().join("Dockerfile"));
    let mut targets = vec!["src/lib.rs".to_owned()];
    for (manifest, prefix) in [("Cargo.toml", ""), ("ec2-sim/Cargo.toml", "ec2-sim/")] {
        for line in read(&root().join(manifest)).lines() {
            if let Some(path) = line.trim().strip_prefix("path = ") {
                targets.push(format!("{prefix}{}", path.trim_matches('"')));
            }
        }
    }
    for target in &targets {
        assert!(root().join(target).exists(), "{target} is named by a manifest but does not exist");
        assert!(dockerfile.contains(target.as_str()), "Dockerfile: the dependency layer needs a stub for {target}");
    }
    assert!(
        dockerfile.contains("--locked") && dockerfile.contains("--bin ami-usage-exporter"),
        "Dockerfile: cargo build --release --locked --bin ami-usage-exporter"
    );
    assert!(dockerfile.contains("ARG AMI_USAGE_REVISION"), "Dockerfile: the revision comes in ARG AMI_USAGE_REVISION");
}

/// Whether `.dockerignore` keeps `path` (relative, `/`-separated) out of the build context. A
/// small subset of Docker's rules: the last matching pattern wins, `!` re-includes, a pattern
/// matches a path or any of its parent directories, `*` matches one top-level name and `**/`
/// any leading directories.
fn dockerignore_excludes(patterns: &[String], path: &str) -> bool {
    let glob = |pattern: &str, candidate: &str| match pattern {
        "*" => !candidate.contains('/'),
        _ => match pattern.strip_prefix("**/") {
            Some(rest) => candidate == rest || candidate.ends_with(&format!("/{rest}")),
            None => pattern == candidate,
        },
    };
    let components: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for pattern in patterns {
        let (negated, pattern) = pattern.strip_prefix('!').map_or((false, pattern.as_str()), |p| (true, p));
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        if (1..=components.len()).any(|end| glob(pattern, &components[..end].join("/"))) {
            excluded = !negated;
        }
    }
    excluded
}

#[test]
fn dockerignore_keeps_out_target_and_git_but_not_the_build_inputs() {
    let patterns: Vec<String> = read(&root().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for path in ["target/release/ami-usage-exporter", ".git/HEAD", "ec2-sim/target/debug/x"] {
        assert!(dockerignore_excludes(&patterns, path), ".dockerignore must exclude {path}");
    }
    for (instruction, arguments) in dockerfile_instructions() {
        if instruction != "COPY" || arguments.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = arguments.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for source in &words[..words.len().saturating_sub(1)] {
            let source = source.trim_end_matches('/');
            assert!(root().join(source).exists(), "Dockerfile: COPY {source}: no such file");
            assert!(
                !dockerignore_excludes(&patterns, source),
                ".dockerignore excludes {source}, which the Dockerfile copies"
            );
            assert!(
                !dockerignore_excludes(&patterns, &format!("{source}/main.rs")),
                ".dockerignore excludes files under {source}"
            );
        }
    }
}

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|candidate| candidate.is_file())
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let Some(promtool) = promtool() else {
        let required = std::env::var("AMI_USAGE_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
        assert!(!required, "promtool is not on PATH, and AMI_USAGE_REQUIRE_PROMTOOL=1 requires it");
        // Written to stderr directly, so that it shows even though the test harness captures output.
        let _ = writeln!(
            std::io::stderr(),
            "promtool_checks_and_unit_tests_pass: skipped: promtool is not on PATH \
             (apt-get install prometheus; set AMI_USAGE_REQUIRE_PROMTOOL=1 to fail instead)"
        );
        return;
    };
    run_promtool(&promtool, &["check", "rules", "deploy/prometheus/rules.yml"]);
    run_promtool(&promtool, &["test", "rules", "deploy/prometheus/rules_test.yml"]);
    run_promtool(&promtool, &["check", "config", "deploy/prometheus/prometheus.yml"]);

    // The dashboard's queries, with their template variables filled in, must be valid PromQL:
    // promtool checks them as recording rules.
    let dashboard = dashboard::load();
    let mut variables = dashboard::built_ins();
    variables.extend([("aws_region", ".*".to_owned()), ("image_id", ".*".to_owned())]);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = dashboard::queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has no queries");
    for (i, query) in queries.iter().enumerate() {
        let expr = dashboard::interpolate(&query.expr, &variables);
        let expr = serde_json::to_string(&expr).expect("a string serializes");
        rules.push_str(&format!("      - record: dashboard:query{i}\n        expr: {expr}\n"));
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ami-usage-dashboard-queries.yml");
    std::fs::write(&path, rules).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let path = path.to_str().expect("the target directory is UTF-8");
    run_promtool(&promtool, &["check", "rules", path]);
}

/// The scan permissions DescribeImageReferences needs, each resource type's, granted only through
/// EC2 (`aws:CalledVia`), as AWS's managed AmazonEC2ImageReferencesAccessPolicy does.
#[test]
fn the_image_references_scan_policy_holds_every_scan_permission_only_through_ec2() {
    let scan = allowed_actions("image-references-scan-policy.json");
    let needed = [
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeLaunchTemplateVersions",
        "ssm:DescribeParameters",
        "ssm:GetParameters",
        "imagebuilder:ListImageRecipes",
        "imagebuilder:ListContainerRecipes",
        "imagebuilder:GetContainerRecipe",
    ];
    assert_eq!(scan, needed.iter().map(|a| (*a).to_owned()).collect::<BTreeSet<_>>());
    let policy = json(&root().join("deploy/iam/image-references-scan-policy.json"));
    for statement in policy["Statement"].as_array().into_iter().flatten() {
        let called_via = &statement["Condition"]["ForAnyValue:StringEquals"]["aws:CalledVia"];
        assert_eq!(called_via, &serde_json::json!(["ec2-images.amazonaws.com"]), "{statement}");
    }
    for file in ["read-only-policy.json", "report-managing-policy.json"] {
        assert!(allowed_actions(file).contains("ec2:DescribeImageReferences"), "{file}");
    }
}
