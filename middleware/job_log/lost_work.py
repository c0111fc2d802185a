"""Finding lost work: pending jobs whose message is no longer anywhere in Redis.

A Redis restarted without persistence forgets every message it held; so does
a flushed database.  The job log still says ``queued`` or ``retrying`` for
those jobs, for ever; and a job that ended just before such a restart may
have had its end in the journal still, so its row says ``running`` for ever.
The sweeper compares the two: a job past its due time (a running one: past
its start) by more than a grace period whose message is in none of the
places Dramatiq's Redis broker keeps one is marked ``lost`` (a final status,
error code ``message_lost``), and counts against its root like a failure.
``enrich resend`` sends it again.

A job a live worker runs now is never marked, whatever Redis lost: each
worker process lists the jobs it runs in its record (``WorkerRegistry``,
``middleware/worker_registry.py``), and the sweep spares every job a live
worker lists.  For a heartbeat timeout after Redis starts, when the records
may not all be written again yet, it marks no ``running`` row at all.  (A
worker without ``WorkerRegistry`` lists nothing: a job it still runs past
the grace after such a restart is marked; its end, when it comes, replaces
``lost`` and the root takes the failure back.)

A legacy row (written before job linking, without a job id) that is still
pending past the grace is marked ``lost`` too, its reason saying so: no
message can be looked for without an id, and no worker of today will ever
end such a row, so without this its tree (of one) would stay pending for ever.

Where a message can be, by its Redis broker's layout (``dramatiq.brokers.redis``):
``<ns>:<queue>.msgs`` holds the body of every message in the queue AND of
every message in a worker's unacked set; ``<ns>:<queue>.DQ.msgs`` holds the
delayed ones.  The delay queue is read first: a due message is enqueued on
its queue before it leaves the delay queue, so one read or the other finds it.

Only the Redis broker can be inspected this way; with another broker the
sweeper does nothing (``LostWorkSweeper.supported``).

The rows trail the job-log journal: a job acked a moment ago may still show
``queued`` while its final write waits there.  So, once the messages are
looked for, the sweep waits until the journal is applied through its newest
entry (every job whose message was gone had appended its end before its ack)
and marks only rows that have not moved since they were read.  A journal
that stays behind for ``fence_seconds`` skips the sweep until the next one.

The drainers run it (``JobLog`` gives each drainer one, on a Redis
broker): a thread beside each drain calls ``maybe_run`` about once a second;
the process that gets the lock looks, waits for the journal (its drainer
draining on meanwhile), then marks::

    sweeper = LostWorkSweeper(broker, database, grace_seconds=600, journal=journal)
    sweeper.maybe_run()          # the same, waiting in this thread: at most once per interval (a Redis lock)

Parameters:
  broker(RedisBroker): The broker whose queues are inspected.
  database(peewee.Database): The job log's.  Defaults to ``models.database``.
  grace_seconds(float): How long past its due time a job may wait before
    its message is looked for.  Defaults to 600.
  interval_seconds(float): ``maybe_run`` runs a sweep at most this often
    across all processes.  Defaults to 60.
  batch_size(int): Rows examined per query.  Defaults to 1000.
  journal(Journal): The job-log journal whose writes the rows trail.
    Defaults to none: nothing to wait for.
  fence_seconds(float): How long a sweep waits for that journal to be
    applied.  Defaults to 60.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from typing import Iterable, Optional

import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from peewee import Case, fn

from models.base import utcnow
from models.database import database as default_database
from models.job_log import LOST, QUEUED, RETRYING, RUNNING, EnrichmentLog

from ..worker_registry import running_job_ids
from .root_status import count_failed_child
from .rows import LOST_COLUMNS, JobLogRow

logger = structlog.get_logger("middleware.lost_work")

Log = EnrichmentLog
LOCK_KEY = "enrich:lost-work-sweep"
# Dramatiq's JSON encoder writes the message id as a key of the body (reading it by pattern
# costs a tenth of decoding every body).
_MESSAGE_ID = re.compile(rb'"message_id":\s*"([^"]+)"')


class LostWorkSweeper:
    """Marks pending jobs whose message is gone from Redis as ``lost`` (see the module)."""

    def __init__(self, broker, database=None, *, grace_seconds: float = 600.0, interval_seconds: float = 60.0,
                 batch_size: int = 1000, journal=None, fence_seconds: float = 60.0) -> None:
        self.broker = broker
        self.database = database if database is not None else default_database
        self.grace = dt.timedelta(seconds=grace_seconds)
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self.journal = journal
        self.fence_seconds = fence_seconds

    @property
    def supported(self) -> bool:
        return isinstance(self.broker, RedisBroker)

    # -- when ------------------------------------------------------------------

    def due(self) -> bool:
        """Whether this process sweeps now: no process did in the last ``interval_seconds``."""
        if not self.supported:
            return False
        key = f"{self.broker.namespace}:{LOCK_KEY}"
        # Never released: the key's expiry is what spaces the sweeps, whoever ran the last one.
        return bool(self.broker.client.set(key, uuid.uuid4().hex, nx=True,
                                           px=max(1, int(self.interval_seconds * 1000))))

    def maybe_run(self) -> Optional[int]:
        """``run_once`` if ``due()``: the number of jobs marked lost, or None."""
        return self.run_once() if self.due() else None

    # -- what ------------------------------------------------------------------

    def run_once(self) -> int:
        """One sweep: mark lost every overdue pending job whose message is in none of its places; returns how many."""
        if not self.supported:
            return 0
        with self.database.connection_context():
            missing = self._missing()
        # Waiting for the journal holds no database connection.
        if not missing or not self._journal_applied(len(missing)):
            return 0
        with self.database.connection_context():
            return self._mark_lost(missing)

    def _missing(self) -> list[tuple]:
        """The overdue pending rows whose message Redis does not hold, by id."""
        missing: list[tuple] = []
        after: Optional[uuid.UUID] = None
        running = running_job_ids(self.broker)  # None: the workers' records may be incomplete yet
        while True:
            overdue = self._overdue(after)
            if overdue:
                after = overdue[-1][0]
                present = self._message_ids_in_redis({self._queue_of(row) for row in overdue})
                missing += [row for row in overdue
                            if (row[1] is None or row[1] not in present) and not self._run_now(row, running)]
            if len(overdue) < self.batch_size:
                return missing

    @staticmethod
    def _run_now(row: tuple, running: Optional[set[str]]) -> bool:
        """Whether a live worker may run this job now (a legacy row without a job id: never)."""
        job_id, status = row[1], row[3]
        if job_id is None:
            return False
        return status == RUNNING if running is None else job_id in running

    def _journal_applied(self, candidates: int) -> bool:
        """Wait until every job-log write appended before Redis was read is in the database; False if not in time."""
        if self.journal is None:
            return True
        # Read after Redis was: a job whose message was gone had appended its end before its ack.
        fence = self.journal.newest_id()
        deadline = time.monotonic() + self.fence_seconds
        while not self.journal.applied_through(fence):
            if time.monotonic() >= deadline:
                stats = self.journal.stats()
                logger.warning("lost-work sweep skipped: the job log journal is behind, and rows that trail it "
                               "could look lost; the next sweep tries again", candidates=candidates,
                               backlog_entries=stats["entries"], oldest_entry_age_seconds=stats["oldest_age_seconds"])
                return False
            time.sleep(0.05)
        return True

    def _overdue(self, after: Optional[uuid.UUID]) -> list[tuple]:
        """(id, job_id, parent_job_id, status, retry_count, updated_at, message) of overdue pending jobs, by id."""
        cutoff = utcnow() - self.grace
        # A running job is looked for from its start (its row's last write), any other from when it was due.
        due = Case(None, [(Log.status == RUNNING, Log.updated_at)], fn.COALESCE(Log.due_at, Log.updated_at))
        query = (
            Log.select(Log.id, Log.job_id, Log.parent_job_id, Log.status, Log.retry_count, Log.updated_at, Log.message)
            .where(Log.status.in_((QUEUED, RETRYING, RUNNING)) & (due < cutoff))
            .order_by(Log.id)
            .limit(self.batch_size)
        )
        if after is not None:
            query = query.where(Log.id > after)
        return list(query.tuples().execute(self.database))

    def _queue_of(self, row: tuple) -> str:
        message = row[6] or {}
        queue = message.get("queue") if isinstance(message, dict) else None
        return queue if isinstance(queue, str) and queue else "default"  # Dramatiq's default queue

    def _message_ids_in_redis(self, queues: Iterable[str]) -> set[str]:
        """Every message id held in these queues' delay queues, then in the queues themselves (unacked included)."""
        client, ns = self.broker.client, self.broker.namespace
        found: set[str] = set()
        for queue in sorted(queues):
            for name in (dq_name(queue), queue):  # the delay queue first: see the module's docstring
                for _, body in client.hscan_iter(f"{ns}:{name}.msgs", count=1000):
                    # Every match, not the first: arguments come first in the body and may hold
                    # such a key; an extra id found only ever spares a job, never marks one lost.
                    found.update(m.decode("utf-8", "replace") for m in _MESSAGE_ID.findall(body))
        return found

    def _reason(self, queue: str, status: str, job_id: Optional[str]) -> str:
        if job_id is None:
            return (f"legacy row from before job linking, still {status} past the grace period: it has no job id, "
                    "so its message cannot be looked for, and no worker will end it")
        ns = self.broker.namespace
        where = (f"message not found in Redis: not in queue {queue!r} nor in any worker's unacked set "
                 f"({ns}:{queue}.msgs), nor in its delay queue ({ns}:{dq_name(queue)}.msgs)")
        if status == RUNNING:
            # Its end went to a journal that was lost (a Redis without persistence restarted before
            # a drainer applied it), or it ran past any time limit: nothing will ever end this row.
            return f"started, but its end was never recorded, and its {where}"
        return where

    def _mark_lost(self, rows: list[tuple]) -> int:
        """Mark each row lost if it has not moved since it was read; count it against its root."""
        marked = 0
        for row in rows:
            row_id, job_id, parent, status, retry_count, updated_at, _ = row
            reason = self._reason(self._queue_of(row), status, job_id)
            lost = JobLogRow.lost(job_id, parent, retry_count, reason)
            with self.database.atomic():
                changed = (
                    Log.update({**{getattr(Log, name): getattr(lost, name) for name in LOST_COLUMNS},
                                Log.own_status: LOST})
                    .where((Log.id == row_id) & (Log.status == status) & (Log.retry_count == retry_count)
                           & (Log.updated_at == updated_at))
                    .execute(self.database)
                )
                if changed and parent is not None:
                    count_failed_child(parent, self.database)  # root_status, rule 1
            if changed:
                marked += 1
                logger.warning("job marked lost: its message is nowhere in Redis", job_id=job_id,
                               parent_job_id=parent, was=status, retry_count=retry_count, reason=reason)
        return marked
