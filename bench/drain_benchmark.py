"""How fast drainers move job-log rows from the Redis journal into PostgreSQL.

    .venv/bin/python bench/drain_benchmark.py [--jobs 100000] [--paced-rate 4000] [--rounds 3]

Synthetic producers (2 processes) append realistic rows to the journal: a
start and an end row per job, in trees of 20 jobs, 1 job in 20 a child that
failed for good (counted on its root).  Each round runs, one after the other,
with 1 drainer process and with 2:

* full speed: the producers append ``--jobs`` jobs as fast as they can while
  the drainers drain; rows/s is the rows applied divided by the time from the
  first append until the journal is empty;
* paced: the producers append ``--paced-rate`` rows/s for ``--paced-seconds``;
  the lag of each row (from its append to the commit of its batch) is the
  figure that matters here (p50/p95).

Also printed: PostgreSQL CPU per row (the benchmark's own cluster, from /proc)
and rows per commit.  Every run checks that each job has one row and each
root counts its failed children exactly.

Point it at your own services: BENCH_POSTGRES_ADMIN_URL (superuser URL) and
BENCH_REDIS_URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
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
STREAM = "bench:job-log"
TREE = 20  # jobs per tree: a root and 19 children
PRODUCERS = 2
sys.path.insert(0, ROOT)

from bench import cpu_usage, postgres_admin  # noqa: E402
from middleware.job_log.rows import JobLogRow  # noqa: E402


def admin(sql: str, url: str = PG_ADMIN, fetch: bool = False):
    return postgres_admin.admin(url, sql, fetch=fetch)


# -- the producers -------------------------------------------------------------------------------------


def rows_of_tree(tree_no: int, producer: int) -> list[tuple[dict, str | None]]:
    """(row, failed_child_of) writes of one tree, start and end of every job, in hook order."""
    now = dt.datetime.utcnow()
    root_id = f"p{producer}-t{tree_no}-root"
    writes = []
    for n in range(TREE):
        job_id = root_id if n == 0 else f"p{producer}-t{tree_no}-c{n}"
        failed = n == TREE - 1  # 1 job in 20: a child that failed for good
        row = JobLogRow(
            id=str(uuid.uuid4()), job_id=job_id, parent_job_id=None if n == 0 else root_id, is_root_job=n == 0,
            operation="enrichment:album" if n == 0 else "discogs:get-artist", entity_type="album",
            entity_id=str(uuid.uuid4()), status="running", data_quality_before="low", enqueued_at=now,
            started_at=now, triggered_by="cli" if n == 0 else None, created_at=now,
        ).as_dict()
        writes.append((row, None))
        end = dict(row, status="failed" if failed else "success", completed_at=now, updated_at=now,
                   duration_ms=120, api_call_count=2, sources=["musicbrainz", "discogs"],
                   fields_enriched=["genres", "country"], data_quality_after="high",
                   reason=None if failed else "matched by lookup by MusicBrainz id",
                   last_error="PermanentUpstreamError: discogs GET /artists/1 returned HTTP 400" if failed else None,
                   error_code="upstream_400" if failed else None, details={"match_score": 0.97})
        writes.append((end, root_id if failed else None))
    return writes


def produce(producer: int, jobs: int, rate: float) -> None:
    """Append ``jobs`` jobs' rows (``rate`` rows/s for this producer, 0: as fast as possible)."""
    from middleware.job_log.journal import encode

    client = redis.Redis.from_url(REDIS_URL)
    started = time.monotonic()
    sent = 0
    for tree_no in range(jobs // TREE):
        pipe = client.pipeline(transaction=False)
        for row, failed_child_of in rows_of_tree(tree_no, producer):
            pipe.xadd(STREAM, {"e": encode(row, failed_child_of)})
        pipe.execute()
        sent += 2 * TREE
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


# -- a drainer process ----------------------------------------------------------------------------------


def drain(db_url: str, lag_file: str, batch_size: int) -> None:
    from middleware.job_log.drainer import Drainer
    from middleware.job_log.journal import RedisJournal
    from models import bind_database

    db = bind_database(db_url)
    drainer = Drainer(RedisJournal(redis.Redis.from_url(REDIS_URL), STREAM), db, batch_size=batch_size)
    lags: list[float] = []
    apply = drainer._apply

    def apply_and_time(entries):
        settled = apply(entries)
        now = time.time()
        lags.extend(now - entry.appended_at for entry in settled[::10])  # every 10th row
        return settled

    drainer._apply = apply_and_time
    signal.signal(signal.SIGTERM, lambda *_: drainer.request_stop())
    print("ready", flush=True)
    drainer.run()
    drainer.stop(timeout=0)
    with open(lag_file, "w") as f:
        json.dump(lags, f)


# -- one run ----------------------------------------------------------------------------------------------


def run_once(db_url: str, drainers: int, jobs: int, rate: float, batch_size: int, own: dict) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(STREAM)
    admin("TRUNCATE enrichment_logs", db_url)
    env = dict(os.environ, PYTHONPATH=ROOT, LOG_LEVEL="WARNING")
    lag_files, procs = [], []
    for _ in range(drainers):
        lag_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
        lag_files.append(lag_file)
        procs.append(subprocess.Popen([sys.executable, __file__, "--drainer", db_url, lag_file, str(batch_size)],
                                      env=env, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    db_name = db_url.rsplit("/", 1)[1]
    commits_sql = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db_name}'"
    commits_before = admin(commits_sql, fetch=True)[0][0]
    cpu_before = cpu_usage.snapshot(own)
    started = time.perf_counter()
    producers = [subprocess.Popen([sys.executable, __file__, "--producer", str(n), str(jobs // PRODUCERS),
                                   str(rate / PRODUCERS)], env=env) for n in range(PRODUCERS)]
    for producer in producers:
        producer.wait()
    while client.xlen(STREAM) > 0:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = cpu_usage.used_between(cpu_before, cpu_usage.snapshot(own))
    commits = admin(commits_sql, fetch=True)[0][0] - commits_before
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lags = sorted(lag for lag_file in lag_files for lag in json.load(open(lag_file)))
    for lag_file in lag_files:
        os.unlink(lag_file)
    rows = (jobs // PRODUCERS // TREE) * TREE * PRODUCERS * 2
    check = admin("SELECT count(*), count(*) FILTER (WHERE is_root_job AND failed_children = 1 AND status = 'degraded') "
                  "FROM enrichment_logs", db_url, fetch=True)[0]
    assert check == (rows // 2, rows // 2 // TREE), f"rows / degraded roots counted once: {check}"
    return {
        "rows/s": rows / elapsed,
        "pg us/row": cpu["postgres"] / rows * 1e6,
        "rows/commit": rows / max(commits, 1),
        "lag p50 ms": lags[len(lags) // 2] * 1000,
        "lag p95 ms": lags[int(len(lags) * 0.95)] * 1000,
    }


COLUMNS = ("rows/s", "pg us/row", "rows/commit", "lag p50 ms", "lag p95 ms")


def show(label: str, result: dict[str, float]) -> None:
    print(f"{label:<30}" + "".join(f"{result[c]:>13.0f}" if c != "rows/commit" else f"{result[c]:>13.1f}"
                                   for c in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per full-speed run (2 rows each)")
    parser.add_argument("--paced-rate", type=float, default=4000, help="rows/s appended in the paced runs")
    parser.add_argument("--paced-seconds", type=float, default=10, help="length of a paced run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2000, help="the drainers' batch size")
    args = parser.parse_args()

    from migrations import apply_migrations
    from models import bind_database

    name = f"enrich_drain_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        db = bind_database(db_url)
        apply_migrations(db)
        db.close_all()
        conn = psycopg2.connect(PG_ADMIN)
        own = {"postgres": cpu_usage.postgres_pid(conn), "redis": cpu_usage.redis_pid(redis.Redis.from_url(REDIS_URL))}
        conn.close()
        paced_jobs = int(args.paced_rate * args.paced_seconds / 2)
        results: dict[str, list] = {}
        print(f"{'load / drainers / round':<30}" + "".join(f"{c:>13}" for c in COLUMNS))
        for round_no in range(1, args.rounds + 1):
            for load, jobs, rate in (("full speed", args.jobs, 0.0), ("paced", paced_jobs, args.paced_rate)):
                for drainers in (1, 2):
                    result = run_once(db_url, drainers, jobs, rate, args.batch_size, own)
                    label = f"{load} {drainers} drainer{'s' if drainers > 1 else ''}"
                    results.setdefault(label, []).append(result)
                    show(f"{label} #{round_no}", result)
        for label, runs in results.items():
            show(f"{label} MEDIAN", {c: statistics.median(r[c] for r in runs) for c in COLUMNS})
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--producer":
        produce(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--drainer":
        drain(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
