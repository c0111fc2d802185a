"""Messages per second through real Dramatiq workers, with and without JobLinking.

    .venv/bin/python bench/linking_benchmark.py [--noop 20000] [--io 4000]
    .venv/bin/python bench/linking_benchmark.py --modes linked-no-otel,linked,traced,metered --rounds 3 --io 0

For each actor (a no-op and a 20 ms sleep) and each mode, it fills the Redis
queue, starts ``dramatiq`` with 2 processes x 8 threads, and times from the
moment both processes are ready until the queue is empty; then prints the
rates and the ratio linked / plain.  With linking it also checks that every
message has exactly one ``success`` row.

``--modes`` compares any of: ``plain`` (no JobLinking), ``linked``
(JobLinking; OpenTelemetry installed but not configured), ``linked-no-otel``
(as if the otel extra were not installed: its imports fail), ``traced``
(tracing on, spans exported over OTLP/HTTP to a local receiver) and
``metered`` (Prometheus metrics on).  Modes run interleaved, ``--rounds``
times, each round starting with the next mode; every round is printed, then
the medians and each mode's cost per message against the first mode.
"""

from __future__ import annotations

import argparse
import os
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

from bench import cpu_usage  # noqa: E402


def admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


MODES = ("plain", "linked", "linked-no-otel", "traced", "metered")


def mode_env(mode: str) -> dict:
    """What bench/linking_app.py reads to build the broker of ``mode``."""
    env = {"BENCH_LINKING": "0" if mode == "plain" else "1", "BENCH_METRICS": "1" if mode == "metered" else "0",
           "BENCH_NO_OTEL": "1" if mode == "linked-no-otel" else "0"}
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


def run_once(actor: str, count: int, linking, db_url: str) -> tuple[float, dict[str, float], float]:
    """Messages per second, CPU microseconds per message by process group, and sends per second.

    ``linking`` is a mode name, or a bool (``linked`` / ``plain``).
    """
    mode = linking if isinstance(linking, str) else ("linked" if linking else "plain")
    linking = mode != "plain"
    # INFO: the benchmark waits for the workers' "ready for action" lines (and production logs at INFO).
    env = dict(os.environ, REDIS_URL=REDIS_URL, DATABASE_URL=db_url, PYTHONPATH=ROOT, LOG_LEVEL="INFO",
               **mode_env(mode))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    if linking:
        from models import EnrichmentLog, bind_database

        bind_database(db_url)
        EnrichmentLog.delete().execute()
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
    cpu_before = cpu_usage.snapshot()
    started = time.perf_counter()
    while r.hlen(queue_key) > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = cpu_usage.used_between(cpu_before, cpu_usage.snapshot())
    worker.terminate()
    worker.wait(60)
    os.unlink(log.name)
    if linking:
        from models import EnrichmentLog

        rows = EnrichmentLog.select().where(EnrichmentLog.status == "success").count()
        total = EnrichmentLog.select().count()
        assert rows == total == count, f"expected {count} success rows, found {rows} of {total}"
    return count / elapsed, {group: seconds / count * 1e6 for group, seconds in cpu.items()}, sends_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", type=int, default=20000, help="messages for the no-op actor")
    parser.add_argument("--io", type=int, default=4000, help="messages for the 20 ms actor")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode (best is kept)")
    parser.add_argument("--modes", help=f"compare these modes, interleaved (of {', '.join(MODES)})")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --modes (every one printed, then medians)")
    args = parser.parse_args()
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",")]
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            parser.error(f"unknown mode(s) {', '.join(unknown)}: expected some of {', '.join(MODES)}")

    from migrations import apply_migrations
    from models import bind_database

    name = f"enrich_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        db = bind_database(db_url)
        apply_migrations(db)
        if args.modes:
            compare_modes(modes, args, db_url)
            return
        results = []
        print(f"{'actor':<10} {'plain msg/s':>12} {'linked msg/s':>13} {'ratio':>7}"
              f" {'plain sends/s':>14} {'linked sends/s':>15}")
        for actor, count in (("noop", args.noop), ("io_20ms", args.io)):
            plain = max((run_once(actor, count, False, db_url) for _ in range(args.repeat)), key=lambda r: r[0])
            linked = max((run_once(actor, count, True, db_url) for _ in range(args.repeat)), key=lambda r: r[0])
            results.append((actor, plain[1], linked[1]))
            print(f"{actor:<10} {plain[0]:>12.0f} {linked[0]:>13.0f} {linked[0] / plain[0]:>6.2f}x"
                  f" {plain[2]:>14.0f} {linked[2]:>15.0f}", flush=True)
        print("\nCPU per message, microseconds (plain / linked):")
        print(f"{'actor':<10}" + "".join(f"{group:>18}" for group in cpu_usage.GROUPS))
        for actor, plain_cpu, linked_cpu in results:
            print(f"{actor:<10}" + "".join(
                f"{plain_cpu[g]:>9.0f} /{linked_cpu[g]:>7.0f}" for g in cpu_usage.GROUPS))
    finally:
        from models import database

        database.obj.close_all()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def compare_modes(modes: list[str], args, db_url: str) -> None:
    """Every mode once per round, interleaved; each round's rates, then medians and cost per message."""
    import statistics

    for actor, count in (("noop", args.noop), ("io_20ms", args.io)):
        if not count:
            continue
        rates: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        print(f"\n{actor}, {count} messages: msg/s (worker CPU us/msg)")
        print(f"{'round':<7}" + "".join(f"{m:>24}" for m in modes))
        for round_no in range(1, args.rounds + 1):
            # Each round starts with the next mode: the first run of a round is often the fastest.
            order = modes[(round_no - 1) % len(modes):] + modes[:(round_no - 1) % len(modes)]
            for mode in order:
                rate, used, _ = run_once(actor, count, mode, db_url)
                rates[mode].append(rate)
                cpu[mode].append(used["workers"])
            row = [f"{rates[m][-1]:>12.0f} ({cpu[m][-1]:>6.0f} us)" for m in modes]
            print(f"{round_no:<7}" + "".join(f"{cell:>24}" for cell in row), flush=True)
        medians = {m: statistics.median(rates[m]) for m in modes}
        cpu_medians = {m: statistics.median(cpu[m]) for m in modes}
        print(f"{'median':<7}" + "".join(f"{medians[m]:>12.0f} ({cpu_medians[m]:>6.0f} us)" for m in modes))
        base = modes[0]
        for mode in modes[1:]:
            wall = (1 / medians[mode] - 1 / medians[base]) * 1e6 * 16  # 16 worker threads
            print(f"  {mode} vs {base}: {medians[mode] / medians[base]:.2f}x msg/s, "
                  f"{cpu_medians[mode] - cpu_medians[base]:+.0f} us worker CPU per message, "
                  f"{wall:+.0f} us per message per worker thread")


if __name__ == "__main__":
    main()
