"""What an actor may know and say about the job it is running.

The ``JobLinking`` middleware puts a ``JobState`` in a context variable while a
message is processed.  Actor code reads it with ``current_job()`` and reports
its outcome with ``record(...)``; it never touches the job log itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import structlog

from models.base import utcnow
from models.job_log import FAILED, RETRYING, SKIPPED, SUCCESS

from .record_checks import MAX_COUNT, MAX_SOURCES, check_json, check_record, check_sources

logger = structlog.get_logger("middleware.job_context")


class NotInJob(RuntimeError):
    """``record()`` was called outside a job processed by ``JobLinking``."""


@dataclass
class Outcome:
    """What the actor reported about its own work, written with the job's row."""

    status: Optional[str] = None
    reason: Optional[str] = None
    error_code: Optional[str] = None
    fields_enriched: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    api_call_count: int = 0
    data_quality_before: Optional[str] = None
    data_quality_after: Optional[str] = None
    entity_type: Optional[str] = None
    entity_id: Optional[str] = None


def random_uuid() -> uuid.UUID:
    """A version-4 UUID from ``random``, not ``os.urandom``.

    ``uuid4()`` releases the GIL for its system call, and on a busy worker
    getting it back can cost a thread switch per job.  A row id needs to be
    unique, not unguessable; ``random`` is reseeded in every forked process.
    """
    return uuid.UUID(int=random.getrandbits(128), version=4)


@dataclass
class JobState:
    """One attempt of one job, from ``before_process_message`` to ack or nack."""

    job_id: str
    root_id: Optional[str]  # None: this job is a root
    operation: str
    attempt: int  # 0 for the first attempt, Dramatiq's ``retries`` option before it
    started_monotonic: float = field(default_factory=time.monotonic)
    started_at: dt.datetime = field(default_factory=utcnow)
    # This delivery's start: a message delivered again (its worker died) runs the same attempt
    # later, and its writes must win over the dead worker's (middleware/job_log/upsert.py).
    attempt_started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    entity: tuple[Optional[str], Optional[str]] = (None, None)
    enqueued_at: Optional[dt.datetime] = None
    row_id: uuid.UUID = field(default_factory=random_uuid)  # used if this write inserts the row
    exception: Optional[BaseException] = None
    final_write: Optional[tuple[dict, Optional[str]]] = None  # (row, failed_child_of), once decided
    loggable: bool = True  # False when the message id cannot key a row
    retry_delay: Optional[int] = None  # the backoff of the retry Retries asked the broker for (ms)
    retry_enqueued: bool = False  # the broker accepted this message again for a retry
    retry_due: Optional[dt.datetime] = None  # when that retry is due (after its backoff)
    skipped: bool = False
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def is_root(self) -> bool:
        return self.root_id is None

    @property
    def tree_id(self) -> str:
        """The id children of this job carry as ``parent_job_id``: the root's."""
        return self.root_id or self.job_id

    def verdict(self, failed: bool) -> tuple[str, int]:
        """(status, retry_count) of the attempt ending, ``failed`` when the broker nacks it."""
        if failed:
            # Retries exhausted, ``throws``, a time limit on the last try, an age limit.
            return FAILED, self.attempt
        if self.skipped:
            return SKIPPED, self.attempt
        if self.exception is not None:
            if self.retry_enqueued or self.retry_delay is not None:
                # Enqueued, or asked for: JobLinking enqueues it again while the broker is down.
                return RETRYING, self.attempt + 1
            return FAILED, self.attempt  # no retry was asked for: nothing will run it again
        return (self.outcome.status or SUCCESS), self.attempt


_current: contextvars.ContextVar[Optional[JobState]] = contextvars.ContextVar("job_linking_current", default=None)
_new_tree: contextvars.ContextVar[bool] = contextvars.ContextVar("job_linking_new_tree", default=False)


def current_job() -> Optional[JobState]:
    """The job being processed on this thread, or None outside a job."""
    return _current.get()


def _require_job() -> JobState:
    job = _current.get()
    if job is None:
        raise NotInJob("record() is only meaningful inside an actor run by a broker with JobLinking")
    return job


def record(
    status: Optional[str] = None,
    *,
    reason: Optional[str] = None,
    error_code: Optional[str] = None,
    fields_enriched: Optional[list] = None,
    sources: Optional[list] = None,
    details: Optional[dict[str, Any]] = None,
    api_call_count: Optional[int] = None,
    data_quality_before: Optional[str] = None,
    data_quality_after: Optional[str] = None,
    entity_type: Optional[str] = None,
    entity_id: Optional[str] = None,
) -> None:
    """Report this job's outcome; the middleware writes it with the job's row.

    May be called several times: later values win, ``details`` are merged and
    ``sources`` accumulate.  ``status`` is one of success, partial_success,
    no_data, skipped or failed (failed without raising means "do not retry").

    Every value must fit its column (``record_checks``): a ValueError names
    the argument that does not, and nothing of that call is kept.
    """
    job = _require_job()
    check_record(dict(status=status, reason=reason, error_code=error_code, fields_enriched=fields_enriched,
                      sources=sources, details=details, api_call_count=api_call_count,
                      data_quality_before=data_quality_before, data_quality_after=data_quality_after,
                      entity_type=entity_type, entity_id=entity_id))
    out = job.outcome
    if details:
        check_json("details", {**out.details, **details}, dict)  # the merged details must fit too
    new_sources = [source for source in dict.fromkeys(sources or ()) if source not in out.sources]
    if new_sources:
        check_sources(out.sources + new_sources, " with the earlier calls' and counted requests'")
    for name, value in (
        ("status", status),
        ("reason", reason),
        ("error_code", error_code),
        ("data_quality_before", data_quality_before),
        ("data_quality_after", data_quality_after),
        ("entity_type", entity_type),
        ("entity_id", entity_id),
        ("api_call_count", api_call_count),
    ):
        if value is not None:
            setattr(out, name, value)
    if fields_enriched is not None:
        out.fields_enriched = list(fields_enriched)
    out.sources.extend(new_sources)
    if details:
        out.details.update(details)


def count_api_call(source: Optional[str] = None) -> None:
    """Count one upstream request against the current job (a no-op outside jobs).

    Upstream clients call this for every request, so ``api_call_count`` and
    ``sources`` need no bookkeeping in actor code.
    """
    job = _current.get()
    if job is None:
        return
    job.outcome.api_call_count = min(job.outcome.api_call_count + 1, MAX_COUNT)
    sources = job.outcome.sources
    if source and source not in sources:
        if len(sources) < MAX_SOURCES:
            sources.append(source)
        else:
            logger.warning("job has too many sources; this one is not recorded", job_id=job.job_id,
                           bad_value=str(source)[:120], limit=MAX_SOURCES)


@contextlib.contextmanager
def new_tree() -> Iterator[None]:
    """Messages sent inside this block start trees of their own.

    Each is a root (``is_root_job``, no parent); its row records the job that
    started it in ``triggered_by`` and in ``details.started_by``::

        with new_tree():
            check_album.send(album_id)
    """
    token = _new_tree.set(True)
    try:
        yield
    finally:
        _new_tree.reset(token)


def starting_new_tree() -> bool:
    return _new_tree.get()


def set_current(job: Optional[JobState]) -> contextvars.Token:
    return _current.set(job)
