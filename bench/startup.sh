#!/usr/bin/env bash
# One start-up of the exporter, for hyperfine (bench/bench.py startup): exec, then poll the
# port until GET /metrics answers 200, then stop it. Polling uses bash's /dev/tcp, so no process
# is forked per attempt and the measured time is the exporter's, not curl's.
# Environment: BENCH_EXPORTER, BENCH_CONFIG, BENCH_PORT (and the AWS_* variables of the simulator).
set -euo pipefail
"$BENCH_EXPORTER" --config.file="$BENCH_CONFIG" --web.listen-address="127.0.0.1:$BENCH_PORT" 2>/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 20000); do
    if exec 3<>"/dev/tcp/127.0.0.1/$BENCH_PORT" 2>/dev/null; then
        printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
        read -r status_line <&3 || status_line=
        exec 3>&-
        if [[ $status_line == "HTTP/1.1 200"* ]]; then
            exit 0
        fi
    fi
    kill -0 "$pid" 2>/dev/null || { echo "exporter exited" >&2; exit 1; }
done
echo "exporter not serving after 20000 attempts" >&2
exit 1
