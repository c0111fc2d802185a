"""How fast `enrich prune` deletes a big job log, how long its transactions are, and whether writers wait.

Takes a copy of the timeline benchmark's database (``--trees`` trees of 10
rows, 10,000,000 rows by default; loaded first if it is not there, and kept)
and prunes half of it in ``--rounds`` rounds, each moving the cutoff one
slice further, while a writer on its own connection inserts one job-log row
every 10 ms (a worker's write).  Each round prints rows/s, the longest
transaction (one batch's delete) and the writer's insert latency
p50/p95/max; then the median of the rounds.  The target: no transaction
over 1 s.

    .venv/bin/python -m bench.prune_benchmark [--trees 1000000] [--rounds 3] [--admin-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from bench.backfill_benchmark import Writer, admin_connection, database_url, drop_database, p50_p95
from bench.timeline_benchmark import DEFAULT_DATABASE, load, loaded_trees
from models import bind_database
from models.retention import DEFAULT_BATCH_ROOTS, prune

COPY = "enrich_bench_prune"
FIRST_TREE = dt.datetime(2024, 1, 1)  # the timeline benchmark's trees start here, 30 s apart
TREE_SPACING = dt.timedelta(seconds=30)


def ensure_template(admin_url: str, trees: int, name: str) -> None:
    if loaded_trees(admin_url, name) == trees:
        return
    drop_database(admin_url, name)
    with admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    db = bind_database(database_url(admin_url, name), max_connections=2)
    print(f"loading {trees:,} trees ({trees * 10:,} rows) into {name} (kept for the next run)", flush=True)
    load(db, trees)
    db.execute_sql(f"COMMENT ON TABLE enrichment_logs IS 'trees={trees}'")
    db.close_all()


def copy_template(admin_url: str, name: str) -> str:
    drop_database(admin_url, COPY)
    started = time.perf_counter()
    with admin_connection(admin_url) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{COPY}" TEMPLATE "{name}"')
    print(f"copied {name} to {COPY} in {time.perf_counter() - started:.0f} s", flush=True)
    return database_url(admin_url, COPY)


def run(args: argparse.Namespace) -> None:
    ensure_template(args.admin_url, args.trees, args.template)
    url = copy_template(args.admin_url, args.template)
    db = bind_database(url, max_connections=2)
    results = []
    try:
        db.execute_sql("ANALYZE enrichment_logs")
        total = db.execute_sql("SELECT count(*) FROM enrichment_logs").fetchone()[0]
        print(f"\n{total:,} rows; pruning half in {args.rounds} rounds of {DEFAULT_BATCH_ROOTS} roots per batch, "
              "a writer inserting one row every 10 ms meanwhile:")
        for round_no in range(1, args.rounds + 1):
            cutoff = FIRST_TREE + TREE_SPACING * (args.trees * round_no / (2 * args.rounds))
            writer = Writer(url)
            writer.start()
            time.sleep(0.2)
            started = time.perf_counter()
            report = prune(cutoff)
            seconds = time.perf_counter() - started
            writer.stop.set()
            writer.join()
            w50, w95 = p50_p95(writer.latencies)
            result = (report.rows / seconds, report.longest_transaction_seconds, w50, w95, max(writer.latencies))
            results.append(result)
            print(f"  round {round_no}: {report.trees:,} trees, {report.rows:,} rows in {seconds:.1f} s "
                  f"({result[0]:,.0f} rows/s, {report.batches:,} batches); longest transaction "
                  f"{result[1] * 1000:.0f} ms; writer p50/p95/max {w50 * 1000:.2f} / {w95 * 1000:.2f} / "
                  f"{result[4] * 1000:.1f} ms ({len(writer.latencies):,} inserts)", flush=True)
        left = db.execute_sql("SELECT count(*) FROM enrichment_logs").fetchone()[0]
        medians = [statistics.median(r[i] for r in results) for i in range(5)]
        print(f"  median: {medians[0]:,.0f} rows/s; longest transaction {medians[1] * 1000:.0f} ms "
              f"(max of all rounds {max(r[1] for r in results) * 1000:.0f} ms: "
              f"{'ok' if max(r[1] for r in results) < 1 else 'over 1 s'}); writer p50/p95/max "
              f"{medians[2] * 1000:.2f} / {medians[3] * 1000:.2f} / {medians[4] * 1000:.1f} ms")
        print(f"  {total - left:,} of {total:,} rows deleted; {left:,} left")
    finally:
        db.close_all()
        drop_database(args.admin_url, COPY)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=1_000_000, help="trees of 10 rows (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each pruning a slice (default 3)")
    parser.add_argument("--template", default=DEFAULT_DATABASE,
                        help=f"the loaded database to copy (default {DEFAULT_DATABASE}, the timeline benchmark's)")
    parser.add_argument("--admin-url", default="postgresql://root@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL allowed to CREATE DATABASE")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
