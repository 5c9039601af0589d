#!/usr/bin/env python3
"""Whole-process benchmarks of ami-usage-exporter against the bundled EC2 simulator.

Run through bench/run.sh, which installs wrk, nginx and hyperfine and builds the release
binaries first. Scenarios (BENCHMARKS.md explains each and records results):

  scrape   /metrics at 100k and 1M series under wrk (1, 16, 64 connections, plain and gzip),
           side by side with nginx serving the very same bytes from a file
  cost     AWS calls per poll for 1,000 images: cold start (reports exist), first deployment
           (no reports), steady state, and report refreshes (superseded reports deleted)
  time     cold poll time at 20 ms of simulated latency per call, against the latency-bound
           ideal (calls / concurrency x latency)
  memory   peak RSS at 0, 100k and 1M series, and RSS over many polls and scrapes
  startup  exec to serving /metrics (hyperfine), and the stripped binary's size
  scale    50 targets (one hung), an estate of 100,000 Region-image pairs in 1, 2 and 4 shards, and
           a public image used by 50,000 accounts

Only the Python standard library is used. Every process listens on 127.0.0.1, runs in its own
process group and is killed when this script exits, however it exits.
"""

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRIES_PER_PAGE = 1000
IDS_PER_CALL = 200

# --- processes ----------------------------------------------------------------------------------

_children = []


def _die_with_parent():
    # The child gets SIGKILL when this script dies, even by SIGKILL (PR_SET_PDEATHSIG = 1).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
    os.setsid()


def spawn(argv, log_path, env=None):
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    _children.append(proc)
    return proc


def stop(proc, timeout=15):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc in _children:
        _children.remove(proc)


def stop_all(*_):
    for proc in list(_children):
        stop(proc, timeout=5)


def wait_for_line(path, pattern, proc, timeout):
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        text = Path(path).read_text(errors="replace")
        match = regex.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited: {text[-2000:]}")
        time.sleep(0.02)
    raise SystemExit(f"no line matching {pattern!r} in {path} after {timeout} s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --- HTTP ---------------------------------------------------------------------------------------


def http(url, data=None, headers=None, timeout=120):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def get_json(url):
    return json.loads(http(url)[1])


# --- simulator and exporter ---------------------------------------------------------------------


class Sim:
    def __init__(self, workdir, name, images, accounts, reports_per_image=1, full_usage=True, faults=(), extra=()):
        argv = [str(ROOT / "target/release/ec2-sim"), "--listen", "127.0.0.1:0", "--images", str(images),
                "--accounts", str(accounts), "--reports-per-image", str(reports_per_image), "--pending-for", "0s"]
        if full_usage:
            argv.append("--full-usage")
        for rule in faults:
            argv += ["--fault", json.dumps(rule)]
        argv += list(extra)
        self.log = workdir / f"{name}-sim.log"
        self.proc = spawn(argv, self.log)
        self.url = wait_for_line(self.log, r"ec2-sim listening on (http://127\.0\.0\.1:\d+)", self.proc, 120).group(1)

    def image_ids(self):
        ids, token = [], None
        while True:
            # Disabled images too: the dataset disables one in ten, and they have reports all the same.
            form = {"Action": "DescribeImages", "Version": "2016-11-15", "Owner.1": "self", "MaxResults": "1000",
                    "IncludeDisabled": "true"}
            if token:
                form["NextToken"] = token
            body = http(self.url + "/", urllib.parse.urlencode(form).encode())[1].decode()
            ids += re.findall(r"<imageId>(ami-[0-9a-f]+)</imageId>", body)
            match = re.search(r"<nextToken>([^<]+)</nextToken>", body)
            if not match:
                return sorted(set(ids))
            token = match.group(1)

    def requests(self):
        return get_json(self.url + "/_sim/requests")

    def report_counts(self):
        return get_json(self.url + "/_sim/report-counts")

    def set_faults(self, rules):
        req = urllib.request.Request(self.url + "/_sim/faults", data=json.dumps(rules).encode(), method="PUT")
        urllib.request.urlopen(req, timeout=10).read()


def exporter_config(images, poll_interval="1h", create=False, max_age="24h", concurrency=4, page_size=1000,
                    references=False):
    lines = [
        "# written by bench/bench.py",
        f"poll_interval: {poll_interval}",
        "staleness_limit: 24h",
        "aws:",
        f"  max_concurrent_requests: {concurrency}",
        f"  page_size: {page_size}",
        "reports:",
        f"  create: {'true' if create else 'false'}",
        f"  max_age: {max_age}",
        "references:",
        f"  enabled: {'true' if references else 'false'}",
        "targets:",
        "  - region: us-east-1",
        "    images:" if images else "    images: []",
    ]
    lines += [f"      - {i}" for i in images]
    return "\n".join(lines) + "\n"


class Exporter:
    def __init__(self, workdir, name, sim, config_text, extra=()):
        self.config = workdir / f"{name}.yml"
        self.config.write_text(config_text)
        self.log = workdir / f"{name}-exporter.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL_EC2=sim.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        argv = [str(EXPORTER[0]), f"--config.file={self.config}",
                "--web.listen-address=127.0.0.1:0", "--web.max-requests=0"] + list(extra)
        self.started = time.monotonic()
        self.proc = spawn(argv, self.log, env)
        addr = wait_for_line(self.log, r"msg=listening address=(127\.0\.0\.1:\d+)", self.proc, 60).group(1)
        self.base = f"http://{addr}"

    def polls(self):
        """The 'poll finished' log lines, as dicts."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if 'msg="poll finished"' in line:
                out.append(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line)))
        return out

    def wait_polls(self, n, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polls = self.polls()
            if len(polls) >= n:
                return polls
            if self.proc.poll() is not None:
                raise SystemExit(f"exporter exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise SystemExit(f"fewer than {n} polls after {timeout} s; see {self.log}")

    def metrics(self, gzip=False):
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        return http(self.base + "/metrics", headers=headers)[1]

    def rss(self):
        return status_kib(self.proc.pid, "VmRSS"), status_kib(self.proc.pid, "VmHWM")


def usage_series(text):
    return sum(1 for line in text.splitlines() if line.startswith(b"ami_usage_resources{"))


# --- load generators ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def wrk(url, connections, seconds, gzip):
    argv = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "--latency"]
    if gzip:
        argv += ["-H", "Accept-Encoding: gzip"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "errors": 0,
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return result


class Nginx:
    """nginx serving /metrics from a file: the physical limit of serving those bytes over HTTP."""

    def __init__(self, workdir, text, gzipped):
        self.dir = workdir / "nginx"
        (self.dir / "root").mkdir(parents=True, exist_ok=True)
        (self.dir / "root/metrics").write_bytes(text)
        (self.dir / "root/metrics.gz").write_bytes(gzipped)
        port = free_port()
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 2;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
user root;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=10;
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp;
    scgi_temp_path {self.dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {self.dir}/root;
        location = /metrics {{
            default_type "text/plain; version=0.0.4; charset=utf-8";
            gzip_static on;
        }}
    }}
}}
""")
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.proc = spawn(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e",
                           str(self.dir / "error.log")], self.dir / "stdout.log")
        self.url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if http(self.url)[1] == text:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"nginx did not serve the file: {(self.dir / 'error.log').read_text()}")
        _, served_gz = http(self.url, headers={"Accept-Encoding": "gzip"})
        if served_gz != text:  # urllib does not decompress: gzip_static must answer with the .gz bytes
            if served_gz != gzipped:
                raise SystemExit("nginx's gzip answer is not the exporter's gzip bytes")


# --- scenarios ----------------------------------------------------------------------------------

SIZES = {"0": (1, 0), "100k": (500, 100), "1M": (5000, 100)}  # images, accounts (x 2 resource types)


EXTRA_EXPORTER_ARGS = []
EXPORTER = [ROOT / "target/release/ami-usage-exporter"]  # --exporter replaces it


def start_sized(workdir, size, extra_exporter=(), poll_interval="1h"):
    images, accounts = SIZES[size]
    sim = Sim(workdir, size, images, accounts)
    ids = sim.image_ids()
    exp = Exporter(workdir, size, sim, exporter_config(ids, poll_interval=poll_interval),
                   list(extra_exporter) + EXTRA_EXPORTER_ARGS)
    exp.wait_polls(1)
    text = exp.metrics()
    expected = images * accounts * 2
    got = usage_series(text)
    if got != expected:
        raise SystemExit(f"{size}: the exporter serves {got} usage series, expected {expected}")
    return sim, exp, text


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def scenario_scrape(args, workdir, report):
    rows = []
    for size in args.sizes:
        if size == "0":
            continue
        sim, exp, text = start_sized(workdir, size)
        gz = exp.metrics(gzip=True)
        nginx = Nginx(workdir / size, text, gz)
        report.note(f"scrape {size}: body {len(text) / 1e6:.1f} MB plain, {len(gz) / 1e6:.2f} MB gzip")
        for connections in args.connections:
            for gzip in (False, True):
                runs = {"exporter": [], "nginx": []}
                for _ in range(args.rounds):  # alternate, so that both see the same machine
                    runs["exporter"].append(wrk(exp.base + "/metrics", connections, args.seconds, gzip))
                    runs["nginx"].append(wrk(nginx.url, connections, args.seconds, gzip))
                e, n = runs["exporter"], runs["nginx"]
                errors = sum(r["errors"] for r in e + n)
                rows.append([size, connections, "gzip" if gzip else "plain",
                             f"{median_of(e, 'rps'):.1f}", f"{median_of(n, 'rps'):.1f}",
                             f"{median_of(e, 'rps') / median_of(n, 'rps'):.2f}",
                             f"{median_of(e, 'p50'):.2f}", f"{median_of(n, 'p50'):.2f}",
                             f"{median_of(e, 'p99'):.2f}", f"{median_of(n, 'p99'):.2f}",
                             f"{median_of(e, 'p99') / max(median_of(n, 'p99'), 1e-3):.2f}", errors])
                print("  " + " | ".join(map(str, rows[-1])), flush=True)
        rss, hwm = exp.rss()
        report.note(f"scrape {size}: exporter RSS after the wrk runs {rss / 1024:.1f} MiB, peak {hwm / 1024:.1f} MiB")
        for p in (nginx.proc, exp.proc, sim.proc):
            stop(p)
    report.table("Scrape: wrk against the exporter and nginx serving the same bytes (medians of "
                 f"{args.rounds} alternating {args.seconds} s runs; req/s, latency in ms)",
                 ["series", "conns", "body", "exp req/s", "nginx req/s", "ratio", "exp p50", "nginx p50",
                  "exp p99", "nginx p99", "p99 ratio", "errors"], rows)


def diff(after, before):
    keys = sorted(set(after) | set(before))
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) - before.get(k, 0)}


def fmt_calls(calls):
    short = {"DescribeImageUsageReports": "list", "DescribeImageUsageReportEntries": "entries",
             "CreateImageUsageReport": "create", "DeleteImageUsageReport": "delete", "DescribeImages": "images",
             "DescribeImageReferences": "references"}
    return ", ".join(f"{short.get(k, k)} {v}" for k, v in calls.items()) or "none"


def scenario_cost(args, workdir, report):
    n_images, accounts = args.cost_images, 20
    entries_per_report = accounts * 2
    reports_per_call = IDS_PER_CALL
    pages = -(-reports_per_call * entries_per_report // ENTRIES_PER_PAGE)
    bound_list = -(-n_images // IDS_PER_CALL)
    bound_entries = -(-n_images // IDS_PER_CALL) * pages
    rows = []

    def restart(name, case, polls, references=False):
        """A restart: every image already has reports (3 available, plus an error report on every
        third); the calls of each of the first `polls` polls."""
        sim = Sim(workdir, name, n_images, accounts, reports_per_image=3)
        ids = sim.image_ids()
        before = sim.requests()  # the benchmark's own DescribeImages
        exp = Exporter(workdir, name, sim,
                       exporter_config(ids, poll_interval="5s", create=True, references=references))
        for k in range(1, polls + 1):
            exp.wait_polls(k)
            now = sim.requests()
            calls = diff(now, before)
            rows.append([case, "cold" if k == 1 else f"steady {k}", fmt_calls(calls), sum(calls.values())])
            before = now
        stop(exp.proc)
        stop(sim.proc)
        return ids

    ids = restart("cost-restart", "restart (3 reports/image exist)", 4)
    # The same with references counted: DescribeImageReferences, 10 images a call, in the first
    # poll (refresh_interval 1h), then nothing more.
    restart("cost-references", "restart, references.enabled", 2, references=True)

    # First deployment: no report exists; the first poll requests them, the next reads them.
    sim = Sim(workdir, "cost-first", n_images, accounts, reports_per_image=0)
    exp = Exporter(workdir, "cost-first", sim, exporter_config(ids, poll_interval="5s", create=True))
    before = {}
    for k in range(1, 5):
        exp.wait_polls(k)
        now = sim.requests()
        rows.append(["first deployment (no reports)", f"poll {k}", fmt_calls(diff(now, before)),
                     sum(diff(now, before).values())])
        before = now
    stop(exp.proc)
    stop(sim.proc)

    # Refreshes: max_age 20 s, so every image gets a new report every few polls; superseded
    # reports are deleted, so the listing stays one call per 200 images.
    sim = Sim(workdir, "cost-refresh", n_images, accounts, reports_per_image=0)
    exp = Exporter(workdir, "cost-refresh", sim,
                   exporter_config(ids, poll_interval="5s", create=True, max_age="20s"))
    before, listed = {}, []
    for k in range(1, args.refresh_polls + 1):
        exp.wait_polls(k, timeout=120)
        now = sim.requests()
        calls = diff(now, before)
        listed.append(calls.get("DescribeImageUsageReports", 0))
        if k == args.refresh_polls:
            counts = sim.report_counts()
            rows.append([f"refresh every 20 s, poll {k}", "steady", fmt_calls(calls), sum(calls.values())])
            report.note(f"cost refresh: after {k} polls the simulator holds {counts['reports']} reports "
                        f"({counts['by_state']}), at most {counts['max_per_image']} per image; "
                        f"list calls per poll: {listed}")
        before = now
    stop(exp.proc)
    stop(sim.proc)

    report.table(f"Poll cost: AWS calls per poll, {n_images} images, {accounts} accounts x 2 resource types "
                 f"(targets: steady list <= {bound_list}, no entry calls; cold entries <= {bound_entries})",
                 ["case", "poll", "calls by operation", "total"], rows)


def cpu_ms(pid):
    """User + system CPU time of a process so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def scenario_time(args, workdir, report):
    rows = []
    for concurrency in args.concurrency:
        for latency in (20, 0):
            name = f"time-{concurrency}-{latency}"
            faults = [{"fault": {"kind": "latency", "millis": latency}}] if latency else []
            sim = Sim(workdir, name, args.cost_images, 100, faults=faults)
            ids = sim.image_ids()
            before = sim.requests()
            sim_cpu = cpu_ms(sim.proc.pid)
            exp = Exporter(workdir, name, sim, exporter_config(ids, poll_interval="1h", concurrency=concurrency))
            poll = exp.wait_polls(1)[0]
            calls = sum(diff(sim.requests(), before).values())
            took = int(poll["duration_ms"])
            ideal = calls / concurrency * latency
            rows.append([latency, concurrency, calls, took, f"{ideal:.0f}" if latency else "-",
                         f"{took / ideal:.2f}" if latency else "-", poll["render_ms"],
                         f"{cpu_ms(exp.proc.pid):.0f}", f"{cpu_ms(sim.proc.pid) - sim_cpu:.0f}"])
            print("  " + " | ".join(map(str, rows[-1])), flush=True)
            stop(exp.proc)
            stop(sim.proc)
    report.table(f"Poll time: cold poll of {args.cost_images} images x 100 accounts x 2 types (a report each); "
                 "poll = the AWS part, ideal = calls / concurrency x latency, render = rendering and compressing "
                 "the exposition after it; CPU = user + system time of each process until then, on 2 cores",
                 ["latency ms", "concurrency", "calls", "poll ms", "ideal ms", "ratio", "render ms",
                  "exporter CPU ms", "simulator CPU ms"], rows)


def scenario_memory(args, workdir, report):
    rows = []
    base = None
    for size in args.sizes:
        sim, exp, text = start_sized(workdir, f"{size}", poll_interval="2s")
        series = usage_series(text)
        samples = [exp.rss()[0]]
        polls = [len(exp.polls())]
        # Two equal stretches of polling (every 2 s, each rendering the status part) under wrk
        # (plain and gzip): RSS must be flat across them, not grow with polls or scrapes.
        for _ in range(2):
            wrk(exp.base + "/metrics", 8, args.memory_seconds, gzip=False)
            wrk(exp.base + "/metrics", 8, args.memory_seconds, gzip=True)
            samples.append(exp.rss()[0])
            polls.append(len(exp.polls()))
        hwm = exp.rss()[1]
        if size == "0":
            base = hwm
        per_series = "" if not series or base is None else f"{(hwm - base) * 1024 / series:.0f}"
        rows.append([size, series, *(f"{kib / 1024:.1f} ({p})" for kib, p in zip(samples, polls)),
                     f"{hwm / 1024:.1f}", per_series, f"{len(text) / max(series, 1):.0f}"])
        print("  " + " | ".join(map(str, rows[-1])), flush=True)
        stop(exp.proc)
        stop(sim.proc)
    report.table("Memory: exporter RSS in MiB (polls so far) after the first poll and after each of two "
                 f"stretches of {2 * args.memory_seconds} s of polling every 2 s under wrk; peak = VmHWM",
                 ["series", "usage series", "RSS first poll", "RSS stretch 1", "RSS stretch 2", "peak",
                  "peak B/series over 0", "text B/series"], rows)


def targets_config(images, regions, poll_interval="1h", create=False, concurrency=4, extra=""):
    """One target per Region, each watching the same images (the simulator shows every Region
    the same data), so that N Regions of M images are N x M (Region, image) pairs."""
    lines = ["# written by bench/bench.py", f"poll_interval: {poll_interval}", "staleness_limit: 24h",
             "images:", "  facts: false", "aws:", f"  max_concurrent_requests: {concurrency}",
             "  max_concurrent_targets: 8", "reports:", f"  create: {'true' if create else 'false'}"]
    lines += extra.splitlines()
    lines.append("targets:")
    for region in regions:
        if images is None:
            # Discovery: the owner's images, found by DescribeImages (a small file for a large estate).
            lines += [f"  - region: {region}", "    discover: {}"]
        else:
            lines += [f"  - region: {region}", "    images:"] + [f"      - {i}" for i in images]
    return "\n".join(lines) + "\n"


def bench_regions(n):
    return [f"bench-region-{i}" for i in range(1, n + 1)]


def first_polls(exp, targets, timeout=900):
    """Waits for every target's first poll; returns (wall ms since start, the longest poll ms)."""
    polls = exp.wait_polls(targets, timeout)
    return (time.monotonic() - exp.started) * 1000, max(int(p["duration_ms"]) for p in polls[:targets])


def scenario_scale(args, workdir, report):
    scale_targets(args, workdir, report)
    scale_estate(args, workdir, report)
    scale_public(args, workdir, report)


def scale_targets(args, workdir, report):
    # Many targets: 50 Regions of 200 images, 20 ms per call; then the same with one Region hung.
    regions = bench_regions(50)
    rows = []
    for hung in (False, True):
        faults = [{"fault": {"kind": "latency", "millis": 20}}]
        if hung:
            faults.append({"region": regions[0], "fault": {"kind": "latency", "millis": 600000}})
        name = f"targets-{'hung' if hung else 'ok'}"
        sim = Sim(workdir, name, 200, 4, faults=faults)
        ids = sim.image_ids()
        before = sim.requests()
        exp = Exporter(workdir, name, sim, targets_config(ids, regions, poll_interval="30s"))
        healthy = len(regions) - (1 if hung else 0)
        wall, longest = first_polls(exp, healthy)
        calls = sum(diff(sim.requests(), before).values())
        ideal = calls / (8 * 4) * 20
        before = sim.requests()
        # The healthy targets' second polls (the hung one's first poll ends, failed, meanwhile).
        answering = [p for p in exp.wait_polls(2 * healthy + (1 if hung else 0)) if p.get("target") != regions[0] or not hung]
        second = answering[healthy:2 * healthy]
        steady_calls = sum(diff(sim.requests(), before).values())
        steady = max(int(p["duration_ms"]) for p in second)
        rows.append(["one Region hung" if hung else "all answer", healthy, calls, f"{wall:.0f}", f"{ideal:.0f}",
                     f"{wall / ideal:.2f}", longest, steady_calls, steady])
        print("  " + " | ".join(map(str, rows[-1])), flush=True)
        stop(exp.proc)
        stop(sim.proc)
    report.table("Many targets: 50 Regions x 200 images (4 accounts), 20 ms per call, 8 targets at once x 4 calls each; "
                 "cold = from start to every answering target's first poll; ideal = calls / 32 x 20 ms",
                 ["case", "targets done", "cold calls", "cold ms", "ideal ms", "ratio", "longest target poll ms",
                  "steady calls", "steady: longest target poll ms"], rows)



def scale_estate(args, workdir, report):
    # The estate: 10 Regions x 10,000 images = 100,000 (Region, image) pairs, 2 accounts each,
    # polled by 1, 2 and 4 shards side by side against one simulator.
    regions = bench_regions(10)
    rows = []
    sim = Sim(workdir, "estate", 10000, 2)
    for total in (1, 2, 4):
        before = sim.requests()
        # 10 x 10,000 IDs would be a 3 MB file, over the 1 MiB limit: the targets discover them.
        config = targets_config(None, regions, poll_interval="1h", concurrency=8)
        shards = [Exporter(workdir, f"estate-{total}-{i}", sim, config,
                           extra=[f"--shard={i}", f"--total-shards={total}"]) for i in range(total)]
        results = [first_polls(exp, len(regions), timeout=1800) for exp in shards]
        calls = sum(diff(sim.requests(), before).values())
        for i, exp in enumerate(shards):
            text = exp.metrics()
            rows.append([total, i, usage_series(text), f"{results[i][0]:.0f}", f"{exp.rss()[1] / 1024:.1f}"])
            print("  " + " | ".join(map(str, rows[-1])), flush=True)
        rows.append([total, "all", "", "", f"calls {calls}"])
        for exp in shards:
            stop(exp.proc)
    stop(sim.proc)
    report.table("Estate: 10 Regions x 10,000 images x 2 accounts x 2 types (100,000 Region-image pairs), "
                 "cold poll by 1, 2 and 4 shards at once against one simulator",
                 ["shards", "shard", "usage series", "cold ms (all its targets)", "peak RSS MiB"], rows)



def scale_public(args, workdir, report):
    # A public image: one image used by 50,000 accounts.
    rows = []
    sim = Sim(workdir, "public", 1, 50000)
    ids = sim.image_ids()
    for summed in (False, True):
        before = sim.requests()
        extra = "cardinality:\n  sum_accounts: true" if summed else ""
        exp = Exporter(workdir, f"public-{summed}", sim, targets_config(ids, ["us-east-1"], extra=extra))
        exp.wait_polls(1, timeout=900)
        calls = diff(sim.requests(), before)
        rows.append(["sum_accounts" if summed else "per account", calls.get("DescribeImageUsageReportEntries", 0),
                     usage_series(exp.metrics()), f"{exp.rss()[1] / 1024:.1f}"])
        print("  " + " | ".join(map(str, rows[-1])), flush=True)
        stop(exp.proc)
    stop(sim.proc)
    report.table("Public image: 1 image used by 50,000 accounts x 2 types (100,000 entries)",
                 ["series", "entry calls", "usage series", "peak RSS MiB"], rows)


def scenario_startup(args, workdir, report):
    exe = EXPORTER[0]
    sim = Sim(workdir, "startup", 5, 8)
    ids = sim.image_ids()
    config = workdir / "startup.yml"
    config.write_text(exporter_config(ids))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL_EC2=sim.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", BENCH_EXPORTER=str(exe),
               BENCH_CONFIG=str(config), BENCH_PORT=str(port))
    out = workdir / "hyperfine.json"
    subprocess.run(["hyperfine", "--warmup", "3", "--runs", str(args.startup_runs), "--export-json", str(out),
                    "-n", "exec to serving /metrics", f"{ROOT}/bench/startup.sh",
                    "-n", "exec of --version (process start and exit)", f"{exe} --version"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    stop(sim.proc)
    rows = [[r["command"], f"{r['median'] * 1e3:.1f}", f"{r['mean'] * 1e3:.1f}", f"{r['min'] * 1e3:.1f}",
             f"{r['max'] * 1e3:.1f}"] for r in results]
    size = exe.stat().st_size
    report.table(f"Start-up (hyperfine, {args.startup_runs} runs, ms)", ["command", "median", "mean", "min", "max"],
                 rows)
    report.note(f"binary: {exe} {size / 2**20:.1f} MiB")
    lto = ROOT / "target/release-lto/ami-usage-exporter"
    if lto.exists():
        report.note(f"binary with LTO: {lto.relative_to(ROOT)} {lto.stat().st_size / 2**20:.1f} MiB")


# --- output -------------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.parts = []

    def table(self, title, header, rows):
        lines = [f"### {title}", "", "| " + " | ".join(map(str, header)) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
        self.parts.append("\n".join(lines))
        print("\n" + self.parts[-1] + "\n", flush=True)

    def note(self, text):
        self.parts.append(f"- {text}")
        print(self.parts[-1], flush=True)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown CPU")
    mem = Path("/proc/meminfo").read_text().split()[1]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return (f"{os.cpu_count()} x {cpu}, {int(mem) // 1024} MiB, {os.uname().release}, {rustc}, "
            f"commit {commit}{' (with local changes)' if dirty else ''}, load average {load[0]:.1f} at start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    everything = ["scrape", "cost", "time", "memory", "startup", "scale"]
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(everything)} (default: all)")
    parser.add_argument("--sizes", nargs="+", default=["0", "100k", "1M"], choices=list(SIZES))
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server and setting (median)")
    parser.add_argument("--seconds", type=int, default=5, help="duration of one wrk run")
    parser.add_argument("--cost-images", type=int, default=1000)
    parser.add_argument("--refresh-polls", type=int, default=12)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--memory-seconds", type=int, default=20)
    parser.add_argument("--startup-runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, configs)")
    parser.add_argument("--exporter", help="another exporter binary (e.g. an older build, to compare)")
    parser.add_argument("--exporter-arg", action="append", default=[],
                        help="extra exporter flag for the scrape and memory scenarios (repeatable)")
    args = parser.parse_args()
    for name in args.scenarios:
        if name not in everything:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(everything)}")
    args.scenarios = args.scenarios or everything
    EXTRA_EXPORTER_ARGS.extend(args.exporter_arg)
    if args.exporter:
        EXPORTER[0] = Path(args.exporter).resolve()

    for tool in ("wrk", "nginx", "hyperfine"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run bench/run.sh, which installs it")
    for binary in ("ami-usage-exporter", "ec2-sim"):
        if not (ROOT / "target/release" / binary).exists():
            raise SystemExit(f"target/release/{binary} is missing: run bench/run.sh, which builds it")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="ami-bench."))
    report = Report()
    report.note(f"machine: {machine()}")
    report.note(f"command: bench/run.sh {' '.join(sys.argv[1:])}".rstrip())
    try:
        for name in args.scenarios:
            print(f"== {name}", flush=True)
            globals()[f"scenario_{name}"](args, workdir, report)
    finally:
        stop_all()
        if args.keep:
            print(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n\n" + "\n\n".join(report.parts))


if __name__ == "__main__":
    main()
