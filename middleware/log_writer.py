"""A group-commit writer for job-log rows that never drops one.

Worker threads hand it row writes.  One batch at a time is committed in one
transaction (one multi-row upsert, on PostgreSQL over a connection of the
writer's own), so eight threads finishing eight jobs cost one round trip,
and a job's start and end that are both still pending become one row
insert.  A thread that must know its row is saved (before Dramatiq acks the
message) commits the pending batch itself, or sleeps until the batch in
flight is done, for at most ``commit_timeout`` seconds; a background thread
commits start rows nobody waits for, and retries after an outage.

When the database fails (a restart, a lost connection), the pending writes
stay in memory, in order, and are retried with backoff until the database is
back; the JSON log says when that starts and ends.  Meanwhile nobody waits for
commits, so the actors' own work goes on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import peewee
import structlog

from models.database import is_postgres

from . import log_rows
from .fork_reset import reset_in_forked_children

logger = structlog.get_logger("middleware.job_linking")

# Errors that mean "the database is not there right now": keep and retry.
# Anything else is a problem with a row: isolate it instead of retrying forever.
OUTAGE_ERRORS = (peewee.OperationalError, peewee.InterfaceError)


class _Waiter:
    """One thread waiting for one write: woken when it is settled, or when it may lead a commit.

    A bare lock is the signal (held: not woken yet): setting and waiting on
    it run in C, where an ``Event`` runs a ``Condition`` in Python, and the
    committing thread wakes a whole batch while the other threads wait for the GIL.
    """

    __slots__ = ("_signal", "saved", "waiting")

    def __init__(self) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.saved: Optional[bool] = None  # None until the write is committed or refused
        self.waiting = True  # False once its thread gave up: it must not be handed the lead

    def wake(self) -> None:
        try:
            self._signal.release()
        except RuntimeError:
            pass  # already woken and not waiting again yet

    def reset(self) -> None:
        self._signal.acquire(blocking=False)

    def sleep(self, timeout: float) -> None:
        self._signal.acquire(timeout=timeout)


@dataclass
class PendingWrite:
    row: dict[str, Any]
    failed_child_of: Optional[str] = None  # the root to count this job's permanent failure against
    waiters: list[_Waiter] = field(default_factory=list)
    rejected: bool = False  # the database refused the row (it is in the JSON log instead)
    queued_at: float = field(default_factory=time.monotonic)
    urgent: bool = False

    def merge(self, newer: "PendingWrite") -> None:
        """Fold a newer write for the same job into this one, as the database would."""
        self.row = log_rows.merge_rows(self.row, newer.row)
        self.failed_child_of = self.failed_child_of or newer.failed_child_of
        self.urgent = self.urgent or newer.urgent
        self.waiters.extend(newer.waiters)  # whoever waits for either write waits for the merged one

    def settle(self) -> None:
        for waiter in self.waiters:
            waiter.saved = not self.rejected
            waiter.wake()

    def wake(self) -> None:
        for waiter in self.waiters:
            waiter.wake()


class LogWriter:
    """Commits job-log rows in groups, led by the threads that wait for them.

    Each waiting thread sleeps on its own signal and is woken once: when its
    row is committed, or when the commit before it ends and it may lead the
    next one.  Waking every waiter at every commit (a shared condition)
    cost more CPU than the commits themselves with eight worker threads.

    Parameters:
      database(peewee.Database): Where the rows go (a DatabaseProxy works).
      commit_timeout(float): How long a worker thread waits for its row's
        commit before Dramatiq acks anyway.  Defaults to 5 seconds.
      flush_interval(float): How long start rows may wait to be merged with
        their end before being committed on their own.  Defaults to 50 ms.
      max_batch(int): Rows per transaction.  Defaults to 500.
      retry_backoff(tuple[float, float]): First and longest pause between
        retries while the database is down.  Defaults to (0.2, 5.0) seconds.
    """

    def __init__(
        self,
        database,
        *,
        commit_timeout: float = 5.0,
        flush_interval: float = 0.05,
        max_batch: int = 500,
        retry_backoff: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self.database = database
        self.commit_timeout = commit_timeout
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.retry_backoff = retry_backoff
        self._pending: dict[str, PendingWrite] = {}
        self._in_flight: dict[str, PendingWrite] = {}  # the batch being committed
        self._committing = False  # one batch at a time, by whichever thread leads
        self._lock = threading.Lock()
        self._wake_writer = threading.Event()  # set at shutdown; otherwise the writer thread polls
        self._thread: Optional[threading.Thread] = None  # None again in a forked child (see after_fork_in_child)
        self._stopping = False
        self._outage_since: Optional[float] = None
        self._own = None  # the writer's own PostgreSQL connection (see _connection)
        self._own_source = None
        self.committed_rows = 0
        reset_in_forked_children(self)

    # -- called by worker threads -----------------------------------------

    def submit(self, write: PendingWrite, wait: bool) -> bool:
        """Queue a row write; with ``wait``, block until it is committed.

        Returns True when committed (or when not asked to wait), False when
        the wait timed out, the row was refused, or the database is down (the
        write stays queued).
        """
        self._ensure_running()
        job_id = write.row["job_id"]
        waiter = _Waiter() if wait else None
        with self._lock:
            if waiter is not None:
                write.urgent = True
                write.waiters.append(waiter)
            pending = self._pending.get(job_id)
            if pending is None:
                self._pending[job_id] = write
            else:
                pending.merge(write)
        return True if waiter is None else self._commit_and_wait(job_id, waiter)

    def wait_for(self, job_id: str) -> bool:
        """Commit ``job_id``'s pending write now and wait for it (True if nothing is left to write)."""
        waiter = _Waiter()
        with self._lock:
            pending = self._pending.get(job_id) or self._in_flight.get(job_id)
            if pending is None:
                return True
            pending.urgent = True
            pending.waiters.append(waiter)
        return self._commit_and_wait(job_id, waiter)

    def _commit_and_wait(self, job_id: str, waiter: _Waiter) -> bool:
        """Group commit, led by the waiting threads themselves.

        A thread whose write is pending while no batch is being committed
        commits everything pending itself (no hand-off to another thread,
        whose turn at the GIL could take milliseconds); the others sleep
        until their write is settled or the running commit hands them the lead.
        """
        deadline = time.monotonic() + self.commit_timeout
        while True:
            with self._lock:
                if waiter.saved is not None:
                    return waiter.saved
                if self._outage_since is not None:
                    return False  # the database is down: do not hold up the actors
                batch = None
                if not self._committing and job_id in self._pending:
                    batch = self._take_batch()
                else:
                    waiter.reset()  # under the lock: a wake-up after this is not missed
            if batch is not None:
                self._commit_batch(batch)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiter.waiting = False
                return False
            waiter.sleep(remaining)

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def database_down(self) -> bool:
        return self._outage_since is not None

    # -- lifecycle ----------------------------------------------------------

    def _ensure_running(self) -> None:
        # Called for every write: no system call (os.getpid) and no lock here.
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._wake_writer.clear()
            self._thread = threading.Thread(target=self._run, name="job-log-writer", daemon=True)
            self._thread.start()

    def after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, and its connection belongs to the
        # parent's session (closing it here, or letting it be collected, would end that session).
        self._lock = threading.Lock()
        self._thread = None
        # The parent commits its own pending writes; a commit it was running at the
        # fork would otherwise look like one in flight here for ever.
        self._pending, self._in_flight, self._committing = {}, {}, False
        if self._own is not None:
            _inherited_connections.append(self._own)
            self._own = None

    def stop(self, timeout: float = 10.0) -> int:
        """Flush what is pending and stop; returns how many writes could not be saved.

        Writes that could not be saved are printed in full to the JSON log,
        so an operator can replay them: nothing is dropped silently.
        """
        thread = self._thread
        if thread is None:
            self._close_own_connection()
            return 0
        with self._lock:
            self._stopping = True
        self._wake_writer.set()
        thread.join(timeout)
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        for pending in left:
            logger.error(
                "job log write could not be saved before shutdown",
                job_id=pending.row["job_id"],
                row=json.loads(json.dumps(pending.row, default=str)),
            )
            pending.wake()
        self._thread = None
        self._close_own_connection()
        return len(left)

    def _close_own_connection(self) -> None:
        if self._own is not None:
            _discard_connection(self._own)
            self._own = None

    # -- the writer thread ----------------------------------------------------

    def _run(self) -> None:
        """The writer thread's share: start rows nobody waits for, retries after an outage, the last flush."""
        try:
            self._commit_until_stopped()
        except Exception:
            # Waiting threads still commit their own writes; the next write starts a new thread.
            logger.exception("job log writer thread failed; it is restarted with the next write")
            self._thread = None

    def _commit_until_stopped(self) -> None:
        backoff = self.retry_backoff[0]
        while True:
            with self._lock:
                if self._stopping and not self._pending:
                    return
                batch = self._take_batch() if not self._committing and self._due() else None
            if batch is None:
                # Polling costs less than being woken by every write.
                self._wake_writer.wait(self.flush_interval / 2)
                continue
            if self._commit_batch(batch):
                backoff = self.retry_backoff[0]
                continue
            self._wake_writer.wait(backoff)
            backoff = min(backoff * 2, self.retry_backoff[1])
            if self._stopping and backoff >= self.retry_backoff[1]:
                return  # give up at shutdown; stop() logs what is left

    def _due(self) -> bool:
        """Whether the writer thread should commit now (the caller holds the lock)."""
        if not self._pending:
            return False
        if self._stopping or self._outage_since is not None:
            return True
        oldest = next(iter(self._pending.values()))  # writes keep their first arrival's place
        return time.monotonic() - oldest.queued_at >= self.flush_interval

    def _take_batch(self) -> list[PendingWrite]:
        """Claim the next batch (the caller holds the lock and saw no commit running).

        A start row younger than ``flush_interval`` stays behind: its job will
        most likely end soon, and then both become one row insert.
        """
        now = time.monotonic()
        keys = [
            k for k, p in self._pending.items()
            if p.urgent or self._stopping or self._outage_since is not None or now - p.queued_at >= self.flush_interval
        ][: self.max_batch]
        batch = [self._pending.pop(k) for k in keys]
        self._in_flight = {p.row["job_id"]: p for p in batch}
        self._committing = True
        return batch

    def _commit_batch(self, batch: list[PendingWrite]) -> bool:
        """Commit a claimed batch, wake its waiters and hand the lead on; False when the database is down."""
        try:
            if batch:
                self._commit(batch)
        except OUTAGE_ERRORS as exc:
            self._requeue(batch)
            self._note_outage(exc)
            with self._lock:
                self._committing = False
                for pending in self._pending.values():
                    pending.wake()  # they see the outage and stop waiting
            return False
        except Exception:  # a bad row: commit the others, log the culprit in full
            batch = self._commit_one_by_one(batch)
        self._note_recovery()
        with self._lock:
            self._in_flight = {}
            self._committing = False
            for pending in batch:
                pending.settle()
            self._hand_off_lead()
        return True

    def _hand_off_lead(self) -> None:
        """Wake the waiters of one pending write: one of them leads the next commit."""
        for pending in self._pending.values():
            if any(waiter.waiting for waiter in pending.waiters):
                pending.wake()
                return

    def _requeue(self, batch: list[PendingWrite]) -> None:
        """Put a failed batch back in front, merging newer writes for the same jobs."""
        with self._lock:
            self._in_flight = {}
            newer = self._pending
            self._pending = {}
            for pending in batch:
                self._pending[pending.row["job_id"]] = pending
            for job_id, pending in newer.items():
                if job_id in self._pending:
                    self._pending[job_id].merge(pending)
                else:
                    self._pending[job_id] = pending

    def _connection(self):
        """The database the commits run on.

        On PostgreSQL, a connection of the writer's own, opened in each
        process on first use: commits run one at a time, so one connection
        is enough, and a connection taken from the pool for every commit
        cost a ``SELECT 1`` round trip (the pool's liveness check) each time.
        SQLite commits go through the shared pool (one writer at a time anyway).
        """
        real = getattr(self.database, "obj", self.database)
        if not is_postgres(real):
            return self.database
        if self._own is None or self._own_source is not real:
            if self._own is not None:
                _discard_connection(self._own)
            self._own = peewee.PostgresqlDatabase(real.database, thread_safe=False, **real.connect_params)
            self._own_source = real
        return self._own

    def _commit(self, batch: list[PendingWrite]) -> None:
        db = self._connection()
        try:
            failing = [p for p in batch if p.failed_child_of]
            if not failing:
                # One statement is its own transaction: no BEGIN/COMMIT round trips.
                log_rows.upsert_rows([p.row for p in batch], db)
            else:
                with db.atomic():
                    self._upsert_counting_failures(db, batch, failing)
        except OUTAGE_ERRORS:
            _discard_connection(db)
            raise
        self.committed_rows += len(batch)

    @staticmethod
    def _upsert_counting_failures(db, batch: list[PendingWrite], failing: list[PendingWrite]) -> None:
        # Count a child's failure on its root only when this write is what
        # makes it failed: a replayed write must not count twice.
        before = log_rows.statuses_of([p.row["job_id"] for p in failing], lock=is_postgres(db), db=db)
        log_rows.upsert_rows([p.row for p in batch], db)
        for pending in failing:
            if before.get(pending.row["job_id"]) == log_rows.FAILED:
                continue
            if not log_rows.count_failed_child(pending.failed_child_of, db):
                logger.warning(
                    "root job row not found; child failure not counted on it",
                    job_id=pending.row["job_id"],
                    parent_job_id=pending.failed_child_of,
                )

    def _commit_one_by_one(self, batch: list[PendingWrite]) -> list[PendingWrite]:
        """Commit a batch the database refused, row by row; returns the writes settled (saved or rejected)."""
        settled = []
        for pending in batch:
            try:
                self._commit([pending])
                settled.append(pending)
            except OUTAGE_ERRORS:
                self._requeue([pending])
            except Exception as exc:
                settled.append(pending)
                pending.rejected = True
                logger.error(
                    "job log row rejected by the database",
                    job_id=pending.row["job_id"],
                    error=f"{type(exc).__name__}: {exc}",
                    row=json.loads(json.dumps(pending.row, default=str)),
                )
        return settled

    def _note_outage(self, exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "log database unavailable; keeping job log writes in memory and retrying",
                error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                pending_writes=self.pending_count,
            )

    def _note_recovery(self) -> None:
        if self._outage_since is not None:
            down_for = time.monotonic() - self._outage_since
            self._outage_since = None
            logger.warning(
                "log database is back; pending job log writes flushed in order",
                outage_seconds=round(down_for, 1),
                pending_writes=self.pending_count,
            )


_inherited_connections: list = []  # kept open on purpose, see LogWriter.after_fork_in_child


def _discard_connection(db) -> None:
    """Throw away a broken connection instead of returning it to the pool."""
    db = getattr(db, "obj", db)
    try:
        if hasattr(db, "manual_close"):
            db.manual_close()
        elif not db.is_closed():
            db.close()
    except Exception:
        pass
