"""Messages per second through real Dramatiq workers, with and without JobLinking.

    .venv/bin/python bench/linking_benchmark.py [--noop 20000] [--io 4000]

For each actor (a no-op and a 20 ms sleep) and each mode, it fills the Redis
queue, starts ``dramatiq`` with 2 processes x 8 threads, and times from the
moment both processes are ready until the queue is empty; then prints the
rates and the ratio linked / plain.  With linking it also checks that every
message has exactly one ``success`` row.
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


def run_once(actor: str, count: int, linking: bool, db_url: str) -> tuple[float, dict[str, float]]:
    """Messages per second, and CPU microseconds per message by process group."""
    # INFO: the benchmark waits for the workers' "ready for action" lines (and production logs at INFO).
    env = dict(os.environ, REDIS_URL=REDIS_URL, DATABASE_URL=db_url, BENCH_LINKING="1" if linking else "0",
               PYTHONPATH=ROOT, LOG_LEVEL="INFO")
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
    args = parser.parse_args()

    from migrations import apply_migrations
    from models import bind_database

    name = f"enrich_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        db = bind_database(db_url)
        apply_migrations(db)
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


if __name__ == "__main__":
    main()
