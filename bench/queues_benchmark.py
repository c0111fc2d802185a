"""Are the queue pages fast on a full broker? Server time per page, p50/p95, on Redis and PostgreSQL.

Lays out, as Dramatiq does, one queue (``bench-queue``) with ``--ready``
messages ready (100,000 by default) and ``--dead`` dead-lettered (10,000),
each dead letter with its failed row in a fresh PostgreSQL database (so the
"why" column is read), and rows that ended in the last minutes (so the ended
per minute figure is counted).  The app is called in-process through ASGI,
timed as ``bench.dashboard_benchmark`` times it: interleaved, 3 rounds, every
round printed, then the median.  Targets: ``/queues`` and ``/api/queues`` p95
< 50 ms, one page of a queue's messages p95 < 100 ms.

Only the benchmark's own keys are written, and they are deleted at the end
(no FLUSHDB): point it at a Redis database of its own anyway (``--redis-url``,
else ``BENCH_REDIS_URL``, else database 12 of 127.0.0.1:6379), as ``/queues``
lists every queue it finds there; PostgreSQL: ``--admin-url``, else
``BENCH_POSTGRES_ADMIN_URL``, else the development one.

    .venv/bin/python -m bench.queues_benchmark [--ready 100000] [--dead 10000] [--calls 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid

import redis

from bench.backfill_benchmark import ADMIN_URL, create_database, drop_database, p50_p95
from bench.dashboard_benchmark import ServerTimer, report, run_rounds
from dashboard import create_app
from migrations import apply_migrations
from models import Settings, bind_database
from workers.queues import ended_per_minute

QUEUE = "bench-queue"
DATABASE = "enrich_queues_bench"
TARGETS = {"GET /queues/bench-queue (50 ready)": 0.100, "GET /api/queues/bench-queue (50 dead)": 0.100,
           "GET /queues/bench-queue (50 dead)": 0.100}

LOAD_ROWS = """
INSERT INTO enrichment_logs (id, job_id, is_root_job, operation, entity_type, entity_id, status, error_code,
    last_error, sources, fields_enriched, api_call_count, retry_count, failed_children, enqueued_at, started_at,
    completed_at, duration_ms, message, created_at, updated_at)
SELECT md5('dead' || n)::uuid, 'dead-' || n, true, 'check:album-enrichment', 'album', md5('e' || n)::uuid,
       CASE WHEN n < %s THEN 'failed' ELSE 'success' END, CASE WHEN n < %s THEN 'upstream_error' END,
       CASE WHEN n < %s THEN 'HTTPError: 502 from MusicBrainz' END, '[]', '[]', 1, 0, 0,
       now() - interval '10 minutes', now() - interval '9 minutes', now() - (n %% 300) * interval '1 second', 50,
       json_build_object('queue', %s, 'actor', 'check_album_enrichment')::jsonb,
       now() - interval '10 minutes', now()
FROM generate_series(0, %s - 1) AS n;
"""


def _payload(job_id: str, redis_id: str, sent_ms: int) -> str:
    return json.dumps({"queue_name": QUEUE, "actor_name": "check_album_enrichment", "args": [str(uuid.uuid4())],
                       "kwargs": {"force": False}, "options": {"redis_message_id": redis_id, "retries": 3,
                                                                "traceback": "Traceback ...\nHTTPError: 502"},
                       "message_id": job_id, "message_timestamp": sent_ms})


def fill(client, ready: int, dead: int) -> None:
    now = int(time.time() * 1000)
    base = f"dramatiq:{QUEUE}"
    for start in range(0, ready, 5000):
        pipe = client.pipeline(transaction=False)
        ids = [f"ready-{n}" for n in range(start, min(ready, start + 5000))]
        pipe.hset(f"{base}.msgs", mapping={i: _payload(str(uuid.uuid4()), i, now - 60_000) for i in ids})
        pipe.rpush(base, *ids)
        pipe.execute()
    for start in range(0, dead, 5000):
        pipe = client.pipeline(transaction=False)
        ids = [f"xq-{n}" for n in range(start, min(dead, start + 5000))]
        pipe.hset(f"{base}.XQ.msgs", mapping={i: _payload(f"dead-{i[3:]}", i, now - 600_000) for i in ids})
        pipe.zadd(f"{base}.XQ", {i: now - 300_000 + n for n, i in enumerate(ids, start)})
        pipe.execute()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
                        help="a Redis database for the benchmark's keys")
    parser.add_argument("--ready", type=int, default=100_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=100, help="calls per page per round (default 100)")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_POSTGRES_ADMIN_URL", ADMIN_URL),
                        help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url)
    keys = [f"dramatiq:{QUEUE}{tail}" for tail in ("", ".msgs", ".XQ", ".XQ.msgs")]
    drop_database(args.admin_url, DATABASE)
    db = bind_database(create_database(args.admin_url, DATABASE), max_connections=8)
    try:
        apply_migrations(db)
        finished = args.dead + 3000  # 3,000 rows that ended well in the last 5 minutes
        db.execute_sql(LOAD_ROWS, (args.dead, args.dead, args.dead, QUEUE, finished))
        db.execute_sql("ANALYZE enrichment_logs")
        client.delete(*keys)
        fill(client, args.ready, args.dead)
        print(f"{client.llen(keys[0]):,} messages ready, {client.zcard(keys[2]):,} dead-lettered; "
              f"{finished:,} job-log rows; {args.calls} calls per page per round")
        rng = random.Random(args.seed)
        cases = {
            "GET /queues": lambda: "/queues",
            "GET /api/queues": lambda: "/api/queues",
            "GET /queues/bench-queue (50 ready)": lambda: f"/queues/{QUEUE}?offset={rng.randrange(args.ready - 50)}",
            "GET /api/queues/bench-queue (50 dead)":
                lambda: f"/api/queues/{QUEUE}?state=dead&offset={rng.randrange(args.dead - 50)}",
            "GET /queues/bench-queue (50 dead)":
                lambda: f"/queues/{QUEUE}?state=dead&offset={rng.randrange(args.dead - 50)}",
        }
        timer = ServerTimer(create_app(Settings(redis_url=args.redis_url)))
        report(asyncio.run(run_rounds(timer, cases, args.calls, weigh=False)), TARGETS)
        # The dashboard keeps the ended-per-minute figures 10 s: what one read costs (the CLI, a cold page).
        seconds = []
        for _ in range(args.calls):
            started = time.perf_counter()
            ended_per_minute()
            seconds.append(time.perf_counter() - started)
        p50, p95 = p50_p95(seconds)
        print(f"  ended per minute, read from the job log ({finished:,} rows ended in 5 min): "
              f"p50 {p50 * 1000:.1f} / p95 {p95 * 1000:.1f} ms")
    finally:
        client.delete(*keys)
        db.close_all()
        drop_database(args.admin_url, DATABASE)


if __name__ == "__main__":
    main()
