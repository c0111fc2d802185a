"""``enrich drain``: a drainer process of its own, and the rows the database refused.

By default every worker process drains the job-log journal in a thread; a
fleet that wants drainers apart sets ``JOB_LOG_DRAIN_IN_WORKERS=0`` and runs
the Procfile's ``drain`` process type instead (any number of them).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from middleware.job_log import JobLog, JobLogRefused
from models import Settings

from .common import CommandError, note


def _job_log(settings: Settings) -> JobLog:
    """The broker's job log; the broker without actors: a drainer runs none."""
    from ..broker import build_broker, job_log

    found = job_log(build_broker(settings))
    if found.in_memory:
        raise CommandError("REDIS_URL is not set: without Redis the job log is drained inside each process "
                           "(enrich run, enrich demo); enrich drain needs the workers' Redis")
    return found


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    job_log = _job_log(settings)
    if args.list_rejected:
        rejected = job_log.rejected(args.limit)
        if args.json:
            print(json.dumps([{"id": entry_id, "error": error, "failed_child_of": entry.failed_child_of,
                               "row": entry.row} for entry_id, entry, error in rejected], indent=2, default=str))
        else:
            for entry_id, entry, error in rejected:
                print(f"{entry_id}  {entry.row.get('job_id')}  {entry.row.get('status')}  {error}")
            note(f"{len(rejected)} rejected row(s) in {job_log.where}"
                 + ("; enrich drain --list-rejected --json prints them in full" if rejected else ""))
        return 0
    if args.replay_rejected:
        moved = job_log.replay_rejected()
        print(f"{moved} rejected row(s) appended to the journal again")
        return 0
    try:
        job_log.check_database()
    except JobLogRefused as exc:
        raise CommandError(f"refusing to start: {exc}") from None
    job_log.warn_if_redis_keeps_nothing("enrich drain")
    _serve_metrics(job_log, settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: job_log.request_stop())
    note(f"draining the job-log journal {job_log.keys[0]!r} into the database (Ctrl-C stops)")
    job_log.drain_until_stopped()
    print(json.dumps(job_log.stats()), file=sys.stderr)
    return 0


def _serve_metrics(job_log: JobLog, settings: Settings) -> None:
    """The drainer's metrics on PROMETHEUS_HOST:DRAIN_PROMETHEUS_PORT: with JOB_LOG_DRAIN_IN_WORKERS=0
    only drainers know the journal's drained and refused rows and the roots turning degraded."""
    from prometheus_client import CollectorRegistry, start_http_server

    from middleware.observability import enable_metrics, observe_journal

    if not settings.drain_prometheus_port:
        return
    registry = CollectorRegistry()
    try:
        start_http_server(settings.drain_prometheus_port, addr=settings.prometheus_host, registry=registry)
    except OSError as exc:  # the port is taken: drain on, without metrics
        note(f"cannot serve metrics on {settings.prometheus_host}:{settings.drain_prometheus_port} "
             f"({exc.strerror or exc}); draining without a metrics endpoint: set DRAIN_PROMETHEUS_PORT "
             "to a free port, or to 0 to turn metrics off")
        return
    enable_metrics(registry)
    observe_journal(job_log.stats)
    note(f"metrics on http://{settings.prometheus_host}:{settings.drain_prometheus_port}/metrics")


def add_drain_command(sub, add) -> None:
    p = add(sub, "drain", cmd_drain,
            "move job-log rows from the Redis journal into the database until stopped (workers drain in a "
            "thread too, unless JOB_LOG_DRAIN_IN_WORKERS=0); or list or replay the rows the database refused",
            "REDIS_URL=redis://127.0.0.1:6379/0 enrich drain\n  enrich drain --list-rejected --json")
    p.add_argument("--list-rejected", action="store_true",
                   help="print the rows the database refused (kept in the stream <namespace>:job-log:rejected)")
    p.add_argument("--replay-rejected", action="store_true",
                   help="append every refused row to the journal again (after fixing the cause)")
    p.add_argument("--limit", type=int, default=1000, help="with --list-rejected: at most this many (default 1000)")
    p.add_argument("--json", action="store_true", help="with --list-rejected: the rows in full, as JSON")
