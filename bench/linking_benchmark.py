"""Messages per second through real Dramatiq workers, with and without JobLinking, and what each job costs.

    .venv/bin/python bench/linking_benchmark.py [--noop 20000] [--io 4000] [--rounds 3]
        [--modes plain,library,project] [--profile]

For each actor (a no-op and a 20 ms sleep), each round runs every mode one
after the other, so a machine that gets busier slows every mode alike; the
first mode is the reference of the ratios.  By default: plain Dramatiq,
``library`` (JobLinking as docs/library.md adds it to a user's RedisBroker,
Dramatiq's own stdlib logging at INFO, structlog rendering into it:
bench/library_app.py) and ``project`` (the product's own wiring, as
``dramatiq workers.worker`` runs it: bench/project_app.py).  ``django`` adds
django-dramatiq 0.15's AdminMiddleware as the peer reference (a bench-only
install: pip install "django-dramatiq==0.15.*").

A run fills the Redis queue with one producer thread (timed: sends/s), starts
``dramatiq`` with 2 processes x 8 threads and times from the moment both
processes are ready until the queue is empty (msg/s) and until every row is
final in the database (e2e msg/s; it checks one final row per message).
A send appends its job's queued row to the journal: while the queue fills
(no worker yet), a drainer process of the mode's broker applies them.
Printed per round and as the median of the rounds, per message: CPU of the
workers (without the drainer threads), of JobLinking's drainer and sweeper
threads and of that fill-time drainer process, of PostgreSQL and Redis (the benchmark's own servers, from /proc,
the sends included) and of the producer, and their sum; row inserts and
updates (pg_stat_user_tables) and commits (pg_stat_database); and the p95
row-visibility lag from the hooks: from each send's return to the commit of
its queued row, and from the end hook (the row's completed_at) to the commit
of its final row (both need track_commit_timestamp = on on the cluster).

``--profile`` also samples the workers with py-spy (pip install py-spy) and
prints where their CPU per job goes (bench/cpu_profile.py).  ``--log-lines
all,finished,none`` runs the earlier comparison of the per-job log lines
instead; the observability modes: ``linked`` (all lines; OpenTelemetry
installed but not configured), ``linked-no-otel`` (its imports fail, as
without the otel extra), ``traced`` (spans exported over OTLP/HTTP to a local
receiver) and ``metered`` (Prometheus metrics on), e.g. ``--modes
linked-no-otel,linked,traced,metered --io 0``.

Point it at your own services: BENCH_POSTGRES_ADMIN_URL (a superuser URL,
default postgresql://root@127.0.0.1:5432/postgres) and BENCH_REDIS_URL
(default redis://127.0.0.1:6379/13).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

from bench import cpu_profile, cpu_usage, postgres_admin  # noqa: E402


def admin(sql: str, fetch: bool = False):
    return postgres_admin.admin(PG_ADMIN, sql, fetch=fetch)


# JobLinking with its per-job log lines (JOB_LOG_LINES): all, finished, failures, none; and the observability modes.
MODES = ("plain", "all", "finished", "failures", "none", "linked", "linked-no-otel", "traced", "metered", "library", "project",
         "django")
COMMIT_TIMESTAMPS = False  # whether the cluster records commit times (track_commit_timestamp): the lags need them


def mode_env(mode: str) -> dict:
    """What bench/linking_app.py reads to build the broker of ``mode``."""
    env = {"BENCH_LINKING": "0" if mode == "plain" else "1", "BENCH_METRICS": "1" if mode == "metered" else "0",
           "BENCH_NO_OTEL": "1" if mode == "linked-no-otel" else "0"}
    if mode in ("all", "finished", "failures", "none"):
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


class Setup:
    """What a mode runs: its broker module, its row table and what a final row says there."""

    def __init__(self, mode: str):
        self.module = {"library": "bench.library_app", "project": "bench.project_app",
                       "django": "bench.django_app"}.get(mode, "bench.linking_app")
        self.rows = mode != "plain"
        self.django = mode == "django"
        self.table, self.key = ("django_dramatiq_task", "id::text") if self.django else ("enrichment_logs", "job_id")
        self.done = "status = 'done'" if self.django else "status = 'success'"
        # When the row's last write was asked for (the end hook), to compare with its commit.
        self.ended_at = "updated_at" if self.django else "completed_at AT TIME ZONE 'UTC'"
        # Dramatiq's own stdlib logging for a user's app; the project's JSON logging replaces it.
        self.dramatiq_logging = mode in ("library", "django")


def _sql(db_url: str, sql: str, params=None):
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def row_writes(db_url: str, setup: Setup) -> tuple[int, int]:
    """(n_tup_ins, n_tup_upd) of the mode's row table, as PostgreSQL's statistics have them."""
    found = _sql(db_url, "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", (setup.table,))
    return found[0] if found else (0, 0)


def wait_for(what: str, check, seconds: float = 120):
    """Poll ``check`` until it returns something true; RuntimeError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {seconds:.0f} s")
        time.sleep(0.02)
    return result


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else float("nan"))


def start_drainer(setup: Setup, env: dict):
    """A job-log drainer process on the mode's broker (as ``enrich drain``), or None for a mode without one."""
    if not setup.rows or setup.django:
        return None
    code = ("import signal, sys; sys.path.insert(0, %r); import %s as app\n"
            "from workers.broker import job_log\n"
            "log = job_log(app.broker)\n"
            "signal.signal(signal.SIGTERM, lambda *_: log.request_stop())\n"
            "log.drainer; print('ready', flush=True)\n"
            "log.drain_until_stopped()\n") % (ROOT, setup.module)
    drainer = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if drainer.stdout.readline().strip() != "ready":  # imported and connected: the sends' lags start now
        raise RuntimeError("the fill-time drainer process did not start")
    drainer.cpu_at_start = cpu_usage.snapshot({"workers": drainer.pid})[drainer.pid][1]  # its imports: not a job's
    return drainer


def stop_drainer(drainer) -> float:
    """Stop a drainer process; the CPU seconds it used since it was ready."""
    if drainer is None:
        return 0.0
    drainer.terminate()
    _, status, usage = os.wait4(drainer.pid, 0)
    drainer.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime - drainer.cpu_at_start


def run_once(actor: str, count: int, mode: str, db_url: str, db_name: str, profile: bool = False) -> dict[str, float]:
    """One run: msg/s to an empty queue and to every row final, CPU per message by group, row writes, lags."""
    setup = Setup(mode)
    thread_dir = tempfile.mkdtemp(prefix="bench-threads-")
    # INFO: the benchmark waits for the workers' "ready for action" lines (and production logs at INFO).
    env = dict(os.environ, REDIS_URL=REDIS_URL, DATABASE_URL=db_url, PYTHONPATH=ROOT, LOG_LEVEL="INFO",
               BENCH_THREAD_DIR=thread_dir, **mode_env(mode))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    if setup.rows:
        _sql(db_url, f"DELETE FROM {setup.table}")
    writes_before = row_writes(db_url, setup)
    own = own_processes(os.getpid())
    fill_before = cpu_usage.snapshot(own)
    # Fill the queue before any worker exists, so enqueue speed is not measured.
    # The producer's side is timed on its own: with rows, each send writes the job's queued row.
    # Each send's return time is kept, to measure when its row became visible in the database.
    sent_file = tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False).name
    fill = (
        "import json, sys, time; sys.path.insert(0, %r); import %s as app\n"
        "msgs = [app.%s.message() for _ in range(%d)]\n"
        "sent = []\n"
        "cpu, started = time.process_time(), time.perf_counter()\n"
        "for m in msgs: app.broker.enqueue(m); sent.append(time.time())\n"
        "print(time.perf_counter() - started, time.process_time() - cpu)\n"
        "json.dump(dict(zip((m.message_id for m in msgs), sent)), open(%r, 'w'))\n"
    ) % (ROOT, setup.module, actor, count, sent_file)
    # A send appends its queued row to the journal: with no worker up yet, a drainer process applies
    # them (as the workers' drainers would); its CPU counts with the drainers'.
    fill_drainer = start_drainer(setup, env)
    filled = subprocess.run([sys.executable, "-c", fill], env=env, check=True, capture_output=True, text=True)
    fill_seconds, producer_cpu = map(float, filled.stdout.strip().splitlines()[-1].split())
    queue_key = "dramatiq:bench.msgs"
    assert r.hlen(queue_key) == count
    send_lags = []
    if setup.rows:
        # Each queued row's commit (track_commit_timestamp) against the moment its send returned.
        sent_at = json.load(open(sent_file))
        try:
            wait_for("the queued rows", lambda: _sql(db_url, f"SELECT count(*) FROM {setup.table}")[0][0] >= count, 30)
        except RuntimeError as exc:
            print(f"  ({exc}: the send lag counts only the rows already visible)", flush=True)
    fill_drainer_cpu = stop_drainer(fill_drainer)
    fill_cpu = cpu_usage.used_between(fill_before, cpu_usage.snapshot(own))
    if setup.rows:
        rows = _sql(db_url, f"SELECT {setup.key}, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
                            f"FROM {setup.table}") if COMMIT_TIMESTAMPS else []
        send_lags = [(float(committed) - sent_at[key]) * 1000 for key, committed in rows if committed and key in sent_at]
    os.unlink(sent_file)
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    command = [sys.executable, "-m", "dramatiq", setup.module, "--processes", "2", "--threads", "8",
               "--queues", "bench"]
    worker = subprocess.Popen(command + ([] if setup.dramatiq_logging else ["--skip-logging"]),
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    # The worker's log goes to a file: a pipe nobody reads would fill and block it.
    try:
        wait_for("the workers' 'ready for action'", lambda: worker.poll() is not None
                 or open(log.name).read().count("ready for action") >= 2, 60)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited before it was ready; see {log.name}")
        if mode not in ("plain", "django"):  # JobLinking's drainer threads, written at boot by bench.thread_ids
            wait_for("the drainers' thread ids", lambda: len(os.listdir(thread_dir)) >= 2, 60)
    except RuntimeError:
        worker.kill()
        raise
    job_log_threads = {int(pid): [int(t) for t in open(os.path.join(thread_dir, pid)).read().split()]
                       for pid in os.listdir(thread_dir)}
    own = own_processes(worker.pid)
    cpu_before = cpu_usage.snapshot(own)
    drainers_before = cpu_usage.thread_seconds(job_log_threads)
    commits_before = commits(db_name)
    recorder = cpu_profile.start(worker.pid, log.name + ".spy") if profile else None
    started = time.perf_counter()
    while r.hlen(queue_key) > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if setup.rows:  # the rows still on their way to PostgreSQL are part of the cost
        wait_for(f"{count} final rows", lambda: _sql(
            db_url, f"SELECT count(*) FILTER (WHERE {setup.done}) >= %s FROM {setup.table}", (count,))[0][0])
    end_to_end = time.perf_counter() - started
    cpu = cpu_usage.used_between(cpu_before, cpu_usage.snapshot(own))
    drainers = cpu_usage.thread_seconds(job_log_threads) - drainers_before
    if recorder is not None:
        cpu_profile.stop(recorder)
    commit_count = commits(db_name) - commits_before
    worker.terminate()
    worker.wait(60)
    result = {"msg/s": count / elapsed, "e2e msg/s": count / end_to_end, "commits/msg": commit_count / count,
              "sends/s": count / fill_seconds}
    if setup.rows:
        done, total = _sql(db_url, f"SELECT count(*) FILTER (WHERE {setup.done}), count(*) FROM {setup.table}")[0]
        assert done == total == count, f"expected {count} final rows, found {done} of {total}"
        if COMMIT_TIMESTAMPS:
            end_lags = [row[0] * 1000 for row in _sql(
                db_url, f"SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - {setup.ended_at})::float8 "
                        f"FROM {setup.table}")]
            result.update({"send lag p95 ms": p95(send_lags), "end lag p95 ms": p95(end_lags)})
        # The statistics of a backend reach pg_stat_user_tables when it exits: wait for the workers' to go.
        wait_for("the workers' database connections to close", lambda: _sql(
            db_url, "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()")[0][0], 60)
        inserts, updates = (after - before for after, before in zip(row_writes(db_url, setup), writes_before))
        result.update({"ins/msg": inserts / count, "upd/msg": updates / count})
    per_msg = lambda seconds: seconds / count * 1e6  # noqa: E731
    result.update({"workers us/msg": per_msg(cpu["workers"] - drainers),
                   "drainers us/msg": per_msg(drainers + fill_drainer_cpu),
                   "postgres us/msg": per_msg(cpu["postgres"] + fill_cpu["postgres"]),
                   "redis us/msg": per_msg(cpu["redis"] + fill_cpu["redis"]), "producer us/msg": per_msg(producer_cpu)})
    result["sum us/msg"] = sum(result[f"{group} us/msg"] for group in ("workers", "drainers", "postgres", "redis",
                                                                       "producer"))
    if recorder is not None:
        parts = cpu_profile.per_job(log.name + ".spy", per_msg(cpu["workers"]))
        result.update({f"profile {part}": us for part, us in parts.items()})
        print(f"  (py-spy's raw stacks of this run: {log.name}.spy)", flush=True)
    os.unlink(log.name)
    shutil.rmtree(thread_dir, ignore_errors=True)
    return result


COLUMNS = ("msg/s", "ratio", "e2e msg/s", "workers us/msg", "drainers us/msg", "postgres us/msg", "redis us/msg",
           "producer us/msg", "sum us/msg", "ins/msg", "upd/msg", "commits/msg", "sends/s", "send lag p95 ms",
           "end lag p95 ms")
HEADINGS = ("msg/s", "ratio", "e2e/s", "wrk us", "drain us", "pg us", "redis us", "prod us", "sum us", "ins/job",
            "upd/job", "commit/job", "sends/s", "send p95ms", "end p95ms")
FRACTIONS = ("ins/msg", "upd/msg", "commits/msg", "send lag p95 ms", "end lag p95 ms")


def show(label: str, result: dict[str, float]) -> None:
    cells = []
    for column in COLUMNS:
        value = result.get(column)
        cells.append(f"{'':>11}" if value is None else
                     f"{value:>10.2f}x" if column == "ratio" else
                     f"{value:>11.2f}" if column in FRACTIONS else f"{value:>11.0f}")
    print(f"{label:<24}" + "".join(cells), flush=True)


def show_profile(mode: str, median: dict[str, float]) -> None:
    """The per-job table of where a worker's CPU went in ``mode`` (median of the rounds)."""
    parts = {key.removeprefix("profile "): us for key, us in median.items() if key.startswith("profile ")}
    if not parts:
        return
    print(f"  worker CPU per job by part, {mode} (py-spy samples scaled to the measured CPU; median of rounds)")
    for part, us in parts.items():
        if us >= 0.5:
            print(f"    {part:<34}{us:>8.0f} us")


def main() -> None:
    global COMMIT_TIMESTAMPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", type=int, default=20000, help="messages for the no-op actor")
    parser.add_argument("--io", type=int, default=4000, help="messages for the 20 ms actor")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of interleaved modes (default 3)")
    parser.add_argument("--log-lines",
                        help="instead: the project's setup with each of these choices of JobLinking's per-job "
                             "log lines (of all, finished, failures, none; 'linked' for a code base without the choice) "
                             "against plain Dramatiq, the no-op actor with all of them, the 20 ms one with the first")
    parser.add_argument("--modes", default="plain,library,project",
                        help=f"the modes for both actors, interleaved, against the first (of {', '.join(MODES)}; "
                             "default plain,library,project); library: JobLinking as docs/library.md adds it, "
                             "with Dramatiq's stdlib logging; project: the product's own wiring (workers.worker); "
                             "django: django-dramatiq's AdminMiddleware (pip install 'django-dramatiq==0.15.*'); "
                             "linked: all lines, OpenTelemetry installed but not configured; "
                             "linked-no-otel: its imports fail; traced: spans to a local OTLP receiver; "
                             "metered: Prometheus metrics on")
    parser.add_argument("--profile", action="store_true",
                        help="also sample the workers with py-spy (pip install py-spy) and print where their CPU "
                             "per job goes (the hooks, building the row, the journal append, the drainer...)")
    args = parser.parse_args()
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}: expected some of {', '.join(MODES)}")

    from migrations import apply_migrations
    from models import bind_database

    COMMIT_TIMESTAMPS = admin("SHOW track_commit_timestamp", fetch=True)[0][0] == "on"
    if not COMMIT_TIMESTAMPS:
        print("track_commit_timestamp is off on this cluster: no row-visibility lags "
              "(ALTER SYSTEM SET track_commit_timestamp = on, then restart it)", flush=True)
    name = f"enrich_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    if args.log_lines:
        line_modes = [m for m in args.log_lines.split(",") if m]
        plan = (("noop", args.noop, ["plain", *line_modes]), ("io_20ms", args.io, ["plain", line_modes[0]]))
    else:
        modes = args.modes.split(",")
        plan = (("noop", args.noop, modes), ("io_20ms", args.io, modes))
    try:
        db = bind_database(db_url)
        apply_migrations(db)
        db.close_all()
        if any("django" in modes for _, _, modes in plan):
            subprocess.run([sys.executable, "-c", "import bench.django_app; from django.core.management import "
                            "call_command; call_command('migrate', 'django_dramatiq', verbosity=0)"],
                           env=dict(os.environ, DATABASE_URL=db_url, REDIS_URL=REDIS_URL, PYTHONPATH=ROOT),
                           cwd=ROOT, check=True)
        print(f"{'actor / mode / round':<24}" + "".join(f"{c:>11}" for c in HEADINGS))
        for actor, count, modes in plan:
            if not count:
                continue
            rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for round_no in range(1, args.rounds + 1):
                for mode in modes:
                    result = run_once(actor, count, mode, db_url, name, profile=args.profile)
                    if mode != modes[0]:
                        result["ratio"] = result["msg/s"] / rounds[modes[0]][-1]["msg/s"]
                    rounds[mode].append(result)
                    show(f"{actor} {mode} #{round_no}", result)
            for mode in modes:
                median = {key: statistics.median(r[key] for r in rounds[mode]) for key in rounds[mode][0]}
                show(f"{actor} {mode} MEDIAN", median)
            for mode in modes:
                show_profile(f"{actor} {mode}", {key: statistics.median(r[key] for r in rounds[mode])
                                                 for key in rounds[mode][0] if key.startswith("profile ")})
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
