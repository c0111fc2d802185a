"""The row of a message at the moment it is sent: status ``queued``, and the message kept for a resend.

``JobLinking.after_enqueue`` builds it with ``sent_row`` and hands it to the
job-log writer, like every other row write.  A message re-enqueued by
Dramatiq itself (a retry, a delayed message moving to its queue) gets no
new row: its row already says ``retrying`` or ``queued``.

The ``message`` column holds what ``workers/resend.py`` needs to send the
same message again: actor, queue, args, kwargs and the options that are not
the linking's or the broker's own (those are rebuilt from the row: the tree,
the trigger, the attempt).  It is bounded: a message whose JSON is larger
than ``MAX_MESSAGE_BYTES``, or that holds NaN or infinity (no JSON column
takes them), is kept without its arguments, marked ``"resendable": false``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Optional

from dramatiq.common import q_name

from models.base import utcnow
from models.job_log import ENTITY_TYPES, QUEUED

from .job_context import random_uuid
from .json_text import json_text
from .record_checks import json_problem
from .row_values import (
    MAX_ID_LENGTH,
    as_uuid,
    check_job_id,
    from_millis,
    plain_json,
    started_by_details,
    triggered_by,
    valid_attempt,
)

MAX_MESSAGE_BYTES = 64 * 1024
_STRICT_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))  # made once: it is per send

# Options rebuilt at a resend or set by Dramatiq and its broker for one delivery.
INTERNAL_OPTIONS = frozenset({
    "parent_job_id", "triggered_by", "started_by",  # the tree: from the row
    "first_started_at", "retries", "traceback",  # one delivery's attempt (JobLinking, Retries)
    "eta", "redis_message_id",  # the broker's
})


def operation_of(actor_options: dict, actor_name: str) -> str:
    """The job type a row shows: the actor's ``operation`` option, else its name (any text a producer sent)."""
    return plain_json(str(actor_options.get("operation") or actor_name))[:MAX_ID_LENGTH]


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


def _non_finite(text: str, stored: dict) -> bool:
    """Whether ``stored`` (written as ``text``) holds NaN or infinity.

    orjson writes them as null, json as NaN and Infinity: only a text with
    one of those is checked again, by json's C encoder (a few µs more per send).
    """
    if "null" not in text and "NaN" not in text and "Infinity" not in text:
        return False
    try:
        _STRICT_JSON.encode(stored)
    except ValueError:
        return True
    return False


def stored_message(message) -> dict[str, Any]:
    """What a resend needs, as plain JSON that both databases keep as it is, at most MAX_MESSAGE_BYTES of it.

    Parameters:
      message(dramatiq.Message): the message just sent, from any producer.
    """
    stored = plain_json({
        "actor": message.actor_name,
        "queue": q_name(message.queue_name),
        "args": list(message.args),
        "kwargs": dict(message.kwargs or {}),
        "options": {k: v for k, v in message.options.items() if k not in INTERNAL_OPTIONS},
        "resendable": True,
    })
    text = json_text(stored)
    size = len(text.encode())
    if size <= MAX_MESSAGE_BYTES and _non_finite(text, stored):
        # PostgreSQL refuses NaN and infinity in JSON, SQLite's JSON functions too (a journal that never drains).
        problem = json_problem(stored, "message")
    else:
        problem = None
    if problem or size > MAX_MESSAGE_BYTES:
        stored = {"actor": stored["actor"], "queue": stored["queue"], "args": None, "kwargs": None, "options": None,
                  "resendable": False, "size_bytes": size, **({"problem": problem} if problem else {})}
    return stored


def due_at(message, delay: Optional[int]) -> Optional[dt.datetime]:
    """When a message sent with ``delay`` is due (its ``eta``), else when it was sent."""
    if delay:
        return from_millis(message.options.get("eta")) or utcnow() + dt.timedelta(milliseconds=delay)
    return from_millis(message.message_timestamp) or utcnow()


def sent_row(message, delay: Optional[int], actor_options: dict) -> Optional[dict[str, Any]]:
    """The ``queued`` row of a message just sent, or None when its id cannot key a row."""
    if check_job_id(message.message_id):
        return None  # JobLinking warns when (if) a worker runs it
    options = message.options
    parent = options.get("parent_job_id")
    if parent is not None and (check_job_id(parent) or parent == message.message_id):
        parent = None  # logged as a root, as _start_job will
    attempt = options.get("retries", 0)
    entity_type, entity_id = message_entity(actor_options.get("entity"), message)
    started_by = started_by_details(options)
    now = utcnow()
    return {
        "id": random_uuid(),
        "job_id": message.message_id,
        "parent_job_id": parent,
        "is_root_job": parent is None,
        "operation": operation_of(actor_options, message.actor_name),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "status": QUEUED,
        "reason": None,
        "sources": [],
        "fields_enriched": [],
        "data_quality_before": None,
        "data_quality_after": None,
        "retry_count": attempt if valid_attempt(attempt) else 0,  # a resend carries the row's count + 1
        "last_error": None,
        "error_code": None,
        "api_call_count": 0,
        "enqueued_at": from_millis(message.message_timestamp) or now,
        "started_at": None,
        "completed_at": None,
        "duration_ms": None,
        "details": {"started_by": started_by} if started_by else None,
        "triggered_by": triggered_by(options),
        "message": stored_message(message),
        "due_at": due_at(message, delay),
        "created_at": now,
        "updated_at": now,
    }
