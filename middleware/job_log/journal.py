"""The job-log journal: every job-log write is appended here, and drainers move it into the database.

With a ``RedisBroker`` the journal is a Redis Stream on the broker's own Redis
(``<namespace>:<name>``, by default ``dramatiq:job-log``), read by drainers in
one consumer group; an entry stays in the stream until a drainer has applied
it and acknowledged it (then it is deleted).  Any other broker (the
``StubBroker`` of ``enrich run``, the demo and the tests) gets a
``MemoryJournal`` with the same consumer-group semantics in this process.

Rows the database refuses are put aside in a second stream,
``<namespace>:<name>:rejected`` (a list in memory), where an operator can
list and replay them (``enrich drain --list-rejected`` / ``--replay-rejected``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import orjson
import redis

from ..background import ServiceUnavailable
from .ride_along import RideAlong

DEFAULT_STREAM = "job-log"
GROUP = "drainers"
_DATETIME_COLUMNS = ("enqueued_at", "started_at", "completed_at", "due_at", "created_at", "updated_at")


class JournalUnavailable(ServiceUnavailable):
    """The journal could not take or give entries (Redis is down or refused the command)."""


@dataclass
class Entry:
    """One appended write: a job-log row, and the root its failure counts against (if it failed for good)."""

    id: str  # "<milliseconds>-<sequence>", as Redis numbers stream entries
    row: dict[str, Any]
    failed_child_of: Optional[str] = None

    @property
    def appended_at(self) -> float:
        """When it was appended, in seconds since the epoch (from the id)."""
        return int(self.id.split("-", 1)[0]) / 1000


def encode(row: dict[str, Any], failed_child_of: Optional[str]) -> bytes:
    return orjson.dumps([row, failed_child_of], default=str, option=orjson.OPT_NON_STR_KEYS)


def decode(entry_id: str, payload: bytes) -> Entry:
    """An appended entry back; its times stay ISO 8601 text (PostgreSQL reads them as they are,
    and two of them compare as the times do): ``with_datetimes`` makes them datetimes again."""
    row, failed_child_of = orjson.loads(payload)
    return Entry(entry_id, row, failed_child_of)


def with_datetimes(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its times as datetimes (SQLite stores what it is given)."""
    for name in _DATETIME_COLUMNS:
        value = row.get(name)
        if isinstance(value, str):
            row[name] = dt.datetime.fromisoformat(value)
    return row


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


class Journal:
    """What every journal offers: appends for JobLinking, reads and acks for drainers, counters for metrics."""

    where = "the journal"  # where rejected rows are kept, for log lines and the README

    def __init__(self) -> None:
        self.drained_total = 0  # entries applied to the database by drainers of this process
        self.refused_total = 0  # entries the database refused (put aside)
        self.last_appended: Optional[str] = None  # the id of this process's newest append

    def append(self, row: dict[str, Any], failed_child_of: Optional[str] = None,
               before: Optional[tuple[str, str]] = None) -> Optional[str]:
        """Append one job-log write; returns its entry id.  JournalUnavailable when it cannot be kept.

        ``before`` (a message's ``redis_message_id``, and what the write is, for errors): the write
        must be in the journal before that message's enqueue or ack, and may be sent with it
        (``ride_along``: then it returns None, and that command raises ``JournalDown`` if it fails).
        """
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        entries, oldest = self.backlog()
        return {
            "entries": entries,
            "oldest_age_seconds": None if oldest is None else max(0.0, round(time.time() - oldest, 3)),
            "drained_total": self.drained_total,
            "refused_total": self.refused_total,
        }

    def applied_through(self, entry_id: Optional[str]) -> bool:
        """Whether every entry up to ``entry_id`` has been applied (or put aside)."""
        oldest = self.oldest_id()
        return entry_id is None or oldest is None or _id_key(oldest) > _id_key(entry_id)

    # read(consumer, count, block_ms), claim(consumer, min_idle_ms, count), keep(consumer, ids),
    # forget_consumers(min_idle_ms), ack(ids),
    # backlog(), oldest_id(), newest_id(), put_aside(entries, error), rejected_count(), rejected(count),
    # replay_rejected()


_FORGET_CONSUMERS = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


class RedisJournal(Journal):
    """A Redis Stream read through a consumer group.

    Parameters:
      client(redis.Redis): The broker's client (``broker.client``).
      key(str): The stream's key; rejected rows go to ``key + ":rejected"``.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        super().__init__()
        self.client = client
        self.key = key
        self.rejected_key = key + ":rejected"
        self.where = f"the Redis stream {self.rejected_key!r}"
        self._group_ready = False
        self._ride_along = None  # a RideAlong: writes sent with their message's enqueue or ack

    def ride_with(self, broker) -> None:
        """Send writes made ``before`` a message's command with that command (``ride_along``), where it can."""
        self._ride_along = RideAlong.install(broker)

    def append(self, row, failed_child_of=None, before=None) -> Optional[str]:
        if before is not None and self._ride_along is not None:
            redis_message_id, what = before
            self._ride_along.carry(self, redis_message_id, encode(row, failed_child_of), what)
            return None
        try:
            entry_id = self.client.xadd(self.key, {"e": encode(row, failed_child_of)}).decode()
        except redis.RedisError as exc:
            raise JournalUnavailable(f"cannot append to the job-log stream {self.key!r}: {exc}") from exc
        self.last_appended = entry_id
        return entry_id

    def _call(self, method, *args, **kwargs):
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # the stream was deleted (a flushed Redis): make the group again
            raise JournalUnavailable(str(exc)) from exc
        except redis.RedisError as exc:
            raise JournalUnavailable(str(exc)) from exc

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the stream: entries appended before any drainer existed are drained too.
            self.client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise JournalUnavailable(str(exc)) from exc
        except redis.RedisError as exc:
            raise JournalUnavailable(str(exc)) from exc
        self._group_ready = True

    def _entries(self, pairs) -> list[Entry]:
        return [decode(entry_id.decode(), fields[b"e"]) for entry_id, fields in pairs if fields]

    def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        self._ensure_group()
        answer = self._call("xreadgroup", GROUP, consumer, {self.key: ">"}, count=count, block=block_ms or None)
        return self._entries(answer[0][1]) if answer else []

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another drainer read but has not acknowledged for ``min_idle_ms`` (it died)."""
        self._ensure_group()
        answer = self._call("xautoclaim", self.key, GROUP, consumer, min_idle_ms, start_id="0-0", count=count)
        return self._entries(answer[1])

    def keep(self, consumer: str, ids: list[str]) -> None:
        """Reset these pending entries' idle time (the drainer holding them is alive and retrying)."""
        for start in range(0, len(ids), 1000):
            self._call("xclaim", self.key, GROUP, consumer, 0, ids[start:start + 1000], justid=True)

    def forget_consumers(self, min_idle_ms: int) -> int:
        """Delete the group's consumers that hold nothing and were silent ``min_idle_ms``: dead
        drainers' names, one per process ever started.  Checked and deleted in one script, so a
        consumer that reads meanwhile is never deleted with entries pending (a live one that is
        deleted comes back on its next read)."""
        self._ensure_group()
        return self._call("eval", _FORGET_CONSUMERS, 1, self.key, GROUP, min_idle_ms)

    def ack(self, ids: list[str]) -> None:
        if not ids:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.key, GROUP, *ids)
        pipe.xdel(self.key, *ids)  # acknowledged entries are trimmed at once
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise JournalUnavailable(str(exc)) from exc

    def oldest_id(self) -> Optional[str]:
        first = self._call("xrange", self.key, count=1)
        return first[0][0].decode() if first else None

    def newest_id(self) -> Optional[str]:
        last = self._call("xrevrange", self.key, count=1)
        return last[0][0].decode() if last else None

    def backlog(self) -> tuple[int, Optional[float]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xrange(self.key, count=1)
        try:
            length, first = pipe.execute()
        except redis.RedisError as exc:
            raise JournalUnavailable(str(exc)) from exc
        return length, (_id_key(first[0][0].decode())[0] / 1000 if first else None)

    def put_aside(self, entries: list[Entry], error: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        for entry in entries:
            pipe.xadd(self.rejected_key, {"e": encode(entry.row, entry.failed_child_of), "error": error})
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise JournalUnavailable(str(exc)) from exc
        self.refused_total += len(entries)

    def rejected_count(self) -> int:
        """How many rows the database refused are kept aside (all of them, not only ``rejected``'s first)."""
        return self._call("xlen", self.rejected_key)

    def rejected(self, count: int = 1000) -> list[tuple[str, Entry, str]]:
        pairs = self._call("xrange", self.rejected_key, count=count)
        return [(i.decode(), decode(i.decode(), f[b"e"]), f.get(b"error", b"").decode()) for i, f in pairs]

    def replay_rejected(self) -> int:
        """Append every rejected entry to the journal again (after the cause is fixed); returns how many."""
        moved = 0
        while True:
            batch = self.rejected(500)
            if not batch:
                return moved
            pipe = self.client.pipeline(transaction=True)
            for rejected_id, entry, _ in batch:
                pipe.xadd(self.key, {"e": encode(entry.row, entry.failed_child_of)})
                pipe.xdel(self.rejected_key, rejected_id)
            pipe.execute()
            moved += len(batch)


class MemoryJournal(Journal):
    """The same journal in this process's memory, for brokers without Redis (one process, one drainer)."""

    where = "this process's memory (and the ERROR log line)"

    def __init__(self) -> None:
        super().__init__()
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()  # not yet acknowledged
        self._delivered: dict[str, tuple[str, float]] = {}  # id -> (consumer, when) for entries read
        self._next: list[str] = []  # ids not yet delivered, oldest first
        self._rejected: list[tuple[str, Entry, str]] = []
        self._ids = itertools.count()
        self._changed = threading.Condition()

    def append(self, row, failed_child_of=None, before=None) -> str:
        with self._changed:
            entry_id = f"{int(time.time() * 1000)}-{next(self._ids)}"
            self._entries[entry_id] = Entry(entry_id, row, failed_child_of)
            self._next.append(entry_id)
            self.last_appended = entry_id
            self._changed.notify()
        return entry_id

    def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        with self._changed:
            if not self._next and block_ms:
                self._changed.wait(block_ms / 1000)
            ids, self._next = self._next[:count], self._next[count:]
            now = time.monotonic()
            for entry_id in ids:
                self._delivered[entry_id] = (consumer, now)
            return [self._entries[entry_id] for entry_id in ids]

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        with self._changed:
            now = time.monotonic()
            idle = [i for i, (_, at) in self._delivered.items() if (now - at) * 1000 >= min_idle_ms][:count]
            for entry_id in idle:
                self._delivered[entry_id] = (consumer, now)
            return [self._entries[entry_id] for entry_id in idle]

    def keep(self, consumer: str, ids: list[str]) -> None:
        with self._changed:
            now = time.monotonic()
            for entry_id in ids:
                if entry_id in self._delivered:
                    self._delivered[entry_id] = (consumer, now)

    def forget_consumers(self, min_idle_ms: int) -> int:
        return 0  # one process, one drainer: no consumer names are kept

    def ack(self, ids: list[str]) -> None:
        with self._changed:
            for entry_id in ids:
                self._entries.pop(entry_id, None)
                self._delivered.pop(entry_id, None)

    def oldest_id(self) -> Optional[str]:
        with self._changed:
            return next(iter(self._entries), None)

    def newest_id(self) -> Optional[str]:
        with self._changed:
            return next(reversed(self._entries), None)

    def backlog(self) -> tuple[int, Optional[float]]:
        with self._changed:
            first = next(iter(self._entries.values()), None)
            return len(self._entries), (first.appended_at if first else None)

    def put_aside(self, entries: list[Entry], error: str) -> None:
        with self._changed:
            self._rejected.extend((entry.id, entry, error) for entry in entries)
        self.refused_total += len(entries)

    def rejected_count(self) -> int:
        with self._changed:
            return len(self._rejected)

    def rejected(self, count: int = 1000) -> list[tuple[str, Entry, str]]:
        with self._changed:
            return list(self._rejected[:count])

    def replay_rejected(self) -> int:
        with self._changed:
            taken, self._rejected = self._rejected, []
        for _, entry, _ in taken:
            self.append(entry.row, entry.failed_child_of)
        return len(taken)

    def undelivered(self) -> list[Entry]:
        """Every entry not yet acknowledged (what a stopping process could not drain)."""
        with self._changed:
            return list(self._entries.values())


def redis_journal(client: redis.Redis, name: str = DEFAULT_STREAM, namespace: str = "dramatiq") -> RedisJournal:
    """The journal ``name`` under a Redis broker's ``namespace``, read through ``client``.

    Parameters:
      client(redis.Redis): A client of the broker's Redis (the broker's own, or one made to read it).
      name(str): The journal's name (``JOB_LOG_STREAM``).
      namespace(str): The broker's namespace (Dramatiq's default ``dramatiq``).
    """
    return RedisJournal(client, f"{namespace}:{name}")


def journal_for(broker, name: str = DEFAULT_STREAM) -> Journal:
    """The journal of ``broker``: a Redis Stream under its namespace (its writes riding with the broker's
    commands where they can), or one in memory."""
    client = getattr(broker, "client", None)
    if isinstance(client, redis.Redis):
        journal = redis_journal(client, name, getattr(broker, "namespace", "dramatiq"))
        journal.ride_with(broker)
        return journal
    return MemoryJournal()


__all__ = ["with_datetimes", "Entry", "Journal", "JournalUnavailable", "MemoryJournal", "RedisJournal", "journal_for",
           "redis_journal", "DEFAULT_STREAM"]
