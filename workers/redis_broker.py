"""A RedisBroker whose consumers dead-letter what is not a message and give back the delayed messages they drop.

Two faults of Dramatiq's own Redis consumer, fixed here:

* A payload it cannot decode makes it raise: the consumer restarts, and the
  payload stays fetched by this worker, unacked, until the worker dies and
  another one fetches it and fails the same way.  Here it goes to the
  queue's dead-letter queue at once, with a WARNING naming it and saying
  where it went.
* A consumer thread moving a due delayed message to its queue gets
  redis-py's own connection error when Redis is away: Dramatiq logs it as
  an unexpected error, at CRITICAL with a traceback.  Here it is Dramatiq's
  ``ConnectionClosed``, which the thread handles as the outage it is (and
  the message, still in this worker's delay-queue set, is put back below).
* A delayed message (a retry waiting for its backoff) is fetched from
  ``<queue>.DQ`` and held in the consumer thread's memory until its ``eta``.
  On a broker connection error Dramatiq's ``ConsumerThread`` replaces that
  memory with an empty queue, and the messages stay in this worker's
  ``__acks__.<worker>.<queue>.DQ`` set: no one runs them again while the
  worker lives (Redis returns a worker's unacked messages only once its
  heartbeat stops).  Here a delay-queue consumer, each time the thread makes
  a new one (at boot, and after every error), first puts back on
  ``<queue>.DQ`` whatever this worker still holds of it: the thread holds
  none of them then (a new consumer starts with an empty delay queue), so
  each is fetched again and waits for its ``eta`` as before.
"""

from __future__ import annotations

import threading

import redis
import structlog
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name, q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.worker import ConsumerThread

from middleware.background import REDIS_OUTAGES

logger = structlog.get_logger("workers.redis_broker")


def _shown(data) -> str:
    text = repr(data)
    return text if len(text) <= 200 else text[:197] + "..."


class _DeadLetteringConsumer(_RedisConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only a delay queue's consumer holds messages in memory that a connection error drops.
        self._held_to_return = self.queue_name == dq_name(q_name(self.queue_name))

    def __next__(self):
        if self._held_to_return:
            self._return_held()
        while True:
            try:
                return super().__next__()
            except DecodeError as exc:
                self._dead_letter(exc.data, exc.error)

    def _return_held(self) -> None:
        """Put back on the delay queue every message this worker still holds of it (see the module)."""
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        try:
            held = [m.decode() if isinstance(m, bytes) else m for m in broker.client.smembers(acks)]
            if held:
                broker.do_requeue(self.queue_name, *held)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # the thread makes a new consumer, which tries again
        self._held_to_return = False
        if held:
            logger.warning("delayed messages dropped from memory after a broker connection error were put back "
                           "on their delay queue", queue=self.queue_name, messages=len(held))

    def requeue(self, messages):
        # Called by the thread's close() after an error: a connection error must not kill the thread
        # (close() swallows only Dramatiq's); what it could not put back, _return_held does next.
        try:
            super().requeue(messages)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _dead_letter(self, data, error) -> None:
        broker = self.broker
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        messages = f"{broker.namespace}:{self.queue_name}.msgs"
        # Redis gave this worker the payload under an id it did not return with it: find it among ours.
        redis_id = next((member for member in broker.client.smembers(acks)
                         if broker.client.hget(messages, member) == data), None)
        if redis_id is None:
            logger.warning("a payload that is not a message was fetched and could not be found again",
                           queue=self.queue_name, payload=_shown(data), error=_shown(error))
            return
        broker.do_nack(self.queue_name, redis_id.decode() if isinstance(redis_id, bytes) else redis_id)
        logger.warning("a payload that is not a message was moved to the dead-letter queue",
                       queue=self.queue_name, dead_letter_queue=f"{self.queue_name}.XQ",
                       redis_message_id=_shown(redis_id), payload=_shown(data), error=_shown(error))


class DeadLetteringRedisBroker(RedisBroker):
    """``RedisBroker`` whose consumers dead-letter undecodable payloads instead of choking on them.

    Parameters: as ``RedisBroker``.
    """

    @property
    def consumer_class(self):
        return _DeadLetteringConsumer

    def enqueue(self, message, *, delay=None):
        try:
            return super().enqueue(message, delay=delay)
        except REDIS_OUTAGES as exc:
            if isinstance(threading.current_thread(), ConsumerThread):  # a due delayed message (see the module)
                raise ConnectionClosed(exc) from None
            raise  # a producer gets what Dramatiq's own broker raises
