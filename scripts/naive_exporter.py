#!/usr/bin/env python3
"""The naive baseline of scripts/bench.sh: a GitLab CI jobs exporter that re-reads every
project's job list every cycle.

Python standard library only (urllib, threading, json, http.server). It finds the projects of one
group (GET /groups/:id/projects, per_page=100, every page), then every cycle reads each project's
GET /projects/:id/jobs?per_page=100 from the first page: on a project's first read, back to the
backfill window; afterwards while a full page still shows a job it has not seen completed (at
most --max-pages). Completed jobs are counted once, by id, in dicts: a counter and two histograms
per (project, ref, stage, job, status[, failure_reason]), as the real exporter keeps them. It
serves /metrics (text format, built on each scrape), /readyz (200 after the first full cycle)
and /healthz. No rate limit beyond --concurrency threads and the cycle interval.

    naive_exporter.py --gitlab http://127.0.0.1:PORT --token T --group bench --listen 127.0.0.1:PORT
"""

import argparse
import json
import queue
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FINAL = {"success", "failed", "canceled", "skipped"}
DURATION_BUCKETS = [5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 10800, 14400]
QUEUED_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 2700, 3600, 7200]


def ts(s):
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self, buckets):
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.n = 0


class Exporter:
    def __init__(self, args):
        self.args = args
        self.api = args.gitlab.rstrip("/") + "/api/v4"
        self.lock = threading.Lock()
        self.jobs_total = {}
        self.durations = {}
        self.queued = {}
        self.completed = set()  # job ids counted (or too old to count)
        self.first_read_done = set()  # project ids read back to the backfill window
        self.started = time.time()
        self.ready = False
        self.requests = 0
        self.errors = 0

    def get(self, path, params):
        url = f"{self.api}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers={"PRIVATE-TOKEN": self.args.token})
        with self.lock:
            self.requests += 1
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read()), resp.headers

    def discover(self):
        group = urllib.parse.quote(self.args.group, safe="")
        projects, page = [], 1
        while True:
            rows, headers = self.get(f"/groups/{group}/projects",
                                     {"per_page": 100, "page": page, "include_subgroups": "true"})
            projects += [(p["id"], p["path_with_namespace"]) for p in rows]
            nxt = headers.get("x-next-page")
            if not nxt:
                return projects
            page = int(nxt)

    def observe(self, path, job, cutoff):
        """Counts a completed job once; a job finished before the backfill cutoff is only noted."""
        jid = job["id"]
        with self.lock:
            if jid in self.completed:
                return
            self.completed.add(jid)
            finished = ts(job.get("finished_at")) or ts(job.get("created_at")) or 0
            if finished < cutoff:
                return
            status = job["status"]
            reason = (job.get("failure_reason") or "unknown_failure") if status == "failed" else ""
            base = (path, job.get("ref") or "", job.get("stage") or "", job.get("name") or "")
            key = base + (status, reason)
            self.jobs_total[key] = self.jobs_total.get(key, 0) + 1
            if job.get("duration") is not None:
                h = self.durations.setdefault(base + (status,), Histogram(DURATION_BUCKETS))
                add(h, DURATION_BUCKETS, job["duration"])
            if job.get("queued_duration") is not None and job.get("started_at"):
                h = self.queued.setdefault(base, Histogram(QUEUED_BUCKETS))
                add(h, QUEUED_BUCKETS, job["queued_duration"])

    def poll(self, pid, path):
        first = pid not in self.first_read_done
        cutoff = self.started - self.args.backfill
        for page in range(1, 10_000):
            rows, _ = self.get(f"/projects/{pid}/jobs", {"per_page": 100, "page": page})
            unseen = False
            for job in rows:
                if job["status"] in FINAL:
                    if job["id"] not in self.completed:
                        unseen = True
                    self.observe(path, job, cutoff)
                else:
                    unseen = True
            if len(rows) < 100:
                break
            if first:
                oldest = min((ts(j.get("created_at")) or 0) for j in rows)
                if oldest < cutoff:
                    break
            elif not unseen or page >= self.args.max_pages:
                break
        self.first_read_done.add(pid)

    def cycle(self, projects):
        work = queue.Queue()
        for p in projects:
            work.put(p)

        def worker():
            while True:
                try:
                    pid, path = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self.poll(pid, path)
                except Exception as e:  # noqa: BLE001 - the naive baseline logs and goes on
                    with self.lock:
                        self.errors += 1
                    print(f"naive: project {pid}: {e}", file=sys.stderr)

        threads = [threading.Thread(target=worker) for _ in range(self.args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def run(self):
        projects = self.discover()
        print(f"naive: {len(projects)} projects found", file=sys.stderr)
        while True:
            began = time.time()
            self.cycle(projects)
            self.ready = True
            time.sleep(max(0.0, self.args.interval - (time.time() - began)))

    def render(self):
        out = []
        with self.lock:
            out.append("# TYPE gitlab_ci_jobs_total counter")
            for (p, r, s, j, st, fr), v in self.jobs_total.items():
                out.append(f'gitlab_ci_jobs_total{{project="{esc(p)}",ref="{esc(r)}",stage="{esc(s)}",'
                           f'job="{esc(j)}",status="{st}",failure_reason="{fr}"}} {v}')
            for name, hists, buckets in (("gitlab_ci_job_duration_seconds", self.durations, DURATION_BUCKETS),
                                         ("gitlab_ci_job_queued_duration_seconds", self.queued, QUEUED_BUCKETS)):
                out.append(f"# TYPE {name} histogram")
                for key, h in hists.items():
                    labels = f'project="{esc(key[0])}",ref="{esc(key[1])}",stage="{esc(key[2])}",job="{esc(key[3])}"'
                    if len(key) > 4:
                        labels += f',status="{key[4]}"'
                    cum = 0
                    for le, c in zip(buckets, h.counts):
                        cum += c
                        out.append(f'{name}_bucket{{{labels},le="{le}"}} {cum}')
                    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {h.n}')
                    out.append(f"{name}_sum{{{labels}}} {h.total}")
                    out.append(f"{name}_count{{{labels}}} {h.n}")
            out.append(f"naive_exporter_requests_total {self.requests}")
            out.append(f"naive_exporter_errors_total {self.errors}")
        return ("\n".join(out) + "\n").encode()


def add(h, buckets, value):
    h.n += 1
    h.total += value
    for i, le in enumerate(buckets):
        if value <= le:
            h.counts[i] += 1
            break


def esc(s):
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve(exporter, listen):
    host, port = listen.rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body, status = exporter.render(), 200
            elif self.path == "/readyz":
                body, status = (b"ready\n", 200) if exporter.ready else (b"not ready\n", 503)
            elif self.path == "/healthz":
                body, status = b"ok\n", 200
            else:
                body, status = b"not found\n", 404
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gitlab", required=True, help="base URL, without /api/v4")
    ap.add_argument("--token", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--listen", default="127.0.0.1:39199")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between cycle starts")
    ap.add_argument("--backfill", type=float, default=3600.0, help="seconds")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-pages", type=int, default=10, help="pages per project after its first read")
    args = ap.parse_args()
    exporter = Exporter(args)
    serve(exporter, args.listen)
    exporter.run()


if __name__ == "__main__":
    main()
