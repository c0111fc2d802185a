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

logger = structlog.get_logger("middleware.actor_arguments")


class BadArguments(SkipMessage):
    """The message's arguments do not fit its actor's signature: failed, never retried."""

    error_code = "bad_arguments"


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a callable Python cannot introspect: let the call decide
        return None


def argument_problem(fn: Callable, args: Any, kwargs: Any) -> Optional[str]:
    """Why ``fn(*args, **kwargs)`` cannot be called, or None when the arguments fit."""
    if not isinstance(kwargs, dict):
        return f"kwargs is not a mapping ({type(kwargs).__name__})"
    if not all(isinstance(name, str) for name in kwargs):
        return "kwargs has a key that is not a string"
    signature = _signature(fn)
    if signature is None:
        return None
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
                           job_id=str(message.message_id)[:100], actor=actor.actor_name, problem=problem,
                           message_went_to="the dead-letter queue")
            message.fail()
            raise BadArguments(f"{actor.actor_name}() called with arguments that do not fit: {problem}")
