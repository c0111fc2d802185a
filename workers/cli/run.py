"""Running jobs inside the ``enrich`` process: the in-memory broker, a Dramatiq worker, progress.

Used by ``enrich run``, ``enrich demo`` and by ``enrich album`` (and friends)
when there is no shared broker.  Jobs go through the same actors and
middleware as in production; only the queue lives in this process: the
command starts the app on settings without ``redis_url``.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, TextIO

from peewee import fn

from models import EnrichmentLog, Settings, utcnow
from models.job_log import DEGRADED, FAILED, FINAL_STATUSES, LOST
from models.timeline import get_tree

from .common import CommandError, actor, app_broker, note, visible
from .timeline import Style, fmt_ms, tree_labels, tree_lines

if TYPE_CHECKING:  # Dramatiq loads only for the commands that run jobs (start-up time of the others)
    import dramatiq

WORKER_THREADS = 4
STOP_TIMEOUT_MS = 3000  # on Ctrl-C: how long running jobs get to finish before the process leaves
PROGRESS_EVERY = 5.0  # seconds between progress lines when stdout is not a terminal
_CHUNK = 500  # job ids per IN (...) list
MAX_TREES_SHOWN = 50


def _chunks(items: Sequence[str]):
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


def with_started_trees(root_job_ids: Sequence[str], since: dt.datetime) -> list[str]:
    """These roots and the roots they started as new trees (``sync-new-releases`` starts one per album).

    ``since`` (when the run began) keeps the lookup on the (is_root_job, created_at) index.
    """
    started = []
    for chunk in _chunks(root_job_ids):
        query = EnrichmentLog.select(EnrichmentLog.job_id).where(
            (EnrichmentLog.is_root_job == True)  # noqa: E712 (peewee builds SQL from ==)
            & (EnrichmentLog.created_at >= since)
            & EnrichmentLog.triggered_by.in_(chunk)
        ).order_by(EnrichmentLog.created_at)
        started += [job_id for (job_id,) in query.tuples()]
    return list(root_job_ids) + [job_id for job_id in started if job_id not in root_job_ids]


def tree_status_counts(root_job_ids: Sequence[str]) -> dict[str, int]:
    """Rows of these trees (roots and children) counted by status."""
    counts: dict[str, int] = {}
    for chunk in _chunks(root_job_ids):
        query = (
            EnrichmentLog.select(EnrichmentLog.status, fn.COUNT(EnrichmentLog.id))
            .where(EnrichmentLog.job_id.in_(chunk) | EnrichmentLog.parent_job_id.in_(chunk))
            .group_by(EnrichmentLog.status)
            .tuples()
        )
        for status, count in query:
            counts[status] = counts.get(status, 0) + count
    return counts


class Progress:
    """One updating line on a terminal; a line every few seconds otherwise."""

    def __init__(self, out: TextIO, style: Style, every: float = PROGRESS_EVERY):
        self.out, self.style, self.every = out, style, every
        self.started = time.monotonic()
        self._last_print = float("-inf")
        self._last_text = ""

    def line(self, counts: Mapping[str, int], in_flight: int) -> str:
        done = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status in FINAL_STATUSES)
        elapsed = fmt_ms(int((time.monotonic() - self.started) * 1000))
        return f"jobs {done}/{done + in_flight} done" + (f" ({parts})" if parts else "") + f", {in_flight} in flight, {elapsed}"

    def show(self, counts: Mapping[str, int], in_flight: int, final: bool = False) -> None:
        text = self.line(counts, in_flight)
        if self.style.tty:
            self.out.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.out.flush()
        elif final or time.monotonic() - self._last_print >= self.every:
            if text != self._last_text or final:
                print(text, file=self.out, flush=True)
            self._last_print, self._last_text = time.monotonic(), text


class InProcessRun:
    """A Dramatiq worker on the in-memory broker, for the lifetime of a ``with`` block.

    Parameters:
        broker: the process's broker; must be the in-memory ``StubBroker``.
        out: where progress goes.
        threads: worker threads.
    """

    def __init__(self, broker: dramatiq.Broker, out: TextIO = sys.stdout, threads: int = WORKER_THREADS):
        from dramatiq.brokers.stub import StubBroker

        if not isinstance(broker, StubBroker):
            raise CommandError("an in-process run needs the in-memory broker (unset REDIS_URL)")
        self.broker = broker
        self.out = out
        self.style = Style(out)
        self.threads = threads
        self.root_job_ids: list[str] = []
        self.worker: Optional[dramatiq.Worker] = None
        self.since = utcnow()

    def __enter__(self) -> "InProcessRun":
        import dramatiq

        self.since = utcnow() - dt.timedelta(seconds=1)  # a margin for clocks that round
        self.worker = dramatiq.Worker(self.broker, worker_threads=self.threads)
        self.worker.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.worker is not None:
            # After Ctrl-C, running jobs get a moment; their threads are daemons and end with the process.
            self.worker.stop(timeout=STOP_TIMEOUT_MS if exc_type else 30_000)
            self.worker = None

    def send(self, actor_name: str, *args, **kwargs) -> str:
        """Send a root job; returns its job id."""
        actor = self.broker.get_actor(actor_name)
        message = actor.send_with_options(args=args, kwargs=kwargs, triggered_by="cli")
        self.root_job_ids.append(message.message_id)
        return message.message_id

    def trees(self) -> list[str]:
        """The root job ids sent, and those of the trees they started."""
        return with_started_trees(self.root_job_ids, self.since)

    def flush_job_log(self, timeout: float = 30.0) -> None:
        """Every job-log row written so far is in the database (the journal drains in the background)."""
        from ..broker import job_log

        if not job_log(self.broker).flush(timeout):
            raise CommandError(f"the job log was not written to the database within {timeout:g} s")

    def in_flight(self) -> int:
        """Messages queued, delayed for a retry, or being processed."""
        return sum(queue.unfinished_tasks for queue in self.broker.queues.values())

    def wait(self, timeout: Optional[float] = None, poll: float = 0.25) -> None:
        """Show progress until every message is processed; RunError after ``timeout`` seconds."""
        progress = Progress(self.out, self.style)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            in_flight = self.in_flight()
            if in_flight == 0:
                self.flush_job_log()
                progress.show(tree_status_counts(self.trees()), 0, final=True)
                return
            counts = tree_status_counts(self.trees())
            if deadline is not None and time.monotonic() >= deadline:
                progress.show(counts, in_flight, final=True)
                raise CommandError(f"timed out after {timeout:g} s with {in_flight} job(s) still in flight")
            progress.show(counts, in_flight)
            time.sleep(poll)


def run_here(roots: Sequence[tuple[str, tuple, dict]], settings: Settings, timeout: Optional[float],
             show_trees: bool = True) -> list[str]:
    """Run root jobs ``(actor name, args, kwargs)`` on an in-process worker (the app started on ``settings``,
    which have no ``redis_url``) until every tree is finished, with progress; print their timelines; returns
    the root job ids of every tree that ran (those sent, and the trees they started)."""
    broker = app_broker(settings)
    for actor_name, _, _ in roots:
        actor(actor_name)  # a missing actor is one line, before the worker starts
    with InProcessRun(broker) as run:
        for actor_name, job_args, kwargs in roots:
            run.send(actor_name, *job_args, **kwargs)
        try:
            run.wait(timeout)
        except CommandError:  # timed out: show how far each tree got, then say so
            run.flush_job_log()
            if show_trees:
                print_trees(run.trees())
            raise
        trees = run.trees()
    if show_trees:
        print_trees(trees)
    return trees


# Exit status of an in-process run whose trees did not all end well (1 is a command error).
TREES_NOT_WELL = 2


def trees_exit_status(root_job_ids: Sequence[str]) -> int:
    """0 when every tree ended well; else a note on stderr naming how many did not, and ``TREES_NOT_WELL``.

    A script or a cron job running ``enrich run`` learns from the status alone
    that a tree needs looking at; the timelines above say which and why.
    """
    statuses: list[str] = []
    for chunk in _chunks(root_job_ids):
        query = EnrichmentLog.select(EnrichmentLog.status).where(EnrichmentLog.job_id.in_(chunk))
        statuses += [status for (status,) in query.tuples()]
    bad = {status: statuses.count(status) for status in (FAILED, DEGRADED, LOST)}
    if not any(bad.values()):
        return 0
    parts = ", ".join(f"{count} {status}" for status, count in bad.items() if count)
    total = len(root_job_ids)
    note(f"{sum(bad.values())} of {total} tree{'s' if total != 1 else ''} did not end well ({parts}): "
         f"see the timeline{'s' if total != 1 else ''} above; exit status {TREES_NOT_WELL}")
    return TREES_NOT_WELL


def print_trees(root_job_ids: Sequence[str], out: Optional[TextIO] = None) -> None:
    """Each tree's timeline, a blank line before each; at most MAX_TREES_SHOWN."""
    out = out or sys.stdout
    style = Style(out)
    for job_id in root_job_ids[:MAX_TREES_SHOWN]:
        tree = get_tree(job_id)
        print("", file=out)
        if tree is None:
            print(f"{visible(job_id)}  not started", file=out)
        else:
            print("\n".join(tree_lines(tree, tree_labels(tree), style)), file=out)
    hidden = len(root_job_ids) - MAX_TREES_SHOWN
    if hidden > 0:
        print(f"\n… and {hidden} more trees: enrich roots", file=out)
    out.flush()
