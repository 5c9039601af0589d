#!/usr/bin/env bash
# The README's picture of the status page: runs the demo (the README's first command) on a free
# loopback port, waits until its first reports are read and refreshed, and takes a screenshot of
# its status page with docs/screenshot.sh (Debian's headless Chromium).
#
#   docs/demo-screenshot.sh [OUT.png]      (docs/status-page.png unless given)
#
# DEMO names the demo binary; without it, the demo is built and run with cargo. tests/browser.rs
# runs this script.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs/status-page.png}
work=$(mktemp -d "${TMPDIR:-/tmp}/demo-screenshot.XXXXXX")
demo_pid=
cleanup() {
  if [[ -n $demo_pid ]]; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ -n ${DEMO:-} ]]; then
  "$DEMO" --web.listen-address=127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
else
  cargo build --quiet --features demo --bin ami-usage-demo
  target/debug/ami-usage-demo --web.listen-address=127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
fi
demo_pid=$!

# The bound address, from the demo's "Metrics:" line.
address=
for _ in $(seq 1 120); do
  address=$(sed -n 's|^Metrics: *http://\([^/]*\)/metrics$|\1|p' "$work/stdout")
  [[ -n $address ]] && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/stderr" >&2; echo "$0: the demo stopped" >&2; exit 1; }
  sleep 0.5
done
[[ -n $address ]] || { cat "$work/stderr" >&2; echo "$0: the demo printed no address" >&2; exit 1; }

# The first poll requests new reports; the next shows them pending; they become available after
# 20 s and are read at the poll after. Waiting for "pending", then for no "pending", makes the
# picture show the figures of the refreshed reports.
page_has() {
  local page
  page=$(curl -fsS "http://$address/" || true)
  [[ $page == *'class="image'* ]] || return 2
  [[ $page == *'pending since'* ]]
}
wait_for() {
  local want=$1
  for _ in $(seq 1 90); do
    if page_has; then [[ $want == pending ]] && return 0; else [[ $? -eq 1 && $want == refreshed ]] && return 0; fi
    sleep 1
  done
  echo "$0: the demo's reports were not $want within 90 s" >&2
  exit 1
}
wait_for pending
wait_for refreshed

docs/screenshot.sh "http://$address/" "$out" 1280x900
