//! Stamps the git revision into the binary for `ami_usage_build_info` and `--version`.
//! A build without git (a source tarball, a Docker context without .git) can pass it in
//! `AMI_USAGE_REVISION`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AMI_USAGE_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let revision = std::env::var("AMI_USAGE_REVISION").ok().filter(|r| !r.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!("cargo:rustc-env=AMI_USAGE_REVISION={}", revision.unwrap_or_else(|| "unknown".to_owned()));
}
