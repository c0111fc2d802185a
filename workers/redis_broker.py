"""A RedisBroker whose consumers move a payload that is not a message to the dead-letter queue.

Dramatiq's own Redis consumer raises on a payload it cannot decode: the
consumer restarts, and the payload stays fetched by this worker, unacked,
until the worker dies and another one fetches it and fails the same way.
Here it goes to the queue's dead-letter queue at once, with a WARNING
naming it and saying where it went.
"""

from __future__ import annotations

import structlog
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import DecodeError

logger = structlog.get_logger("workers.redis_broker")


def _shown(data) -> str:
    text = repr(data)
    return text if len(text) <= 200 else text[:197] + "..."


class _DeadLetteringConsumer(_RedisConsumer):
    def __next__(self):
        while True:
            try:
                return super().__next__()
            except DecodeError as exc:
                self._dead_letter(exc.data, exc.error)

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
