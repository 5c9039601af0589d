#!/usr/bin/env bash
# A screenshot of a web page, taken by Debian's headless Chromium without WebDriver (the README's
# picture of the status page is made with it):
#
#   docs/screenshot.sh URL OUT.png [WIDTHxHEIGHT]
#
# WIDTHxHEIGHT is the window, in CSS pixels (1280x1000 unless given), and so the PNG's size.
# Needs `chromium` (apt-get install chromium); CHROMIUM names another binary. Chromium runs with a
# fresh profile, removed afterwards, and is stopped after 60 s. tests/browser.rs runs this script.
set -euo pipefail

usage() {
  echo "usage: $0 URL OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
}

[[ $# -eq 2 || $# -eq 3 ]] || usage
url=$1
out=$2
size=${3:-1280x1000}
[[ $size =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || usage
width=${BASH_REMATCH[1]}
height=${BASH_REMATCH[2]}

chromium=${CHROMIUM:-chromium}
if ! command -v "$chromium" >/dev/null 2>&1; then
  echo "$0: $chromium is not installed (apt-get install chromium)" >&2
  exit 1
fi

profile=$(mktemp -d "${TMPDIR:-/tmp}/screenshot-profile.XXXXXX")
log=$(mktemp "${TMPDIR:-/tmp}/screenshot-log.XXXXXX")
trap 'rm -rf "$profile" "$log"' EXIT
# An old file is removed first, so that a failed run leaves none behind.
out=$(realpath -m -- "$out")
rm -f -- "$out"

if ! timeout --kill-after=5 60 "$chromium" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="$width,$height" --user-data-dir="$profile" --screenshot="$out" "$url" >"$log" 2>&1; then
  cat "$log" >&2
  echo "$0: chromium failed on $url" >&2
  exit 1
fi
if [[ ! -s $out ]]; then
  cat "$log" >&2
  echo "$0: chromium wrote no screenshot of $url" >&2
  exit 1
fi
echo "$out: ${width}x${height} screenshot of $url"
