"""Values a message may carry, made safe for a job-log row (shared by the start/end and send-time rows).

A message's options and arguments come from any producer: every value is
checked or converted here before it reaches a row, so a bad one costs a
warning, never a refused batch.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any, Optional

from models.job_log import MAX_ID_LENGTH, MAX_INTEGER, MAX_TRIGGERED_BY

MAX_ATTEMPT = MAX_INTEGER  # what retry_count can hold
MAX_RETRIES_OPTION = MAX_ATTEMPT - 1  # a retry's row counts one more than its ``retries`` option: that must fit too
# A lone surrogate (half a UTF-16 pair, e.g. from a bad decode) is text no database encodes.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
LONE_SURROGATES = re.compile(r"[\ud800-\udfff]")


def job_id_problem(value: Any, longest: int = MAX_ID_LENGTH) -> Optional[str]:
    """Why ``value`` cannot be a job id (or a ``triggered_by``, ``longest`` 50), or None when it can."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value:
        return "empty"
    if len(value) > longest:
        return f"longer than {longest} characters ({len(value)})"
    if CONTROL_CHARS.search(value):
        return "contains control characters or lone surrogates"
    return None


def is_job_id(value: Any) -> bool:
    """Whether ``value`` can key a job-log row."""
    return job_id_problem(value) is None


def parent_problem(parent: Any, job_id: Any) -> Optional[str]:
    """Why ``parent`` cannot be the ``parent_job_id`` of job ``job_id``, or None when it can (or is None)."""
    if parent is None:
        return None
    return job_id_problem(parent) or ("is the job's own id" if parent == job_id else None)


def shown(value: Any) -> str:
    """A bad value, quoted and cut short enough for one log line."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data that both databases take.

    NUL characters are removed at any depth (PostgreSQL refuses them in text
    and JSON), a lone surrogate becomes U+FFFD (neither database encodes it),
    and what JSON has no type for (a Decimal, a date) becomes its text.
    """
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        if not value.isascii():
            try:
                value.encode()  # in C, far quicker than searching: almost every text has no surrogate
            except UnicodeEncodeError:
                value = LONE_SURROGATES.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {plain_json(k if isinstance(k, str) else str(k)): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return plain_json(str(value))


def as_uuid(value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        return None


_EPOCH = dt.datetime(1970, 1, 1)


def from_millis(value: Any) -> Optional[dt.datetime]:
    """A message timestamp (ms since the epoch) as a naive UTC datetime, or None if it is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        # Adding to the epoch costs a third of fromtimestamp() with a time zone.
        return _EPOCH + dt.timedelta(milliseconds=value)
    except (OverflowError, OSError, ValueError):
        return None


def valid_attempt(value: Any) -> bool:
    """Whether a ``retries`` option can be a row's retry_count (as MessageOptions lets it through)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES_OPTION


def started_by_details(options: dict) -> Optional[dict]:
    """The ``started_by`` option (the job that started a new tree) as short plain text, or None.

    Only the keys ``JobLinking.before_enqueue`` writes: a message may carry
    anything here, and PostgreSQL refuses a NUL anywhere in the row.
    """
    started_by = options.get("started_by")
    if not isinstance(started_by, dict):
        return None
    return {k: CONTROL_CHARS.sub("", str(started_by[k]))[:MAX_ID_LENGTH] for k in ("job_id", "operation") if k in started_by}


def triggered_by(options: dict) -> Optional[str]:
    value = options.get("triggered_by")
    return None if job_id_problem(value, MAX_TRIGGERED_BY) else value
