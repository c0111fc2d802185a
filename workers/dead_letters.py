"""Put a dead-lettered message back on its queue, or delete it: one message or all of a queue's.

    requeue_dead(broker, client, queue, redis_id)  -> the job id sent again
    delete_dead(client, queue, redis_id)           -> None
    requeue_all(broker, client, queue) / delete_all(client, queue) -> DeadLetterOutcome

``client`` is a Redis client on the broker's Redis; ``broker`` sends (with the app's middleware).

A requeued message is the dead-lettered payload itself, sent through the
broker (so JobLinking writes its ``queued`` row): the same job id, the same
tree, its delivery options (traceback, eta, Redis id) dropped and ``retries``
set as ``enrich resend`` sets it (``workers/resend.py``: the row's
``retry_count`` + 1), so its failed row goes back to ``queued``.  It leaves the
dead-letter queue only once it is sent.  A payload that is not a message
cannot be requeued (``DeadLetterRefused``, one line); it can be deleted.
Deleting a message leaves its row as it is.
"""

from __future__ import annotations

import dataclasses
import time

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound

from .queues import MAX_PAGE_SIZE, QueueNotFound, dead_ids, dead_payload, decoded, forget_dead


class DeadLetterRefused(Exception):
    """A dead-lettered message that cannot be requeued; the message is one line saying why."""


@dataclasses.dataclass
class DeadLetterOutcome:
    done: list[str]  # job ids requeued, or Redis ids deleted
    refused: list[str]  # one line per message left in the dead-letter queue

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _message(broker: dramatiq.Broker, queue: str, redis_id: str, payload) -> dramatiq.Message:
    from .resend import retries_for_resend

    data = decoded(payload)
    try:
        message = dramatiq.Message(**data) if data is not None else None
    except TypeError:
        message = None
    if message is None:
        raise DeadLetterRefused(f"dead-lettered message {redis_id} of queue {queue} is not a message (its payload "
                                "is not a Dramatiq message's JSON): it can only be deleted")
    try:
        broker.get_actor(message.actor_name)
    except ActorNotFound:
        raise DeadLetterRefused(f"dead-lettered message {redis_id}: no actor named {str(message.actor_name)[:100]!r} "
                                "is declared here") from None
    options = {k: v for k, v in message.options.items() if k not in ("traceback", "eta", "redis_message_id")}
    retries = retries_for_resend(message.message_id)
    if retries is not None:
        options["retries"] = retries
    # Sent now: AgeLimit measures a message's age from its timestamp, as for a resend.
    return dramatiq.Message(queue_name=q_name(message.queue_name), actor_name=message.actor_name, args=message.args,
                            kwargs=message.kwargs, options=options, message_id=message.message_id,
                            message_timestamp=int(time.time() * 1000))


def requeue_dead(broker: dramatiq.Broker, client, queue: str, redis_id: str, wait_for_row: bool = True) -> str:
    """Send one dead-lettered message again, then remove it from the dead-letter queue; its job id.

    With ``wait_for_row``, its ``queued`` row is in the database when this returns (``send_again``).
    """
    from .resend import send_again

    message = _message(broker, queue, redis_id, dead_payload(client, queue, redis_id))
    if wait_for_row:
        send_again(broker, [message])
    else:
        broker.enqueue(message)
    forget_dead(client, queue, redis_id)
    return message.message_id


def delete_dead(client, queue: str, redis_id: str) -> None:
    """Delete one dead-lettered message; QueueNotFound when it is not there."""
    if not forget_dead(client, queue, redis_id):
        raise QueueNotFound(f"no dead-lettered message {redis_id} in queue {queue}")


def requeue_all(broker: dramatiq.Broker, client, queue: str) -> DeadLetterOutcome:
    """Requeue every message of ``queue`` dead-lettered until now, a page at a time; the refused ones stay.

    Only those dead-lettered before the call: one requeued that fails again at once is dead-lettered
    again, and is not sent round and round.
    """
    from .resend import wait_for_sent_rows

    outcome = DeadLetterOutcome([], [])
    until, skip = time.time() * 1000, 0
    while True:
        ids = dead_ids(client, queue, until, MAX_PAGE_SIZE, start=skip)
        if not ids:
            wait_for_sent_rows(broker)  # once for all of them
            return outcome
        for redis_id in ids:
            try:
                outcome.done.append(requeue_dead(broker, client, queue, redis_id, wait_for_row=False))
            except DeadLetterRefused as exc:
                outcome.refused.append(str(exc))
                skip += 1
            except QueueNotFound:
                pass  # deleted or requeued by someone else meanwhile


def delete_all(client, queue: str) -> DeadLetterOutcome:
    """Delete every message of ``queue`` dead-lettered until now, a page at a time."""
    outcome = DeadLetterOutcome([], [])
    until = time.time() * 1000
    while ids := dead_ids(client, queue, until, MAX_PAGE_SIZE):
        outcome.done.extend(redis_id for redis_id in ids if forget_dead(client, queue, redis_id))
    return outcome


__all__ = ["DeadLetterRefused", "DeadLetterOutcome", "requeue_dead", "delete_dead", "requeue_all", "delete_all"]
