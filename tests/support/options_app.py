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
