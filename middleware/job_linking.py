"""JobLinking: every message becomes one row of ``enrichment_logs`` from the
moment it is sent (``queued``, see ``sent_rows``), linked into a flat tree
under the root job that started it, and moved forward as workers run it.

    broker.add_middleware(JobLinking())

Add it last, after Dramatiq's defaults and ``MessageOptions`` (which checks
the options it reads): its ``before_*`` hooks then run after everyone else's,
and its verdict on a failed attempt is read in ``before_ack``/``before_nack``,
once Retries has decided whether to retry.

Rows are not written here: each write is appended to the job-log journal
(``middleware.journal``, a Redis Stream with a RedisBroker) and drainers
apply them to the database (``middleware.drainer``).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Callable, Iterable, Optional

import structlog
from dramatiq.errors import ActorNotFound, ConnectionClosed
from dramatiq.middleware import Middleware, MiddlewareError

from models.base import utcnow
from models.job_log import ENTITY_TYPES, FAILED, RETRYING, RUNNING, SKIPPED

from models.settings import JOB_LOG_LINES, ConfigError, job_log_settings

from . import log_database
from .drainer import Drainer
from .job_context import JobState, current_job, set_current, starting_new_tree
from .linking_options import check_actor
from .journal import Journal, JournalUnavailable, MemoryJournal, journal_for
from .log_rows import merge_rows
from .observability import observe_journal
from .record_checks import MAX_COUNT
from .start_rows import StartRows
from .redaction import redact_text
from .row_values import (
    MAX_TRIGGERED_BY,
    as_uuid,
    check_job_id,
    from_millis,
    plain_json,
    shown,
    started_by_details,
    triggered_by,
)
from .sent_rows import due_at, message_entity, operation_of, sent_row

logger = structlog.get_logger("middleware.job_linking")

MAX_ERROR_LENGTH = 2000
_CONTEXT_KEYS = ("job_id", "parent_job_id", "operation")


def _attempt_ms(job: JobState) -> int:
    """How long this attempt ran, in ms, at most what duration_ms (an INTEGER) holds: 24.8 days.

    PostgreSQL refuses more, and the job's final row with it; its started_at
    and completed_at still tell the whole span.
    """
    elapsed = int((time.monotonic() - job.started_monotonic) * 1000)
    if elapsed > MAX_COUNT:
        logger.warning("job attempt too long for duration_ms; storing its maximum", job_id=job.job_id,
                       bad_value=elapsed, stored=MAX_COUNT)
        return MAX_COUNT
    return elapsed


def error_code_for(exc: BaseException) -> str:
    """The exception's own ``error_code``, else its class name in snake_case."""
    code = getattr(exc, "error_code", None)
    if not isinstance(code, str) or not code:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return code[:50]


class JournalDown(MiddlewareError, ConnectionClosed):
    """The final write of a job could not be appended: the message must not be acked yet.

    A MiddlewareError, so Dramatiq does not swallow it in ``emit_before``, and a
    broker connection error, so the worker retries the ack (this hook first)
    every few seconds until Redis takes the write.
    """


class JobLinking(Middleware):
    """Writes one job-log row per message and links rows into flat trees.

    A message's parent is its ``parent_job_id`` option: the id of the ROOT of
    its tree.  While an actor runs, every message it sends is given the
    running job's root (or its own id, when it is the root), so the tree is
    flat at any depth; use ``middleware.new_tree()`` to start a new tree.

    A message gets its ``queued`` row when it is sent (``sent_rows``).  Every
    write goes to the journal; the final one is appended before the
    message is acked (if it cannot be, the ack waits and is retried).  A
    worker process checks the database at boot and refuses to start, with one
    line, when it cannot take the job log.

    Actor options:
      operation(str): The job type written to the row (default: actor name).
      entity(tuple[str, str]): ``(entity_type, argument_name)``: the row's
        entity is that keyword argument, or the first positional argument.
      Both are checked when the actor is declared (``middleware/linking_options.py``).

    Parameters:
      database(peewee.Database): Where rows go.  Defaults to ``models.database``,
        bound to ``DATABASE_URL`` if nothing else bound it.
      secrets(Callable[[], Iterable[str]]): Secret values to remove from
        error texts.  Defaults to none (credential-shaped text is still removed).
      log_lines(str): Per-job log lines: ``all`` (started and finished),
        ``finished`` or ``none``.  Defaults to ``JOB_LOG_LINES``, else ``all``.
      stream(str): The journal's name under the broker's namespace.
        Defaults to ``JOB_LOG_STREAM``, else ``job-log``.
      drain_in_workers(bool): Run a drainer thread in every worker process.
        Defaults to ``JOB_LOG_DRAIN_IN_WORKERS``, else True (always True
        without Redis: nobody else can drain an in-memory journal).
      batch_size(int): Rows per drain transaction at most.  Defaults to 2000.
      claim_idle(float): Seconds before a dead drainer's entries are taken over.  Defaults to 10.
      root_wait(float): Seconds a failed child waits for its root's row.  Defaults to 30.
      lost_work_grace(float): Seconds past due before a pending job's message is
        looked for in Redis (``middleware.lost_work``).  Defaults to 600.
      lost_work_interval(float): Seconds between two lost-work sweeps, across
        the drainers of every process; 0 turns the sweep off.  Defaults to 60.
    """

    def __init__(
        self,
        database=None,
        *,
        secrets: Optional[Callable[[], Iterable[str]]] = None,
        log_lines: Optional[str] = None,
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
        self.secrets = secrets or (lambda: ())
        self.log_lines = log_lines or env.lines
        if self.log_lines not in JOB_LOG_LINES:
            raise ConfigError(f"log_lines={self.log_lines!r} must be one of {', '.join(JOB_LOG_LINES)}")
        self.stream = stream or env.stream
        self.drain_in_workers = env.drain_in_workers if drain_in_workers is None else drain_in_workers
        self._drainer_options = {"batch_size": batch_size, "claim_idle": claim_idle, "root_wait": root_wait}
        self._lost_work = {"grace_seconds": lost_work_grace, "interval_seconds": lost_work_interval}
        self.journal: Optional[Journal] = None
        self.drainer: Optional[Drainer] = None
        self.start_rows: Optional[StartRows] = None
        self._setup_lock = threading.RLock()

    @property
    def actor_options(self):
        return {"operation", "entity"}

    def before_declare_actor(self, broker, actor):
        """A malformed ``operation`` or ``entity`` stops the declaration (BadActorOptions, one line).

        Before, not after: Dramatiq logs and drops what an ``after_*`` hook raises.  (An actor declared
        before this middleware was added cannot have these options: Dramatiq refuses unknown options.)
        """
        check_actor(actor)

    # -- the journal ------------------------------------------------------------

    def journal_of(self, broker) -> Journal:
        """This middleware's journal (made on first use, for ``broker``)."""
        if self.journal is None:
            with self._setup_lock:
                if self.journal is None:
                    self.journal = journal_for(broker, self.stream)
        return self.journal

    def append(self, broker, row: dict, failed_child_of: Optional[str] = None) -> None:
        """Append one job-log write (JournalUnavailable when Redis cannot take it)."""
        self.journal_of(broker).append(row, failed_child_of)

    def start_rows_of(self, broker) -> StartRows:
        if self.start_rows is None:
            with self._setup_lock:
                if self.start_rows is None:
                    self.start_rows = StartRows(lambda row: self.append(broker, row))
        return self.start_rows

    def drainer_of(self, broker) -> Drainer:
        if self.drainer is None:
            with self._setup_lock:
                if self.drainer is None:
                    journal = self.journal_of(broker)
                    database = log_database.resolve(self.database)
                    self.drainer = Drainer(journal, database, sweeper=self._sweeper(broker, journal, database),
                                           **self._drainer_options)
        return self.drainer

    def _sweeper(self, broker, journal, database):
        """A lost-work sweeper for the drainer: only a Redis broker's queues can be looked in."""
        from .lost_work import LostWorkSweeper  # it reads rows JobLinking writes: imported when needed

        sweeper = LostWorkSweeper(broker, database, journal=journal, **self._lost_work)
        return sweeper if sweeper.supported and self._lost_work["interval_seconds"] > 0 else None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row this process wrote is in the database; True if it is."""
        if self.start_rows is not None:
            self.start_rows.flush()
        if self.drainer is None:
            return self.journal is None or self.journal.last_appended is None
        return self.drainer.flush(timeout)

    def stats(self) -> dict:
        """The journal's backlog and this process's drain counters (see ``Journal.stats``)."""
        if self.journal is None:
            return {"entries": 0, "oldest_age_seconds": None, "drained_total": 0, "refused_total": 0}
        return self.journal.stats()

    # -- worker lifecycle --------------------------------------------------------------

    def before_worker_boot(self, broker, worker):
        """Refuse to start (one line, nothing consumed) when the database cannot take the job log."""
        try:
            log_database.refuse_unless_ready(self.database)
        except log_database.JobLogRefused as exc:
            print(f"JobLinking: refusing to start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(3) from None

    def after_worker_boot(self, broker, worker):
        if self.drain_in_workers or isinstance(self.journal_of(broker), MemoryJournal):
            self.drainer_of(broker).start()
        observe_journal(self.stats)  # the enrich_journal_* metrics, when metrics are on

    def before_worker_shutdown(self, broker, worker):
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what this process wrote (up to ``timeout``) and stop its drainer.

        What is left stays in Redis for the other drainers; an in-memory
        journal's leftovers are printed in full to the JSON log (nothing is
        dropped silently).
        """
        if self.start_rows is not None:
            self.start_rows.flush()
        if self.drainer is not None:
            self.drainer.stop(timeout)
        if isinstance(self.journal, MemoryJournal):
            for entry in self.journal.undelivered():
                logger.error("job log write could not be saved before shutdown", job_id=entry.row.get("job_id"),
                             row={k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                                  for k, v in entry.row.items()})

    # -- linking -------------------------------------------------------------

    def after_enqueue(self, broker, message, delay):
        job = current_job()
        if job is not None and message.message_id == job.job_id:
            job.retry_enqueued = True  # Retries put this very message back on the queue
            job.retry_due = due_at(message, delay)
            return
        if delay is None and "eta" in message.options:
            return  # a delayed message moved to its queue once due: its row was written when it was sent
        self._record_sent(broker, message, delay, wait=job is None)

    def _record_sent(self, broker, message, delay, wait: bool) -> None:
        """The ``queued`` row of a message just sent (middleware/sent_rows.py builds it).

        It is appended to the journal before the sending job's end, so a
        drainer applies it first.  Outside a job (the CLI, a script, a web
        request) it is also applied to the database at once (``wait``): such
        a process may exit at once, and its caller may read the row next.
        """
        row = sent_row(message, delay, self._actor_options(broker, message.actor_name))
        if row is None:
            return
        try:
            self.append(broker, row)
        except JournalUnavailable as exc:
            logger.warning("queued row not written to the job-log journal", job_id=row["job_id"], error=str(exc))
        if wait:
            self.drainer_of(broker).apply_now([row])

    def before_enqueue(self, broker, message, delay):
        job = current_job()
        if job is None or message.message_id == job.job_id:
            # Sent outside any job, or Dramatiq re-enqueueing the running
            # message itself (a retry): nothing to link.
            return
        options = message.options
        if starting_new_tree():
            options.pop("parent_job_id", None)
            options["triggered_by"] = job.job_id[:MAX_TRIGGERED_BY]
            options["started_by"] = {"job_id": job.job_id, "operation": job.operation}
        elif options.get("parent_job_id") is None:
            options["parent_job_id"] = job.tree_id

    # -- one row per job ---------------------------------------------------------

    def before_process_message(self, broker, message):
        job = self._start_job(broker, message)
        if job.loggable:
            self.start_rows_of(broker).hold_row(self._row(job, message, RUNNING))
        if self.log_lines == "all":
            self._log("job started", job, RUNNING)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        job = current_job()
        if job is not None and job.job_id == message.message_id:
            job.exception = exception

    def after_skip_message(self, broker, message):
        job = current_job()
        if job is None or job.job_id != message.message_id:
            # Skipped by a middleware before ours ran (e.g. AgeLimit).
            job = self._start_job(broker, message)
        job.skipped = True
        reason = getattr(message, "_exception", None)  # stuffed by the worker when the skip failed the message
        if getattr(reason, "error_code", None):
            job.exception = reason  # a middleware's own reason to fail it, e.g. ActorArguments' bad_arguments

    def before_ack(self, broker, message):
        self._finish(broker, message, failed=False)

    def before_nack(self, broker, message):
        self._finish(broker, message, failed=True)

    # -- internals -------------------------------------------------------------

    def _start_job(self, broker, message) -> JobState:
        options = message.options  # checked by MessageOptions, first in the stack
        parent = options.get("parent_job_id")
        attempt = options.get("retries", 0)
        # Retries re-enqueue these same options: the first attempt's start travels
        # with the message, so every write of the job carries it.
        first_start = from_millis(options.get("first_started_at"))
        if first_start is None:
            options["first_started_at"] = int(time.time() * 1000)
            first_start = from_millis(options["first_started_at"])
        actor_options = self._actor_options(broker, message.actor_name)
        operation = operation_of(actor_options, message.actor_name)
        job = JobState(
            job_id=message.message_id,
            root_id=parent,
            operation=operation,
            attempt=attempt,
            entity=message_entity(actor_options.get("entity"), message),
            enqueued_at=from_millis(message.message_timestamp),
            started_at=first_start,
        )
        problem = check_job_id(job.job_id)
        if problem:
            # The row is keyed by the message id: one that cannot be stored gets no row.
            job.loggable = False
            logger.warning("message id cannot be a job id; the job runs without a log row",
                           bad_value=shown(job.job_id), problem=problem)
        set_current(job)
        structlog.contextvars.bind_contextvars(
            job_id=job.job_id, parent_job_id=job.root_id, operation=job.operation
        )
        return job

    @staticmethod
    def _actor_options(broker, actor_name) -> dict:
        try:
            return broker.get_actor(actor_name).options
        except ActorNotFound:
            return {}

    def _finish(self, broker, message, failed: bool) -> None:
        job = current_job()
        if job is None or job.job_id != message.message_id:
            if failed and isinstance(getattr(message, "_exception", None), ActorNotFound):
                self._record_unknown_actor(broker, message)
            return  # e.g. the consumer thread acking a delayed message it re-enqueued
        if job.final_write is None:
            status, retry_count, error = self._verdict(job, message, failed)
            row = self._row(job, message, status, retry_count=retry_count, error=error)
            start = self.start_rows_of(broker).take(job.job_id)
            if start is not None:
                row = merge_rows(start, row)  # a short job: its start and end are one entry
            job.final_write = (row, job.root_id if status == FAILED else None)
        row, failed_child_of = job.final_write
        if job.loggable:
            try:
                self.append(broker, row, failed_child_of)
            except JournalUnavailable as exc:
                # The job stays current: Dramatiq calls this hook again when it retries the ack.
                logger.warning("job end not written to the job-log journal; the ack waits for it", error=str(exc))
                raise JournalDown(str(exc)) from exc
        try:
            if not job.loggable:
                # No row will show this job: say in the log where its message went.
                logger.warning("job without a log row finished", bad_value=shown(job.job_id), status=row["status"],
                               message_went_to="the dead-letter queue" if failed else "nowhere: acked as done",
                               actor=shown(message.actor_name), error=row["last_error"])
            if self.log_lines != "none":
                self._log("job finished", job, row["status"], retry_count=row["retry_count"],
                          duration_ms=row["duration_ms"], error=row["last_error"], saved=job.loggable)
        finally:
            set_current(None)
            structlog.contextvars.unbind_contextvars(*_CONTEXT_KEYS)

    def _verdict(self, job: JobState, message, failed: bool):
        """(status, retry_count, exception) for the attempt that just ended."""
        status, retry_count = job.verdict(failed)
        exception = None if status == SKIPPED else job.exception
        if status == FAILED and not failed and message.options.get("retries", 0) > job.attempt:
            # Retries meant to retry, but the broker refused the message (Redis down):
            # nothing will run this job again, so its row must not wait for it.
            job.outcome.error_code = "retry_not_enqueued"
        return status, retry_count, exception

    def _row(self, job: JobState, message, status: str, retry_count: Optional[int] = None, error=None) -> dict:
        out = job.outcome
        now = utcnow()
        final = status not in (RUNNING, RETRYING)
        ending = status != RUNNING
        entity_type, entity_id = job.entity
        details = dict(out.details) if out.details else {}
        started_by = started_by_details(message.options)
        if started_by is not None:
            details.setdefault("started_by", started_by)
        error_code = out.error_code
        last_error = None
        if error is not None:
            last_error = redact_text(f"{type(error).__name__}: {error}", self.secrets())[:MAX_ERROR_LENGTH]
            error_code = error_code or error_code_for(error)
        elif status == FAILED and job.skipped:
            error_code = error_code or "age_limit_exceeded"
            last_error = "the message was older than its max_age when a worker got to it"
        elif status == FAILED and out.reason:
            last_error = out.reason
        return {
            "id": job.row_id,
            "job_id": job.job_id,
            "parent_job_id": job.root_id,
            "is_root_job": job.is_root,
            "operation": job.operation,
            "entity_type": out.entity_type if out.entity_type in ENTITY_TYPES else entity_type,
            "entity_id": as_uuid(out.entity_id) or entity_id,
            "status": status,
            "reason": plain_json(out.reason) if ending else None,
            "sources": plain_json(list(out.sources)) if ending else [],
            "fields_enriched": plain_json(list(out.fields_enriched)) if ending else [],
            "data_quality_before": plain_json(out.data_quality_before),
            "data_quality_after": plain_json(out.data_quality_after),
            "retry_count": job.attempt if retry_count is None else retry_count,
            "last_error": plain_json(last_error),
            "error_code": plain_json(error_code[:50]) if error_code else None,
            "api_call_count": out.api_call_count if ending else 0,
            "enqueued_at": job.enqueued_at,
            "started_at": job.started_at,  # the first attempt's
            "completed_at": now if final else None,
            "duration_ms": _attempt_ms(job) if ending else None,
            "details": plain_json(details) or None,
            "triggered_by": triggered_by(message.options),
            "message": None,  # written at send time (sent_rows), kept by later writes
            "due_at": job.retry_due if status == RETRYING else None,
            "created_at": now,
            "updated_at": now,
        }

    def _record_unknown_actor(self, broker, message) -> None:
        """A message for an actor this worker does not know: one failed row, never silence."""
        if check_job_id(message.message_id):
            return
        parent = message.options.get("parent_job_id")
        job = JobState(
            job_id=message.message_id,
            root_id=parent if check_job_id(parent) is None else None,
            operation=operation_of({}, message.actor_name),
            attempt=0,
        )
        job.outcome.error_code = "unknown_actor"
        job.outcome.reason = f"no actor named {shown(message.actor_name)} is declared on this worker"
        row = self._row(job, message, FAILED)
        try:
            self.append(broker, row, job.root_id)
        except JournalUnavailable as exc:
            raise JournalDown(str(exc)) from exc
        if self.log_lines != "none":
            self._log("job finished", job, FAILED, error=row["last_error"])

    def _log(self, event: str, job: JobState, status: str, **extra) -> None:
        logger.info(
            event,
            job_id=job.job_id,
            parent_job_id=job.root_id,
            is_root_job=job.is_root,
            operation=job.operation,
            status=status,
            retry_count=extra.pop("retry_count", job.attempt),
            **extra,
        )
