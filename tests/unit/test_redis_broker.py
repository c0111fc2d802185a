"""The broker's consumer threads meet a Redis outage as an outage (``workers/redis_broker.py``).

A consumer thread moving a due delayed message to its queue while Redis is away got redis-py's own
``ConnectionError``: Dramatiq logged it as an unexpected error, at CRITICAL with a traceback (the chaos soak
saw it). On a consumer thread it must be Dramatiq's ``ConnectionClosed``; a producer keeps redis-py's error.
"""

from __future__ import annotations

import queue

import dramatiq
import pytest
import redis
from dramatiq.errors import ConnectionClosed
from dramatiq.worker import ConsumerThread

from workers.redis_broker import DeadLetteringRedisBroker

from process_harness import free_port


@pytest.fixture
def broker_without_redis():
    broker = DeadLetteringRedisBroker(url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    broker.declare_queue("default")
    yield broker
    broker.close()


def _due_message():
    return dramatiq.Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})


def test_a_consumer_thread_gets_dramatiqs_connection_error_when_redis_is_away(broker_without_redis):
    raised = []
    thread = ConsumerThread(broker=broker_without_redis, queue_name="default.DQ", prefetch=1,
                            work_queue=queue.PriorityQueue(), worker_timeout=100)

    def move_due_message():  # what ConsumerThread.handle_delayed_messages does with a due message
        try:
            broker_without_redis.enqueue(_due_message())
        except Exception as exc:
            raised.append(exc)

    thread.run = move_due_message
    thread.start()
    thread.join(timeout=30)
    [error] = raised
    assert isinstance(error, ConnectionClosed), repr(error)
    assert "Connection refused" in str(error) or "Error 111" in str(error)


def test_a_producer_still_gets_redis_pys_error(broker_without_redis):
    with pytest.raises(redis.ConnectionError):
        broker_without_redis.enqueue(_due_message())
