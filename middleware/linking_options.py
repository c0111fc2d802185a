"""The actor options JobLinking reads (``operation``, ``entity``), checked when an actor is declared.

    @dramatiq.actor(operation="enrichment:album", entity=("album", "album_id"))
    def enrich_album(album_id): ...

A typo (``entity=("albm", "album_id")``, ``entity=("album", "albumid")``)
would otherwise show only later, as rows without their entity; here it stops
the declaration, so the process fails at start-up with one line naming the
actor and the option.
"""

from __future__ import annotations

import inspect
from typing import Optional

from dramatiq.middleware import MiddlewareError

from models.job_log import ENTITY_TYPES, MAX_ID_LENGTH
from models.settings import ConfigError


class BadActorOptions(MiddlewareError, ConfigError):
    """An actor's ``operation`` or ``entity`` option is malformed; the message is one line naming both.

    A MiddlewareError, so Dramatiq lets it out of ``declare_actor`` instead of logging it; a ConfigError,
    so the entry points (``workers/worker.py``, ``enrich``) print it as one line, like a bad setting.
    """


def _parameter_problem(fn, name: str) -> Optional[str]:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable Python cannot read the signature of: nothing to check against
        return None
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if name in named or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    return f"{name!r} is not a parameter of {getattr(fn, '__name__', 'the actor')}({', '.join(named)})"


def options_problem(options: dict, fn) -> Optional[str]:
    """Why ``operation``/``entity`` in an actor's ``options`` cannot be used for its rows, or None."""
    operation = options.get("operation")
    if operation is not None and not (isinstance(operation, str) and operation.strip()
                                      and len(operation) <= MAX_ID_LENGTH):
        return (f"operation={operation!r:.120} must be a non-empty string of at most {MAX_ID_LENGTH} "
                "characters (the job type its rows show)")
    entity = options.get("entity")
    if entity is None:
        return None
    if not (isinstance(entity, (tuple, list)) and len(entity) == 2 and all(isinstance(v, str) for v in entity)):
        return f"entity={entity!r:.120} must be None or an (entity_type, argument_name) pair of strings"
    entity_type, argument = entity
    if entity_type not in ENTITY_TYPES:
        return f"entity type {entity_type!r:.40} must be one of {', '.join(ENTITY_TYPES)}"
    problem = _parameter_problem(fn, argument)
    return None if problem is None else f"entity argument {problem}"


def check_actor(actor) -> None:
    """BadActorOptions when the declared actor's ``operation`` or ``entity`` option is malformed."""
    problem = options_problem(actor.options, actor.fn)
    if problem is not None:
        raise BadActorOptions(f"actor {actor.actor_name}: {problem}")
