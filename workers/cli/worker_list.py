"""``enrich workers``: the worker processes alive (and gone), and the jobs each runs now.

It reads through ``workers/live_workers.py``, as the dashboard's ``/workers`` does.
"""

from __future__ import annotations

import argparse
import json

from models import Settings

from .common import visible
from .queues import age_text, epoch_text, redis_client


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    from ..live_workers import worker_list

    client = redis_client(settings, "the workers' records are")
    workers = worker_list(client, settings.redis_heartbeat_timeout_ms)
    if args.json:
        print(json.dumps({"heartbeat_timeout_ms": settings.redis_heartbeat_timeout_ms,
                          "workers": [w.as_dict() for w in workers]}, indent=2))
        return 0
    if not workers:
        print("no worker has a record in Redis: none runs (with WorkerRegistry), and no gone one is still kept")
        return 0
    for w in workers:
        print(visible(f"{w.state.upper():<5} {w.host}:{w.pid}  queues {','.join(w.queues) or '-'}  "
                      f"threads {w.threads}  last heartbeat {epoch_text(w.last_heartbeat)} ({age_text(w.heartbeat_age_seconds)} "
                      f"ago)  running {len(w.jobs)}{' (held when it went)' if w.state == 'gone' and w.jobs else ''}"))
        for j in w.jobs:
            entity = f"{j.entity_type} {j.entity_id}" if j.entity_id else "-"
            print(visible(f"  job {j.job_id}  tree {j.tree_id}  {j.actor}  {entity}  for {age_text(j.running_for_seconds)}"
                          + (f"  attempt {j.attempt + 1}" if j.attempt else "")))
    return 0


def add_workers_command(sub, add) -> None:
    p = add(sub, "workers", cmd_workers,
            "with REDIS_URL: each worker process (host, pid, queues, threads, last heartbeat), live or gone (no "
            "heartbeat for REDIS_HEARTBEAT_TIMEOUT_MS), and the jobs it runs now (a gone one: held when it went), "
            "each with its tree and how long it has run",
            "enrich workers --json")
    p.add_argument("--json", action="store_true", help="print JSON")
