"""JobLinking: every message becomes one row of ``enrichment_logs`` from the
moment it is sent (``queued``, see ``sent_rows``), linked into a flat tree
under the root job that started it, and moved forward as workers run it.

    broker.add_middleware(JobLinking())

Add it last, after Dramatiq's defaults and ``MessageOptions`` (which checks
the options it reads): its ``before_*`` hooks then run after everyone else's,
and its verdict on a failed attempt is read in ``before_ack``/``before_nack``,
once Retries has decided whether to retry.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Iterable, Optional

import structlog
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware

from models.base import utcnow
from models.database import database as default_database
from models.job_log import ENTITY_TYPES, FAILED, RETRYING, RUNNING, SKIPPED, SUCCESS

from .job_context import JobState, current_job, set_current, starting_new_tree
from .log_writer import LogWriter, PendingWrite
from .redaction import redact_text
from .row_values import (
    MAX_ID_LENGTH,
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


def error_code_for(exc: BaseException) -> str:
    """The exception's own ``error_code``, else its class name in snake_case."""
    code = getattr(exc, "error_code", None)
    if not isinstance(code, str) or not code:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return code[:50]


class JobLinking(Middleware):
    """Writes one job-log row per message and links rows into flat trees.

    A message's parent is its ``parent_job_id`` option: the id of the ROOT of
    its tree.  While an actor runs, every message it sends is given the
    running job's root (or its own id, when it is the root), so the tree is
    flat at any depth; use ``middleware.new_tree()`` to start a new tree.

    Actor options:
      operation(str): The job type written to the row (default: actor name).
      entity(tuple[str, str]): ``(entity_type, argument_name)``: the row's
        entity is that keyword argument, or the first positional argument.

    Parameters:
      database(peewee.Database): Where rows go.  Defaults to ``models.database``.
      secrets(Callable[[], Iterable[str]]): Secret values to remove from
        error texts.  Defaults to none (credential-shaped text is still removed).
      commit_timeout(float): Seconds a worker waits for its row to be
        committed before the message is acked anyway.  Defaults to 5.
      flush_interval(float): Seconds a start row may wait to merge with its
        end.  Defaults to 0.05.
      max_batch(int): Rows per transaction.  Defaults to 500.
    """

    def __init__(
        self,
        database=None,
        *,
        secrets: Optional[Callable[[], Iterable[str]]] = None,
        commit_timeout: float = 5.0,
        flush_interval: float = 0.05,
        max_batch: int = 500,
    ) -> None:
        self.database = database if database is not None else default_database
        self.secrets = secrets or (lambda: ())
        self.writer = LogWriter(
            self.database, commit_timeout=commit_timeout, flush_interval=flush_interval, max_batch=max_batch
        )

    @property
    def actor_options(self):
        return {"operation", "entity"}

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

        Outside a job (the CLI, a script, a web request) the write is
        committed before ``send`` returns: such a process may exit at once.
        Inside one it is urgent: it is committed with the sending job's end
        at the latest, so a tree never looks complete while a child it sent
        has no row yet.
        """
        row = sent_row(message, delay, self._actor_options(broker, message.actor_name))
        if row is not None:
            self.writer.submit(PendingWrite(row, urgent=True), wait=wait)

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
        # A child may finish (or fail) before this job's start row would be
        # committed on its own: the root row must exist first.
        if not job.row_written:
            job.row_written = self.writer.wait_for(job.job_id)

    # -- one row per job ---------------------------------------------------------

    def before_process_message(self, broker, message):
        job = self._start_job(broker, message)
        if job.loggable:
            self.writer.submit(PendingWrite(self._row(job, message, RUNNING)), wait=False)
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

    def before_worker_shutdown(self, broker, worker):
        self.writer.stop()

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
        try:
            status, retry_count, error = self._verdict(job, message, failed)
            row = self._row(job, message, status, retry_count=retry_count, error=error)
            write = PendingWrite(row, failed_child_of=job.root_id if status == FAILED else None)
            saved = job.loggable and self.writer.submit(write, wait=True)
            if not job.loggable:
                # No row will show this job: say in the log where its message went.
                logger.warning("job without a log row finished", bad_value=shown(job.job_id), status=status,
                               message_went_to="the dead-letter queue" if failed else "nowhere: acked as done",
                               actor=shown(message.actor_name), error=row["last_error"])
            self._log("job finished", job, status, retry_count=retry_count, duration_ms=row["duration_ms"],
                      error=row["last_error"], saved=saved)
        finally:
            set_current(None)
            structlog.contextvars.unbind_contextvars(*_CONTEXT_KEYS)

    def _verdict(self, job: JobState, message, failed: bool):
        """(status, retry_count, exception) for the attempt that just ended."""
        exception = job.exception
        if failed:
            # Retries exhausted, ``throws``, a time limit on the last try, an age limit.
            return FAILED, job.attempt, exception
        if job.skipped:
            return SKIPPED, job.attempt, None
        if exception is not None:
            if job.retry_enqueued:
                return RETRYING, job.attempt + 1, exception
            if message.options.get("retries", 0) > job.attempt:
                # Retries meant to retry, but the broker refused the message (Redis down):
                # nothing will run this job again, so its row must not wait for it.
                job.outcome.error_code = "retry_not_enqueued"
            return FAILED, job.attempt, exception  # or no Retries middleware: it will not run again
        return (job.outcome.status or SUCCESS), job.attempt, None

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
            "duration_ms": int((time.monotonic() - job.started_monotonic) * 1000) if ending else None,
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
            operation=str(message.actor_name)[:MAX_ID_LENGTH],
            attempt=0,
        )
        job.outcome.error_code = "unknown_actor"
        job.outcome.reason = f"no actor named {shown(message.actor_name)} is declared on this worker"
        row = self._row(job, message, FAILED)
        self.writer.submit(PendingWrite(row, failed_child_of=job.root_id), wait=True)
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
