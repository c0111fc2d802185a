"""JobLogRow: one write of a job's row in ``enrichment_logs``, one constructor per kind of write.

    JobLogRow.queued(message, delay, actor_options)   # the message was sent (JobLinking.after_enqueue)
    JobLogRow.start(job, message)                     # a worker started an attempt
    JobLogRow.retrying(job, message, retry_count, error, secrets)   # the attempt failed; Retries sent it again
    JobLogRow.end(job, message, status, ...)          # the job's final write
    JobLogRow.lost(reason)                            # the sweeper found its message gone (lost_work)
    JobLogRow.rejected(row, why)                      # the database refused the row: what is kept of it

Every write carries every column (``ROW_COLUMNS``, the dataclass's fields), so
one multi-row statement can hold any mix of them; the journal carries a row
as ``as_dict()``, and the upsert (``upsert``) moves the stored row forward
with it.  Every value a producer or an actor influences is bounded here by
the column's own limit (``models.job_log``), so a row never fails to fit.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Optional

import structlog

from models.base import utcnow
from models.job_log import (
    ENTITY_TYPES,
    FAILED,
    LOST,
    MAX_ERROR_CODE,
    MAX_ERROR_TEXT,
    MAX_INTEGER,
    MAX_OPERATION,
    QUEUED,
    RETRYING,
    RUNNING,
    STATUSES,
)

from ..job_context import random_uuid
from ..redaction import redact_text
from .row_values import (
    as_uuid,
    from_millis,
    is_job_id,
    parent_problem,
    plain_json,
    started_by_details,
    triggered_by,
    valid_attempt,
)
from .sent_messages import stored_message

if TYPE_CHECKING:
    from ..job_context import JobState

logger = structlog.get_logger("middleware.job_linking")

LOST_CODE = "message_lost"  # error_code of a job whose message Redis lost
REJECTED_CODE = "log_row_rejected"  # error_code of a job whose row the database refused


@dataclass
class JobLogRow:
    """One write of one job's row; the fields are the columns every write carries."""

    id: Any  # the row's id if this write inserts it (a UUID; text once it has been through the journal)
    job_id: str
    parent_job_id: Optional[str] = None  # the root's job id; None for a root
    is_root_job: bool = True
    operation: str = "unknown"
    entity_type: Optional[str] = None
    entity_id: Optional[str] = None
    status: str = QUEUED
    reason: Any = None
    sources: list = field(default_factory=list)
    fields_enriched: list = field(default_factory=list)
    data_quality_before: Optional[str] = None
    data_quality_after: Optional[str] = None
    retry_count: int = 0
    attempt_started_ms: int = 0  # when the attempt writing this started (0: written at send); orders redeliveries
    last_error: Optional[str] = None
    error_code: Optional[str] = None
    api_call_count: int = 0
    enqueued_at: Optional[dt.datetime] = None
    started_at: Optional[dt.datetime] = None  # the first attempt's start
    completed_at: Optional[dt.datetime] = None
    duration_ms: Optional[int] = None
    details: Optional[dict] = None
    triggered_by: Optional[str] = None
    message: Optional[dict] = None  # what `enrich resend` sends again (sent_messages); written at send time only
    due_at: Optional[dt.datetime] = None
    created_at: Optional[dt.datetime] = None  # None: now
    updated_at: Optional[dt.datetime] = None  # None: created_at

    def __post_init__(self) -> None:
        if self.created_at is None:
            self.created_at = utcnow()
        if self.updated_at is None:
            self.updated_at = self.created_at

    def as_dict(self) -> dict[str, Any]:
        """The row as the journal carries it: every column, in ``ROW_COLUMNS`` order."""
        return dict(self.__dict__)

    # -- the kinds of write ----------------------------------------------------------

    @classmethod
    def queued(cls, message, delay: Optional[int], actor_options: dict) -> Optional[JobLogRow]:
        """The row of a message just sent, or None when its id cannot key a row (its worker warns)."""
        if not is_job_id(message.message_id):
            return None
        options = message.options
        parent = options.get("parent_job_id")
        if parent_problem(parent, message.message_id):
            parent = None  # logged as a root, as JobLinking does when it runs
        attempt = options.get("retries", 0)
        entity_type, entity_id = message_entity(actor_options.get("entity"), message)
        started_by = started_by_details(options)
        return cls(
            id=random_uuid(),
            job_id=message.message_id,
            parent_job_id=parent,
            is_root_job=parent is None,
            operation=operation_of(actor_options, message.actor_name),
            entity_type=entity_type,
            entity_id=entity_id,
            status=QUEUED,
            retry_count=attempt if valid_attempt(attempt) else 0,  # a resend carries the row's count + 1
            enqueued_at=from_millis(message.message_timestamp) or utcnow(),
            details={"started_by": started_by} if started_by else None,
            triggered_by=triggered_by(options),
            message=stored_message(message),
            due_at=due_at(message, delay),
        )

    @classmethod
    def start(cls, job: JobState, message) -> JobLogRow:
        """The row of an attempt that started at ``job.attempt_started_ms``: ``running``."""
        return cls._attempt(job, message, RUNNING, at=attempt_start(job))

    @classmethod
    def retrying(cls, job: JobState, message, retry_count: int, error: Optional[BaseException],
                 secrets: Iterable[str] = ()) -> JobLogRow:
        """The row of an attempt that failed and was sent again: ``retrying``, due after its backoff."""
        return cls._attempt(job, message, RETRYING, retry_count, error, secrets)

    @classmethod
    def end(cls, job: JobState, message, status: str, retry_count: Optional[int] = None,
            error: Optional[BaseException] = None, secrets: Iterable[str] = ()) -> JobLogRow:
        """The job's final row: ``status`` is a final status (``error`` the exception that ended it)."""
        return cls._attempt(job, message, status, retry_count, error, secrets)

    @classmethod
    def lost(cls, job_id: str, parent_job_id: Optional[str], retry_count: int, reason: str) -> JobLogRow:
        """What the lost-work sweeper writes over a pending row whose message is gone (``LOST_COLUMNS``)."""
        now = utcnow()
        return cls(id=None, job_id=job_id, parent_job_id=parent_job_id, is_root_job=parent_job_id is None,
                   status=LOST, retry_count=retry_count, error_code=LOST_CODE, last_error=reason,
                   completed_at=now, created_at=now)

    @classmethod
    def rejected(cls, row: dict[str, Any], why: str) -> JobLogRow:
        """A row the database refused, reduced to what identifies the job and its status, ``why`` its error.

        It must always land: it keeps the engine's own values (id, status, times), and each value a
        producer or an actor influenced only once it passes the rule every write follows (a parent
        that cannot be one makes the job a root; the operation as plain bounded text)."""
        keep = ("id", "job_id", "enqueued_at", "started_at", "completed_at", "created_at", "updated_at")
        parent = row.get("parent_job_id")
        if parent_problem(parent, row.get("job_id")):
            parent = None
        status = row.get("status")
        retry_count = row.get("retry_count")
        return cls(
            **{name: row.get(name) for name in keep},
            parent_job_id=parent,
            is_root_job=parent is None,
            status=status if status in STATUSES else FAILED,
            retry_count=retry_count if valid_attempt(retry_count) else 0,
            attempt_started_ms=row.get("attempt_started_ms") or 0,
            operation=operation_of({}, row.get("operation") or "unknown"),
            error_code=REJECTED_CODE,
            last_error=plain_json(why)[:MAX_ERROR_TEXT],
        )

    @classmethod
    def _attempt(cls, job: JobState, message, status: str, retry_count: Optional[int] = None,
                 error: Optional[BaseException] = None, secrets: Iterable[str] = (),
                 at: Optional[dt.datetime] = None) -> JobLogRow:
        out = job.outcome
        now = at or utcnow()
        ending = status != RUNNING
        entity_type, entity_id = job.entity
        details = dict(out.details) if out.details else {}
        started_by = started_by_details(message.options)
        if started_by is not None:
            details.setdefault("started_by", started_by)
        error_code = out.error_code
        last_error = None
        if error is not None:
            last_error = redact_text(f"{type(error).__name__}: {error}", secrets)[:MAX_ERROR_TEXT]
            error_code = error_code or error_code_for(error)
        elif status == FAILED and job.skipped:
            error_code = error_code or "age_limit_exceeded"
            last_error = "the message was older than its max_age when a worker got to it"
        elif status == FAILED and out.reason:
            last_error = out.reason
        return cls(
            id=job.row_id,
            job_id=job.job_id,
            parent_job_id=job.root_id,
            is_root_job=job.is_root,
            operation=job.operation,
            entity_type=out.entity_type if out.entity_type in ENTITY_TYPES else entity_type,
            entity_id=as_uuid(out.entity_id) or entity_id,
            status=status,
            reason=plain_json(out.reason) if ending else None,
            sources=plain_json(list(out.sources)) if ending else [],
            fields_enriched=plain_json(list(out.fields_enriched)) if ending else [],
            data_quality_before=plain_json(out.data_quality_before),
            data_quality_after=plain_json(out.data_quality_after),
            retry_count=job.attempt if retry_count is None else retry_count,
            attempt_started_ms=job.attempt_started_ms,
            last_error=plain_json(last_error),
            error_code=plain_json(error_code[:MAX_ERROR_CODE]) if error_code else None,
            api_call_count=out.api_call_count if ending else 0,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,  # the first attempt's
            completed_at=now if status not in (RUNNING, RETRYING) else None,
            duration_ms=attempt_ms(job) if ending else None,
            details=plain_json(details) or None,
            triggered_by=triggered_by(message.options),
            due_at=job.retry_due if status == RETRYING else None,
            created_at=now,
        )


ROW_COLUMNS = tuple(f.name for f in fields(JobLogRow))
LOST_COLUMNS = ("status", "error_code", "last_error", "completed_at", "updated_at")  # what ``lost`` writes


def operation_of(actor_options: dict, actor_name: str) -> str:
    """The job type a row shows: the actor's ``operation`` option, else its name (any text a producer sent)."""
    return plain_json(str(actor_options.get("operation") or actor_name))[:MAX_OPERATION]


def message_entity(spec, message) -> tuple[Optional[str], Optional[str]]:
    """(entity_type, entity_id) from the actor's ``entity`` option: that keyword argument, else the first argument."""
    if not spec:
        return None, None
    entity_type, arg_name = spec
    value = message.kwargs.get(arg_name) if message.kwargs else None
    if value is None and message.args:
        value = message.args[0]
    # A bad id still gets a row, without an entity; the actor reports the error.
    return (entity_type if entity_type in ENTITY_TYPES else None), as_uuid(value)


def due_at(message, delay: Optional[int]) -> Optional[dt.datetime]:
    """When a message sent with ``delay`` is due (its ``eta``), else when it was sent."""
    if delay:
        return from_millis(message.options.get("eta")) or utcnow() + dt.timedelta(milliseconds=delay)
    return from_millis(message.message_timestamp) or utcnow()


def error_code_for(exc: BaseException) -> str:
    """The exception's own ``error_code``, else its class name in snake_case."""
    code = getattr(exc, "error_code", None)
    if not isinstance(code, str) or not code:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return code[:MAX_ERROR_CODE]


def attempt_start(job: JobState) -> dt.datetime:
    """When this delivery of the job started: a start row's time, and a short job's end's, which stands for it."""
    return from_millis(job.attempt_started_ms)


def attempt_ms(job: JobState) -> int:
    """How long this attempt ran, in ms, at most what duration_ms (an INTEGER) holds: 24.8 days.

    PostgreSQL refuses more, and the job's final row with it; its started_at
    and completed_at still tell the whole span.
    """
    elapsed = int((time.monotonic() - job.started_monotonic) * 1000)
    if elapsed > MAX_INTEGER:
        logger.warning("job attempt too long for duration_ms; storing its maximum", job_id=job.job_id,
                       bad_value=elapsed, stored=MAX_INTEGER)
        return MAX_INTEGER
    return elapsed


__all__ = ["JobLogRow", "ROW_COLUMNS", "LOST_COLUMNS", "LOST_CODE", "REJECTED_CODE", "operation_of",
           "message_entity", "due_at", "error_code_for", "attempt_start"]
