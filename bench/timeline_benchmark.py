"""Are the timeline queries fast on a big job log? p50/p95 and the plans, on PostgreSQL.

Fills a database of its own with ``--trees`` trees of 10 rows (a root and 9
children; 10,000,000 rows by default), with the indexes dropped during the
load and built after it, then times ``list_roots()`` (first page, a deep page
through a cursor, filtered on status='degraded') and ``get_tree()`` on random
jobs, and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of every query they ran.
The target is p95 < 5 ms.  "blocks read" counts pages per call that were not
in shared_buffers: a random deep page reads about 60 (its roots, and one
``parent_job_id`` index leaf per root), so its time is mostly the server's
I/O, fast only when the OS cache holds those pages.

    .venv/bin/python -m bench.timeline_benchmark [--trees 1000000] [--calls 300] [--keep]

With ``--keep`` the database stays for the next run, which then skips the load.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from typing import Callable

import psycopg2

from bench.backfill_benchmark import ADMIN_URL, admin_connection, create_database, database_url, drop_database, p50_p95
from migrations import apply_migrations
from models import bind_database
from models.timeline import encode_cursor, get_tree, list_roots

DEFAULT_DATABASE = "enrich_bench_timeline"
TABLE = "enrichment_logs"

# Tree t is rows n = 10t .. 10t+9; row 10t is the root.  Trees start 30 s apart
# (a million trees is a year of history); h is a stable per-tree hash in 0..999
# that picks the root's status, and a degraded root has a failed last child.
LOAD_TREES = """
INSERT INTO enrichment_logs (id, job_id, parent_job_id, is_root_job, operation, entity_type, entity_id, status,
    reason, sources, fields_enriched, api_call_count, retry_count, last_error, error_code, failed_children,
    enqueued_at, started_at, completed_at, duration_ms, details, triggered_by, created_at, updated_at)
SELECT md5('r' || n)::uuid,
       md5('j' || n)::uuid::text,
       CASE WHEN k > 0 THEN md5('j' || (n - k))::uuid::text END,
       k = 0,
       CASE WHEN k = 0 THEN 'enrichment:album'
            ELSE (ARRAY['musicbrainz:album', 'musicbrainz:artist', 'discogs:album', 'discogs:artist',
                        'spotify:album', 'spotify:tracks', 'image:cover', 'image:artist', 'quality:album'])[k] END,
       CASE WHEN k IN (2, 4, 8) THEN 'artist' ELSE 'album' END,
       md5('e' || CASE WHEN k IN (2, 4, 8) THEN n ELSE mod(t, 200000) END)::uuid,
       status,
       CASE WHEN status = 'no_data' THEN 'no match' END,
       '["musicbrainz"]', '[]', 1 + mod(k, 3),
       CASE WHEN status = 'failed' THEN 3 ELSE 0 END,
       CASE WHEN status = 'failed' THEN 'HTTPStatusError: 503 Service Unavailable' END,
       CASE WHEN status = 'failed' THEN 'upstream_5xx' END,
       CASE WHEN status = 'degraded' THEN 1 ELSE 0 END,
       start - interval '40 ms' - k * interval '120 ms', start, done,
       (extract(epoch FROM done - start) * 1000)::int,
       CASE WHEN k = 0 THEN '{"fields": ["genres", "cover"]}'::json END,
       CASE WHEN k = 0 THEN 'schedule' END,
       start - interval '40 ms' - k * interval '120 ms', done
FROM (
    SELECT n, t, k, h,
           CASE WHEN k = 0 THEN CASE WHEN h < 40 THEN 'degraded' WHEN h < 60 THEN 'failed'
                                     WHEN h < 90 THEN 'partial_success' WHEN h < 110 THEN 'no_data'
                                     WHEN h < 120 THEN 'skipped' WHEN h < 125 THEN 'running' ELSE 'success' END
                WHEN k = 9 AND h < 40 THEN 'failed'
                WHEN mod(n * 7919, 100) < 5 THEN 'no_data'
                WHEN mod(n * 7919, 100) < 8 THEN 'skipped'
                ELSE 'success' END AS status,
           timestamp '2024-01-01' + t * interval '30 s' + k * interval '350 ms' AS start,
           timestamp '2024-01-01' + t * interval '30 s' + k * interval '350 ms'
               + (200 + mod(n * 7919, 1800)) * interval '1 ms' AS done
    FROM generate_series(0::bigint, %s - 1) AS n,
         LATERAL (SELECT n / 10, mod(n, 10)::int, mod(mod((n / 10) * 2654435761, 4294967296), 1000)) AS x(t, k, h)
) AS rows
"""

def loaded_trees(admin_url: str, name: str) -> int:
    """How many trees a kept database from an earlier run holds (0: there is none)."""
    with admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            return 0
    conn = psycopg2.connect(database_url(admin_url, name))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (TABLE,))
        comment = cur.fetchone()[0]
    conn.close()
    return int(comment.split("=")[1]) if comment and comment.startswith("trees=") else 0


def load(db, trees: int) -> None:
    """Migrate, drop the indexes, bulk-insert the trees, build the indexes again, VACUUM ANALYZE."""
    apply_migrations(db)
    indexes = db.execute_sql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE '%%pkey'", (TABLE,)
    ).fetchall()
    started = time.perf_counter()
    db.execute_sql("SET maintenance_work_mem = '512MB'")  # index builds sort in memory
    db.execute_sql("SET max_parallel_maintenance_workers = 1")  # two cores, shared with others
    with db.atomic():
        for name, _ in indexes:
            db.execute_sql(f'DROP INDEX "{name}"')
        db.execute_sql(f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey")
        db.execute_sql(LOAD_TREES, (trees * 10,))
    print(f"  inserted {trees * 10:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
    db.execute_sql(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
    for _, definition in indexes:
        db.execute_sql(definition)
    print(f"  indexes built at {time.perf_counter() - started:.0f} s", flush=True)
    db.execute_sql(f"VACUUM ANALYZE {TABLE}")  # autovacuum is off on the development server
    db.execute_sql(f"COMMENT ON TABLE {TABLE} IS 'trees={trees}'")
    print(f"  loaded and analyzed in {time.perf_counter() - started:.0f} s", flush=True)


def blocks_read(db) -> int:
    """Blocks this database has read from outside shared_buffers (the OS cache or the disk) so far."""
    db.execute_sql("SELECT pg_stat_force_next_flush()")  # our own reads count once the backend is idle
    return db.execute_sql("SELECT blks_read FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def timed(db, label: str, call: Callable[[], object], calls: int) -> None:
    """Wall time per call, the part of it spent in the driver's execute (the database's share), and
    the blocks read from outside shared_buffers per call (cold pages: what client code cannot save)."""
    for _ in range(min(calls, 20)):  # warm the caches and the pool first
        call()
    seconds, in_db = [], []
    reads_before = blocks_read(db)
    db.query_hooks.append(lambda event: in_db.append(event.duration))
    try:
        for _ in range(calls):
            before = len(in_db)
            started = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - started)
            in_db[before:] = [sum(in_db[before:])]
    finally:
        db.query_hooks.pop()
    reads = (blocks_read(db) - reads_before) / calls
    (p50, p95), (db50, db95) = p50_p95(seconds), p50_p95(in_db)
    verdict = "ok" if p95 < 0.005 else "over 5 ms"
    print(
        f"  {label:<42} p50 {p50 * 1000:5.2f}  p95 {p95 * 1000:5.2f}  max {max(seconds) * 1000:6.2f} ms"
        f"   (execute: p50 {db50 * 1000:4.2f}  p95 {db95 * 1000:4.2f}; {reads:5.1f} blocks read)  {verdict}"
    )


def _shorten(text: str) -> str:
    """A 50-value IN list or array as its first two values and a count, so plans stay readable."""
    text = re.sub(r"(%s, ){2,}%s", lambda m: f"%s, ... ({m.group(0).count('%s')} values)", text)
    return re.sub(
        r"'\{([^,}]+),([^,}]+),[^}]*\}'",
        lambda m: f"'{{{m.group(1)},{m.group(2)},... ({m.group(0).count(',') + 1} values)}}'",
        text,
    )


def explain(db, label: str, call: Callable[[], object]) -> None:
    """EXPLAIN ANALYZE every statement ``call`` runs, as it ran it."""
    statements: list[tuple[str, tuple]] = []
    db.query_hooks.append(lambda event: statements.append((event.sql, event.params)))
    try:
        call()
    finally:
        db.query_hooks.pop()
    for i, (sql, params) in enumerate(statements, 1):
        print(f"\n-- {label}, query {i} of {len(statements)}:\n{_shorten(sql)}")
        plan = db.execute_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).fetchall()
        print("\n".join("   " + _shorten(line) for (line,) in plan))


def scenarios(db, seed: int) -> dict[str, Callable[[], object]]:
    """The calls to time, over jobs and roots sampled from the whole table."""
    rng = random.Random(seed)
    rows = db.execute_sql(f"SELECT reltuples FROM pg_class WHERE relname = '{TABLE}'").fetchone()[0]
    percent = min(100.0, 2_000_000 / max(rows, 1))  # about 20,000 rows, from all over the table
    sample = db.execute_sql(
        f"SELECT job_id, created_at, id, is_root_job FROM {TABLE} TABLESAMPLE SYSTEM ({percent:.4f})"
    ).fetchall()
    jobs = [job for job, _, _, _ in sample]
    deep = [encode_cursor(created_at, row_id) for _, created_at, row_id, is_root in sample if is_root]
    degraded = list_roots(status="degraded", limit=500).next_cursor  # 500 degraded roots back
    return {
        "list_roots() first page": lambda: list_roots(),
        "list_roots() deep page (random cursor)": lambda: list_roots(cursor=rng.choice(deep)),
        "list_roots(status='degraded') first page": lambda: list_roots(status="degraded"),
        "list_roots(status='degraded') page 11": lambda: list_roots(status="degraded", cursor=degraded),
        # Rare on roots, common on children: the (status, created_at) index walks children too.
        "list_roots(status='no_data') first page": lambda: list_roots(status="no_data"),
        "get_tree(random job id)": lambda: get_tree(rng.choice(jobs)),
    }


def measure(db, calls: int, seed: int, prefix: str = "") -> None:
    """Time the scenarios whose label starts with ``prefix``, then print their plans."""
    cases = {label: call for label, call in scenarios(db, seed).items() if label.startswith(prefix)}
    for label, call in cases.items():
        timed(db, label, call, calls)
    for label, call in cases.items():
        explain(db, label, call)


def run(args: argparse.Namespace) -> None:
    reuse = loaded_trees(args.admin_url, args.database) == args.trees
    if not reuse:
        drop_database(args.admin_url, args.database)
        create_database(args.admin_url, args.database)
    db = bind_database(database_url(args.admin_url, args.database), max_connections=4)
    try:
        if not reuse:
            print(f"loading {args.trees:,} trees ({args.trees * 10:,} rows) into {args.database}", flush=True)
            load(db, args.trees)
        print(f"\n{args.trees * 10:,} rows, {args.calls} calls each (after 20 warm-up calls):")
        measure(db, args.calls, args.seed)  # the partial root indexes come with migration 0005
    finally:
        db.close_all()
        if not args.keep:
            drop_database(args.admin_url, args.database)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=1_000_000, help="trees of 10 rows to load (default 1,000,000)")
    parser.add_argument("--rows", type=int, help="rows to load instead of --trees (rounded down to whole trees)")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per query (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run (it skips the load)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help=f"database name (default {DEFAULT_DATABASE})")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--seed", type=int, default=7, help="seed for the random jobs and cursors")
    args = parser.parse_args(argv)
    if args.rows is not None:
        args.trees = max(args.rows // 10, 1)
    run(args)


if __name__ == "__main__":
    main()
