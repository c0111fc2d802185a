"""Journal writes that ride with Dramatiq's own Redis command: a send or a job's end is one round trip, not two.

A send's ``queued`` row must be in the journal before its message is
enqueued, and a job's final row before its message is acked.  Appended on
their own, each is a Redis round trip of its own before Dramatiq's (the
enqueue, the ack), a third of a short job's cost in Redis and in the worker.

A ``RedisBroker`` runs every command through one Lua script, kept in
``broker.scripts["dispatch"]``.  ``RideAlong.install`` puts itself in that
place: a write handed to ``carry`` waits on its thread for the command on
its message (the same ``redis_message_id``: the enqueue, the ack or the nack
that follows on that thread), and goes with it in one script, which appends
the write first and runs Dramatiq's own script only if that worked.  So the
write is in Redis before the message is enqueued or acked, or neither
happens; every other command runs Dramatiq's script as it is.

If the script fails (Redis down, or refusing the append), the caller gets
``JournalDown``, a Dramatiq connection error: a producer's ``send`` raises
and nothing is enqueued; a worker retries the ack every few seconds, and the
write, kept on the thread, rides with each try until Redis takes it.
"""

from __future__ import annotations

import threading
from typing import Optional

import redis
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import MiddlewareError

# What a write rides with: the commands on one message, whose first argument after Dramatiq's eight is its id.
_CARRIERS = {"enqueue": "sent", "ack": "acked", "nack": "dead-lettered"}
_MESSAGE_ID_ARG = 8

# The journal's append, then Dramatiq's dispatch script unchanged (its ARGV without the write, the last argument).
_PRELUDE = """local journal_entry = redis.call("XADD", KEYS[2], "*", "e", table.remove(ARGV))
local function dramatiq_dispatch()
"""
_POSTLUDE = """
end
dramatiq_dispatch()
return journal_entry
"""


class JournalDown(MiddlewareError, ConnectionClosed):
    """A write that must be in the journal could not be appended.

    A job's final write: the message must not be acked yet.  A send's
    ``queued`` row: the send raises (nothing is enqueued), as Dramatiq's
    own enqueue does when Redis refuses it.  A MiddlewareError, so Dramatiq
    does not swallow it in ``emit_before``, and a broker connection error,
    so the worker retries the ack every few seconds until Redis takes the
    write, and a producer sees what it sees when Redis is down.
    """


class RideAlong:
    """Stands in for a RedisBroker's dispatch script and sends each waiting journal write with its message's command.

    Parameters:
      broker(RedisBroker): The broker whose ``scripts["dispatch"]`` it replaces.
    """

    def __init__(self, broker) -> None:
        self._dispatch = broker.scripts["dispatch"]
        self._with_write = broker.client.register_script(_PRELUDE + _text(self._dispatch.script) + _POSTLUDE)
        self._waiting = threading.local()

    @classmethod
    def install(cls, broker) -> Optional[RideAlong]:
        """Take ``broker``'s dispatch script's place (once); None when it has none (not a RedisBroker)."""
        scripts = getattr(broker, "scripts", None)
        dispatch = scripts.get("dispatch") if isinstance(scripts, dict) else None
        if isinstance(dispatch, cls):
            return dispatch
        if not isinstance(dispatch, redis.commands.core.Script):
            return None
        scripts["dispatch"] = ride_along = cls(broker)
        return ride_along

    def carry(self, journal, redis_message_id: str, payload: bytes, what: str) -> None:
        """Send ``payload`` to ``journal`` (a RedisJournal on the broker's Redis) with this thread's next
        command on ``redis_message_id``; ``what`` names the write in errors."""
        self._waiting.write = (redis_message_id, payload, what, journal)

    def __call__(self, keys=None, args=None, client=None):
        write = getattr(self._waiting, "write", None)
        if write is None or client is not None or len(args) <= _MESSAGE_ID_ARG or args[0] not in _CARRIERS:
            return self._dispatch(keys=keys, args=args, client=client)
        self._waiting.write = None
        if args[_MESSAGE_ID_ARG] != write[0]:
            # Its command never came (a later hook stopped the send): the write goes with nothing.
            return self._dispatch(keys=keys, args=args)
        journal = write[3]
        try:
            entry_id = self._with_write(keys=[*keys, journal.key], args=[*args, write[1]])
        except redis.RedisError as exc:
            self._waiting.write = write  # the ack is tried again: the write goes with it
            raise JournalDown(f"{write[2]} could not be written to the job-log stream {journal.key!r}, "
                              f"so the message was not {_CARRIERS[args[0]]}: {exc}") from None
        journal.last_appended = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return None


def _text(script) -> str:
    return script.decode() if isinstance(script, bytes) else script


__all__ = ["RideAlong", "JournalDown"]
