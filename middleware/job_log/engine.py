"""JobLog: the job log's write path as one object: the journal, its drainer, the lost-work sweeper.

    job_log = JobLog(database).bind(broker)     # JobLinking makes one; workers.broker.job_log(broker) finds it
    job_log.append(JobLogRow.queued(...))        # a write: to the journal, applied later by a drainer
    job_log.start_draining()                     # a drainer thread in this process (and its sweeper)
    job_log.flush()                              # wait until this process's writes are in the database
    job_log.stats(), job_log.rejected()          # what `enrich drain` and the dashboard show

Every write goes to the journal (``journal``, a Redis Stream beside a
RedisBroker's queues, in memory otherwise); drainers (``drainer``) apply it
to the database with the guarded upsert (``upsert``) and count failures on
their roots (``root_status``); the sweeper (``lost_work``) marks jobs whose
message Redis lost.  ``JobLinking`` (the Dramatiq hooks) builds the rows
(``rows``) and hands them here; ``enrich drain`` and the dashboard talk to
this object too, never to the parts.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import structlog

from models.settings import job_log_settings

from . import database as log_database
from .drainer import Drainer
from .journal import Entry, Journal, JournalUnavailable, MemoryJournal, RedisJournal, journal_for, redis_journal
from .redis_persistence import warn_if_redis_keeps_nothing
from .rows import JobLogRow
from .start_rows import StartRows

logger = structlog.get_logger("middleware.job_linking")


class JobLog:
    """The job log's journal, drainer and lost-work sweeper, for one broker.

    Parameters:
      database(peewee.Database): Where rows go.  Defaults to ``models.database``,
        bound to ``DATABASE_URL`` if nothing else bound it.
      stream(str): The journal's name under the broker's namespace.
        Defaults to ``JOB_LOG_STREAM``, else ``job-log``.
      drain_in_workers(bool): Run a drainer thread in every worker process.
        Defaults to ``JOB_LOG_DRAIN_IN_WORKERS``, else True (always True
        without Redis: nobody else can drain an in-memory journal).
      batch_size(int): Rows per drain transaction at most.  Defaults to 2000.
      claim_idle(float): Seconds before a dead drainer's entries are taken over.  Defaults to 10.
      root_wait(float): Seconds a failed child waits for its root's row.  Defaults to 30.
      lost_work_grace(float): Seconds past due before a pending job's message is
        looked for in Redis (``lost_work``).  Defaults to 600.
      lost_work_interval(float): Seconds between two lost-work sweeps, across
        the drainers of every process; 0 turns the sweep off.  Defaults to 60.
    """

    def __init__(
        self,
        database=None,
        *,
        stream: Optional[str] = None,
        drain_in_workers: Optional[bool] = None,
        batch_size: int = 2000,
        claim_idle: float = 10.0,
        root_wait: float = 30.0,
        lost_work_grace: float = 600.0,
        lost_work_interval: float = 60.0,
    ) -> None:
        env = job_log_settings()
        self.database = database
        self.stream = stream or env.stream
        self.drain_in_workers = env.drain_in_workers if drain_in_workers is None else drain_in_workers
        self._drainer_options = {"batch_size": batch_size, "claim_idle": claim_idle, "root_wait": root_wait}
        self._lost_work = {"grace_seconds": lost_work_grace, "interval_seconds": lost_work_interval}
        self._broker = None
        self._journal: Optional[Journal] = None
        self._drainer: Optional[Drainer] = None
        self._start_rows: Optional[StartRows] = None
        self._setup_lock = threading.RLock()

    @classmethod
    def of_redis(cls, client, stream: Optional[str] = None, namespace: str = "dramatiq") -> JobLog:
        """The job log whose journal is on this Redis (the dashboard reads its figures through ``client``)."""
        job_log = cls(stream=stream)
        job_log._journal = redis_journal(client, job_log.stream, namespace)
        return job_log

    def bind(self, broker) -> JobLog:
        """Use ``broker``'s journal (the first broker bound is kept); returns this object."""
        if self._journal is None:
            with self._setup_lock:
                if self._journal is None:
                    self._broker = broker
                    self._journal = journal_for(broker, self.stream)
        return self

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("JobLog.bind(broker) first: the journal is the broker's")
        return self._journal

    @property
    def in_memory(self) -> bool:
        """Whether the journal lives in this process's memory (no Redis): only this process can drain it."""
        return isinstance(self.journal, MemoryJournal)

    # -- writes ------------------------------------------------------------------------

    def append(self, row: JobLogRow | dict[str, Any], failed_child_of: Optional[str] = None,
               before: Optional[tuple[str, str]] = None) -> None:
        """Append one write (JournalUnavailable when Redis cannot take it).

        ``before``: (a message's ``redis_message_id``, what the write is): the write must be in the
        journal before that message is enqueued or acked, and is sent with that command when the
        broker allows it (``ride_along``; then that command raises ``JournalDown`` if it fails)."""
        self.journal.append(row.as_dict() if isinstance(row, JobLogRow) else row, failed_child_of, before)

    def hold_start(self, job_id: str, make_row: Callable[[], JobLogRow]) -> None:
        """A job's start, held a moment: its row is made and appended only if the job has not ended by then
        (``start_rows``)."""
        self._held_starts().hold_row(job_id, lambda: make_row().as_dict())

    def take_start(self, job_id: str) -> bool:
        """Whether the job's start was still held, never appended (its end stands for both)."""
        return self._start_rows is not None and self._start_rows.take(job_id)

    def apply_now(self, rows: list[JobLogRow]) -> bool:
        """Apply rows at once in the calling thread, besides the journal (which keeps them if this fails)."""
        return self.drainer.apply_now([row.as_dict() for row in rows])

    def _held_starts(self) -> StartRows:
        if self._start_rows is None:
            with self._setup_lock:
                if self._start_rows is None:
                    self._start_rows = StartRows(self.append)
        return self._start_rows

    # -- draining ----------------------------------------------------------------------

    @property
    def drainer(self) -> Drainer:
        """This process's drainer (made on first use; ``start_draining`` runs it on a thread)."""
        if self._drainer is None:
            with self._setup_lock:
                if self._drainer is None:
                    database = log_database.resolve(self.database)
                    self._drainer = Drainer(self.journal, database, sweeper=self._sweeper(database),
                                            **self._drainer_options)
        return self._drainer

    def _sweeper(self, database):
        """A lost-work sweeper for the drainer: only a Redis broker's queues can be looked in."""
        from .lost_work import LostWorkSweeper

        if self._broker is None or self._lost_work["interval_seconds"] <= 0:
            return None
        sweeper = LostWorkSweeper(self._broker, database, journal=self.journal, **self._lost_work)
        return sweeper if sweeper.supported else None

    def check_database(self) -> None:
        """JobLogRefused (one line) when the database cannot take the job log: unreachable, not migrated."""
        log_database.refuse_unless_ready(self.database)

    def warn_if_redis_keeps_nothing(self, process: str) -> bool:
        """One WARNING when the journal's Redis has no persistence at all (``redis_persistence``)."""
        journal = self.journal
        return isinstance(journal, RedisJournal) and warn_if_redis_keeps_nothing(journal.client, process)

    def start_draining(self, always: bool = False) -> None:
        """Drain on a thread of this process when ``drain_in_workers`` (or ``always``, or without Redis)."""
        if always or self.drain_in_workers or self.in_memory:
            self.drainer.start()

    def drain_until_stopped(self) -> None:
        """Drain in the calling thread until ``request_stop()`` (``enrich drain``), then stop."""
        self.drainer.run()
        self.drainer.stop(timeout=0)

    def request_stop(self) -> None:
        """Make ``drain_until_stopped`` return after the pass in progress (from a signal handler)."""
        self.drainer.request_stop()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row this process wrote is in the database; True if it is.

        A process with a drainer of its own waits for it (or drains, if it is
        not running); one without (the CLI, the dashboard: a send appends its
        ``queued`` row) waits for the other processes' drainers.
        """
        if self._start_rows is not None:
            self._start_rows.flush()
        if self._drainer is not None:
            return self._drainer.flush(timeout)
        journal = self._journal
        if journal is None or journal.last_appended is None:
            return True
        if isinstance(journal, MemoryJournal):
            return self.drainer.flush(timeout)  # nobody else can drain it
        target, deadline = journal.last_appended, time.monotonic() + timeout
        while True:
            try:
                if journal.applied_through(target):
                    return True
            except JournalUnavailable:
                pass  # Redis restarting: look again
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what this process wrote (up to ``timeout``) and stop its drainer.

        What is left stays in Redis for the other drainers; an in-memory
        journal's leftovers are printed in full to the JSON log (nothing is
        dropped silently).
        """
        if self._start_rows is not None:
            self._start_rows.flush()
        if self._drainer is not None:
            self._drainer.stop(timeout)
        if isinstance(self._journal, MemoryJournal):
            for entry in self._journal.undelivered():
                logger.error("job log write could not be saved before shutdown", job_id=entry.row.get("job_id"),
                             row={k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                                  for k, v in entry.row.items()})

    # -- what operators see ------------------------------------------------------------

    def stats(self) -> dict:
        """The journal's backlog and this process's drain counters (see ``Journal.stats``)."""
        if self._journal is None:
            return {"entries": 0, "oldest_age_seconds": None, "drained_total": 0, "refused_total": 0}
        return self._journal.stats()

    @property
    def where(self) -> str:
        """Where the journal keeps the rows the database refused, for messages."""
        return self.journal.where

    @property
    def keys(self) -> tuple[Optional[str], Optional[str]]:
        """(the journal's Redis key, the rejected rows' key); (None, None) in memory."""
        journal = self.journal
        return getattr(journal, "key", None), getattr(journal, "rejected_key", None)

    def rejected_count(self) -> int:
        """How many rows the database refused are kept aside."""
        return self.journal.rejected_count()

    def rejected(self, limit: int = 1000) -> list[tuple[str, Entry, str]]:
        """The rows the database refused: (id, entry, the database's error), oldest first."""
        return self.journal.rejected(limit)

    def replay_rejected(self) -> int:
        """Append every refused row to the journal again (after the cause is fixed); returns how many."""
        return self.journal.replay_rejected()


__all__ = ["JobLog", "JournalUnavailable"]
