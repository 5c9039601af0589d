#!/usr/bin/env bash
# Whether two exporter builds serve the same /metrics: both poll one simulator (ec2-sim
# --full-usage, so that every page count is fixed), and their text and OpenMetrics expositions
# are compared line for line. What differs by nature is masked: timestamps, durations, the
# process metrics and build_info. Used to check that a redesign changed no output.
#
#   bench/same-output.sh OLD_EXPORTER NEW_EXPORTER [EC2_SIM]
#
# Listens on 127.0.0.1:19911-19913 and stops everything it started when it exits.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=$1 NEW=$2 SIM=${3:-$ROOT/target/release/ec2-sim}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$SIM" --listen 127.0.0.1:19911 --seed 5 --images 300 --accounts 40 --full-usage >"$work/sim.log" 2>&1 &
sleep 1
cat >"$work/config.yml" <<YAML
poll_interval: 1h
reports:
  create: false
accounts:
  expected: ['111111111111']
  names: {'111111111111': owner}
targets:
  - region: us-east-1
    discover: {}
YAML
run() {
    env -i PATH="$PATH" AWS_ENDPOINT_URL_EC2=http://127.0.0.1:19911 AWS_ACCESS_KEY_ID=AKIDEXAMPLE \
        AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
        AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
        "$1" --config.file "$work/config.yml" --web.listen-address "127.0.0.1:$2" >"$work/$2.log" 2>&1 &
}
run "$OLD" 19912
run "$NEW" 19913
for port in 19912 19913; do
    for _ in $(seq 150); do
        curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null && break
        sleep 0.2
    done
    if ! curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null; then
        echo "$0: the exporter on port $port is not ready after 30 s; its log:" >&2
        cat "$work/$port.log" >&2
        exit 1
    fi
done
mask() {
    grep -v '^process_\|^# [A-Z]* process_\|ami_usage_build_info{' |
        sed -E 's/^(ami_usage_[a-z_]*(timestamp_seconds|duration_seconds)(\{[^}]*\})?) .*/\1 MASKED/'
}
status=0
for accept in "text/plain" "application/openmetrics-text;version=1.0.0"; do
    curl -sf -H "Accept: $accept" http://127.0.0.1:19912/metrics | mask >"$work/old"
    curl -sf -H "Accept: $accept" http://127.0.0.1:19913/metrics | mask >"$work/new"
    echo "$accept: $(wc -l <"$work/old") lines, $(grep -c '^ami_usage_resources{' "$work/old") usage series"
    if diff "$work/old" "$work/new"; then echo "  the same"; else status=1; fi
done
curl -sf -H "Accept-Encoding: gzip" http://127.0.0.1:19913/metrics | gunzip | mask >"$work/gzip"
curl -sf http://127.0.0.1:19913/metrics | mask >"$work/plain"
if diff -q "$work/plain" "$work/gzip" >/dev/null; then echo "gzip (new build): the same once decompressed"; else status=1; fi
exit $status
