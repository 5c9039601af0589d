#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) and fails if any of them finds a crash.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address),
# which RUSTC_BOOTSTRAP=1 lets the stable compiler accept. FUZZ_SANITIZER=none builds without
# AddressSanitizer instead (faster; the exporter is safe Rust, libyaml-rs is not).
# New inputs go to target/corpus/<target>/, never into the seeds in corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(config_parser exposition_labels)
fi
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

echo "== building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$sanitizer" "$target"
done

status=0
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  work="target/corpus/$target"
  mkdir -p "$work" "artifacts/$target"
  corpora=("$work")
  if [ -d "corpus/$target" ]; then
    corpora+=("corpus/$target")
  fi
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "$target.dict" ]; then
    options+=(-dict="$target.dict")
  fi
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "${corpora[@]}" -- "${options[@]}"; then
    echo "!! $target failed; the input is in fuzz/artifacts/$target/:" >&2
    ls -1 "artifacts/$target" >&2 || true
    echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target fuzz/artifacts/$target/<file>" >&2
    status=1
  fi
done
exit "$status"
