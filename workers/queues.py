"""What waits in the broker's Redis: each Dramatiq queue's counts, oldest ages and messages, page by page.

Dramatiq's Redis layout (``dramatiq/brokers/redis/dispatch.lua``), under the
namespace ``dramatiq``:

- ``<q>``: a list of message ids ready to be fetched; ``<q>.msgs``: id -> payload,
  for those and for the ones a worker fetched and has not acked yet;
- ``<q>.DQ`` / ``<q>.DQ.msgs``: the same for delayed messages (a worker fetches
  them and holds them until their ``eta``);
- ``<q>.XQ``: a sorted set of dead-lettered ids, scored by when (ms);
  ``<q>.XQ.msgs``: id -> payload.

``queue_summaries`` reads counts with ``LLEN``/``HLEN``/``ZCARD`` and one head
message per state; ``queue_messages`` reads one page with ``LRANGE`` or
``ZRANGE`` and ``HMGET``: never a whole queue.  The CLI (``enrich queues``),
the dashboard (``/queues``, ``/api/queues``) and the worker's metrics all read
through here; ``workers/dead_letters.py`` acts on the dead letters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from typing import Iterable, Optional

from middleware.redaction import redact_value

NAMESPACE = "dramatiq"
DEFAULT_QUEUE = "default"
# ready: in the list; fetched: taken by a worker, not acked; delayed: waiting for their eta; dead: dead-lettered.
STATES = ("ready", "fetched", "delayed", "dead")
LISTED_STATES = ("ready", "delayed", "dead")  # the states whose messages a page lists
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
ARGUMENTS_SHOWN = 160  # characters of a message's arguments a listing shows
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class QueueNotFound(LookupError):
    """A queue or message that is not on the broker; the message is one line."""


def check_queue_name(name: str) -> str:
    """``name`` if it can be a queue's name; ValueError (one line) otherwise."""
    if not _QUEUE_NAME.fullmatch(name or "") or name.endswith((".DQ", ".XQ")):
        raise ValueError(f"malformed queue name {name[:40]!r}: letters, digits, '_', '.', ':' and '-', "
                         "at most 100, not ending in .DQ or .XQ")
    return name


_MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def check_message_id(value: str) -> str:
    """A Redis message id as listed (Dramatiq gives each enqueue a UUID; another producer may use any key);
    ValueError (one line) otherwise."""
    value = (value or "").strip()
    if not _MESSAGE_ID.fullmatch(value):
        raise ValueError(f"malformed message id {value[:40]!r}: expected the id shown in the listing")
    return value


def _keys(queue: str) -> dict[str, str]:
    base = f"{NAMESPACE}:{queue}"
    return {"ready": base, "ready_msgs": f"{base}.msgs", "delayed": f"{base}.DQ", "delayed_msgs": f"{base}.DQ.msgs",
            "dead": f"{base}.XQ", "dead_msgs": f"{base}.XQ.msgs"}


def queue_names(client, known: Iterable[str] = (DEFAULT_QUEUE,)) -> list[str]:
    """The queues with a key on the broker (``SCAN`` for the hashes, not the messages), and ``known``, sorted."""
    names = set(known)
    prefix, suffix = f"{NAMESPACE}:", ".msgs"
    for key in client.scan_iter(match=f"{NAMESPACE}:*.msgs", count=1000, _type="hash"):
        key = key.decode() if isinstance(key, bytes) else key
        name = key[len(prefix):-len(suffix)]
        for tail in (".DQ", ".XQ"):
            name = name.removesuffix(tail)
        if not name.startswith("__") and _QUEUE_NAME.fullmatch(name):
            names.add(name)
    return sorted(names)


def _decode(payload) -> Optional[dict]:
    """The message a payload holds, or None when it is not one (not JSON, or not a JSON object)."""
    if payload is None:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _age(now_ms: float, then_ms) -> Optional[float]:
    return round(max(0.0, (now_ms - float(then_ms)) / 1000), 3) if isinstance(then_ms, (int, float)) else None


@dataclasses.dataclass
class QueueSummary:
    """One queue's counts by state and the age in seconds of the message at the head of each listed state."""

    name: str
    counts: dict[str, int]
    oldest_age_seconds: dict[str, Optional[float]]
    acked_per_minute: Optional[float] = None  # from the job log, when it can tell

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def queue_summaries(client, known: Iterable[str] = (DEFAULT_QUEUE,)) -> list[QueueSummary]:
    """Every queue's counts and oldest ages: two pipelined round trips per call, whatever the queues hold.

    Oldest age: ready, the message at the head of the list (next to run), since it was sent; delayed, the
    head of the delayed list (none when workers hold every delayed message), since it was sent; dead, the
    longest dead-lettered, since it was dead-lettered.
    """
    names = queue_names(client, known)
    pipe = client.pipeline(transaction=False)
    for name in names:
        keys = _keys(name)
        pipe.llen(keys["ready"]).hlen(keys["ready_msgs"]).hlen(keys["delayed_msgs"]).zcard(keys["dead"])
        pipe.lindex(keys["ready"], 0).lindex(keys["delayed"], 0).zrange(keys["dead"], 0, 0, withscores=True)
    replies = pipe.execute()
    now = time.time() * 1000
    heads = client.pipeline(transaction=False)
    summaries = []
    for i, name in enumerate(names):
        ready, ready_all, delayed, dead, ready_head, delayed_head, dead_head = replies[i * 7:i * 7 + 7]
        keys = _keys(name)
        heads.hget(keys["ready_msgs"], ready_head or "-").hget(keys["delayed_msgs"], delayed_head or "-")
        summaries.append(QueueSummary(
            name=name,
            counts={"ready": ready, "fetched": max(0, ready_all - ready), "delayed": delayed, "dead": dead},
            oldest_age_seconds={"ready": None, "delayed": None,
                                "dead": _age(now, dead_head[0][1]) if dead_head else None}))
    for summary, (ready_payload, delayed_payload) in zip(summaries, _pairs(heads.execute())):
        for state, payload in (("ready", ready_payload), ("delayed", delayed_payload)):
            message = _decode(payload)
            summary.oldest_age_seconds[state] = _age(now, message.get("message_timestamp")) if message else None
    return summaries


def _pairs(values: list) -> list[tuple]:
    return list(zip(values[::2], values[1::2]))


@dataclasses.dataclass
class QueuedMessage:
    """One message of a listing, its arguments cut short and redacted."""

    id: str  # the Redis message id: what requeue and delete take
    state: str
    job_id: Optional[str]
    actor: Optional[str]
    enqueued_at: Optional[float]  # epoch seconds
    due_at: Optional[float]  # a delayed message's eta
    dead_lettered_at: Optional[float]
    arguments: str  # JSON of args and kwargs, redacted, at most ARGUMENTS_SHOWN characters
    problem: Optional[str] = None  # set when the payload is not a message
    # From the job log, when it has the job's row:
    entity_type: Optional[str] = None
    entity_id: Optional[str] = None
    status: Optional[str] = None
    error_code: Optional[str] = None
    last_error: Optional[str] = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MessagePage:
    queue: str
    state: str
    total: int
    offset: int
    limit: int
    messages: list[QueuedMessage]

    @property
    def next_offset(self) -> Optional[int]:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    def as_dict(self) -> dict:
        return {"queue": self.queue, "state": self.state, "total": self.total, "offset": self.offset,
                "limit": self.limit, "next_offset": self.next_offset,
                "messages": [m.as_dict() for m in self.messages]}


def _cut(text: str, length: int = ARGUMENTS_SHOWN) -> str:
    return text if len(text) <= length else text[:length - 1] + "…"


def _shown_message(redis_id: str, state: str, payload, dead_at, secrets: Iterable[str]) -> QueuedMessage:
    message = _decode(payload)
    if message is None:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        return QueuedMessage(id=redis_id, state=state, job_id=None, actor=None, enqueued_at=None, due_at=None,
                             dead_lettered_at=dead_at, arguments=_cut(redact_value(text, secrets)),
                             problem="not a message: the payload is not a JSON object")
    options = message.get("options") if isinstance(message.get("options"), dict) else {}
    arguments = json.dumps(redact_value({"args": message.get("args"), "kwargs": message.get("kwargs")}, secrets),
                           ensure_ascii=False, separators=(",", ":"), default=str)
    timestamp, eta = message.get("message_timestamp"), options.get("eta")
    return QueuedMessage(
        id=redis_id, state=state, job_id=_text(message.get("message_id")), actor=_text(message.get("actor_name")),
        enqueued_at=timestamp / 1000 if isinstance(timestamp, (int, float)) else None,
        due_at=eta / 1000 if isinstance(eta, (int, float)) else None, dead_lettered_at=dead_at,
        arguments=_cut(arguments))


def _text(value) -> Optional[str]:
    return str(value)[:200] if value is not None else None


def message_keys(queue: str, state: str) -> tuple[str, str]:
    """The (ids, payloads) keys of one listed state of ``queue``."""
    keys = _keys(queue)
    return keys[state], keys[f"{state}_msgs"]


def queue_messages(client, queue: str, state: str, offset: int = 0, limit: int = PAGE_SIZE,
                   secrets: Iterable[str] = ()) -> MessagePage:
    """One page of ``queue``'s messages in ``state`` (ready and delayed in queue order, dead newest first)."""
    if state not in LISTED_STATES:
        raise ValueError(f"state {state[:20]!r} is not one of {', '.join(LISTED_STATES)}")
    if not 0 <= offset or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"offset must be 0 or more and limit 1 to {MAX_PAGE_SIZE}")
    ids_key, payloads_key = message_keys(queue, state)
    pipe = client.pipeline(transaction=False)
    if state == "dead":
        pipe.zcard(ids_key).zrevrange(ids_key, offset, offset + limit - 1, withscores=True)
        total, scored = pipe.execute()
        ids = [(_str(member), score / 1000) for member, score in scored]
    else:
        pipe.llen(ids_key).lrange(ids_key, offset, offset + limit - 1)
        total, members = pipe.execute()
        ids = [(_str(member), None) for member in members]
    payloads = client.hmget(payloads_key, [i for i, _ in ids]) if ids else []
    secrets = list(secrets)
    messages = [_shown_message(redis_id, state, payload, dead_at, secrets)
                for (redis_id, dead_at), payload in zip(ids, payloads) if payload is not None]
    return MessagePage(queue=queue, state=state, total=total, offset=offset, limit=limit, messages=messages)


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dead_payload(client, queue: str, redis_id: str):
    """The payload of one dead-lettered message; QueueNotFound when it is not there."""
    payload = client.hget(_keys(queue)["dead_msgs"], redis_id)
    if payload is None:
        raise QueueNotFound(f"no dead-lettered message {redis_id} in queue {queue}")
    return payload


def dead_ids(client, queue: str, before_ms: float, count: int = MAX_PAGE_SIZE, start: int = 0) -> list[str]:
    """Up to ``count`` ids of ``queue``'s messages dead-lettered before ``before_ms`` (epoch ms), from the
    ``start``-th, the longest dead-lettered first."""
    return [_str(member) for member in client.zrangebyscore(_keys(queue)["dead"], "-inf", before_ms,
                                                            start=start, num=count)]


def forget_dead(client, queue: str, redis_id: str) -> bool:
    """Remove one dead-lettered message (id and payload, in one transaction); whether it was there."""
    keys = _keys(queue)
    removed, _ = client.pipeline(transaction=True).zrem(keys["dead"], redis_id).hdel(keys["dead_msgs"], redis_id).execute()
    return bool(removed)


# -- what the job log knows ---------------------------------------------------------------------------

ACK_RATE_MINUTES = 5
ACK_RATE_SENT_WITHIN = dt.timedelta(hours=1)  # the rows counted were sent within this (the status index's range)
ERROR_SHOWN = 300


def add_job_log(messages: list[QueuedMessage]) -> list[QueuedMessage]:
    """Each message with its job's row (entity, status, error_code, last_error), read in one indexed query."""
    from models.job_log import EnrichmentLog as Log

    job_ids = list({m.job_id for m in messages if m.job_id})
    if not job_ids:
        return messages
    query = (Log.select(Log.job_id, Log.entity_type, Log.entity_id, Log.status, Log.error_code, Log.last_error)
             .where(Log.job_id.in_(job_ids)).tuples())
    rows = {row[0]: row for row in query}
    for message in messages:
        row = rows.get(message.job_id)
        if row is not None:
            _, message.entity_type, entity_id, message.status, message.error_code, last_error = row
            message.entity_id = str(entity_id) if entity_id else None
            message.last_error = _cut(last_error, ERROR_SHOWN) if last_error else None
    return messages


def ended_per_minute() -> dict[str, float]:
    """Each queue's jobs that ended per minute over the last ``ACK_RATE_MINUTES`` minutes, from the job log.

    Counted from the rows sent within the last hour (the ``status, created_at`` index), grouped by the
    queue their stored message names: one query whose cost grows with the jobs that ended in those minutes.
    """
    from peewee import SQL, fn

    from models.base import utcnow
    from models.database import is_postgres
    from models.job_log import FINAL_STATUSES
    from models.job_log import EnrichmentLog as Log

    now = utcnow()
    queue = SQL("message->>'queue'") if is_postgres(Log._meta.database) else fn.json_extract(Log.message, "$.queue")
    counts = (Log.select(queue, fn.COUNT(SQL("*")))
              .where(Log.status.in_(FINAL_STATUSES), Log.created_at >= now - ACK_RATE_SENT_WITHIN,
                     Log.completed_at >= now - dt.timedelta(minutes=ACK_RATE_MINUTES))
              .group_by(queue).tuples())
    return {name: round(count / ACK_RATE_MINUTES, 2) for name, count in counts if name}


def add_ack_rates(summaries: list[QueueSummary], rates: Optional[dict[str, float]] = None) -> list[QueueSummary]:
    """``summaries`` with their ``acked_per_minute`` (``ended_per_minute()`` unless ``rates`` is given; 0.0 for a
    queue none of whose jobs ended then)."""
    rates = ended_per_minute() if rates is None else rates
    for summary in summaries:
        summary.acked_per_minute = rates.get(summary.name, 0.0)
    return summaries


def decoded(payload) -> Optional[dict]:
    """The message a payload holds (a dict), or None when it is not one."""
    return _decode(payload)


__all__ = ["NAMESPACE", "STATES", "LISTED_STATES", "PAGE_SIZE", "MAX_PAGE_SIZE", "QueueNotFound", "QueueSummary",
           "QueuedMessage", "MessagePage", "check_queue_name", "check_message_id", "queue_names", "queue_summaries",
           "queue_messages", "dead_payload", "dead_ids", "forget_dead", "decoded", "message_keys", "add_job_log", "add_ack_rates",
           "ended_per_minute"]
