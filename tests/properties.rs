//! Property tests: the configuration parser, the folding of report entries into counts, and the
//! text exposition, each checked over generated inputs against a small model written here.
//!
//! `cargo test -p ami-usage-exporter --test properties` runs them in a few seconds in a debug
//! build. `PROPTEST_CASES=5000` runs more cases per property. Failures are not persisted to a
//! regressions file: a case found this way belongs in a plain `#[test]` below.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ami_usage_exporter::config::{Config, DEFAULT_VERSION_DEPTH, LAUNCH_TEMPLATE, RetryMode};
use ami_usage_exporter::render::{RenderOptions, render_snapshot};
use ami_usage_exporter::report::Backoff;
use ami_usage_exporter::snapshot::MAX_PLAUSIBLE_USAGE;
use ami_usage_exporter::snapshot::{Entry, ImageStatus, ReportUsage, Snapshot, UsageKey};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::Config as ProptestConfig;

/// `cases` per property unless `PROPTEST_CASES` says otherwise; no regressions file is written.
fn runner(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const EXAMPLE: &str = include_str!("../config/example.yml");

/// Strategies and a YAML writer for configurations: a generated `GenConfig` knows both the text
/// it renders to and the values `Config::from_yaml` must read back from that text.
mod gen_config {
    use super::*;

    pub const REGIONS: &[&str] = &[
        "us-east-1",
        "us-east-2",
        "us-west-2",
        "eu-west-1",
        "eu-central-2",
        "ap-southeast-5",
        "ap-northeast-3",
        "us-gov-west-1",
        "ca-central-1",
        "sa-east-1",
        "il-central-1",
        "cn-north-1",
    ];
    pub const RESOURCE_TYPES: &[&str] =
        &["ec2:Instance", LAUNCH_TEMPLATE, "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe", "ssm:Parameter"];
    /// Every key a section knows; an unknown key is anything else.
    pub const KNOWN_KEYS: &[&str] = &[
        "poll_interval",
        "staleness_limit",
        "aws",
        "reports",
        "entries",
        "targets",
        "max_concurrent_requests",
        "page_size",
        "connect_timeout",
        "attempt_timeout",
        "operation_timeout",
        "max_attempts",
        "retry_mode",
        "create",
        "max_age",
        "delete_superseded",
        "pending_timeout",
        "resource_types",
        "account_ids",
        "tags",
        "creation_times",
        "region",
        "images",
        "report_ids",
        "type",
        "version_depth",
        "accounts",
        "cardinality",
        "names",
        "expected",
        "expected_per_image",
        "sum_accounts",
        "sum_accounts_for",
        "max_series",
        "discover",
        "role_arn",
        "external_id",
        "session_name",
        "owner_account_id",
    ];

    /// How scalars are written: plain, 'single' or "double" quoted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Quote {
        Plain,
        Single,
        Double,
    }

    #[derive(Debug, Clone, Copy)]
    pub struct Style {
        pub quote: Quote,
        /// `[a, b]` rather than one `- a` line per item.
        pub flow: bool,
    }

    impl Style {
        pub fn scalar(&self, s: &str) -> String {
            match self.quote {
                Quote::Plain if s.is_empty() => "''".to_owned(),
                Quote::Plain => s.to_owned(),
                Quote::Single => format!("'{}'", s.replace('\'', "''")),
                Quote::Double => double_quoted(s),
            }
        }
    }

    /// A YAML double-quoted scalar for any string: printable ASCII as is, the rest escaped.
    pub fn double_quoted(s: &str) -> String {
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

    /// A duration as written in the file, and what it must parse to.
    #[derive(Debug, Clone)]
    pub struct Dur {
        pub text: String,
        pub value: Duration,
    }

    impl Dur {
        pub fn secs(n: u64) -> Self {
            Self { text: format!("{n}s"), value: Duration::from_secs(n) }
        }
    }

    /// The longest duration the configuration accepts (longer ones are typos).
    pub const MAX_DAYS: u64 = 3650;

    pub fn dur() -> BoxedStrategy<Dur> {
        let unit = select(vec![("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400)]);
        let n_units = unit.prop_flat_map(|(u, secs)| {
            let max = MAX_DAYS * 86_400 / secs;
            (prop_oneof![4 => 1u64..=1000, 1 => 1..=max, 1 => Just(max)], Just((u, secs)))
        });
        prop_oneof![
            4 => n_units.prop_map(|(n, (u, secs))| Dur {
                text: format!("{n}{u}"),
                value: Duration::from_secs(n * secs)
            }),
            1 => (1u64..=48, 0u64..60).prop_map(|(h, m)| Dur {
                text: format!("{h}h{m}m"),
                value: Duration::from_secs(h * 3600 + m * 60)
            }),
            1 => (1u64..=999).prop_map(|ms| Dur { text: format!("{ms}ms"), value: Duration::from_millis(ms) }),
        ]
        .boxed()
    }

    #[derive(Debug, Clone)]
    pub struct Rt {
        pub name: String,
        /// i64 so that mutations can write depths no u32 holds.
        pub depth: Option<i64>,
        /// `{type: name}` even without a depth.
        pub map: bool,
        pub extra: Vec<(String, String)>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct GenAws {
        pub max_concurrent_requests: Option<u32>,
        pub page_size: Option<u32>,
        pub max_attempts: Option<u32>,
        pub retry_mode: Option<&'static str>,
        /// connect, attempt, operation (attempt <= operation, or validation refuses it).
        pub timeouts: Option<(Dur, Dur, Dur)>,
        pub extra: Vec<(String, String)>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct GenReports {
        pub create: Option<bool>,
        pub max_age: Option<Dur>,
        pub pending_timeout: Option<Dur>,
        pub resource_types: Option<Vec<Rt>>,
        pub account_ids: Option<Vec<String>>,
        pub tags: BTreeMap<String, String>,
        pub extra: Vec<(String, String)>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct GenEntries {
        pub account_ids: Vec<String>,
        pub extra: Vec<(String, String)>,
    }

    #[derive(Debug, Clone)]
    pub struct GenTarget {
        pub region: String,
        pub images: Vec<String>,
        pub report_ids: Vec<String>,
        pub extra: Vec<(String, String)>,
    }

    #[derive(Debug, Clone)]
    pub struct GenConfig {
        pub poll_interval: Option<Dur>,
        pub staleness_limit: Option<Dur>,
        pub aws: Option<GenAws>,
        pub reports: Option<GenReports>,
        pub entries: Option<GenEntries>,
        pub targets: Vec<GenTarget>,
        pub extra: Vec<(String, String)>,
        pub style: Style,
        /// The order of the top-level keys in the file (a permutation of 0..7).
        pub order: Vec<usize>,
    }

    pub fn image_id() -> impl Strategy<Value = String> {
        "ami-([0-9a-f]{8}|[0-9a-f]{17})"
    }

    pub fn account_id() -> impl Strategy<Value = String> {
        "[0-9]{12}"
    }

    fn version_depth() -> impl Strategy<Value = u32> {
        prop_oneof![Just(1u32), Just(10_000u32), 1u32..=10_000]
    }

    fn resource_types() -> BoxedStrategy<Vec<Rt>> {
        subsequence(RESOURCE_TYPES.to_vec(), 1..=RESOURCE_TYPES.len())
            .prop_shuffle()
            .prop_flat_map(|names| {
                let n = names.len();
                (Just(names), prop::collection::vec((proptest::option::of(version_depth()), any::<bool>()), n))
                    .prop_map(|(names, opts)| {
                        names
                            .into_iter()
                            .zip(opts)
                            .map(|(name, (depth, map))| Rt {
                                name: name.to_owned(),
                                depth: (name == LAUNCH_TEMPLATE).then_some(depth).flatten().map(i64::from),
                                map,
                                extra: Vec::new(),
                            })
                            .collect()
                    })
            })
            .boxed()
    }

    fn aws() -> BoxedStrategy<GenAws> {
        (
            proptest::option::of(1u32..=64),
            proptest::option::of(prop_oneof![Just(1u32), Just(1000u32), 1u32..=1000]),
            proptest::option::of(1u32..=10),
            proptest::option::of(select(vec!["standard", "adaptive"])),
            proptest::option::of((dur(), dur(), dur())),
        )
            .prop_map(|(max_concurrent_requests, page_size, max_attempts, retry_mode, timeouts)| GenAws {
                max_concurrent_requests,
                page_size,
                max_attempts,
                retry_mode,
                timeouts: timeouts.map(|(c, a, o)| if a.value <= o.value { (c, a, o) } else { (c, o, a) }),
                extra: Vec::new(),
            })
            .boxed()
    }

    fn tag_text() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[a-zA-Z0-9_.:/=+@ -]{0,24}", 1 => ".{0,12}"]
    }

    fn reports() -> BoxedStrategy<GenReports> {
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(dur()),
            proptest::option::of(dur()),
            proptest::option::of(resource_types()),
            proptest::option::of(prop_oneof![
                3 => prop::collection::vec(account_id(), 0..12),
                1 => prop::collection::vec(account_id(), 180..=200),
            ]),
            prop::collection::btree_map(tag_text(), tag_text(), 0..4),
        )
            .prop_map(|(create, max_age, pending_timeout, resource_types, account_ids, tags)| GenReports {
                create,
                max_age,
                pending_timeout,
                resource_types,
                account_ids,
                tags,
                extra: Vec::new(),
            })
            .boxed()
    }

    fn targets() -> BoxedStrategy<Vec<GenTarget>> {
        subsequence(REGIONS.to_vec(), 1..=4)
            .prop_shuffle()
            .prop_flat_map(|regions| {
                let n = regions.len();
                let one = (
                    prop::collection::vec(image_id(), 0..6),
                    prop::collection::vec("amiur-[0-9a-f]{8,32}", 0..3),
                    image_id(),
                );
                (Just(regions), prop::collection::vec(one, n)).prop_map(|(regions, contents)| {
                    regions
                        .into_iter()
                        .zip(contents)
                        .map(|(region, (mut images, mut report_ids, fallback))| {
                            // An ID listed twice in one target is a mistake (which `mutation` makes).
                            let mut seen = std::collections::BTreeSet::new();
                            images.retain(|i| seen.insert(i.clone()));
                            report_ids.retain(|r| seen.insert(r.clone()));
                            if images.is_empty() && report_ids.is_empty() {
                                images.push(fallback);
                            }
                            GenTarget { region: region.to_owned(), images, report_ids, extra: Vec::new() }
                        })
                        .collect()
                })
            })
            .boxed()
    }

    pub fn style() -> impl Strategy<Value = Style> {
        (select(vec![Quote::Plain, Quote::Single, Quote::Double]), any::<bool>())
            .prop_map(|(quote, flow)| Style { quote, flow })
    }

    /// The strategies of a configuration are boxed: unboxed, their nested value trees overflowed
    /// the 2 MiB stack of a test thread in a debug build.
    pub fn config() -> BoxedStrategy<GenConfig> {
        (
            proptest::option::of(dur()),
            proptest::option::of(dur()),
            proptest::option::of(aws()),
            proptest::option::of(reports()),
            proptest::option::of(prop::collection::vec(account_id(), 0..4)),
            targets(),
            style(),
            Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(poll_interval, staleness_limit, aws, reports, entry_accounts, targets, style, order)| {
                GenConfig {
                    poll_interval,
                    staleness_limit,
                    aws,
                    reports,
                    entries: entry_accounts.map(|account_ids| GenEntries { account_ids, extra: Vec::new() }),
                    targets,
                    extra: Vec::new(),
                    style,
                    order,
                }
            })
            .boxed()
    }

    /// Writes `key: [items]` or a block list, at `indent` spaces.
    fn list(out: &mut String, indent: usize, key: &str, items: &[String], flow: bool) {
        let pad = " ".repeat(indent);
        if flow || items.is_empty() {
            let _ = writeln!(out, "{pad}{key}: [{}]", items.join(", "));
        } else {
            let _ = writeln!(out, "{pad}{key}:");
            for item in items {
                let _ = writeln!(out, "{pad}  - {item}");
            }
        }
    }

    fn extras(out: &mut String, indent: usize, extra: &[(String, String)]) {
        for (k, v) in extra {
            let _ = writeln!(out, "{}{k}: {v}", " ".repeat(indent));
        }
    }

    fn resource_type_fields(rt: &Rt, style: &Style) -> Vec<String> {
        let mut fields = vec![format!("type: {}", style.scalar(&rt.name))];
        if let Some(d) = rt.depth {
            fields.push(format!("version_depth: {d}"));
        }
        fields.extend(rt.extra.iter().map(|(k, v)| format!("{k}: {v}")));
        fields
    }

    impl GenConfig {
        pub fn render(&self) -> String {
            let s = &self.style;
            let q = |v: &str| s.scalar(v);
            let mut chunks: Vec<String> = vec![String::new(); 7];
            if let Some(d) = &self.poll_interval {
                chunks[0] = format!("poll_interval: {}\n", q(&d.text));
            }
            if let Some(d) = &self.staleness_limit {
                chunks[1] = format!("staleness_limit: {}\n", q(&d.text));
            }
            if let Some(a) = &self.aws {
                let out = &mut chunks[2];
                let mut body = String::new();
                for (key, value) in [
                    ("max_concurrent_requests", a.max_concurrent_requests),
                    ("page_size", a.page_size),
                    ("max_attempts", a.max_attempts),
                ] {
                    if let Some(v) = value {
                        let _ = writeln!(body, "  {key}: {v}");
                    }
                }
                if let Some(mode) = a.retry_mode {
                    let _ = writeln!(body, "  retry_mode: {}", q(mode));
                }
                if let Some((c, at, op)) = &a.timeouts {
                    let _ = writeln!(body, "  connect_timeout: {}", q(&c.text));
                    let _ = writeln!(body, "  attempt_timeout: {}", q(&at.text));
                    let _ = writeln!(body, "  operation_timeout: {}", q(&op.text));
                }
                extras(&mut body, 2, &a.extra);
                if body.is_empty() {
                    out.push_str("aws: {}\n");
                } else {
                    out.push_str("aws:\n");
                    out.push_str(&body);
                }
            }
            if let Some(r) = &self.reports {
                let mut body = String::new();
                if let Some(c) = r.create {
                    let _ = writeln!(body, "  create: {c}");
                }
                if let Some(d) = &r.max_age {
                    let _ = writeln!(body, "  max_age: {}", q(&d.text));
                }
                if let Some(d) = &r.pending_timeout {
                    let _ = writeln!(body, "  pending_timeout: {}", q(&d.text));
                }
                if let Some(types) = &r.resource_types {
                    if s.flow || types.is_empty() {
                        let items: Vec<String> = types
                            .iter()
                            .map(|rt| {
                                if rt.map || rt.depth.is_some() || !rt.extra.is_empty() {
                                    format!("{{{}}}", resource_type_fields(rt, s).join(", "))
                                } else {
                                    q(&rt.name)
                                }
                            })
                            .collect();
                        let _ = writeln!(body, "  resource_types: [{}]", items.join(", "));
                    } else {
                        body.push_str("  resource_types:\n");
                        for rt in types {
                            if rt.map || rt.depth.is_some() || !rt.extra.is_empty() {
                                for (i, field) in resource_type_fields(rt, s).iter().enumerate() {
                                    let _ = writeln!(body, "    {} {field}", if i == 0 { "-" } else { " " });
                                }
                            } else {
                                let _ = writeln!(body, "    - {}", q(&rt.name));
                            }
                        }
                    }
                }
                if let Some(ids) = &r.account_ids {
                    list(&mut body, 2, "account_ids", &ids.iter().map(|a| q(a)).collect::<Vec<_>>(), s.flow);
                }
                if !r.tags.is_empty() {
                    body.push_str("  tags:\n");
                    for (k, v) in &r.tags {
                        let _ = writeln!(body, "    {}: {}", double_quoted(k), double_quoted(v));
                    }
                }
                extras(&mut body, 2, &r.extra);
                let out = &mut chunks[3];
                if body.is_empty() {
                    out.push_str("reports: {}\n");
                } else {
                    out.push_str("reports:\n");
                    out.push_str(&body);
                }
            }
            if let Some(e) = &self.entries {
                let out = &mut chunks[4];
                out.push_str("entries:\n");
                list(out, 2, "account_ids", &e.account_ids.iter().map(|a| q(a)).collect::<Vec<_>>(), s.flow);
                extras(out, 2, &e.extra);
            }
            let out = &mut chunks[5];
            out.push_str("targets:\n");
            for t in &self.targets {
                let _ = writeln!(out, "  - region: {}", q(&t.region));
                if !t.images.is_empty() {
                    list(out, 4, "images", &t.images.iter().map(|i| q(i)).collect::<Vec<_>>(), s.flow);
                }
                if !t.report_ids.is_empty() {
                    list(out, 4, "report_ids", &t.report_ids.iter().map(|i| q(i)).collect::<Vec<_>>(), s.flow);
                }
                extras(out, 4, &t.extra);
            }
            extras(&mut chunks[6], 0, &self.extra);
            self.order.iter().map(|&i| chunks[i].as_str()).collect()
        }

        /// Checks that `c` holds exactly the values this configuration was generated with.
        pub fn check(&self, c: &Config) -> Result<(), TestCaseError> {
            let or = |d: &Option<Dur>, default: u64| d.as_ref().map_or(Duration::from_secs(default), |d| d.value);
            prop_assert_eq!(c.poll_interval.get(), or(&self.poll_interval, 300));
            prop_assert_eq!(c.staleness_limit.get(), or(&self.staleness_limit, 3600));

            let a = self.aws.clone().unwrap_or_default();
            prop_assert_eq!(c.aws.max_concurrent_requests.get(), a.max_concurrent_requests.unwrap_or(4));
            prop_assert_eq!(c.aws.page_size.get(), a.page_size.unwrap_or(1000));
            prop_assert_eq!(c.aws.max_attempts.get(), a.max_attempts.unwrap_or(3));
            let mode = if a.retry_mode == Some("adaptive") { RetryMode::Adaptive } else { RetryMode::Standard };
            prop_assert_eq!(c.aws.retry_mode, mode);
            let (connect, attempt, operation) = a
                .timeouts
                .map_or((Duration::from_secs(3), Duration::from_secs(10), Duration::from_secs(30)), |(c, a, o)| {
                    (c.value, a.value, o.value)
                });
            prop_assert_eq!(c.aws.connect_timeout.get(), connect);
            prop_assert_eq!(c.aws.attempt_timeout.get(), attempt);
            prop_assert_eq!(c.aws.operation_timeout.get(), operation);

            let r = self.reports.clone().unwrap_or_default();
            prop_assert_eq!(c.reports.create, r.create.unwrap_or(true));
            prop_assert_eq!(c.reports.max_age.get(), or(&r.max_age, 86_400));
            prop_assert_eq!(c.reports.pending_timeout.get(), or(&r.pending_timeout, 3600));
            let mut want_types: Vec<(String, Option<u32>)> = match &r.resource_types {
                None => vec![("ec2:Instance".into(), None), (LAUNCH_TEMPLATE.into(), Some(DEFAULT_VERSION_DEPTH))],
                Some(types) => types
                    .iter()
                    .map(|rt| {
                        let depth = rt.depth.map(|d| u32::try_from(d).unwrap_or(0));
                        let depth =
                            if rt.name == LAUNCH_TEMPLATE { depth.or(Some(DEFAULT_VERSION_DEPTH)) } else { depth };
                        (rt.name.clone(), depth)
                    })
                    .collect(),
            };
            want_types.sort();
            let got_types: Vec<(String, Option<u32>)> =
                c.reports.resource_types.iter().map(|t| (t.name().to_owned(), t.version_depth())).collect();
            prop_assert_eq!(got_types, want_types, "resource types, sorted, LaunchTemplate depth explicit");
            let want_accounts: Vec<String> =
                r.account_ids.unwrap_or_default().into_iter().collect::<BTreeSet<_>>().into_iter().collect();
            let got_accounts: Vec<String> = c.reports.account_ids.iter().map(|a| a.as_str().to_owned()).collect();
            prop_assert_eq!(got_accounts, want_accounts, "report accounts, sorted and unique");
            prop_assert_eq!(&c.reports.tags, &r.tags);

            let e = self.entries.clone().unwrap_or_default();
            let got: Vec<&str> = c.entries.account_ids.iter().map(|a| a.as_str()).collect();
            prop_assert_eq!(got, e.account_ids.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert!(c.entries.resource_types.is_empty() && c.entries.creation_times.is_empty());

            prop_assert_eq!(c.targets.len(), self.targets.len());
            for (got, want) in c.targets.iter().zip(&self.targets) {
                prop_assert_eq!(got.region.as_str(), want.region.as_str());
                let images: Vec<&str> = got.images.iter().map(|i| i.as_str()).collect();
                prop_assert_eq!(images, want.images.iter().map(String::as_str).collect::<Vec<_>>());
                let reports: Vec<&str> = got.report_ids.iter().map(|i| i.as_str()).collect();
                prop_assert_eq!(reports, want.report_ids.iter().map(String::as_str).collect::<Vec<_>>());
            }
            Ok(())
        }
    }

    /// One mistake put into an otherwise valid configuration.
    #[derive(Debug, Clone)]
    pub enum Mutation {
        BadImage { target: Index, at: Index, image: String },
        BadAccount { in_entries: bool, at: Index, account: String },
        BadDuration { field: usize, text: String },
        BadDepth { at: Index, depth: i64 },
        DepthOnOtherType { at: Index, name: &'static str, depth: u32 },
        TooManyAccounts { first: u64 },
        UnknownKey { section: usize, at: Index, key: String },
        RegionTwice { target: Index },
        EmptyTarget { region: Index },
        AttemptOverOperation { operation: u64 },
        PageSizeOver { page_size: u32 },
        IdTwice { target: Index, at: Index, report: bool },
    }

    pub const DURATION_FIELDS: &[&str] = &[
        "poll_interval",
        "staleness_limit",
        "reports.max_age",
        "reports.pending_timeout",
        "aws.connect_timeout",
        "aws.attempt_timeout",
        "aws.operation_timeout",
    ];

    pub fn bad_image_id() -> impl Strategy<Value = String> {
        prop_oneof![
            "ami-[0-9a-f]{16}",
            "ami-[0-9a-f]{18}",
            "ami-[0-9a-f]{9}",
            "ami-[0-9a-f]{7}",
            "[0-9a-f]{17}",
            "ami-[0-9a-f]{7}[g-z]",
            // One digit uppercase, the rest a valid ID.
            ("[0-9a-f]{8}|[0-9a-f]{17}", any::<Index>(), "[A-F]").prop_map(|(hex, at, upper)| {
                let mut chars: Vec<char> = hex.chars().collect();
                let i = at.index(chars.len());
                chars[i] = upper.chars().next().unwrap_or('A');
                format!("ami-{}", chars.into_iter().collect::<String>())
            }),
        ]
    }

    pub fn mutation() -> impl Strategy<Value = Mutation> {
        // Prefixed, so that a key added to the configuration later cannot turn up here.
        let unknown_key = "x_[a-z_]{0,12}".prop_filter("an unknown key", |k| !KNOWN_KEYS.contains(&k.as_str()));
        prop_oneof![
            (any::<Index>(), any::<Index>(), bad_image_id()).prop_map(|(target, at, image)| Mutation::BadImage {
                target,
                at,
                image
            }),
            (any::<bool>(), any::<Index>(), prop_oneof!["[0-9]{11}", "[0-9]{13}", "[0-9]{11}[a-z ]", "[0-9]{0,3}"])
                .prop_map(|(in_entries, at, account)| Mutation::BadAccount { in_entries, at, account }),
            (
                0..DURATION_FIELDS.len(),
                prop_oneof![
                    3 => select(vec!["0s", "0m", "0h", "0d", "0ms"]).prop_map(String::from),
                    1 => select(vec!["-5m", "5", "soon", "1 parsec", "", "5m5"]).prop_map(String::from),
                    1 => select(vec!["3651d", "87601h", "11y", "18446744073709551615s"]).prop_map(String::from),
                ]
            )
                .prop_map(|(field, text)| Mutation::BadDuration { field, text }),
            (any::<Index>(), prop_oneof![Just(0i64), Just(10_001), 10_001i64..=1_000_000, Just(-1), Just(1 << 32)])
                .prop_map(|(at, depth)| Mutation::BadDepth { at, depth }),
            (
                any::<Index>(),
                select(RESOURCE_TYPES.iter().copied().filter(|n| *n != LAUNCH_TEMPLATE).collect::<Vec<_>>()),
                1u32..=10_000
            )
                .prop_map(|(at, name, depth)| Mutation::DepthOnOtherType { at, name, depth }),
            (0u64..1_000_000_000).prop_map(|first| Mutation::TooManyAccounts { first }),
            (0usize..6, any::<Index>(), unknown_key).prop_map(|(section, at, key)| Mutation::UnknownKey {
                section,
                at,
                key
            }),
            any::<Index>().prop_map(|target| Mutation::RegionTwice { target }),
            any::<Index>().prop_map(|region| Mutation::EmptyTarget { region }),
            (1u64..=100_000).prop_map(|operation| Mutation::AttemptOverOperation { operation }),
            prop_oneof![Just(1001u32), Just(u32::MAX), 1001u32..=1_000_000]
                .prop_map(|page_size| Mutation::PageSizeOver { page_size }),
            (any::<Index>(), any::<Index>(), any::<bool>()).prop_map(|(target, at, report)| Mutation::IdTwice {
                target,
                at,
                report
            }),
        ]
    }

    fn default_timeouts() -> (Dur, Dur, Dur) {
        (Dur::secs(3), Dur::secs(10), Dur::secs(30))
    }

    impl GenConfig {
        /// Applies the mutation; returns the field paths the error may name (the first is what
        /// the parser names today; a longer one that points into the same item is as good).
        pub fn mutate(&mut self, m: &Mutation) -> Vec<String> {
            let path = self.mutate_path(m);
            match m {
                Mutation::BadDepth { .. } | Mutation::DepthOnOtherType { .. } => {
                    vec![path.clone(), format!("{path}.version_depth")]
                }
                Mutation::UnknownKey { section: 5, key, .. } => vec![path.clone(), format!("{path}.{key}")],
                _ => vec![path],
            }
        }

        fn mutate_path(&mut self, m: &Mutation) -> String {
            match m {
                Mutation::BadImage { target, at, image } => {
                    let t = target.index(self.targets.len());
                    let images = &mut self.targets[t].images;
                    let j = at.index(images.len() + 1);
                    images.insert(j, image.clone());
                    format!("targets[{t}].images[{j}]")
                }
                Mutation::BadAccount { in_entries: true, at, account } => {
                    let ids = &mut self.entries.get_or_insert_with(GenEntries::default).account_ids;
                    let j = at.index(ids.len() + 1);
                    ids.insert(j, account.clone());
                    format!("entries.account_ids[{j}]")
                }
                Mutation::BadAccount { in_entries: false, at, account } => {
                    let reports = self.reports.get_or_insert_with(GenReports::default);
                    let ids = reports.account_ids.get_or_insert_with(Vec::new);
                    let j = at.index(ids.len() + 1);
                    ids.insert(j, account.clone());
                    format!("reports.account_ids[{j}]")
                }
                Mutation::BadDuration { field, text } => {
                    let bad = Dur { text: text.clone(), value: Duration::ZERO };
                    let name = DURATION_FIELDS[*field];
                    match name {
                        "poll_interval" => self.poll_interval = Some(bad),
                        "staleness_limit" => self.staleness_limit = Some(bad),
                        "reports.max_age" => self.reports.get_or_insert_with(GenReports::default).max_age = Some(bad),
                        "reports.pending_timeout" => {
                            self.reports.get_or_insert_with(GenReports::default).pending_timeout = Some(bad)
                        }
                        _ => {
                            let aws = self.aws.get_or_insert_with(GenAws::default);
                            let t = aws.timeouts.get_or_insert_with(default_timeouts);
                            match name {
                                "aws.connect_timeout" => t.0 = bad,
                                "aws.attempt_timeout" => t.1 = bad,
                                _ => t.2 = bad,
                            }
                        }
                    }
                    name.to_owned()
                }
                Mutation::BadDepth { at, depth } => {
                    let types = self.resource_types();
                    let p = at.index(types.len());
                    types[p] = Rt { name: LAUNCH_TEMPLATE.into(), depth: Some(*depth), map: true, extra: Vec::new() };
                    format!("reports.resource_types[{p}]")
                }
                Mutation::DepthOnOtherType { at, name, depth } => {
                    let types = self.resource_types();
                    let p = at.index(types.len());
                    types[p] =
                        Rt { name: (*name).into(), depth: Some(i64::from(*depth)), map: true, extra: Vec::new() };
                    format!("reports.resource_types[{p}]")
                }
                Mutation::TooManyAccounts { first } => {
                    let ids = (0..201).map(|i| format!("{:012}", first + i)).collect();
                    self.reports.get_or_insert_with(GenReports::default).account_ids = Some(ids);
                    "reports.account_ids".into()
                }
                Mutation::UnknownKey { section, at, key } => {
                    let extra = (key.clone(), "1".to_owned());
                    match section {
                        0 => {
                            self.extra.push(extra);
                            key.clone()
                        }
                        1 => {
                            self.aws.get_or_insert_with(GenAws::default).extra.push(extra);
                            format!("aws.{key}")
                        }
                        2 => {
                            self.reports.get_or_insert_with(GenReports::default).extra.push(extra);
                            format!("reports.{key}")
                        }
                        3 => {
                            self.entries.get_or_insert_with(GenEntries::default).extra.push(extra);
                            format!("entries.{key}")
                        }
                        4 => {
                            let t = at.index(self.targets.len());
                            self.targets[t].extra.push(extra);
                            format!("targets[{t}].{key}")
                        }
                        _ => {
                            let types = self.resource_types();
                            let p = at.index(types.len());
                            types[p].extra.push(extra);
                            format!("reports.resource_types[{p}]")
                        }
                    }
                }
                Mutation::RegionTwice { target } => {
                    let t = target.index(self.targets.len());
                    let again = GenTarget {
                        region: self.targets[t].region.clone(),
                        images: vec!["ami-12345678".into()],
                        report_ids: Vec::new(),
                        extra: Vec::new(),
                    };
                    self.targets.push(again);
                    format!("targets[{}].region", self.targets.len() - 1)
                }
                Mutation::EmptyTarget { region } => {
                    let unused: Vec<&str> =
                        REGIONS.iter().copied().filter(|r| self.targets.iter().all(|t| t.region != *r)).collect();
                    let region = unused[region.index(unused.len())].to_owned();
                    self.targets.push(GenTarget {
                        region,
                        images: Vec::new(),
                        report_ids: Vec::new(),
                        extra: Vec::new(),
                    });
                    format!("targets[{}]", self.targets.len() - 1)
                }
                Mutation::AttemptOverOperation { operation } => {
                    let aws = self.aws.get_or_insert_with(GenAws::default);
                    aws.timeouts = Some((Dur::secs(3), Dur::secs(operation + 1), Dur::secs(*operation)));
                    "aws.attempt_timeout".into()
                }
                Mutation::PageSizeOver { page_size } => {
                    self.aws.get_or_insert_with(GenAws::default).page_size = Some(*page_size);
                    "aws.page_size".into()
                }
                Mutation::IdTwice { target, at, report } => {
                    let t = target.index(self.targets.len());
                    let (ids, name, fallback) = if *report {
                        (&mut self.targets[t].report_ids, "report_ids", "amiur-00b877d192f6b02d0")
                    } else {
                        (&mut self.targets[t].images, "images", "ami-12345678")
                    };
                    if ids.is_empty() {
                        ids.push(fallback.to_owned());
                    }
                    let again = ids[at.index(ids.len())].clone();
                    ids.push(again);
                    format!("targets[{t}].{name}[{}]", ids.len() - 1)
                }
            }
        }

        /// The explicit resource type list, written out as the defaults when there was none.
        fn resource_types(&mut self) -> &mut Vec<Rt> {
            let reports = self.reports.get_or_insert_with(GenReports::default);
            reports.resource_types.get_or_insert_with(|| {
                vec![
                    Rt { name: "ec2:Instance".into(), depth: None, map: false, extra: Vec::new() },
                    Rt { name: LAUNCH_TEMPLATE.into(), depth: Some(20), map: true, extra: Vec::new() },
                ]
            })
        }
    }
}

/// Random edits of YAML text, as a person (or a broken template) would make them.
mod gen_edits {
    use super::*;

    /// Tokens that YAML, serde or the config's own types treat specially.
    const TOKENS: &[&str] = &[
        "",
        "~",
        "null",
        "true",
        "0",
        "-1",
        "-0",
        "0x10",
        "0o17",
        "1e400",
        ".nan",
        "-.inf",
        "4294967296",
        "18446744073709551616",
        "99999999999999999999999999999",
        "0s",
        "-1s",
        "1y",
        "18446744073709551615s",
        "584942417356y",
        "99999999999999999999h",
        "1ns",
        "[]",
        "{}",
        "[",
        "]",
        "{",
        "}",
        "'",
        "\"",
        "\"\\u",
        "\"\\UFFFFFFFF\"",
        "\t",
        "\u{feff}",
        "\0",
        "&a x",
        "*a",
        "*undefined",
        "&a [*a]",
        "!!str",
        "!!int 5",
        "!!binary aGVsbG8=",
        "!!map {}",
        "!!seq []",
        "!custom x",
        "!<tag:yaml.org,2002:str> x",
        "<<: *a",
        "? complex",
        "|\n  block",
        ">-",
        "- ",
        ": ",
        "#",
        "@",
        "`",
        "%YAML 1.1",
        "---",
        "...",
        "ami-",
        "ami-0123456789ABCDEF0",
        "amiur-",
        "us-east-1",
        "ec2:LaunchTemplate",
        "{type: ec2:LaunchTemplate, version_depth: 0}",
        "{type: ec2:Instance, version_depth: 3}",
        "{version_depth: 3}",
        "{type: [x]}",
        "[ami-12345678, ami-12345678]",
        "{region: us-east-1}",
        "[{region: us-east-1, images: [ami-12345678]}]",
        "😀",
    ];

    #[derive(Debug, Clone)]
    pub enum Edit {
        DeleteLine(Index),
        DuplicateLine(Index),
        SwapLines(Index, Index),
        ChangeChar(Index, char),
        ReplaceValue(Index, String),
        Insert(Index, String),
        Indent(Index, usize),
        Dedent(Index),
        Truncate(Index),
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => select(TOKENS.to_vec()).prop_map(String::from),
            1 => "[ -~]{0,20}",
            1 => any::<String>(),
        ]
    }

    fn yaml_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => select(" \n\t:-[]{},&*!|>'\"%@`#?0123456789aefs~\\".chars().collect::<Vec<_>>()),
            1 => any::<char>(),
        ]
    }

    pub fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<Index>().prop_map(Edit::DeleteLine),
            any::<Index>().prop_map(Edit::DuplicateLine),
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
            (any::<Index>(), yaml_char()).prop_map(|(i, c)| Edit::ChangeChar(i, c)),
            (any::<Index>(), token()).prop_map(|(i, t)| Edit::ReplaceValue(i, t)),
            (any::<Index>(), token()).prop_map(|(i, t)| Edit::Insert(i, t)),
            (any::<Index>(), 1usize..=4).prop_map(|(i, n)| Edit::Indent(i, n)),
            any::<Index>().prop_map(Edit::Dedent),
            any::<Index>().prop_map(Edit::Truncate),
        ]
    }

    pub fn apply(text: &str, edit: &Edit) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match edit {
            Edit::DeleteLine(i) => {
                lines.remove(i.index(n));
            }
            Edit::DuplicateLine(i) => {
                let i = i.index(n);
                lines.insert(i, lines[i].clone());
            }
            Edit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
            Edit::ChangeChar(i, c) => {
                let mut chars: Vec<char> = text.chars().collect();
                if chars.is_empty() {
                    return c.to_string();
                }
                let i = i.index(chars.len());
                chars[i] = *c;
                return chars.into_iter().collect();
            }
            Edit::ReplaceValue(i, token) => {
                let line = &mut lines[i.index(n)];
                *line = if let Some((key, _)) = line.split_once(": ") {
                    format!("{key}: {token}")
                } else if let Some(at) = line.find("- ") {
                    format!("{}{token}", &line[..at + 2])
                } else {
                    token.clone()
                };
            }
            Edit::Insert(i, token) => {
                let i = i.index(text.len() + 1);
                let at = (0..=i).rev().find(|&j| text.is_char_boundary(j)).unwrap_or(0);
                return format!("{}{token}{}", &text[..at], &text[at..]);
            }
            Edit::Indent(i, by) => lines[i.index(n)].insert_str(0, &" ".repeat(*by)),
            Edit::Dedent(i) => {
                let line = &mut lines[i.index(n)];
                *line = line.trim_start().to_owned();
            }
            Edit::Truncate(i) => {
                let i = i.index(text.len() + 1);
                let at = (0..=i).rev().find(|&j| text.is_char_boundary(j)).unwrap_or(0);
                return text[..at].to_owned();
            }
        }
        lines.join("\n") + "\n"
    }
}

/// `from_yaml` answers every input with a config or a (field, reason) pair, both non-empty.
fn assert_answers(text: &str) -> Result<(), TestCaseError> {
    if let Err((field, message)) = Config::from_yaml(text) {
        prop_assert!(!field.is_empty(), "empty field path (message {:?}) for {:?}", message, text);
        prop_assert!(!message.is_empty(), "empty message (field {:?}) for {:?}", field, text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(runner(256))]

    /// 1a. Arbitrary text, from any Unicode and from YAML's own punctuation.
    #[test]
    fn config_parser_answers_arbitrary_text(
        text in prop_oneof![
            any::<String>(),
            "[ \n\t:\\-\\[\\]{},&*!|>'\"%@`#?a-z0-9._~]{0,200}",
            "(targets|region|images|aws|reports|poll_interval|resource_types|version_depth|type|: |- |\n|  |\\[|\\]|\\{|\\}|, |&a |\\*a|ami-12345678|us-east-1|0s|5m){0,60}",
        ]
    ) {
        assert_answers(&text)?;
    }

    /// 1b. A valid configuration (the example file, or a generated one) after a few random edits.
    #[test]
    fn config_parser_answers_mutated_yaml(
        base in prop_oneof![Just(EXAMPLE.to_owned()), gen_config::config().prop_map(|c| c.render())],
        edits in prop::collection::vec(gen_edits::edit(), 1..=4),
    ) {
        let text = edits.iter().fold(base, |text, edit| gen_edits::apply(&text, edit));
        assert_answers(&text)?;
    }
}

proptest! {
    #![proptest_config(runner(128))]

    /// 2a. Every generated valid configuration is accepted, and reads back as generated.
    #[test]
    fn valid_configs_round_trip(g in gen_config::config()) {
        let text = g.render();
        match Config::from_yaml(&text) {
            Ok(c) => g.check(&c)?,
            Err((field, message)) => prop_assert!(false, "refused at {}: {}\n{}", field, message, text),
        }
    }

    /// 2b. One mistake in a valid configuration is refused, naming the field it is in.
    #[test]
    fn single_mistakes_are_refused_with_their_field(
        g in gen_config::config(),
        m in gen_config::mutation(),
    ) {
        let mut g = g;
        let want = g.mutate(&m);
        let text = g.render();
        match Config::from_yaml(&text) {
            Ok(_) => prop_assert!(false, "accepted ({:?}):\n{}", m, text),
            Err((field, message)) => {
                prop_assert!(want.contains(&field), "field {:?}, want one of {:?}: {}\n{}", field, want, message, text);
                prop_assert!(!message.is_empty());
            }
        }
    }
}

/// Deterministic inputs a fuzzer would take long to reach.
#[test]
fn pathological_yaml_is_refused_without_panic() {
    // libyaml's scanner takes time quadratic in the flow depth (20,000 levels took 7 s in a
    // debug build); the first pass (src/config/yaml_scan.rs) stops at 33 levels, so any depth is cheap.
    let deep_flow = format!("targets: {}{}", "[".repeat(400_000), "]".repeat(400_000));
    let deep_block: String = (0..2_000).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
    let deep_types = format!("reports:\n  resource_types: [{}]\n", "{type: ".repeat(2_000));
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  targets: &t [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    let recursive_alias = "targets: &t [*t]\n";
    let huge_list =
        format!("targets:\n  - region: us-east-1\n    images: [{}]\n", vec!["ami-12345678"; 20_000].join(","));
    for text in [
        deep_flow.as_str(),
        &deep_block,
        &deep_types,
        laughs,
        recursive_alias,
        &huge_list,
        "\u{feff}targets: []",
        "targets:\n  - region: us-east-1\n    images: [ami-12345678]\n---\ntargets: []\n",
        "---\n...\n",
        "",
        "\0",
        "%YAML 9.9\n---\ntargets: []",
    ] {
        match Config::from_yaml(text) {
            Ok(_) => {}
            Err((field, message)) => assert!(!field.is_empty() && !message.is_empty(), "{field:?}: {message:?}"),
        }
    }
}

/// Found by `config_parser_answers_arbitrary_text` (minimal input `"&a : "`): a key that is the
/// empty string was refused as unknown with an empty field path, so the operator read
/// `config file config.yml: : unknown field ``, expected one of ...`.
#[test]
fn empty_keys_are_named() {
    for yaml in ["\"\": 1\n", "'': x\ntargets: []\n", "&a : ", "aws: {\"\": 1}\n", "targets: [{\"\": 1}]\n"] {
        let (field, message) = Config::from_yaml(yaml).expect_err("an empty key is unknown");
        assert!(!field.is_empty() && !field.ends_with('.'), "{yaml:?}: field path {field:?}, message {message:?}");
    }
}

/// humantime reads durations up to 2^64 s, but `SystemTime + Duration` overflows past 2^63 s.
/// Before durations were limited to 10 years, `poll_interval: 300000000000y` was accepted and
/// the first throttled poll (or failed CreateImageUsageReport) panicked in
/// `Backoff::after_failure` (`now + delay`). Any duration that is accepted must survive it.
#[test]
fn accepted_poll_intervals_survive_a_backoff() {
    for d in ["18446744073709551615s", "300000000000y", "3650d", "1ns"] {
        let yaml = format!("poll_interval: {d}\ntargets:\n  - region: us-east-1\n    images: [ami-12345678]\n");
        let Ok(config) = Config::from_yaml(&yaml) else { continue };
        let interval = config.poll_interval.get();
        let cap = interval.max(Duration::from_secs(3600));
        let outcome = std::panic::catch_unwind(|| Backoff::after_failure(None, SystemTime::now(), interval, cap));
        assert!(outcome.is_ok(), "poll_interval: {d} is accepted, and the backoff after a throttled poll panics");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Folding report entries into counts.

const REPORT: &str = "amiur-0123456789abcdef0";
const OTHER_REPORTS: &[&str] = &["amiur-00000000", "amiur-0123456789abcdef1", "", "AMIUR-0123456789ABCDEF0"];
const ACCOUNT_POOL: &[&str] = &["111122223333", "444455556666", "000000000000", "999999999999"];
const USAGE_TYPES: &[&str] =
    &["ec2:Instance", LAUNCH_TEMPLATE, "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe"];

fn usage_account() -> impl Strategy<Value = String> {
    prop_oneof![select(ACCOUNT_POOL.to_vec()).prop_map(String::from), "[0-9]{12}"]
}

fn usage_count() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(MAX_PLAUSIBLE_USAGE), 0..=MAX_PLAUSIBLE_USAGE]
}

fn entry(report_id: &str, account_id: &str, resource_type: &str, usage_count: u64) -> Entry {
    Entry {
        report_id: report_id.into(),
        account_id: account_id.into(),
        resource_type: resource_type.into(),
        usage_count,
    }
}

/// What a report says (one count per account and resource type), and its entries as an API
/// returns them: in any order, some told two or three times.
fn report_entries() -> impl Strategy<Value = (BTreeMap<(String, String), u64>, Vec<Entry>)> {
    prop::collection::btree_map((usage_account(), select(USAGE_TYPES.to_vec())), usage_count(), 0..40)
        .prop_map(|truth| truth.into_iter().map(|((a, t), n)| ((a, t.to_owned()), n)).collect::<BTreeMap<_, _>>())
        .prop_flat_map(|truth| {
            let n = truth.len();
            (Just(truth), prop::collection::vec(prop_oneof![4 => Just(1usize), 1 => 2usize..=3], n))
        })
        .prop_flat_map(|(truth, repeats)| {
            let entries: Vec<Entry> = truth
                .iter()
                .zip(repeats)
                .flat_map(|(((account, rt), count), times)| vec![entry(REPORT, account, rt, *count); times])
                .collect();
            (Just(truth), Just(entries).prop_shuffle())
        })
}

/// Cuts `entries` into pages at the given points. Where `repeat` says so, the next page starts
/// with the last entry of the previous one again, as an API with an off-by-one cursor would.
fn paginate(entries: &[Entry], cuts: &[Index], repeat: &[bool]) -> Vec<Vec<Entry>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(entries.len() + 1)).collect();
    points.sort_unstable();
    points.push(entries.len());
    let mut pages = Vec::new();
    let mut start = 0;
    for end in points {
        pages.push(entries[start..end].to_vec());
        start = end;
    }
    for i in 1..pages.len() {
        if repeat.get(i - 1).copied().unwrap_or(false)
            && let Some(last) = pages[i - 1].last().cloned()
        {
            pages[i].insert(0, last);
        }
    }
    pages
}

/// The reference: one count per key of this report, the last one told winning.
fn model<'a>(report_id: &str, entries: impl IntoIterator<Item = &'a Entry>) -> BTreeMap<UsageKey, u64> {
    let mut usage = BTreeMap::new();
    for e in entries {
        if &*e.report_id == report_id {
            usage.insert(
                UsageKey { account_id: e.account_id.clone(), resource_type: e.resource_type.clone() },
                e.usage_count,
            );
        }
    }
    usage
}

proptest! {
    #![proptest_config(runner(256))]

    #[test]
    fn aggregation_is_independent_of_pages_and_foreign_entries(
        (truth, entries) in report_entries(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        repeat in prop::collection::vec(any::<bool>(), 8),
        foreign in prop::collection::vec(
            (any::<Index>(), select(OTHER_REPORTS.to_vec()), any::<Option<Index>>(), usage_account(),
             select(USAGE_TYPES.to_vec()), usage_count()),
            0..12,
        ),
        created_secs in 0u64..4_102_444_800,
    ) {
        let created = UNIX_EPOCH + Duration::from_secs(created_secs);
        let want: BTreeMap<UsageKey, u64> = truth
            .iter()
            .map(|((account_id, resource_type), n)| {
                (UsageKey { account_id: account_id.as_str().into(), resource_type: resource_type.as_str().into() }, *n)
            })
            .collect();

        let whole = ReportUsage::from_entries(REPORT, created, &entries);
        prop_assert_eq!(&whole.report_id, REPORT);
        prop_assert_eq!(whole.created, created);
        prop_assert_eq!(&whole.usage, &want, "one list");
        prop_assert_eq!(&model(REPORT, &entries), &want, "the model agrees with the truth");

        let pages = paginate(&entries, &cuts, &repeat);
        let paged: Vec<Entry> = pages.iter().flatten().cloned().collect();
        let usage = ReportUsage::from_entries(REPORT, created, &paged).usage;
        prop_assert_eq!(&usage, &want, "pages {:?}", pages.iter().map(Vec::len).collect::<Vec<_>>());
        prop_assert_eq!(&usage, &model(REPORT, &paged));

        // Entries of other reports, some about the same account and type with another count.
        let keys: Vec<&(String, String)> = truth.keys().collect();
        let mut mixed = paged.clone();
        for (at, report, same_key, account, rt, count) in &foreign {
            let (account, rt) = match same_key {
                Some(k) if !keys.is_empty() => keys[k.index(keys.len())].clone(),
                _ => (account.clone(), (*rt).to_owned()),
            };
            let i = at.index(mixed.len() + 1);
            mixed.insert(i, entry(report, &account, &rt, count.wrapping_add(1)));
        }
        let usage = ReportUsage::from_entries(REPORT, created, &mixed).usage;
        prop_assert_eq!(&usage, &want, "foreign entries leaked in");
        prop_assert_eq!(&usage, &model(REPORT, &mixed));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The exposition of arbitrary label values.

/// One sample line of the text format, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A parser of the text format 0.0.4 as Prometheus reads it: `# HELP` and `# TYPE` lines, then
/// samples `name{label="value",...} value`, where a label value escapes `\\`, `\"` and `\n`.
/// Checks that each family's samples follow its TYPE line and that no family appears twice.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut samples = Vec::new();
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_once(' ').map_or(rest, |(name, _)| name);
            if !is_metric_name(name) || !helped.insert(name.to_owned()) {
                return Err(at("bad or repeated HELP".into()));
            }
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
        if current.as_deref() != Some(sample.name.as_str()) || !helped.contains(&sample.name) {
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

/// The rendering options, as generated: written into a configuration for `from_config`, and
/// read directly by the model.
#[derive(Debug, Clone, Default)]
struct GenOptions {
    names: BTreeMap<String, String>,
    expected: Vec<String>,
    expected_per_image: BTreeMap<String, Vec<String>>,
    sum_accounts: bool,
    sum_accounts_for: Vec<String>,
    max_series: u64,
}

impl GenOptions {
    fn yaml(&self) -> String {
        let q = gen_config::double_quoted;
        let list = |items: &[String]| items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", ");
        let mut out = String::from("accounts:\n  names:");
        out.push_str(if self.names.is_empty() { " {}\n" } else { "\n" });
        for (id, name) in &self.names {
            let _ = writeln!(out, "    {}: {}", q(id), q(name));
        }
        let _ = writeln!(out, "  expected: [{}]", list(&self.expected));
        out.push_str("  expected_per_image:");
        out.push_str(if self.expected_per_image.is_empty() { " {}\n" } else { "\n" });
        for (image, accounts) in &self.expected_per_image {
            let _ = writeln!(out, "    {image}: [{}]", list(accounts));
        }
        let _ = writeln!(
            out,
            "cardinality:\n  sum_accounts: {}\n  sum_accounts_for: [{}]\n  max_series: {}",
            self.sum_accounts,
            self.sum_accounts_for.join(", "),
            self.max_series
        );
        out.push_str("targets:\n  - region: us-east-1\n    images: [ami-12345678]\n");
        out
    }

    fn render_options(&self) -> Result<RenderOptions, TestCaseError> {
        let yaml = self.yaml();
        let config = Config::from_yaml(&yaml)
            .map_err(|(field, message)| TestCaseError::fail(format!("{field}: {message}\n{yaml}")))?;
        Ok(RenderOptions::from_config(&config))
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

/// What the exposition of `snapshot` must hold, family by family in the order they are
/// written, each family's samples in the order of the snapshot (images sorted, then accounts).
fn expected_samples(snapshot: &Snapshot, o: &GenOptions) -> Vec<Sample> {
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

/// Label values that stress the escaping: the three escaped characters, other control and
/// separator characters, emoji, the empty string, and any Unicode at all.
fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => "(\\\\|\"|\n|\r|\t|\\{|\\}|,|=| |#|n|a|é|😀|👩‍👩‍👧|\\x00|\\x7f|\\x{85}|\\x{2028}|\\x{feff}|\\\\n|\\\\\"){0,16}",
        2 => any::<String>(),
        1 => "[a-z0-9:-]{1,20}",
    ]
}

/// Valid IDs, so that the options (which hold only valid IDs) match some series.
const LABEL_ACCOUNTS: &[&str] = &["111122223333", "444455556666", "777788889999"];
const LABEL_IMAGES: &[&str] = &["ami-12345678", "ami-0123456789abcdef0"];

fn account_label() -> impl Strategy<Value = String> {
    prop_oneof![label_value(), select(LABEL_ACCOUNTS.to_vec()).prop_map(String::from)]
}

fn image_label() -> impl Strategy<Value = String> {
    prop_oneof![label_value(), select(LABEL_IMAGES.to_vec()).prop_map(String::from)]
}

fn time() -> impl Strategy<Value = SystemTime> {
    (0u64..=4_102_444_800, prop_oneof![Just(0u32), 0u32..1_000_000_000])
        .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

fn report_usage() -> impl Strategy<Value = ReportUsage> {
    let usage = prop::collection::btree_map((account_label(), label_value()), usage_count(), 0..6);
    (label_value(), time(), usage).prop_map(|(report_id, created, usage)| ReportUsage {
        report_id,
        created,
        usage: usage
            .into_iter()
            .map(|((account_id, resource_type), n)| {
                (UsageKey { account_id: account_id.into(), resource_type: resource_type.into() }, n)
            })
            .collect(),
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let status = (
        any::<bool>(),
        proptest::option::of(time()),
        proptest::option::of(time()),
        proptest::option::of(report_usage()),
        0usize..40,
    );
    let key = (label_value(), proptest::option::of(label_value()), image_label());
    prop::collection::btree_map(key, status, 0..6).prop_map(|images| {
        Snapshot::new(
            images
                .into_iter()
                .map(
                    |(
                        (region, owner, image_id),
                        (poll_success, last_success, pending_since, report, report_failures),
                    )| ImageStatus {
                        region: region.into(),
                        owner: owner.map(Into::into),
                        image_id: image_id.into(),
                        poll_success,
                        last_success,
                        pending_since,
                        report_failures,
                        report_error: None,
                        poll_error: None,
                        report: report.map(Arc::new),
                        facts: None,
                        references: None,
                    },
                )
                .collect(),
        )
    })
}

fn options() -> impl Strategy<Value = GenOptions> {
    let accounts = || prop::collection::vec(select(LABEL_ACCOUNTS.to_vec()).prop_map(String::from), 0..3);
    let images = || select(LABEL_IMAGES.to_vec()).prop_map(String::from);
    let generated =
        (
            prop::collection::btree_map(select(LABEL_ACCOUNTS.to_vec()).prop_map(String::from), label_value(), 0..3),
            accounts(),
            prop::collection::btree_map(images(), accounts(), 0..2),
            prop_oneof![3 => Just(false), 1 => Just(true)],
            prop::collection::vec(images(), 0..2),
            prop_oneof![2 => Just(0u64), 1 => 1u64..8],
        )
            .prop_map(|(names, expected, expected_per_image, sum_accounts, sum_accounts_for, max_series)| {
                GenOptions { names, expected, expected_per_image, sum_accounts, sum_accounts_for, max_series }
            });
    prop_oneof![1 => Just(GenOptions::default()), 3 => generated]
}

proptest! {
    #![proptest_config(runner(256))]

    #[test]
    fn exposition_round_trips_arbitrary_label_values(snapshot in snapshot(), o in options()) {
        let options = o.render_options()?;
        let text = String::from_utf8(render_snapshot(&snapshot, &options))
            .map_err(|e| TestCaseError::fail(format!("not UTF-8: {e}")))?;
        let parsed = parse_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed, expected_samples(&snapshot, &o), "{}", text);
    }
}

#[test]
fn default_options_are_those_of_a_minimal_config() {
    let options = GenOptions::default().render_options().expect("valid");
    assert_eq!(options, RenderOptions::default());
}

/// The parser itself: it must refuse what the format forbids, or the round trip proves nothing.
#[test]
fn the_test_parser_refuses_broken_lines() {
    for bad in [
        "m{a=\"x} 1",
        "m{a=\"x\\\"} 1",
        "m{a=\"\\t\"} 1",
        "m{a=\"x\"b=\"y\"} 1",
        "m{a=x} 1",
        "m{a=\"x\"}1",
        "m{a=\"x\"} 1 2",
        "m{a=\"x\"} one",
        "9m 1",
    ] {
        assert!(parse_sample(bad).is_err(), "{bad}");
    }
    let s = parse_sample("m_1{a=\"\\\\\\\"\\n\",b=\"\"} 1e9").expect("valid");
    assert_eq!(s.labels, [("a".to_owned(), "\\\"\n".to_owned()), ("b".to_owned(), String::new())]);
    assert_eq!(s.value, 1e9);
    assert!(parse_exposition("# HELP m x\n# TYPE m gauge\nm 1\n# HELP n y\n# TYPE n gauge\nm 2\n").is_err());
}
