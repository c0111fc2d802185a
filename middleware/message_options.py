"""MessageOptions: a message's options are checked before any middleware acts on them.

    broker = RedisBroker(middleware=[MessageOptions(), AgeLimit(), ...])

A message's options come from whoever put it on the queue.  Dramatiq's
middleware trusts them: ``throws="TypeError"`` makes the worker raise inside
its own exception handler (the worker thread dies), ``max_retries="x"`` makes
Retries fail in the middle of its bookkeeping.  Add this middleware FIRST:
its ``before_process_message`` then runs before everyone else's.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

import structlog
from dramatiq.middleware import Middleware
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from .job_log.row_values import (
    MAX_ATTEMPT,
    MAX_ID_LENGTH,
    MAX_RETRIES_OPTION,
    MAX_TRIGGERED_BY,
    job_id_problem,
    parent_problem,
    shown,
)

logger = structlog.get_logger("middleware.message_options")

MAX_MILLIS = DEFAULT_MAX_BACKOFF  # 7 days: the longest delay a Dramatiq broker accepts
LATEST_TIMESTAMP_MS = 253402300799999  # 9999-12-31, the last instant a datetime holds
MESSAGE_FIELDS = {"queue_name": str, "actor_name": str, "args": (list, tuple), "kwargs": dict, "options": dict,
                  "message_id": str, "message_timestamp": int}

Check = Callable[[Any, Any, Any], Optional[str]]  # (value, broker, message) -> why it is bad, or None


def _type_name(value: Any) -> str:
    return type(value).__name__


def _whole(low: int, high: int) -> Check:
    def check(value, broker, message):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"not a whole number ({_type_name(value)})"
        if not low <= value <= high:
            return f"out of range {low}..{high}"
        return None
    return check


def _millis(positive: bool) -> Check:
    """A duration in milliseconds: a finite number, at most 7 days."""
    def check(value, broker, message):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"not a number of milliseconds ({_type_name(value)})"
        if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_MILLIS:
            return f"out of range {'(0' if positive else '[0'}..{MAX_MILLIS}]"
        return None
    return check


def _flag(value, broker, message):
    return None if isinstance(value, bool) else f"not true or false ({_type_name(value)})"


def _never(value, broker, message):
    # Exception classes and predicates cannot travel in a message: only actor options can set them.
    return "only an actor option can set this, never a message"


def _actor_name(value, broker, message):
    if not isinstance(value, str):
        return f"not an actor name ({_type_name(value)})"
    return None if value in broker.actors else "no actor of that name is declared"


def _message_data(value, broker, message):
    """``pipe_target``: a whole message (as ``Message.asdict()`` gives), for a declared actor."""
    if not isinstance(value, dict):
        return f"not a message ({_type_name(value)})"
    if set(value) != set(MESSAGE_FIELDS):
        return f"not a message (fields {sorted(map(str, value))[:10]})"
    for name, kind in MESSAGE_FIELDS.items():
        if not isinstance(value[name], kind) or isinstance(value[name], bool):
            return f"not a message ({name} is {_type_name(value[name])})"
    if value["actor_name"] not in broker.actors:
        return "names no declared actor"
    delay = value["options"].get("delay")
    if delay is not None and _millis(False)(delay, broker, message):
        return "its delay is not a number of milliseconds up to 7 days"
    return None


def _parent(value, broker, message):
    return parent_problem(value, message.message_id)


def _triggered_by(value, broker, message):
    return job_id_problem(value, MAX_TRIGGERED_BY)


def _started_by(value, broker, message):
    return None if isinstance(value, dict) else f"not a mapping ({_type_name(value)})"


# Every option a middleware of ours or Dramatiq's reads from a message, and what it must be.
CHECKS: dict[str, Check] = {
    # Retries
    "retries": _whole(0, MAX_RETRIES_OPTION),
    "max_retries": _whole(0, MAX_ATTEMPT),
    "min_backoff": _millis(False),
    "max_backoff": _millis(False),
    "retry_when": _never,
    "throws": _never,
    "on_retry_exhausted": _actor_name,
    # TimeLimit, AgeLimit, ShutdownNotifications
    "time_limit": _millis(True),
    "max_age": _millis(True),
    "notify_shutdown": _flag,
    # Callbacks, Pipelines
    "on_success": _actor_name,
    "on_failure": _actor_name,
    "pipe_target": _message_data,
    "pipe_ignore": _flag,
    # JobLinking
    "parent_job_id": _parent,
    "first_started_at": _whole(0, LATEST_TIMESTAMP_MS),
    "triggered_by": _triggered_by,
    "started_by": _started_by,
}


# The options JobLinking reads: it checks them itself, for a stack without MessageOptions.
LINKING_CHECKS: dict[str, Check] = {name: CHECKS[name] for name in (
    "parent_job_id", "first_started_at", "triggered_by", "started_by", "retries")}


def drop_bad_options(broker, message, checks: dict[str, Check]) -> None:
    """Delete each option of ``message`` that ``checks`` finds bad, with a WARNING naming it and why."""
    options = message.options
    for name in [name for name in options if name in checks]:  # a message sets few options
        problem = checks[name](options[name], broker, message)
        if problem:
            logger.warning("ignoring bad message option", option=name, job_id=str(message.message_id)[:MAX_ID_LENGTH],
                           actor=str(message.actor_name)[:MAX_ID_LENGTH], bad_value=shown(options[name]), problem=problem)
            del options[name]


class MessageOptions(Middleware):
    """Drops every message option of the wrong type or range, with a WARNING naming it.

    Checks the options Dramatiq's middleware reads (Retries: ``retries``,
    ``max_retries``, ``min_backoff``, ``max_backoff``, ``retry_when``,
    ``throws``, ``on_retry_exhausted``; TimeLimit: ``time_limit``; AgeLimit:
    ``max_age``; ShutdownNotifications: ``notify_shutdown``; Callbacks:
    ``on_success``, ``on_failure``; Pipelines: ``pipe_target``,
    ``pipe_ignore``) and JobLinking's (``parent_job_id``, ``first_started_at``,
    ``triggered_by``, ``started_by``), and the message's own timestamp (read
    by AgeLimit).  A dropped option falls back to the actor's value or the
    middleware's default, as if the producer had never set it.

    Parameters:
      checks(dict[str, Callable]): Option name -> ``check(value, broker,
        message)`` returning why the value is bad, or None.  Defaults to
        ``CHECKS``.
    """

    def __init__(self, checks: Optional[dict[str, Check]] = None) -> None:
        self.checks = CHECKS if checks is None else checks

    def before_process_message(self, broker, message):
        drop_bad_options(broker, message, self.checks)
        timestamp = message.message_timestamp
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp <= LATEST_TIMESTAMP_MS:
            # A message is frozen: its timestamp is replaced by now (as Dramatiq does for a bad ``eta``).
            logger.warning("ignoring bad message_timestamp; counting the message's age from now",
                           job_id=str(message.message_id)[:MAX_ID_LENGTH], bad_value=shown(timestamp))
            object.__setattr__(message._message, "message_timestamp", int(time.time() * 1000))
