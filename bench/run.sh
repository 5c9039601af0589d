#!/usr/bin/env bash
# One command for the benchmarks: installs what they need (Debian's wrk, nginx and hyperfine),
# builds the release binaries, and runs bench/bench.py with the given arguments.
#   bench/run.sh                      every scenario (about 25 minutes on 2 cores)
#   bench/run.sh scrape --sizes 100k  one scenario, one size
#   bench/run.sh --help               scenarios and options
# Results are printed as Markdown tables; BENCHMARKS.md records a run and the machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if ((${#missing[@]})); then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"
cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" --bin ami-usage-exporter
cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" -p ec2-sim --bin ec2-sim
exec python3 "$ROOT/bench/bench.py" "$@"
