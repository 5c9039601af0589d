//! README.md's commands are run, or the reason they are not is written down here.
//!
//! `every_readme_command_is_run_or_explained` reads the commands out of README.md (the lines of its
//! `sh` code blocks, inline code that starts like a command, `cargo ...` anywhere, and scripts) and
//! fails for any command missing from `COMMANDS`, the list of what runs each one: a test (which
//! must exist), a step of `.ci/run` (which must contain it), or the reason it cannot run here. A
//! new README command therefore breaks the build until it is tested or explained. The other tests
//! run the commands that are cheap to run here, and check that every row of the README's "When
//! things go wrong" table names the tests that prove it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a README command is exercised.
enum Coverage {
    /// A test function, `file.rs::name` in tests/, or `dir/file.rs::name` from the repository root.
    Test(&'static str),
    /// A step of `.ci/run`: the text it must contain.
    Ci(&'static str),
    /// Why it cannot run here, and what checks it instead.
    Explained(&'static str),
}

use Coverage::{Ci, Explained, Test};

/// Every command of README.md, exactly as written (whitespace collapsed), and what exercises it.
const COMMANDS: &[(&str, Coverage)] = &[
    (
        "cargo run --features demo --bin ami-usage-demo",
        Test("demo.rs::the_demo_serves_the_ground_truth_then_the_refreshed_reports"),
    ),
    (
        "docs/demo-screenshot.sh docs/status-page.png",
        Test("browser.rs::the_demo_screenshot_script_shoots_the_demos_status_page"),
    ),
    ("cargo test --workspace --all-features --locked", Ci("cargo test --workspace --all-features --locked")),
    ("cargo build --release", Ci("cargo build --release --locked")),
    (
        "./target/release/ami-usage-exporter --config.file config/example.yml",
        Explained(
            "it polls real AWS, and this machine has no account. .ci/run runs the release binary on the same \
             file with --check-config; tests/exporter.rs runs the binary with --config.file against the simulator",
        ),
    ),
    (
        "docker build --build-arg AMI_USAGE_REVISION=\"$(git rev-parse --short=12 HEAD)\" -t ami-usage-exporter .",
        Explained(
            "no container engine here. .ci/run lints the Dockerfile with hadolint; tests/deploy.rs checks its \
             stages, stubs, port, user, entrypoint and .dockerignore",
        ),
    ),
    (
        "docker run --rm -p 10264:10264 -v \"$PWD/config.yml:/etc/ami-usage-exporter/config.yml:ro\" ami-usage-exporter",
        Explained("no container engine here; tests/deploy.rs checks the port and the configuration path of the image"),
    ),
    (
        "kubectl apply -k deploy/kubernetes -n monitoring",
        Explained(
            "no cluster here; tests/deploy.rs parses every manifest and checks the kustomization, ports, probes, \
             mounts and selectors",
        ),
    ),
    ("promtool test rules deploy/prometheus/rules_test.yml", Test("deploy.rs::promtool_checks_and_unit_tests_pass")),
    ("cargo test --test deploy", Ci("cargo test --workspace --all-features --locked")),
    ("apt-get install prometheus", Ci("apt-get install -y --no-install-recommends prometheus")),
    (".ci/run", Explained("CI itself, which runs on a fresh machine (it installs promtool and hadolint)")),
    ("cargo test --test properties", Ci("cargo test --workspace --all-features --locked")),
    (
        "PROPTEST_CASES=5000",
        Explained("the same property tests with more cases, minutes instead of seconds; CI runs the default count"),
    ),
    (
        "fuzz/run.sh [seconds]",
        Explained(
            "it installs cargo-fuzz and builds with AddressSanitizer, then fuzzes for minutes. \
             readme.rs::the_readme_scripts_exist_and_parse checks the script; .ci/run checks the fuzz crate's format",
        ),
    ),
    ("bench/soak.sh", Explained("a 10-minute soak; readme.rs::the_readme_scripts_exist_and_parse checks the script")),
    (
        "bench/run.sh",
        Explained(
            "it installs wrk, nginx and hyperfine and runs for about 30 minutes (BENCHMARKS.md records a run); \
             readme.rs::the_readme_scripts_exist_and_parse checks the script",
        ),
    ),
    (
        "cargo bench --bench render",
        Explained(
            "criterion's optimized build of the whole SDK again (12 minutes on 2 cores, measured in .ci/run); \
             clippy --all-targets in .ci/run compiles benches/render.rs, and bench/run.sh is how the numbers are made",
        ),
    ),
    ("cargo run -p ec2-sim -- --help", Test("ec2-sim/tests/http.rs::the_binary_help_lists_its_options")),
    (
        "cargo doc --no-deps --document-private-items --open",
        Ci("cargo doc --no-deps --document-private-items --locked -p ami-usage-exporter"),
    ),
];

/// Words that start a command in inline code (a lone word, such as `rustup`, names a tool).
const PROGRAMS: &[&str] = &[
    "apt", "apt-get", "aws", "bash", "cargo", "curl", "docker", "git", "hadolint", "helm", "htpasswd", "kubectl",
    "make", "pip", "promtool", "python3", "rustup", "sh", "wget",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn readme() -> String {
    read(&root().join("README.md"))
}

fn normalize(command: &str) -> String {
    command.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_script(word: &str) -> bool {
    word == ".ci/run" || (word.ends_with(".sh") && word.contains('/'))
}

/// Whether inline code is a command: a program with arguments, a script, `./...`, or `NAME=value`.
fn is_command(code: &str) -> bool {
    let words: Vec<&str> = code.split_whitespace().collect();
    let Some(first) = words.first() else { return false };
    let assignment = first.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    (PROGRAMS.contains(first) && words.len() > 1) || is_script(first) || first.starts_with("./") || assignment
}

/// The commands of a Markdown text.
fn commands(markdown: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut prose = String::new();
    let mut fence: Option<String> = None;
    let mut continued = String::new();
    // Lines outside shell code blocks: prose, and other code blocks (the development tree).
    let mut other = Vec::new();
    for line in markdown.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_owned()),
                Some(_) => None,
            };
            prose.push('\n');
            continue;
        }
        let shell = matches!(fence.as_deref(), Some("sh" | "bash" | "shell" | "console"));
        if !shell {
            other.push(line);
        }
        match fence.as_deref() {
            _ if shell => {
                let line = line.trim().trim_start_matches("$ ");
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.strip_suffix('\\') {
                    Some(head) => continued.push_str(&format!("{head} ")),
                    None => {
                        found.insert(normalize(&format!("{continued}{line}")));
                        continued.clear();
                    }
                }
            }
            Some(_) => {}
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    // Inline code may span lines.
    let joined = prose.replace('\n', " ");
    for (i, code) in joined.split('`').enumerate() {
        if i % 2 == 1 && is_command(code) {
            found.insert(normalize(code));
        }
    }
    // `cargo ...` and scripts named outside inline code too (the development tree, prose).
    let mut scripts = BTreeSet::new();
    for line in other {
        for (start, _) in line.match_indices("cargo ") {
            if line[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                continue;
            }
            let rest = &line[start..];
            let end = rest.find(['`', ')', '(']).unwrap_or(rest.len());
            let command = normalize(rest[..end].trim_end_matches(['.', ',', ';', ':']));
            if command.split(' ').nth(1).is_some_and(|sub| sub.chars().all(|c| c.is_ascii_lowercase() || c == '-')) {
                found.insert(command);
            }
        }
        for word in line.split(|c: char| c.is_whitespace() || "`(),;".contains(c)) {
            if is_script(word) {
                scripts.insert(word.to_owned());
            }
        }
    }
    for script in scripts {
        if !found.iter().any(|c| c == &script || c.starts_with(&format!("{script} "))) {
            found.insert(script);
        }
    }
    found
}

/// `file.rs::name` (in tests/) or `dir/file.rs::name`: the file, and whether it defines the
/// test function `name`.
fn test_exists(reference: &str) -> Result<(), String> {
    let (file, name) = reference.split_once("::").ok_or_else(|| format!("{reference:?} is not file.rs::name"))?;
    let path = if file.contains('/') { root().join(file) } else { root().join("tests").join(file) };
    let code =
        std::fs::read_to_string(&path).map_err(|e| format!("{reference}: cannot read {}: {e}", path.display()))?;
    let lines: Vec<&str> = code.lines().collect();
    let position = lines
        .iter()
        .position(|l| {
            let l = l.trim_start();
            [format!("fn {name}("), format!("async fn {name}(")].iter().any(|d| l.starts_with(d.as_str()))
        })
        .ok_or_else(|| format!("{reference}: {} defines no fn {name}", path.display()))?;
    // The attributes right above the function (doc comments and other attributes in between).
    let attributes: Vec<&str> = lines[..position]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("#[") || l.starts_with("///") || l.starts_with("//"))
        .collect();
    if attributes.iter().any(|a| a.starts_with("#[test]") || a.starts_with("#[tokio::test")) {
        Ok(())
    } else {
        Err(format!("{reference}: fn {name} in {} is not a #[test]", path.display()))
    }
}

#[test]
fn the_command_scan_finds_commands_and_nothing_else() {
    let markdown = "Run:\n\n```sh\ncargo build \\\n  --release\n# a comment\n$ ./x --y\n```\n\n```yaml\nkey: \
                    `docker fake`\n```\n\nThen `cargo test --test a`, `rustup`, `AWS_PROFILE`, `FOO=1`, \
                    `ec2:DescribeImages`, `--check-config`, `deploy/x/`, `fuzz/run.sh [n]` (also fuzz/run.sh), \
                    bench/run.sh and `apt-get install\nprometheus`. The tree: (cargo bench --bench render).";
    let found: Vec<String> = commands(markdown).into_iter().collect();
    assert_eq!(
        found,
        [
            "./x --y",
            "FOO=1",
            "apt-get install prometheus",
            "bench/run.sh",
            "cargo bench --bench render",
            "cargo build --release",
            "cargo test --test a",
            "fuzz/run.sh [n]",
        ]
    );
}

#[test]
fn every_readme_command_is_run_or_explained() {
    let found = commands(&readme());
    assert!(found.len() >= 10, "the scan of README.md found too few commands: {found:?}");
    let known: BTreeSet<String> = COMMANDS.iter().map(|(c, _)| normalize(c)).collect();
    let unknown: Vec<&String> = found.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "README.md has commands that no test or .ci/run step runs: {unknown:?}. Test them (and add them to \
         COMMANDS in tests/readme.rs), or write down in COMMANDS why they cannot run here"
    );
    let stale: Vec<&String> = known.difference(&found).collect();
    assert!(stale.is_empty(), "COMMANDS in tests/readme.rs lists commands README.md no longer has: {stale:?}");

    let ci = read(&root().join(".ci/run"));
    let ci_lines: Vec<&str> =
        ci.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with("echo")).collect();
    for (command, coverage) in COMMANDS {
        match coverage {
            Test(reference) => test_exists(reference).unwrap_or_else(|e| panic!("{command}: {e}")),
            Ci(step) => assert!(ci_lines.iter().any(|l| l.contains(step)), "{command}: .ci/run does not run {step:?}"),
            Explained(why) => assert!(why.len() > 20, "{command}: say why it is not run"),
        }
    }
}

/// The rows of the README's "When things go wrong" table that no test fully proves yet. A row
/// may say `TODO` only when listed here; remove it from here once a test proves it.
const TODO_ROWS: &[&str] = &[];

#[test]
fn every_failure_row_names_the_tests_that_prove_it() {
    let readme = readme();
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "## When things go wrong")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let table: Vec<&str> = section.iter().copied().filter(|l| l.starts_with('|')).collect();
    assert!(table.len() > 3, "README.md: no table under \"When things go wrong\"");
    let header: Vec<&str> = table[0].trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(header, ["what happens", "what the exporter does", "what you see", "proved by"], "the table's columns");
    let mut todo = BTreeSet::new();
    for row in &table[2..] {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), header.len(), "README.md: {row}");
        let (what, proved_by) = (cells[0], cells[3]);
        let references: Vec<&str> = proved_by.split('`').skip(1).step_by(2).filter(|c| c.contains(".rs::")).collect();
        for reference in &references {
            test_exists(reference).unwrap_or_else(|e| panic!("README.md, row {what:?}: {e}"));
        }
        if proved_by.contains("TODO") {
            assert!(
                TODO_ROWS.contains(&what),
                "README.md, row {what:?} says TODO: prove it with a test, or list it in TODO_ROWS"
            );
            todo.insert(what);
        } else {
            assert!(!references.is_empty(), "README.md, row {what:?} names no test (`file.rs::test_name`)");
        }
    }
    for row in TODO_ROWS {
        assert!(todo.contains(row), "TODO_ROWS lists {row:?}, whose row no longer says TODO: remove it");
    }
}

#[test]
fn check_config_accepts_the_example_configuration() {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["--check-config", "--config.file", "config/example.yml"]).current_dir(root()).stdin(Stdio::null());
    common::die_with_parent(&mut cmd);
    let out = cmd.output().expect("run the exporter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config/example.yml: valid"), "{stdout}");

    let mut bad = Command::new(common::BIN);
    bad.args(["--check-config", "--config.file", "README.md"]).current_dir(root()).stdin(Stdio::null());
    common::die_with_parent(&mut bad);
    assert_eq!(bad.output().expect("run the exporter").status.code(), Some(1), "an invalid file exits 1");
}

#[test]
fn version_prints_the_version_and_the_revision() {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("--version").stdin(Stdio::null());
    common::die_with_parent(&mut cmd);
    let out = cmd.output().expect("run the exporter");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("ami-usage-exporter {} (revision ", env!("CARGO_PKG_VERSION"));
    let revision = stdout
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {stdout:?}, not {prefix}...)"));
    assert!(
        revision == "unknown" || (revision.len() >= 7 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "revision {revision:?}"
    );
}

/// The scripts the README names exist, are executable, and parse (`bash -n`); running them takes
/// minutes and installs tools (see COMMANDS).
#[test]
fn the_readme_scripts_exist_and_parse() {
    use std::os::unix::fs::PermissionsExt as _;
    let scripts: BTreeSet<String> = commands(&readme())
        .iter()
        .filter_map(|c| c.split(' ').next().filter(|w| is_script(w)).map(str::to_owned))
        .collect();
    assert!(scripts.len() >= 4, "{scripts:?}");
    for script in &scripts {
        let path = root().join(script);
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{script}: {e}")).permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        assert!(read(&path).starts_with("#!/usr/bin/env bash"), "{script}: a bash script");
        let mut cmd = Command::new("bash");
        cmd.arg("-n").arg(&path).stdin(Stdio::null());
        common::die_with_parent(&mut cmd);
        let out = cmd.output().expect("run bash");
        assert!(out.status.success(), "bash -n {script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
