"""ActorArguments: a message whose arguments do not fit its actor fails at once, as bad input.

    broker = RedisBroker(middleware=[MessageOptions(), ActorArguments(), ...])

Calling an actor with arguments of the wrong shape raises a ``TypeError``
before its first line runs; Retries would retry it, and it would fail the same
way every time.  Checking the arguments against the actor's signature first
tells that apart from a ``TypeError`` raised inside the actor's body (which
is retried as any other error).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import structlog
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage

from models.job_log import MAX_ID_LENGTH

logger = structlog.get_logger("middleware.actor_arguments")


class BadArguments(SkipMessage):
    """The message's arguments do not fit its actor's signature: failed, never retried."""

    error_code = "bad_arguments"


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable) -> tuple[Optional[inspect.Signature], int, float]:
    """(the signature, fewest and most positional arguments a call without keywords may pass)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable Python cannot introspect: let the call decide
        return None, 0, float("inf")
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in signature.parameters.values() if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind == p.KEYWORD_ONLY for p in required):
        return signature, float("inf"), -1  # no call without keywords fits: always bind
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    return signature, len(required), float("inf") if var_positional else len(positional)


def argument_problem(fn: Callable, args: Any, kwargs: Any) -> Optional[str]:
    """Why ``fn(*args, **kwargs)`` cannot be called, or None when the arguments fit."""
    if not isinstance(kwargs, dict):
        return f"kwargs is not a mapping ({type(kwargs).__name__})"
    if not all(isinstance(name, str) for name in kwargs):
        return "kwargs has a key that is not a string"
    signature, fewest, most = _signature(fn)
    if signature is None or (not kwargs and fewest <= len(args) <= most):
        return None  # the common case, decided without binding
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None


class ActorArguments(Middleware):
    """Fails a message whose arguments do not fit its actor, before the actor runs.

    The message is failed (dead-letter queue), skipping Retries, and the
    job's row says ``failed`` with ``error_code=bad_arguments`` and the
    mismatch in ``last_error``.  Put it early in the stack: nothing needs to
    run for a job that cannot start.

    Parameters:
      (none)
    """

    def before_process_message(self, broker, message):
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            return  # the worker fails it as an unknown actor
        problem = argument_problem(actor.fn, message.args, message.kwargs)
        if problem:
            logger.warning("arguments do not fit the actor; failing the job without retries",
                           job_id=str(message.message_id)[:MAX_ID_LENGTH], actor=actor.actor_name, problem=problem,
                           message_went_to="the dead-letter queue")
            message.fail()
            raise BadArguments(f"{actor.actor_name}() called with arguments that do not fit: {problem}")
