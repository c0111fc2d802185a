"""The drainer: moves job-log entries from the journal into the database, in large batches.

Each pass reads up to ``batch_size`` entries (waiting at most ``block_ms``
for the first), folds the writes of one job into one row, and applies the
batch in ONE transaction with the guarded upsert and the atomic root update
of ``upsert`` and ``root_status`` (order-safe and idempotent), then acknowledges the entries,
which deletes them from the journal.  Any number of drainers may share one
journal: an entry applied twice has the same effect as once, and a failed
child is counted on its root only by the transaction that turns its row
``failed`` (its row is locked while that is decided).

* Database down or slow: the batch is kept and retried with backoff; the
  workers go on appending; a WARNING says how big the backlog is (entries,
  age of the oldest) at most every ``warn_every`` seconds.
* A row the database refuses is put aside (``journal.put_aside``) and the job
  still gets a minimal row with ``error_code = log_row_rejected``, so nothing
  blocks the stream and no row stays ``running`` for ever.
* A drainer that dies leaves its entries pending: another claims them once
  they have been idle for ``claim_idle`` seconds (every drainer looks every
  ``claim_idle / 10``).  A live drainer keeps the entries it holds (the
  database down, or a failed child waiting for its root) marked as its own,
  so they are not taken over while it retries them.  Dead drainers' names
  that hold nothing are deleted from the group after ``6 * claim_idle``.
* A child's failure whose root row is not in the database yet (the root's
  start is in another drainer's batch) waits, for up to ``root_wait`` seconds.
* With a ``sweeper`` (``lost_work``), a thread beside the drain
  asks for the sweep's lock every second; the process that gets it looks for
  lost work and marks it once the journal is applied through what was
  appended before it looked.
"""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass, field
from itertools import count as counter
from typing import Any, Optional

import peewee
import structlog

from models.database import is_postgres
from models.error_text import first_line

from ..background import DATABASE_OUTAGES, SERVICE_OUTAGES, BackgroundLoop
from ..fork_reset import reset_in_forked_children
from ..observability import observe_root_degraded
from . import upsert
from .journal import Entry, Journal, JournalUnavailable, with_datetimes
from .root_status import already_counted, count_failed_children, turned_degraded
from .rows import JobLogRow

logger = structlog.get_logger("middleware.job_log_drainer")

_drainer_numbers = counter(1)


class DatabaseDown(Exception):
    """The batch could not be applied because the database is unreachable; it is kept for the next try."""


@dataclass
class JobWrite:
    """The writes of one job in one batch, folded into one row as the database would apply them."""

    row: dict[str, Any]
    failed_child_of: Optional[str]
    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        if upsert.order_key(entry.row) >= upsert.order_key(self.row):
            self.failed_child_of = entry.failed_child_of  # the failure counted is the winning write's only
        self.row = upsert.merge_rows(self.row, entry.row)
        self.entries.append(entry)


def fold(entries: list[Entry]) -> dict[str, JobWrite]:
    jobs: dict[str, JobWrite] = {}
    for entry in entries:
        entry.row.setdefault("attempt_started_ms", 0)  # appended by a worker from before migration 0014
        job = jobs.get(entry.row["job_id"])
        if job is None:
            jobs[entry.row["job_id"]] = JobWrite(entry.row, entry.failed_child_of, [entry])
        else:
            job.add(entry)
    return jobs


class Drainer:
    """Applies a journal's entries to the database (a thread of its own, or called by hand).

    Parameters:
      journal(Journal): Where the entries come from.
      database(peewee.Database): Where the rows go (a DatabaseProxy works).
      batch_size(int): Entries per transaction at most.  Defaults to 2000.
      block_ms(int): How long a read waits for the first entry.  Defaults to 100.
      gather(float): Seconds a batch that is not full waits, from its oldest
        entry's append, for more entries: a job's start and end then become
        one row insert, and commits stay few under a light load.  Defaults to 0.1.
      claim_idle(float): Seconds after which a dead drainer's unacknowledged
        entries are taken over by another.  Defaults to 10.
      root_wait(float): Seconds a failed child waits for its root's row
        before it is written without being counted.  Defaults to 30.
      root_retry(float): Seconds between two tries of such a child.  Defaults to 0.2.
      retry_backoff(tuple[float, float]): First and longest pause between
        tries while the database (or Redis) is down.  Defaults to (0.2, 5.0).
      warn_every(float): Seconds between two backlog warnings.  Defaults to 5.
      sweeper(LostWorkSweeper): Looks for jobs whose message Redis lost.
        Defaults to none.
    """

    def __init__(
        self,
        journal: Journal,
        database,
        *,
        batch_size: int = 2000,
        block_ms: int = 100,
        gather: float = 0.1,
        claim_idle: float = 10.0,
        root_wait: float = 30.0,
        root_retry: float = 0.2,
        retry_backoff: tuple[float, float] = (0.2, 5.0),
        warn_every: float = 5.0,
        sweeper=None,
    ) -> None:
        self.journal = journal
        self.database = database
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.gather = gather
        self.claim_idle = claim_idle
        self.root_wait = root_wait
        self.root_retry = root_retry
        self.retry_backoff = retry_backoff
        self.warn_every = warn_every
        self.sweeper = sweeper
        self._loop = BackgroundLoop("job-log-drainer", self._drain_pass, retry_backoff[0])
        # Beside the drain: a sweep waits for the journal to be applied, and the drain must not
        # wait for a sweep.  The sweep's Redis lock, not this interval, spaces the sweeps.
        self._sweeping = BackgroundLoop("lost-work-sweeper", sweeper.maybe_run if sweeper else None, 1.0,
                                        first_pause=True, outages=SERVICE_OUTAGES)
        self._backoff = retry_backoff[0]
        self.consumer = self._consumer_name()
        self._held: list[Entry] = []  # read, not applied yet (the database was down)
        self._deferred: dict[str, tuple[float, list[Entry]]] = {}  # job -> (next try, entries): root missing
        self._waiting_since: dict[str, float] = {}  # job -> when its failure first waited for its root
        self._next_claim = 0.0
        self._next_keep = 0.0
        self._next_forget = 0.0
        self._trouble_since: Optional[float] = None
        self._last_warning = float("-inf")
        self._own = None  # the drainer's own PostgreSQL connection
        self._own_source = None
        reset_in_forked_children(self)

    @staticmethod
    def _consumer_name() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{next(_drainer_numbers)}"

    # -- the thread ---------------------------------------------------------------

    def start(self) -> None:
        """Drain on a thread of its own (and sweep for lost work beside it, with a sweeper)."""
        if self.sweeper is not None:
            self._sweeping.start()
        self._loop.start()

    @property
    def running(self) -> bool:
        return self._loop.running

    def run(self) -> None:
        """Drain in the calling thread until ``request_stop()`` (``enrich drain``)."""
        if self.sweeper is not None:
            self._sweeping.start()
        self._loop.run()

    def _drain_pass(self) -> float:
        """One pass of the loop; the pause before the next: none, or a growing backoff while the
        database or Redis is down (any other exception is the loop's to log)."""
        try:
            self.drain_once()
        except (DatabaseDown, JournalUnavailable) as exc:
            self._note_trouble(exc)
            pause, self._backoff = self._backoff, min(self._backoff * 2, self.retry_backoff[1])
            return pause
        self._backoff = self.retry_backoff[0]
        return 0

    def request_stop(self) -> None:
        """Make ``run()`` return after the pass in progress (from a signal handler)."""
        self._loop.request_stop()
        self._sweeping.request_stop()

    def stop(self, timeout: float = 10.0) -> bool:
        """Drain what this process appended (for up to ``timeout`` seconds), then stop; True if all of it was."""
        drained = self.flush(timeout)
        self._loop.stop(timeout)
        self._sweeping.stop(timeout)
        self._close_own_connection()
        return drained

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every entry this process appended is in the database; True if it is."""
        target = self.journal.last_appended
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.journal.applied_through(target):
                    return True
                if self.running:
                    time.sleep(0.01)
                else:
                    self.drain_once(block_ms=0)
            except (DatabaseDown, JournalUnavailable):
                time.sleep(self.retry_backoff[0])
        return False

    def after_fork_in_child(self) -> None:
        # The parent's connection belongs to its session (its loops reset themselves).
        self.consumer = self._consumer_name()
        self._held, self._deferred, self._waiting_since = [], {}, {}
        if self._own is not None:
            _inherited_connections.append(self._own)
            self._own = None

    # -- one pass -------------------------------------------------------------------

    def drain_once(self, block_ms: Optional[int] = None) -> int:
        """Apply one batch; returns how many entries were settled.  DatabaseDown keeps the batch for the next pass."""
        entries = self._held
        self._held = []
        now = time.monotonic()
        for job_id, (due, deferred) in list(self._deferred.items()):
            if due <= now or self._loop.stopping:
                entries.extend(deferred)
                del self._deferred[job_id]
        try:
            if now >= self._next_claim:
                self._next_claim = now + max(self.claim_idle / 10, 0.05)
                entries.extend(self._claim(entries))
            if now >= self._next_forget:
                self._next_forget = now + self.claim_idle * 6
                self._forget_dead_consumers()
            if now >= self._next_keep:
                self._next_keep = now + max(self.claim_idle / 3, 0.05)
                self._keep_own(entries)
            room = self.batch_size - len(entries)
            if room > 0:
                wait = self.block_ms if block_ms is None else block_ms
                entries.extend(self.journal.read(self.consumer, room, 0 if entries else wait))
                if entries and wait and len(entries) < self.batch_size:
                    entries.extend(self._gather_more(entries))
        except JournalUnavailable:
            self._held = entries  # what this drainer holds stays held (the database may be down too)
            raise
        if not entries:
            return 0
        settled = self._apply(entries)
        self.journal.ack([entry.id for entry in settled])
        self.journal.drained_total += len(settled)
        self._note_recovery()
        return len(settled)

    def _gather_more(self, entries: list[Entry]) -> list[Entry]:
        """Wait until the oldest entry is ``gather`` old, then take what else has come (never blocking)."""
        pause = self.gather - (time.time() - min(entry.appended_at for entry in entries))
        if pause > 0 and not self._loop.wait(pause):
            return self.journal.read(self.consumer, self.batch_size - len(entries), 0)
        return []

    def apply_now(self, rows: list[dict[str, Any]]) -> bool:
        """Apply rows in the calling thread, besides the journal (which keeps them if this fails)."""
        db = self.database  # the pooled one: the drainer's own connection is its thread's
        was_closed = db.is_closed()
        try:
            self._commit_retrying_conflicts([JobWrite(row, None) for row in rows], db)
            return True
        except Exception as exc:  # the journal has them: a drainer applies them later
            logger.warning("job log rows not applied at once; a drainer applies them from the journal",
                           error=f"{type(exc).__name__}: {first_line(exc)}")
            return False
        finally:
            if was_closed and not db.is_closed():
                db.close()  # back to the pool

    def _holding(self, entries: list[Entry]) -> list[Entry]:
        """What this drainer holds unacknowledged: this pass's entries and those waiting for their root."""
        return entries + [entry for _, waiting in self._deferred.values() for entry in waiting]

    def _keep_own(self, entries: list[Entry]) -> None:
        """Mark the entries this drainer is still retrying as recently read, so no other drainer claims them."""
        holding = self._holding(entries)
        if holding:
            self.journal.keep(self.consumer, [entry.id for entry in holding])

    def _forget_dead_consumers(self) -> None:
        forgotten = self.journal.forget_consumers(int(self.claim_idle * 6000))
        if forgotten:
            logger.info("dead drainers' names removed from the journal's consumer group", removed=forgotten)

    def _claim(self, entries: list[Entry]) -> list[Entry]:
        """Entries idle for ``claim_idle`` (a dead drainer's), but none this drainer holds already."""
        held = {entry.id for entry in self._holding(entries)}
        claimed = self.journal.claim(self.consumer, int(self.claim_idle * 1000), self.batch_size)
        return [entry for entry in claimed if entry.id not in held]

    def _apply(self, entries: list[Entry]) -> list[Entry]:
        """Apply a batch; returns the entries settled (applied or put aside)."""
        jobs = fold(entries)
        try:
            deferred = self._commit_retrying_conflicts(list(jobs.values()))
        except DATABASE_OUTAGES as exc:
            self._held = entries
            raise DatabaseDown(first_line(exc)) from exc
        except Exception:  # a row the database refuses: find it, settle the others
            try:
                deferred = self._commit_one_by_one(list(jobs.values()))
            except DatabaseDown:
                self._held = entries  # applying a write twice is harmless
                raise
        retry_at = time.monotonic() + self.root_retry
        for job in deferred:
            self._deferred[job.row["job_id"]] = (retry_at, job.entries)
        waiting = {job.row["job_id"] for job in deferred}
        for job_id in jobs:
            if job_id not in waiting:
                self._waiting_since.pop(job_id, None)
        return [e for job_id, job in jobs.items() if job_id not in waiting for e in job.entries]

    def _commit_retrying_conflicts(self, jobs: list[JobWrite], db=None) -> list[JobWrite]:
        """``_commit``, again when PostgreSQL chose it as a deadlock's victim.

        Two drainers may hold a root's row and a child's row in opposite
        orders (one applies the child's start, the other its failure and then
        the root's count): PostgreSQL aborts one of them, which simply tries again.
        """
        for attempt in range(10):
            try:
                return self._commit(jobs, db=db)
            except DATABASE_OUTAGES as exc:
                if attempt == 9 or not _is_conflict(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    def _commit_one_by_one(self, jobs: list[JobWrite]) -> list[JobWrite]:
        deferred = []
        for job in jobs:
            try:
                deferred += self._commit([job])
            except DATABASE_OUTAGES as exc:
                raise DatabaseDown(first_line(exc)) from exc
            except Exception as exc:
                self._reject(job, exc)
        return deferred

    def _reject(self, job: JobWrite, exc: Exception) -> None:
        """Put the refused write aside, and still end the job with a minimal row."""
        error = f"{type(exc).__name__}: {first_line(exc)}"
        # The job's writes of this batch, folded: one entry to read and to replay.
        self.journal.put_aside([Entry(job.entries[-1].id, job.row, job.failed_child_of)], error)
        logger.error(
            "job log row refused by the database; put aside, and the job written without its details",
            job_id=job.row.get("job_id"),
            error=error,
            kept_in=self.journal.where,
            row=_printable(job.row),
        )
        row = JobLogRow.rejected(job.row, f"the database refused this job's log row ({error}); "
                                          f"the full row is kept in {self.journal.where}").as_dict()
        try:
            counted_on = job.failed_child_of if row["parent_job_id"] is not None else None  # a root now
            self._commit([JobWrite(row, counted_on, job.entries)], wait_for_root=False)
        except Exception as second:
            logger.error("even the minimal job log row was refused", job_id=row.get("job_id"),
                         error=f"{type(second).__name__}: {first_line(second)}")

    # -- the transaction ---------------------------------------------------------------

    def _commit(self, jobs: list[JobWrite], wait_for_root: bool = True, db=None) -> list[JobWrite]:
        """Apply these jobs' rows in one transaction; returns the jobs left for later (their root is missing)."""
        db = db if db is not None else self._connection()
        if not is_postgres(db):
            for job in jobs:
                with_datetimes(job.row)
        # One lock order for every drainer: two batches never wait for each other's rows in a cycle.
        jobs = sorted(jobs, key=lambda job: job.row["job_id"])
        failing = [job for job in jobs if job.failed_child_of]
        try:
            if not failing:
                upsert.upsert_rows([job.row for job in jobs], db)  # one statement: its own transaction
                return []
            with db.atomic():
                return self._upsert_counting_failures(db, jobs, failing, wait_for_root)
        except DATABASE_OUTAGES as exc:
            if not _is_conflict(exc):
                _discard_connection(db)
            raise

    def _upsert_counting_failures(self, db, jobs, failing, wait_for_root) -> list[JobWrite]:
        postgres = is_postgres(db)
        failing_ids = [job.row["job_id"] for job in failing]
        if postgres:
            # A job's row may not exist yet, so a row lock cannot guard it: a lock on its id does.
            db.execute_sql(
                "SELECT count(pg_advisory_xact_lock(hashtext(j))) FROM (SELECT unnest(%s::text[]) AS j ORDER BY 1) s",
                [failing_ids],
            )
        before = upsert.stored_rows(failing_ids, lock=postgres, db=db)
        # Count a child's failure on its root only when this write is applied (not a late write of an
        # older delivery) and is what makes it failed (or lost): root_status, rule 1.
        newly_failed = [job for job in failing if upsert.applies(stored := before.get(job.row["job_id"]), job.row)
                        and not already_counted(stored and stored["status"])]
        deferred = self._waiting_for_root(db, jobs, newly_failed) if wait_for_root else []
        waiting = {id(job) for job in deferred}
        ready = [job.row for job in jobs if id(job) not in waiting]
        if ready:
            upsert.upsert_rows(ready, db)
        counts: dict[str, int] = {}
        for job in newly_failed:
            if id(job) not in waiting:
                counts[job.failed_child_of] = counts.get(job.failed_child_of, 0) + 1
        found = count_failed_children(counts, db)  # root_status, rule 1
        for root, after in found.items():
            if after is not None and turned_degraded(after[1], after[2], counts[root]):
                observe_root_degraded(after[0])
        for job in newly_failed:
            if id(job) not in waiting and job.failed_child_of not in found:
                logger.warning(
                    "root job row not found; child failure not counted on it",
                    job_id=job.row["job_id"],
                    parent_job_id=job.failed_child_of,
                )
        return deferred

    def _waiting_for_root(self, db, jobs, newly_failed) -> list[JobWrite]:
        """Failed children whose root row is neither in the database nor in this batch, still within root_wait."""
        roots = {job.failed_child_of for job in newly_failed}
        if not roots:
            return []
        present = {job.row["job_id"] for job in jobs if job.row.get("is_root_job")}
        present |= upsert.existing_roots(sorted(roots - present), db)
        now = time.monotonic()
        waiting = []
        for job in newly_failed:
            if job.failed_child_of in present:
                continue
            since = self._waiting_since.setdefault(job.row["job_id"], now)
            if now - since < self.root_wait and not self._loop.stopping:
                waiting.append(job)
        return waiting

    def _connection(self):
        """On PostgreSQL, a connection of the drainer's own: one batch at a time needs one,
        and a pooled one would cost a liveness check per batch.  SQLite goes through the pool."""
        real = getattr(self.database, "obj", self.database)
        if not is_postgres(real):
            return self.database
        if self._own is None or self._own_source is not real:
            if self._own is not None:
                _discard_connection(self._own)
            self._own = peewee.PostgresqlDatabase(real.database, thread_safe=False, **real.connect_params)
            self._own_source = real
        return self._own

    def _close_own_connection(self) -> None:
        if self._own is not None:
            _discard_connection(self._own)
            self._own = None

    # -- telling the operator -------------------------------------------------------------

    def _note_trouble(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
        if now - self._last_warning < self.warn_every:
            return
        self._last_warning = now
        try:
            stats = self.journal.stats()
        except JournalUnavailable:
            stats = {"entries": None, "oldest_age_seconds": None}
        where = "Redis (the job-log journal)" if isinstance(exc, JournalUnavailable) else "log database"
        logger.warning(
            f"{where} unavailable; job log rows wait in the journal and are retried",
            error=first_line(exc),
            backlog_entries=stats["entries"],
            oldest_entry_age_seconds=stats["oldest_age_seconds"],
            down_for_seconds=round(now - self._trouble_since, 1),
        )

    def _note_recovery(self) -> None:
        if self._trouble_since is not None:
            logger.warning("job log drain resumed; the backlog is applied in order",
                           down_for_seconds=round(time.monotonic() - self._trouble_since, 1))
            self._trouble_since = None
            self._last_warning = float("-inf")


def _is_conflict(exc: Exception) -> bool:
    """A deadlock or serialization failure (peewee keeps the driver's exception as its first argument)."""
    original = exc.args[0] if exc.args else None
    return getattr(original, "pgcode", None) in ("40P01", "40001")


def _printable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)) for k, v in row.items()}


_inherited_connections: list = []  # kept open on purpose, see Drainer.after_fork_in_child


def _discard_connection(db) -> None:
    """Throw away a broken connection instead of returning it to the pool."""
    db = getattr(db, "obj", db)
    try:
        if hasattr(db, "manual_close"):
            db.manual_close()
        elif not db.is_closed():
            db.close()
    except Exception:  # already broken: nothing more to close
        pass


__all__ = ["Drainer", "DatabaseDown", "fold"]
