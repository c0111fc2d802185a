"""Messages per second through real Dramatiq workers, with and without JobLinking.

    .venv/bin/python bench/linking_benchmark.py [--noop 20000] [--io 4000] [--rounds 3]
        [--log-lines all,finished,none]

For each actor (a no-op and a 20 ms sleep), each round runs every mode one
after the other (plain Dramatiq, then JobLinking with each choice of per-job
log lines), so a machine that gets busier slows every mode alike.  A run
fills the Redis queue, starts ``dramatiq`` with 2 processes x 8 threads and
times from the moment both processes are ready until the queue is empty.
With linking it then waits until every row has reached PostgreSQL (and checks
that every message has exactly one ``success`` row) before reading the CPU
used, so the drain is paid for in the figures.

Printed per round and as the median of the rounds: messages/s, the ratio
linked / plain, CPU per message of the workers, of PostgreSQL (only the
benchmark's own cluster, from /proc) and of Redis, and PostgreSQL commits per
message (``pg_stat_database.xact_commit``), and the producer's sends per second
(timed on their own: with linking, each send appends the job's queued row).

``--modes`` runs other modes instead, for both actors, against the first
one: ``linked`` (all lines; OpenTelemetry installed but not configured),
``linked-no-otel`` (its imports fail, as without the otel extra), ``traced``
(spans exported over OTLP/HTTP to a local receiver) and ``metered``
(Prometheus metrics on), e.g. ``--modes linked-no-otel,linked,traced,metered --io 0``.

Point it at your own services: BENCH_POSTGRES_ADMIN_URL (a superuser URL,
default postgresql://root@127.0.0.1:5432/postgres) and BENCH_REDIS_URL
(default redis://127.0.0.1:6379/13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg2
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PG_ADMIN = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
sys.path.insert(0, ROOT)

from bench import cpu_usage, postgres_admin  # noqa: E402


def admin(sql: str, fetch: bool = False):
    return postgres_admin.admin(PG_ADMIN, sql, fetch=fetch)


# JobLinking with its per-job log lines (JOB_LOG_LINES): all, finished, none; and the observability modes.
MODES = ("plain", "all", "finished", "none", "linked", "linked-no-otel", "traced", "metered")


def mode_env(mode: str) -> dict:
    """What bench/linking_app.py reads to build the broker of ``mode``."""
    env = {"BENCH_LINKING": "0" if mode == "plain" else "1", "BENCH_METRICS": "1" if mode == "metered" else "0",
           "BENCH_NO_OTEL": "1" if mode == "linked-no-otel" else "0"}
    if mode in ("all", "finished", "none"):
        env["JOB_LOG_LINES"] = mode
    if mode == "traced":
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_sink(), OTEL_BSP_SCHEDULE_DELAY="500")
    if mode == "metered":
        env.update(PROMETHEUS_PORT=str(free_port()), dramatiq_prom_db=tempfile.mkdtemp(prefix="bench-prom-"))
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_sink_url = None


def otlp_sink() -> str:
    """A local OTLP/HTTP receiver that accepts and drops every export (started once)."""
    global _sink_url
    if _sink_url is None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Sink(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _sink_url = f"http://127.0.0.1:{server.server_port}"
    return _sink_url


def commits(db_name: str) -> int:
    return admin(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db_name}'", fetch=True)[0][0]


def own_processes(worker_pid: int) -> dict[str, int]:
    conn = psycopg2.connect(PG_ADMIN)
    try:
        pg = cpu_usage.postgres_pid(conn)
    finally:
        conn.close()
    return {"postgres": pg, "redis": cpu_usage.redis_pid(redis.Redis.from_url(REDIS_URL)), "workers": worker_pid}


def run_once(actor: str, count: int, mode: str, db_url: str, db_name: str) -> dict[str, float]:
    """One run: msg/s, CPU microseconds per message by group, commits per message."""
    linking = mode != "plain"
    # INFO: the benchmark waits for the workers' "ready for action" lines (and production logs at INFO).
    env = dict(os.environ, REDIS_URL=REDIS_URL, DATABASE_URL=db_url, PYTHONPATH=ROOT, LOG_LEVEL="INFO",
               **mode_env(mode))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    if linking:
        admin_db = psycopg2.connect(db_url)
        admin_db.autocommit = True
        with admin_db.cursor() as cur:
            cur.execute("DELETE FROM enrichment_logs")
        admin_db.close()
    # Fill the queue before any worker exists, so enqueue speed is not measured.
    # The producer's side is timed on its own: with linking, each send writes the job's queued row
    # (outside a job, committed before send returns).
    fill = (
        "import sys, time; sys.path.insert(0, %r); import bench.linking_app as app\n"
        "msgs = [app.%s.message() for _ in range(%d)]\n"
        "started = time.perf_counter()\n"
        "for m in msgs: app.broker.enqueue(m)\n"
        "print(time.perf_counter() - started)\n"
    ) % (ROOT, actor, count)
    filled = subprocess.run([sys.executable, "-c", fill], env=env, check=True, capture_output=True, text=True)
    sends_per_second = count / float(filled.stdout.strip().splitlines()[-1])
    queue_key = "dramatiq:bench.msgs"
    assert r.hlen(queue_key) == count
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "bench.linking_app", "--processes", "2", "--threads", "8",
         "--queues", "bench", "--skip-logging"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )
    # The worker's log goes to a file: a pipe nobody reads would fill and block it.
    ready_by = time.monotonic() + 60
    while open(log.name).read().count("ready for action") < 2:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited before it was ready; see {log.name}")
        if time.monotonic() > ready_by:
            worker.kill()
            raise RuntimeError(f"workers not ready after 60 s; see {log.name}")
        time.sleep(0.01)
    own = own_processes(worker.pid)
    cpu_before = cpu_usage.snapshot(own)
    commits_before = commits(db_name)
    started = time.perf_counter()
    while r.hlen(queue_key) > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if linking:
        conn = psycopg2.connect(db_url)
        conn.autocommit = True
        deadline = time.monotonic() + 120
        with conn.cursor() as cur:
            while True:  # the rows still on their way to PostgreSQL are part of the cost
                cur.execute("SELECT count(*) FILTER (WHERE status = 'success'), count(*) FROM enrichment_logs")
                done, total = cur.fetchone()
                if done == count or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        conn.close()
        assert done == total == count, f"expected {count} success rows, found {done} of {total}"
    cpu = cpu_usage.used_between(cpu_before, cpu_usage.snapshot(own))
    commit_count = commits(db_name) - commits_before
    worker.terminate()
    worker.wait(60)
    os.unlink(log.name)
    result = {"msg/s": count / elapsed, "commits/msg": commit_count / count, "sends/s": sends_per_second}
    result.update({f"{group} us/msg": seconds / count * 1e6 for group, seconds in cpu.items()})
    return result


COLUMNS = ("msg/s", "ratio", "workers us/msg", "postgres us/msg", "redis us/msg", "commits/msg", "sends/s")


def show(label: str, result: dict[str, float]) -> None:
    cells = []
    for column in COLUMNS:
        value = result.get(column)
        cells.append(f"{'':>15}" if value is None else
                     f"{value:>14.2f}x" if column == "ratio" else
                     f"{value:>15.2f}" if column == "commits/msg" else f"{value:>15.0f}")
    print(f"{label:<28}" + "".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", type=int, default=20000, help="messages for the no-op actor")
    parser.add_argument("--io", type=int, default=4000, help="messages for the 20 ms actor")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of interleaved modes (default 3)")
    parser.add_argument("--log-lines", default="all,finished,none",
                        help="JobLinking's per-job log line choices to run with the no-op actor "
                             "(comma-separated; 'linked' for a code base without the choice)")
    parser.add_argument("--modes", help=f"instead: these modes for both actors, interleaved (of {', '.join(MODES)}); "
                                        "linked: all lines, OpenTelemetry installed but not configured; "
                                        "linked-no-otel: its imports fail; traced: spans to a local OTLP receiver; "
                                        "metered: Prometheus metrics on")
    args = parser.parse_args()
    if args.modes:
        unknown = [m for m in args.modes.split(",") if m not in MODES]
        if unknown:
            parser.error(f"unknown mode(s) {', '.join(unknown)}: expected some of {', '.join(MODES)}")

    from migrations import apply_migrations
    from models import bind_database

    name = f"enrich_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    line_modes = [m for m in args.log_lines.split(",") if m]
    try:
        db = bind_database(db_url)
        apply_migrations(db)
        db.close_all()
        print(f"{'actor / mode / round':<28}" + "".join(f"{c:>15}" for c in COLUMNS))
        chosen = args.modes.split(",") if args.modes else None
        for actor, count, modes in (("noop", args.noop, chosen or ["plain", *line_modes]),
                                    ("io_20ms", args.io, chosen or ["plain", line_modes[0]])):
            if not count:
                continue
            rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for round_no in range(1, args.rounds + 1):
                for mode in modes:
                    result = run_once(actor, count, mode, db_url, name)
                    if mode != modes[0]:
                        result["ratio"] = result["msg/s"] / rounds[modes[0]][-1]["msg/s"]
                    rounds[mode].append(result)
                    show(f"{actor} {mode} #{round_no}", result)
            for mode in modes:
                median = {key: statistics.median(r[key] for r in rounds[mode]) for key in rounds[mode][0]}
                show(f"{actor} {mode} MEDIAN", median)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
