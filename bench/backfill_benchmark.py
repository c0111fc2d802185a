"""How long the ``is_root_job`` backfill takes on a big legacy table, and whether writers wait.

Creates a PostgreSQL database of its own, migrates it to the pre-linking
schema, bulk-loads legacy rows (70 % without a parent, 30 % with one), adds
the column (0002), then times ``migrations.backfill.backfill_root_jobs``
while a second connection inserts one row every 10 ms, as a worker would.
The database is dropped at the end.

    .venv/bin/python -m bench.backfill_benchmark [--rows 1000000] [--batch-size 5000]

The scratch-database and percentile helpers here are shared with
``bench.timeline_benchmark``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
import uuid
from typing import Iterator, Sequence

import psycopg2

from migrations import apply_migrations
from migrations.backfill import DEFAULT_BATCH_SIZE, backfill_root_jobs
from models.database import open_database

# BENCH_POSTGRES_ADMIN_URL points every benchmark at your own PostgreSQL (the README says so).
ADMIN_URL = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")

# 30 % of the rows (the last three of every ten) point at the first row of their ten.
LOAD_LEGACY_ROWS = """
INSERT INTO enrichment_logs (id, created_at, updated_at, job_id, parent_job_id, operation, entity_type,
                             status, sources, fields_enriched, api_call_count, started_at, completed_at)
SELECT md5('row' || n)::uuid, ts, ts, md5('job' || n)::uuid::text,
       CASE WHEN mod(n, 10) >= 7 THEN md5('job' || (n - mod(n, 10)))::uuid::text END,
       CASE WHEN mod(n, 10) >= 7 THEN 'enrichment:artist' ELSE 'enrichment:album' END,
       CASE WHEN mod(n, 10) >= 7 THEN 'artist' ELSE 'album' END,
       CASE WHEN mod(n, 17) = 0 THEN 'failed' ELSE 'success' END,
       '[]', '[]', mod(n, 5), ts, ts + interval '1.5 seconds'
FROM generate_series(0, %s - 1) AS n, LATERAL (SELECT timestamp '2023-01-01' + n * interval '2 seconds') AS t(ts)
"""

# What a linked worker writes meanwhile: a new root, flagged by the new code itself.
WORKER_INSERT = (
    "INSERT INTO enrichment_logs (id, created_at, updated_at, job_id, operation, status, sources, "
    "fields_enriched, api_call_count, is_root_job) VALUES (%s, now(), now(), %s, 'enrichment:album', "
    "'running', '[]', '[]', 0, true)"
)


@contextlib.contextmanager
def admin_connection(admin_url: str) -> Iterator:
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True  # CREATE / DROP DATABASE cannot run in a transaction
    try:
        yield conn
    finally:
        conn.close()


def database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    with admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(admin_url: str, name: str) -> str:
    """Create ``name`` (empty); returns its URL."""
    with admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return database_url(admin_url, name)


def p50_p95(values: Sequence[float]) -> tuple[float, float]:
    """The median and the 95th percentile (inclusive method: fine for a few values too)."""
    if len(values) < 2:
        only = values[0] if values else float("nan")
        return only, only
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


class Writer(threading.Thread):
    """Inserts one row every ``interval`` seconds on its own connection, timing each insert."""

    def __init__(self, url: str, interval: float = 0.01):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True  # one transaction per row, as a worker's log write
        with conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.perf_counter()
                cur.execute(WORKER_INSERT, (uuid.uuid4().hex, str(uuid.uuid4())))
                self.latencies.append(time.perf_counter() - started)
                self.stop.wait(self.interval)
        conn.close()


def run(rows: int, batch_size: int, admin_url: str) -> None:
    name = f"enrich_bench_backfill_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    db = open_database(url, max_connections=4)
    try:
        apply_migrations(db, "0001_pre_linking_schema")
        started = time.perf_counter()
        db.execute_sql(LOAD_LEGACY_ROWS, (rows,))
        db.execute_sql("VACUUM ANALYZE enrichment_logs")  # what autovacuum did long ago in production
        print(f"loaded {rows:,} legacy rows in {time.perf_counter() - started:.1f} s")
        apply_migrations(db, "0002_add_is_root_job")

        writer = Writer(url)
        writer.start()
        time.sleep(0.2)  # the writer is up before the backfill starts
        report = backfill_root_jobs(db, batch_size=batch_size)
        writer.stop.set()
        writer.join()

        p50, p95 = p50_p95(report.batch_seconds)
        left = db.execute_sql(
            "SELECT count(*) FILTER (WHERE parent_job_id IS NULL AND NOT is_root_job), "
            "count(*) FILTER (WHERE parent_job_id IS NOT NULL AND is_root_job) FROM enrichment_logs"
        ).fetchone()
        w50, w95 = p50_p95(writer.latencies)
        print(f"backfill (batch size {batch_size:,}):")
        print(f"  total time          {report.seconds:.2f} s")
        print(f"  rows updated        {report.rows_updated:,}")
        print(f"  batches             {report.batches:,}")
        print(f"  longest transaction {report.longest_batch_seconds * 1000:.1f} ms")
        print(f"  batch time p50/p95  {p50 * 1000:.1f} / {p95 * 1000:.1f} ms")
        print(f"  left wrong          {left[0]} roots not flagged, {left[1]} children flagged")
        print(f"concurrent single-row INSERT every 10 ms ({len(writer.latencies):,} inserts):")
        print(f"  latency p50/p95/max {w50 * 1000:.2f} / {w95 * 1000:.2f} / {max(writer.latencies) * 1000:.2f} ms")
    finally:
        db.close_all()
        drop_database(admin_url, name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="legacy rows to load (default 1,000,000)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per backfill transaction")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL allowed to CREATE DATABASE")
    args = parser.parse_args(argv)
    run(args.rows, args.batch_size, args.admin_url)


if __name__ == "__main__":
    main()
