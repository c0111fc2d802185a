"""The sent-message contract: what the ``message`` column keeps of a message, and the message a resend rebuilds.

A message's ``queued`` row (``JobLogRow.queued``, written when it is sent)
keeps what is needed to send the same message again: actor, queue, args,
kwargs and the options that are not the linking's or the broker's own
(``INTERNAL_OPTIONS``: those are rebuilt from the row: the tree, the
trigger, the attempt).  ``stored_message`` makes that, ``resend_problem``
says why a row's job cannot be sent again, and ``message_to_resend`` rebuilds
the message (``workers/resend.py`` sends it).

The column is bounded: a message whose JSON is larger than
``MAX_MESSAGE_BYTES``, or that holds NaN or infinity (no JSON column takes
them), is kept without its arguments, marked ``"resendable": false``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import dramatiq
from dramatiq.common import q_name

from ..json_text import json_text
from ..record_checks import json_problem
from .row_values import plain_json

MAX_MESSAGE_BYTES = 64 * 1024
_STRICT_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))  # made once: it is per send

# Options rebuilt at a resend or set by Dramatiq and its broker for one delivery.
INTERNAL_OPTIONS = frozenset({
    "parent_job_id", "triggered_by", "started_by",  # the tree: from the row
    "first_started_at", "retries", "traceback",  # one delivery's attempt (JobLinking, Retries)
    "eta", "redis_message_id",  # the broker's
})


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


def resend_problem(job_id: str, stored: Optional[dict]) -> Optional[str]:
    """Why the message a row keeps cannot be sent again, in one line, or None when it can."""
    if not stored:
        return (f"job {job_id} has no stored message (it was sent before migration 0008, or by a "
                "producer without JobLinking): it cannot be sent again")
    if not stored.get("resendable") and stored.get("problem"):
        return (f"job {job_id}'s message held what the job log cannot keep as it is "
                f"({stored['problem']}), so its arguments were not stored: it cannot be sent again")
    if not stored.get("resendable"):
        return (f"job {job_id}'s message ({stored.get('size_bytes', '?')} bytes) was over the "
                f"{MAX_MESSAGE_BYTES // 1024} KB the job log keeps, so its arguments were not stored: "
                "it cannot be sent again")
    return None


def message_to_resend(row) -> dramatiq.Message:
    """The message a job-log row keeps, with its tree, trigger and attempt rebuilt from the row.

    It keeps the job's id, so the ``queued`` row its send writes is the same
    row; ``retries`` is the row's ``retry_count`` + 1, so that write moves a
    final row forward (the one way back from a final status) and the root
    takes the failure back while the job is pending again.

    Parameters:
      row(EnrichmentLog): a failed or lost job's row, its message resendable (``resend_problem``).
    """
    stored = row.message
    options = dict(stored.get("options") or {})
    if row.parent_job_id is not None:
        options["parent_job_id"] = row.parent_job_id
    if row.triggered_by:
        options["triggered_by"] = row.triggered_by
    started_by = (row.details or {}).get("started_by")
    if isinstance(started_by, dict):
        options["started_by"] = started_by
    options["retries"] = row.retry_count + 1
    return dramatiq.Message(
        queue_name=stored["queue"],
        actor_name=stored["actor"],
        args=tuple(stored.get("args") or ()),
        kwargs=dict(stored.get("kwargs") or {}),
        options=options,
        message_id=row.job_id,
        message_timestamp=int(time.time() * 1000),
    )
