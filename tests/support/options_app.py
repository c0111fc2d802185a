"""The app's own broker and middleware stack (``workers.worker``), plus three small actors, for a real
``dramatiq`` process fed messages with hostile options (tests/test_message_options.py)."""

import time

import dramatiq

import workers.worker  # noqa: F401  (the product's broker, middleware and actors)
from middleware import record


@dramatiq.actor
def succeeds():
    record("success", reason="done")


@dramatiq.actor
def fails():
    raise RuntimeError("always fails")


@dramatiq.actor
def holds(seconds: float):
    time.sleep(seconds)


@dramatiq.actor
def takes_one(album_id: str):
    raise TypeError(f"raised inside the actor for {album_id}")


@dramatiq.actor(max_retries=0)
def fails_while_flag(key: str):
    """Fails while the Redis key ``key`` exists (tests/processes/test_queues_processes.py dead-letters it)."""
    import redis

    from services import REDIS_TEST_URL

    if redis.Redis.from_url(REDIS_TEST_URL).exists(key):
        raise RuntimeError(f"flag {key} is set")
    record("success", reason="flag gone")
