"""Whether the broker's Redis keeps anything across a restart, said once when a process starts.

The journal holds job-log rows not drained yet, and the queues hold every
message and every retry waiting for its backoff.  A Redis with neither an
append-only file nor RDB snapshots forgets all of it when it restarts: the
lost-work sweep then marks those jobs ``lost``, but what they said is gone.

A worker process (``JobLinking.before_worker_boot``) and ``enrich drain``
read ``CONFIG GET appendonly`` and ``CONFIG GET save`` once at start and log
one WARNING when both are off.  A managed Redis may refuse CONFIG (a renamed
command, an ACL without it): then nothing is said, as nothing is known.
"""

from __future__ import annotations

from typing import Optional

import redis
import structlog

logger = structlog.get_logger("middleware.redis_persistence")

DOCS = "docs/operations.md#redis-settings"


def persistence_of(client: redis.Redis) -> Optional[dict[str, str]]:
    """``{"appendonly": ..., "save": ...}`` as the Redis says, or None when it will not tell."""
    try:
        settings = {**client.config_get("appendonly"), **client.config_get("save")}
    except redis.exceptions.ResponseError:  # CONFIG refused (managed Redis): nothing to judge by
        return None
    except redis.exceptions.ConnectionError:  # Redis down at boot: the journal's own warnings say so
        return None
    if "appendonly" not in settings or "save" not in settings:
        return None
    return settings


def keeps_nothing(settings: dict[str, str]) -> bool:
    return settings["appendonly"].strip().lower() != "yes" and not settings["save"].strip()


def warn_if_redis_keeps_nothing(client: redis.Redis, process: str) -> bool:
    """Log the WARNING if this Redis has no persistence at all; True if it was logged."""
    settings = persistence_of(client)
    if settings is None or not keeps_nothing(settings):
        return False
    logger.warning(
        "Redis keeps nothing across a restart (appendonly no, no RDB save): a restart loses every queued "
        "message, every waiting retry and every job-log row not drained yet; set appendonly yes",
        process=process, see=DOCS,
    )
    return True


__all__ = ["DOCS", "persistence_of", "keeps_nothing", "warn_if_redis_keeps_nothing"]
