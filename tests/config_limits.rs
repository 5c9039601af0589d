//! Hostile configuration files are refused quickly and cheaply by `--check-config` (issue 9,
//! section 6): the exporter binary itself, each run bounded so that a regression fails instead
//! of hanging. Before the limits, the nested brackets took 22 s of CPU (debug build), the alias
//! bomb was accepted after 23 s at 1.1 GB, and the 50 MB file was accepted at 494 MB.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TempFile, aws_command};

/// What each refusal may take (it takes milliseconds; a debug build on a busy machine is slow).
const QUICK: Duration = Duration::from_secs(2);
/// A child still running after this is killed and the test fails.
const KILL_AFTER: Duration = Duration::from_secs(20);
/// Peak memory allowed to any child of this test binary (the Deployment allows 256 MiB).
const MAX_RSS_KIB: i64 = 100 * 1024;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Runs `ami-usage-exporter --check-config` on the files, killed after [`KILL_AFTER`].
fn check_config(config: &Path, web_config: Option<&Path>) -> Outcome {
    let mut cmd = aws_command("http://127.0.0.1:9");
    cmd.arg("--check-config").arg(format!("--config.file={}", config.display()));
    if let Some(web) = web_config {
        cmd.arg(format!("--web.config.file={}", web.display()));
    }
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn the exporter");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--check-config {} still running after {KILL_AFTER:?}; killed", config.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    Outcome { code: status.code(), stderr: reader.join().expect("stderr reader"), took }
}

/// The largest resident set of any child waited for so far, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid target.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    usage.ru_maxrss
}

/// Asserts a quick, cheap refusal whose message has every one of `needles`.
fn assert_refused(outcome: &Outcome, needles: &[&str]) {
    assert_eq!(outcome.code, Some(1), "exit status; stderr:\n{}", outcome.stderr);
    for needle in needles {
        assert!(outcome.stderr.contains(needle), "{needle:?} not in stderr:\n{}", outcome.stderr);
    }
    assert!(outcome.took < QUICK, "took {:?}; stderr:\n{}", outcome.took, outcome.stderr);
    let rss = children_peak_rss_kib();
    assert!(rss < MAX_RSS_KIB, "a child peaked at {rss} KiB");
}

#[test]
fn nested_brackets_are_refused_in_milliseconds() {
    let file = TempFile::new(&"[".repeat(400_000));
    let outcome = check_config(&file.0, None);
    let field = "[0]".repeat(32);
    assert_refused(
        &outcome,
        &[
            &format!("config file {}: {field}: ", file.0.display()),
            "nested more than 32 levels deep at line 1 column 33",
        ],
    );
}

#[test]
fn an_alias_repeating_a_list_20000_times_is_refused() {
    let accounts: String = (0..1000).map(|i| format!("    - '{:012}'\n", 100_000_000_000u64 + i)).collect();
    let images: String = (0..20_000).map(|i| format!("    ami-{i:017x}: *a\n")).collect();
    let text = format!(
        "accounts:\n  expected: &a\n{accounts}  expected_per_image:\n{images}\
         targets:\n  - region: us-east-1\n    images: [ami-12345678]\n"
    );
    assert!((600_000..700_000).contains(&text.len()), "the 616 KB bomb of the issue: {}", text.len());
    let file = TempFile::new(&text);
    let outcome = check_config(&file.0, None);
    assert_refused(
        &outcome,
        &[
            "accounts.expected_per_image.ami-000000000000000f8: ",
            "alias *a: more than 250000 values (an alias counting as all it repeats) at line 1252 column 28",
        ],
    );
}

#[test]
fn a_file_over_a_mebibyte_is_refused_before_it_is_read() {
    // 50 MB of AMIs, as in the issue: 2.4 million of them.
    let images: String = (0..2_380_000).map(|i| format!("      - ami-{i:08x}\n")).collect();
    let file = TempFile::new(&format!("targets:\n  - region: us-east-1\n    images:\n{images}"));
    drop(images);
    let size = std::fs::metadata(&file.0).expect("written").len();
    assert!(size > 49_000_000, "{size}");
    let outcome = check_config(&file.0, None);
    assert_refused(&outcome, &[&format!("(file): {size} bytes, over the limit of 1048576 (1 MiB")]);
}

#[test]
fn a_pipe_is_read_no_further_than_the_limit() {
    let path = std::env::temp_dir().join(format!("ami-usage-test-fifo-{}.yml", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let fifo = TempFile(path.clone());
    // Writes until the reader goes away (then the write fails); never joined.
    std::thread::spawn(move || {
        if let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&path) {
            let chunk = "# ".repeat(32 * 1024);
            while std::io::Write::write_all(&mut pipe, chunk.as_bytes()).is_ok() {}
        }
    });
    let outcome = check_config(&fifo.0, None);
    assert_refused(&outcome, &["(file): more than 1048576 bytes, over the limit"]);
}

#[test]
fn a_target_with_10001_images_is_refused_with_the_field() {
    let images: String = (0..10_001).map(|i| format!("      - ami-{i:08x}\n")).collect();
    let file = TempFile::new(&format!("targets:\n  - region: us-east-1\n    images:\n{images}"));
    assert!(std::fs::metadata(&file.0).expect("written").len() < 1 << 20, "under the size limit");
    let outcome = check_config(&file.0, None);
    assert_refused(&outcome, &["targets[0].images: 10001 images listed; at most 10000 per target"]);
}

#[test]
fn an_ami_listed_twice_in_a_target_is_refused_with_the_field() {
    let file =
        TempFile::new("targets:\n  - region: us-east-1\n    images: [ami-12345678, ami-87654321, ami-12345678]\n");
    let outcome = check_config(&file.0, None);
    assert_refused(&outcome, &["targets[0].images[2]: ami-12345678 is listed twice (first at targets[0].images[0])"]);
}

#[test]
fn a_costly_bcrypt_hash_in_the_web_config_is_refused_at_once() {
    let config = TempFile::new("targets:\n  - region: us-east-1\n    images: [ami-12345678]\n");
    // A well-formed hash at cost 31, which would take days to check.
    let hash = "$2y$31$6hHbAuzb1GS4qZw2k/hCEO2RBQbZfGJqA3SPDkHovyXfoTOpemiNy";
    let web = TempFile::new(&format!("basic_auth_users:\n  alice: \"{hash}\"\n"));
    let outcome = check_config(&config.0, Some(&web.0));
    assert_refused(
        &outcome,
        &[&format!("web config file {}: basic_auth_users.alice: bcrypt cost 31 is above 14", web.0.display())],
    );
}
