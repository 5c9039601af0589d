#!/usr/bin/env bash
# Soak test: ami-usage-exporter against the bundled EC2 simulator with mixed faults, under
# constant scraping, for DURATION_SECONDS (default 600). Results and how to read them: bench/SOAK.md.
#
#   bench/soak.sh [DURATION_SECONDS]
#
# Exits 0 when the exporter survived, every scrape answered 200, no poll panicked, and RSS did
# not grow past the limit; 1 otherwise; 2 on a usage or set-up error. Logs, the RSS CSV, the
# config and the last scrape are kept in the output directory it prints (SOAK_OUT to choose it).
#
# Tunables (environment): SOAK_IMAGES (50), SOAK_ACCOUNTS (40), SOAK_SCRAPERS (4 curl loops),
# SOAK_WRK_CONNECTIONS (16; 0 = no wrk burst), SOAK_RSS_LIMIT_KIB (10240), SOAK_RSS_LIMIT_PCT (20),
# SOAK_EXPORTER and SOAK_SIM (binaries), SOAK_EXPORTER_ARGS (extra flags, e.g. --log.level=debug),
# SOAK_OUT (output directory).
#
# Everything listens on 127.0.0.1 only. Every process the script starts runs in its own process
# group (setsid), and the EXIT/INT/TERM trap kills those groups, so nothing outlives the script.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/bench/soak.sh"

# --- internal mode: one scraper loop (started by the script itself, in its own process group) ---
# Usage: soak.sh --scrape-loop URL END_EPOCH OUTFILE MODE
# MODE: text, text-gzip, openmetrics (Accept of Prometheus 2.42), openmetrics-gzip (Accept of
# Prometheus 3, and gzip as Prometheus asks for it). Writes one line per scrape:
#   curl_exit http_code bytes body_check start_epoch time_connect time_first_byte time_total
# Every 25th body is kept and checked (a complete exposition), the others go to /dev/null.
# MODE probe: a light GET every 0.2 s, no body check (latency probe of /-/healthy, and of the
# simulator as a control for stalls of the whole host). Bounded by the end time and an iteration cap.
if [[ ${1:-} == --scrape-loop ]]; then
    url=$2 end=$3 out=$4 mode=$5
    case $mode in
    text) opts=() ;;
    text-gzip) opts=(--compressed) ;;
    openmetrics) opts=(-H 'Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1') ;;
    openmetrics-gzip) opts=(--compressed -H 'Accept: application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1') ;;
    probe) opts=() ;;
    *) exit 2 ;;
    esac
    body="$out.body"
    max_iterations=$(((end - EPOCHSECONDS + 1) * 2000))
    i=0 bad_kept=0
    while ((EPOCHSECONDS < end && i < max_iterations)); do
        target=/dev/null
        [[ $mode != probe ]] && ((i % 25 == 0)) && target=$body
        rc=0
        started=$EPOCHREALTIME
        result=$(curl -s "${opts[@]}" -o "$target" --max-time 5 "$url" \
            -w '%{http_code} %{size_download} %{time_connect} %{time_starttransfer} %{time_total}') || rc=$?
        read -r code bytes t_connect t_first t_total <<<"${result:-000 0 0 0 0}"
        check=-
        if [[ $target != /dev/null && $rc == 0 && $code == 200 ]]; then
            check=bad
            case $mode in
            openmetrics*) [[ $(tail -n 1 "$body") == '# EOF' ]] && grep -q '^ami_usage_polls_total ' "$body" && check=ok ;;
            *) [[ $(tail -c 1 "$body" | od -An -c | tr -d ' ') == '\n' ]] && grep -q '^ami_usage_polls_total ' "$body" &&
                ! grep -q '^# EOF' "$body" && check=ok ;;
            esac
        fi
        if [[ $check == bad ]] && ((bad_kept < 5)); then
            cp "$body" "$out.bad-$i"
            bad_kept=$((bad_kept + 1))
        fi
        printf '%s %s %s %s %s %s %s %s\n' "$rc" "$code" "$bytes" "$check" "$started" "$t_connect" "$t_first" "$t_total"
        i=$((i + 1))
        if [[ $mode == probe ]]; then sleep 0.2; fi
    done >>"$out"
    exit 0
fi

DURATION=${1:-600}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 30 || DURATION > 86400)); then
    echo "usage: bench/soak.sh [DURATION_SECONDS]   (30 to 86400, default 600)" >&2
    exit 2
fi

IMAGES=${SOAK_IMAGES:-50}
ACCOUNTS=${SOAK_ACCOUNTS:-40}
SCRAPERS=${SOAK_SCRAPERS:-4}
WRK_CONNECTIONS=${SOAK_WRK_CONNECTIONS:-16}
RSS_LIMIT_KIB=${SOAK_RSS_LIMIT_KIB:-10240}
RSS_LIMIT_PCT=${SOAK_RSS_LIMIT_PCT:-20}
EXPORTER=${SOAK_EXPORTER:-$ROOT/target/release/ami-usage-exporter}
SIM=${SOAK_SIM:-$ROOT/target/release/ec2-sim}
SAMPLE_EVERY=10
read -r -a EXTRA_ARGS <<<"${SOAK_EXPORTER_ARGS:-}" # e.g. SOAK_EXPORTER_ARGS=--log.level=debug
OUT=${SOAK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/ami-soak.XXXXXX")}
mkdir -p "$OUT"

# Mixed faults. A share is a deterministic stride (ec2-sim/README.md, Faults), and every rule
# uses the same phase (from the seed): two rules with the SAME share on the same operation hit
# the very same requests, so only the first listed ever acts. The shares below are therefore all
# different; they were chosen by replaying the simulator's stride rule so that every kind fires
# a few times in 10 minutes (about 1500-2000 DescribeImageUsageReports pages, 150-400
# DescribeImageUsageReportEntries pages, 250-300 CreateImageUsageReport calls). Latencies add
# up; of the other rules that hit a request the first one listed applies. DescribeImages (used
# below to list the images) is never faulted.
FAULTS=(
    '{"operation":"DescribeImageUsageReports","fault":{"kind":"latency","millis":300},"share":0.2}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"latency","millis":1200},"share":0.1}'
    '{"operation":"CreateImageUsageReport","fault":{"kind":"latency","millis":2000},"share":0.05}'
    '{"operation":"DescribeImageUsageReports","fault":{"kind":"throttle"},"share":0.15}'
    '{"operation":"CreateImageUsageReport","fault":{"kind":"throttle"},"share":0.1}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"internal_error"},"share":0.12}'
    '{"operation":"DescribeImageUsageReports","fault":{"kind":"not_xml"},"share":0.011}'
    '{"operation":"DescribeImageUsageReports","fault":{"kind":"close_mid_response"},"share":0.013}'
    '{"operation":"DescribeImageUsageReports","fault":{"kind":"repeat_token"},"share":0.017}'
    '{"operation":"CreateImageUsageReport","fault":{"kind":"close_connection"},"share":0.02}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"truncated_body"},"share":0.025}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"missing_fields"},"share":0.03}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"usage_count","value":-1},"share":0.035}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"duplicate_entries"},"share":0.04}'
    '{"operation":"DescribeImageUsageReportEntries","fault":{"kind":"repeat_token"},"share":0.021}'
)

# --- process bookkeeping and cleanup -------------------------------------------------------------
PIDS=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? pid alive _
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do # up to 10 s for graceful shutdowns
        alive=0
        for pid in "${PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "soak: $*" >&2
    exit 2
}

# start LOGFILE COMMAND...: runs COMMAND in the background in its own session and process group
# (setsid does not fork here, because a background child of a script is no group leader, so $!
# is the command's PID and the group's ID). Sets STARTED_PID.
start() {
    local log=$1
    shift
    : >"$log" # exists before anyone reads it, even if the child is slow to start
    setsid "$@" >"$log" 2>&1 </dev/null &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# Sleeps in a way that lets the INT/TERM traps run at once.
nap() {
    sleep "$1" &
    wait "$!" || true
}

kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

# --- 1. binaries --------------------------------------------------------------------------------
if [[ ! -x $EXPORTER || ! -x $SIM ]]; then
    echo "soak: building the release binaries (the first build takes several minutes)"
    (cd "$ROOT" && cargo build --release -p ami-usage-exporter -p ec2-sim) || die "build failed"
fi
for tool in curl awk sed grep setsid; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
HAVE_WRK=0
if ((WRK_CONNECTIONS > 0)) && command -v wrk >/dev/null; then HAVE_WRK=1; fi

echo "soak: output in $OUT"

# --- 2. the simulator ---------------------------------------------------------------------------
SIM_ARGS=(--listen 127.0.0.1:0 --seed 1 --images "$IMAGES" --accounts "$ACCOUNTS"
    --reports-per-image 3 --pending-for 5s --report-ttl 5m)
for rule in "${FAULTS[@]}"; do SIM_ARGS+=(--fault "$rule"); done
printf '%s\n' "${FAULTS[@]}" >"$OUT/faults.jsonl"
start "$OUT/sim.log" "$SIM" "${SIM_ARGS[@]}"
SIM_PID=$STARTED_PID
SIM_URL=
for _ in $(seq 1 200); do
    SIM_URL=$(sed -n 's|^ec2-sim listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$OUT/sim.log" || true)
    [[ -n $SIM_URL ]] && break
    kill -0 "$SIM_PID" 2>/dev/null || die "ec2-sim exited: $(tail -5 "$OUT/sim.log")"
    nap 0.1
done
[[ -n $SIM_URL ]] || die "ec2-sim did not print its address in 20 s"

# --- 3. the configuration: every image of the simulator -----------------------------------------
curl -sS --max-time 10 -o "$OUT/images.xml" \
    --data 'Action=DescribeImages&Version=2016-11-15&Owner.1=self&MaxResults=1000' "$SIM_URL/" ||
    die "DescribeImages failed"
mapfile -t IMAGE_IDS < <(grep -o '<imageId>ami-[0-9a-f]*</imageId>' "$OUT/images.xml" | sed 's/<[^>]*>//g' | sort -u)
((${#IMAGE_IDS[@]} == IMAGES)) || die "expected $IMAGES images from DescribeImages, got ${#IMAGE_IDS[@]}"

CONFIG="$OUT/config.yml"
{
    echo "# written by bench/soak.sh"
    echo "poll_interval: 1s"
    echo "staleness_limit: 30s"
    echo "aws:"
    echo "  connect_timeout: 1s"
    echo "  attempt_timeout: 2s"
    echo "  operation_timeout: 5s"
    echo "  max_attempts: 3"
    echo "  page_size: 100 # several pages per call, so that the pagination faults have pages to act on"
    echo "reports:"
    echo "  max_age: 2m"
    echo "  pending_timeout: 1m"
    echo "targets:"
    echo "  - region: us-east-1"
    echo "    images:"
    printf '      - %s\n' "${IMAGE_IDS[@]}"
} >"$CONFIG"
"$EXPORTER" --check-config --config.file="$CONFIG" >"$OUT/check-config.txt" 2>&1 ||
    die "config refused: $(cat "$OUT/check-config.txt")"

# --- 4. the exporter ----------------------------------------------------------------------------
start "$OUT/exporter.log" env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL \
    AWS_ENDPOINT_URL_EC2="$SIM_URL" AWS_ACCESS_KEY_ID=soak AWS_SECRET_ACCESS_KEY=soak \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    "$EXPORTER" --config.file="$CONFIG" --web.listen-address=127.0.0.1:0 "${EXTRA_ARGS[@]}"
EXP_PID=$STARTED_PID
ADDR=
for _ in $(seq 1 200); do
    ADDR=$(sed -n 's/.*msg=listening address=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$OUT/exporter.log" | head -n 1 || true)
    [[ -n $ADDR ]] && break
    kill -0 "$EXP_PID" 2>/dev/null || die "exporter exited: $(tail -5 "$OUT/exporter.log")"
    nap 0.1
done
[[ -n $ADDR ]] || die "exporter did not log its address in 20 s"
BASE_URL="http://$ADDR"
METRICS_URL="$BASE_URL/metrics"

# Ready = the first poll has finished.
ready=0
for _ in $(seq 1 600); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/-/ready" || true) == 200 ]]; then
        ready=1
        break
    fi
    kill -0 "$EXP_PID" 2>/dev/null || die "exporter exited: $(tail -5 "$OUT/exporter.log")"
    nap 0.1
done
((ready)) || die "exporter not ready after 60 s"

# --- 5. and 6. scrapers, wrk burst, sampling ----------------------------------------------------
rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
threads_of() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds_of() {
    local n
    n=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || n=0
    echo "$n"
}
# TcpExt ListenOverflows + ListenDrops of the whole host (a full accept queue drops SYNs).
listen_drops() {
    awk '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 } else print $col["ListenOverflows"] + $col["ListenDrops"] }' /proc/net/netstat 2>/dev/null || echo 0
}
# Host-wide stall counters: PSI totals in microseconds (cpu some, memory some, memory full, io
# some; 0 where /proc/pressure is missing) and direct-reclaim stalls from /proc/vmstat.
host_pressure() {
    local f
    for f in cpu memory io; do
        awk -v f="$f" '($1 == "some" || (f == "memory" && $1 == "full")) { sub("total=", "", $5); printf "%s ", $5 }' "/proc/pressure/$f" 2>/dev/null ||
            printf '0 '
    done
    awk '/^allocstall_/ { s += $2 } END { print s + 0 }' /proc/vmstat 2>/dev/null || echo 0
}
polls_in_log() { grep -c 'msg="poll finished"' "$OUT/exporter.log" || true; }

T0=$EPOCHSECONDS
END=$((T0 + DURATION))
START_FDS=$(fds_of "$EXP_PID")
START_LISTEN_DROPS=$(listen_drops)
START_PRESSURE=$(host_pressure)
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

SCRAPE_MODES=(text openmetrics-gzip text-gzip openmetrics)
SCRAPER_PIDS=()
for n in $(seq 1 "$SCRAPERS"); do
    : >"$OUT/scrape-$n.log"
    start /dev/null bash "$SELF" --scrape-loop "$METRICS_URL" "$END" "$OUT/scrape-$n.log" "${SCRAPE_MODES[$(((n - 1) % 4))]}"
    SCRAPER_PIDS+=("$STARTED_PID")
done
for probe in exporter sim; do
    : >"$OUT/probe-$probe.log"
done
start /dev/null bash "$SELF" --scrape-loop "$BASE_URL/-/healthy" "$END" "$OUT/probe-exporter.log" probe
SCRAPER_PIDS+=("$STARTED_PID")
start /dev/null bash "$SELF" --scrape-loop "$SIM_URL/_sim/healthy" "$END" "$OUT/probe-sim.log" probe
SCRAPER_PIDS+=("$STARTED_PID")

# wrk: one burst of keep-alive scraping in the middle of the run, on top of the curl loops.
# Connections + scrapers stay under the exporter's --web.max-requests (40), so a 503 is a failure.
WRK_START=$((DURATION / 3))
WRK_SECONDS=$((DURATION / 4 > 120 ? 120 : DURATION / 4))
WRK_PID=
WRK_STATE=none

CSV="$OUT/rss.csv"
echo "elapsed_s,exporter_rss_kib,exporter_fds,exporter_threads,sim_rss_kib,polls_finished,loadavg_1m" >"$CSV"
echo "soak: simulator $SIM_URL (pid $SIM_PID), exporter $BASE_URL (pid $EXP_PID), $IMAGES images, $DURATION s"
EXP_DIED=0
next=$T0
for _ in $(seq 0 $((DURATION / SAMPLE_EVERY + 1))); do
    now=$EPOCHSECONDS
    if ! kill -0 "$EXP_PID" 2>/dev/null; then
        EXP_DIED=1
        echo "soak: the exporter died at t=$((now - T0)) s" >&2
        break
    fi
    printf '%s,%s,%s,%s,%s,%s,%s\n' "$((now - T0))" "$(rss_of "$EXP_PID")" "$(fds_of "$EXP_PID")" \
        "$(threads_of "$EXP_PID")" "$(rss_of "$SIM_PID")" "$(polls_in_log)" "$(cut -d' ' -f1 /proc/loadavg)" >>"$CSV"
    if ((HAVE_WRK && now - T0 >= WRK_START && WRK_SECONDS >= 5)) && [[ $WRK_STATE == none ]]; then
        start "$OUT/wrk.txt" wrk -t2 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" --timeout 5s --latency "$METRICS_URL"
        WRK_PID=$STARTED_PID
        WRK_STATE=started
        echo "soak: wrk burst started at t=$((now - T0)) s for $WRK_SECONDS s ($WRK_CONNECTIONS connections)"
    fi
    ((now >= END)) && break
    next=$((next + SAMPLE_EVERY))
    ((next > END)) && next=$END
    wait_for=$((next - EPOCHSECONDS))
    ((wait_for > 0)) && nap "$wait_for"
done

# Let the scrapers and wrk finish on their own (each is bounded by END; curl by --max-time 5).
for pid in "${SCRAPER_PIDS[@]}" ${WRK_PID:+"$WRK_PID"}; do
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        nap 0.1
    done
done

# --- 7. final state -----------------------------------------------------------------------------
ALIVE=no
HEALTHY=no
if kill -0 "$EXP_PID" 2>/dev/null; then ALIVE=yes; fi
if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE_URL/-/healthy" || true) == 200 ]]; then HEALTHY=yes; fi
END_FDS=$(fds_of "$EXP_PID")
LISTEN_DROPS=$(($(listen_drops) - START_LISTEN_DROPS))
PRESSURE=$(printf '%s\n%s\n' "$START_PRESSURE" "$(host_pressure)" | awk -v d="$DURATION" '
    NR == 1 { for (i = 1; i <= NF; i++) a[i] = $i }
    NR == 2 { printf "cpu some %.0f%%, memory some %.1f%% full %.1f%%, io some %.1f%% of the run; %d direct-reclaim stalls",
        ($1 - a[1]) / d / 1e4, ($2 - a[2]) / d / 1e4, ($3 - a[3]) / d / 1e4, ($4 - a[4]) / d / 1e4, $5 - a[5] }')
curl -s --max-time 10 -o "$OUT/final-metrics.txt" "$METRICS_URL" || : >"$OUT/final-metrics.txt"
curl -s --max-time 10 -o "$OUT/sim-requests.json" "$SIM_URL/_sim/requests" || true
curl -s --max-time 10 -o "$OUT/sim-fault-hits.json" "$SIM_URL/_sim/fault-hits" || true
curl -s --max-time 10 -o "$OUT/ground-truth.json" "$SIM_URL/_sim/ground-truth" || true

# Graceful stop: SIGTERM, then the exporter must exit 0 within 15 s.
STOP="not running"
if [[ $ALIVE == yes ]]; then
    kill -TERM "$EXP_PID"
    STOP="did not stop within 15 s"
    for _ in $(seq 1 150); do
        if ! kill -0 "$EXP_PID" 2>/dev/null; then
            rc=0
            wait "$EXP_PID" || rc=$?
            STOP="exit status $rc"
            break
        fi
        nap 0.1
    done
fi

# --- summary ------------------------------------------------------------------------------------
metric() { # sum of a metric's samples in the final scrape (0 when absent)
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $NF } END { printf "%d\n", s }' "$OUT/final-metrics.txt"
}
label() { sed -n "s/.*[{,]$1=\"\([^\"]*\)\".*/\1/p"; }

POLLS=$(polls_in_log)
POLLS_FAILED=$(grep 'msg="poll finished"' "$OUT/exporter.log" | grep -c 'failed_images=[1-9]' || true)
PANICS=$(metric ami_usage_poll_panics_total)

# Per loop: scrapes, non-200 answers, curl failures, bodies checked, bad bodies, mean bytes.
SCRAPES=0
SCRAPE_NON200=0
SCRAPE_CURL_ERR=0
SCRAPE_BAD_BODY=0
SCRAPE_LINES=()
for n in $(seq 1 "$SCRAPERS"); do
    read -r s e c k b z < <(awk '{ n++; bytes += $3 } $1 != 0 { c++ } $1 == 0 && $2 != 200 { e++ } $4 != "-" { k++ } $4 == "bad" { b++ }
        END { printf "%d %d %d %d %d %d\n", n, e, c, k, b, n ? bytes / n : 0 }' "$OUT/scrape-$n.log")
    SCRAPES=$((SCRAPES + s))
    SCRAPE_NON200=$((SCRAPE_NON200 + e))
    SCRAPE_CURL_ERR=$((SCRAPE_CURL_ERR + c))
    SCRAPE_BAD_BODY=$((SCRAPE_BAD_BODY + b))
    SCRAPE_LINES+=("$(printf '  loop %d %-17s %7d scrapes, %d non-200, %d curl failures, %d bodies checked, %d bad, %d bytes each on average' \
        "$n" "${SCRAPE_MODES[$(((n - 1) % 4))]}" "$s" "$e" "$c" "$k" "$b" "$z")")
done
SCRAPE_TIMES=$(awk '{ print $8 }' "$OUT"/scrape-*.log | sort -n | awk '{ a[NR] = $1 }
    END { if (NR) printf "median %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.0f ms", a[int((NR + 1) / 2)] * 1000, a[int(NR * 0.99)] * 1000, a[int(NR * 0.999)] * 1000, a[NR] * 1000 }')
SLOW_SCRAPES=$(awk -v t0="$T0" '$1 != 0 || $2 != 200 || $8 > 1 {
        printf "  %s t=%.1f s curl_exit=%s http=%s connect=%.3f s first_byte=%.3f s total=%.3f s\n", FILENAME, $5 - t0, $1, $2, $6, $7, $8 }' "$OUT"/scrape-*.log "$OUT"/probe-*.log |
    sed "s|$OUT/||" | sort -t= -k2 -n | head -n 30)
probe_summary() {
    sort -k8 -n "$1" | awk '{ n++; a[n] = $8 } $1 != 0 { c++ } $1 == 0 && $2 != 200 { e++ } $8 > 1 { slow++ }
        END { printf "%d requests, %d non-200, %d curl failures, median %.1f ms, max %.0f ms, %d slower than 1 s", n, e, c, a[int((n + 1) / 2)] * 1000, a[n] * 1000, slow }'
}
PROBE_EXPORTER=$(probe_summary "$OUT/probe-exporter.log")
PROBE_SIM=$(probe_summary "$OUT/probe-sim.log")
PROBE_FAILURES=$(awk '$1 != 0 || $2 != 200 { c++ } END { print c + 0 }' "$OUT/probe-exporter.log")
CODES=$(awk '{ print "curl_exit=" $1 " http=" $2 }' "$OUT"/scrape-*.log | sort | uniq -c | sort -rn | tr '\n' ';' | sed 's/ \+/ /g; s/^ //; s/;$//')

WRK_REQUESTS=0
WRK_NON2XX=0
WRK_SOCKET_ERRORS=0
if [[ $WRK_STATE == started && -s $OUT/wrk.txt ]]; then
    WRK_REQUESTS=$(awk '/requests in/ { print $1 }' "$OUT/wrk.txt")
    WRK_NON2XX=$(awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$OUT/wrk.txt")
    WRK_SOCKET_ERRORS=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$OUT/wrk.txt" | awk '{ print $1 + $2 + $3 + $4 }')
    WRK_REQUESTS=${WRK_REQUESTS:-0}
    WRK_NON2XX=${WRK_NON2XX:-0}
    WRK_SOCKET_ERRORS=${WRK_SOCKET_ERRORS:-0}
fi

# RSS: start = first sample (after the first poll), base = first sample at or after 60 s (the
# start when the run is shorter than 2 minutes), end = last sample.
read -r RSS_START RSS_MAX RSS_MAX_T RSS_END RSS_BASE MIN2_MEAN LAST_MEAN < <(awk -F, -v d="$DURATION" '
    NR == 1 { next }
    { t = $1; r = $2 }
    NR == 2 { start = r; base = r }
    r > max { max = r; maxt = t }
    d >= 120 && t >= 60 && !based { base = r; based = 1 }
    t >= 60 && t < 120 { m2 += r; n2++ }
    t >= d - 60 && t > 0 { lm += r; nl++ }
    { end = r }
    END { printf "%d %d %d %d %d %d %d\n", start, max, maxt, end, base, (n2 ? m2 / n2 : 0), (nl ? lm / nl : 0) }' "$CSV")
GROWTH=$((RSS_END - RSS_BASE))
LIMIT=$((RSS_BASE * RSS_LIMIT_PCT / 100))
((LIMIT < RSS_LIMIT_KIB)) && LIMIT=$RSS_LIMIT_KIB

echo
echo "================ ami-usage-exporter soak summary ================"
echo "started            $START_DATE"
echo "duration           $DURATION s ($IMAGES images, $ACCOUNTS accounts, poll_interval 1s, max_age 2m, page_size 100)"
echo "output             $OUT"
echo
echo "-- exporter process"
echo "alive at end       $ALIVE   /-/healthy: $HEALTHY   SIGTERM: $STOP"
echo "RSS start          $RSS_START KiB ($(kib "$RSS_START")), after the first poll"
if ((DURATION >= 120)); then
    echo "RSS base           $RSS_BASE KiB ($(kib "$RSS_BASE")), first sample at t>=60 s"
else
    echo "RSS base           $RSS_BASE KiB ($(kib "$RSS_BASE")), the start (run shorter than 2 minutes)"
fi
echo "RSS max            $RSS_MAX KiB ($(kib "$RSS_MAX")) at t=$RSS_MAX_T s"
echo "RSS end            $RSS_END KiB ($(kib "$RSS_END"))"
echo "RSS end - base     $GROWTH KiB (limit $LIMIT KiB = max($RSS_LIMIT_KIB KiB, $RSS_LIMIT_PCT% of base))"
if ((DURATION >= 180)); then
    echo "RSS slope          mean of last minute $LAST_MEAN KiB - mean of minute 2 $MIN2_MEAN KiB = $((LAST_MEAN - MIN2_MEAN)) KiB"
fi
echo "open fds           start $START_FDS, end $END_FDS (after the scrapers stopped)"
echo "RSS per minute (KiB: min / max / last sample of the minute; threads and fds at the last sample):"
awk -F, 'NR > 1 {
        m = int($1 / 60); if ($1 > 0 && $1 % 60 == 0) m = $1 / 60 - 1
        if (!(m in mn) || $2 < mn[m]) mn[m] = $2
        if ($2 > mx[m]) mx[m] = $2
        last[m] = $2; thr[m] = $4; fd[m] = $3; sim[m] = $5; polls[m] = $6; load[m] = $7; t[m] = $1; if (m > top) top = m
    }
    END { for (m = 0; m <= top; m++) if (m in last)
        printf "  minute %2d (to t=%4d s)  %6d / %6d / %6d   threads %3d  fds %3d  polls %5d  sim RSS %6d  load %s\n", m + 1, t[m], mn[m], mx[m], last[m], thr[m], fd[m], polls[m], sim[m], load[m] }' "$CSV"
echo
echo "-- polls"
echo "polls finished     $POLLS (log lines \"poll finished\")"
echo "with failed images $POLLS_FAILED"
grep 'msg="poll finished"' "$OUT/exporter.log" | sed -n 's/.*duration_ms=\([0-9]*\).*/\1/p' | sort -n |
    awk '{ a[NR] = $1; s += $1 }
        END { if (NR) { p = int(NR * 0.95 + 0.5); if (p < 1) p = 1
            printf "poll duration ms   median %d, p95 %d, max %d, mean %.0f\n", a[int((NR + 1) / 2)], a[p], a[NR], s / NR } }'
echo "polls_total        $(metric ami_usage_polls_total)"
echo "poll_failures      $(metric ami_usage_poll_failures_total)"
echo "poll_panics        $PANICS"
echo "reports_created    $(metric ami_usage_reports_created_total)"
echo "report_errors      $(metric ami_usage_report_errors_total)"
echo "reports_stuck      $(metric ami_usage_reports_stuck_total)"
echo "invalid_entries    $(metric ami_usage_invalid_entries_total)"
echo "api requests by operation:"
grep '^ami_usage_api_requests_total{' "$OUT/final-metrics.txt" | while read -r series value; do
    printf '  %-34s %s\n' "$(label operation <<<"$series")" "$value"
done
echo "api errors by operation and code:"
grep '^ami_usage_api_errors_total{' "$OUT/final-metrics.txt" | while read -r series value; do
    printf '  %-34s %-22s %s\n' "$(label operation <<<"$series")" "$(label code <<<"$series")" "$value"
done
echo "warnings and errors in the exporter log (by message):"
grep -E 'level=(WARN|ERROR|warn|error)' "$OUT/exporter.log" | sed -n 's/.*msg=\("[^"]*"\|[^ ]*\).*/\1/p' |
    sort | uniq -c | sort -rn | sed 's/^/ /' || true

echo
echo "-- simulator"
echo "requests           $(tr -d '{}"' <"$OUT/sim-requests.json" | sed 's/,/, /g')"
echo "fault hits         $(tr -d '{}"' <"$OUT/sim-fault-hits.json" | sed 's/,/, /g')"

# Served figures against the simulator's ground truth (informational: entries skipped under a
# fault stay missing until the report is replaced, max_age later).
grep -o '{[^}]*}' "$OUT/ground-truth.json" |
    sed -n 's/.*"image_id":"\([^"]*\)".*"account_id":"\([^"]*\)","resource_type":"\([^"]*\)","usage_count":\(-\?[0-9]*\).*/T \1|\2|\3 \4/p' >"$OUT/compare.txt" || true
grep '^ami_usage_resources{' "$OUT/final-metrics.txt" | while read -r series value; do
    echo "S $(label image_id <<<"$series")|$(label account_id <<<"$series")|$(label resource_type <<<"$series") $value"
done >>"$OUT/compare.txt"
awk '$1 == "T" { t[$2] = $3 } $1 == "S" { s[$2] = $3 }
    END { for (k in t) { n++; if (!(k in s)) miss++; else if (s[k] != t[k]) diff++; else ok++ }
          for (k in s) if (!(k in t)) extra++
          printf "ground truth       %d series: %d served equal, %d with another value, %d missing; %d served not in the truth\n", n, ok, diff, miss, extra }' "$OUT/compare.txt"

echo
echo "-- scrapes of /metrics"
echo "curl loops         $SCRAPERS loops, $SCRAPES scrapes, $SCRAPE_NON200 non-200, $SCRAPE_CURL_ERR curl failures, $SCRAPE_BAD_BODY bad bodies ($CODES)"
printf '%s\n' "${SCRAPE_LINES[@]}"
echo "scrape time        $SCRAPE_TIMES (curl loops, connection included)"
echo "probe /-/healthy   $PROBE_EXPORTER (exporter, every 0.2 s)"
echo "probe simulator    $PROBE_SIM (control: another process on the same host)"
echo "TCP listen drops   $LISTEN_DROPS (host-wide ListenOverflows + ListenDrops during the run)"
echo "host pressure      $PRESSURE (PSI, whole host)"
if [[ -n $SLOW_SCRAPES ]]; then
    echo "failed or slower than 1 s (first 30, by time):"
    echo "$SLOW_SCRAPES"
fi
if [[ $WRK_STATE == started ]]; then
    echo "wrk burst          $WRK_SECONDS s, $WRK_CONNECTIONS connections: $WRK_REQUESTS requests, $WRK_NON2XX non-2xx, $WRK_SOCKET_ERRORS socket errors"
    sed -n 's/^ *\(Latency\|Requests\/sec\|50%\|99%\).*/  &/p' "$OUT/wrk.txt" | sed 's/^ */  /'
else
    echo "wrk burst          not run (wrk not installed or SOAK_WRK_CONNECTIONS=0)"
fi

# --- verdict ------------------------------------------------------------------------------------
FAILED=()
((EXP_DIED)) && FAILED+=("the exporter died during the run")
[[ $ALIVE == yes && $HEALTHY == yes ]] || FAILED+=("the exporter is not alive and healthy at the end")
((SCRAPE_NON200 + SCRAPE_CURL_ERR + WRK_NON2XX + WRK_SOCKET_ERRORS > 0)) && FAILED+=("scrapes failed: $SCRAPE_NON200 non-200 and $SCRAPE_CURL_ERR curl failures in the loops, $WRK_NON2XX non-2xx and $WRK_SOCKET_ERRORS socket errors in wrk")
((PROBE_FAILURES > 0)) && FAILED+=("$PROBE_FAILURES probes of /-/healthy failed")
((SCRAPE_BAD_BODY > 0)) && FAILED+=("$SCRAPE_BAD_BODY scraped bodies were incomplete (kept as scrape-N.log.bad-I)")
((PANICS > 0)) && FAILED+=("ami_usage_poll_panics_total is $PANICS")
((GROWTH > LIMIT)) && FAILED+=("RSS grew by $GROWTH KiB after the first minute (limit $LIMIT KiB)")
((POLLS < 2)) && FAILED+=("only $POLLS polls finished")
[[ $STOP == "exit status 0" || $ALIVE == no ]] || FAILED+=("SIGTERM: $STOP")
echo
if ((${#FAILED[@]} == 0)); then
    echo "RESULT: PASS"
    exit 0
fi
echo "RESULT: FAIL"
printf '  - %s\n' "${FAILED[@]}"
exit 1
