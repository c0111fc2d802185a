"""WorkerRegistry: each worker process says in the broker's Redis what it is and which jobs it runs now.

    broker.add_middleware(WorkerRegistry())

A thread of each worker process rewrites its record every ``interval_seconds``
(its heartbeat); a clean exit deletes it.  A record whose heartbeat is older
than the broker's ``heartbeat_timeout`` (Dramatiq's own rule: past it, Redis
hands the process's unacked messages to others) is a worker that is gone,
killed or cut off; it stays readable, with the jobs it held, for
``keep_seconds`` more.  After a Redis restart without persistence every live
worker writes its record again within one interval.

Keys, under the broker's namespace (one place: ``_keys``)::

    <ns>:enrich:workers           sorted set: worker id -> last heartbeat (epoch ms)
    <ns>:enrich:worker:<id>       hash: host, pid, queues (JSON list), threads, started_at_ms,
                                  heartbeat_ms, jobs (JSON list, one object per job it runs)

The worker id is Dramatiq's ``broker_id`` (its ``__acks__.<id>.<queue>`` sets).
A job is listed from ``before_process_message`` until its ack or nack (its end
is in the job log's journal by then): ``job_id``, ``actor``, ``operation``, ``queue``,
``parent_job_id`` (its tree's root, when it has one), ``entity_type``,
``entity_id``, ``started_at_ms`` (this attempt) and ``attempt``.

Readers: ``workers.live_workers`` (``enrich workers``, ``/workers``) and the
lost-work sweeper, which never marks ``lost`` a job a live worker runs
(``running_job_ids``).  Only a Redis broker is supported; on another the
middleware does nothing.

Parameters:
  interval_seconds(float): How often the record is rewritten.  Defaults to
    2, or a quarter of the broker's heartbeat timeout when that is shorter.
  keep_seconds(float): How long a record outlives its last heartbeat (a
    worker that is gone stays shown this long).  Defaults to 3600.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Optional

import redis
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from .job_log.row_values import parent_problem
from .job_log.rows import message_entity, operation_of

logger = structlog.get_logger("middleware.worker_registry")

DEFAULT_HEARTBEAT_TIMEOUT_MS = 60_000  # Dramatiq's, for a broker that does not say


def _keys(namespace: str, worker_id: str = "") -> tuple[str, str]:
    """(the index of workers, the record of ``worker_id``)."""
    return f"{namespace}:enrich:workers", f"{namespace}:enrich:worker:{worker_id}"


def heartbeat_timeout_ms(broker) -> int:
    return int(getattr(broker, "heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT_MS))


def _now_ms() -> int:
    return int(time.time() * 1000)


class WorkerRegistry(Middleware):
    """Publishes this worker process and the jobs it runs in the broker's Redis (see the module).

    Parameters:
      interval_seconds(float): Seconds between two writes of the record (the heartbeat).  Defaults to 2, or a
        quarter of the broker's heartbeat timeout when shorter.
      keep_seconds(float): Seconds a record is kept after its last heartbeat.  Defaults to 3600.
    """

    def __init__(self, *, interval_seconds: Optional[float] = None, keep_seconds: float = 3600.0) -> None:
        self.interval_seconds = interval_seconds
        self.keep_seconds = keep_seconds
        self._running: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._broker = None
        self._worker = None
        self._started_ms = 0
        self._down = False

    # -- what runs ----------------------------------------------------------------------

    def before_process_message(self, broker, message):
        options = message.options
        try:
            actor_options = broker.get_actor(message.actor_name).options
        except Exception:  # an unknown actor: the worker fails it at once
            actor_options = {}
        entity_type, entity_id = message_entity(actor_options.get("entity"), message)
        parent = options.get("parent_job_id")
        job = {"job_id": str(message.message_id)[:100], "actor": str(message.actor_name)[:200],
               "operation": operation_of(actor_options, message.actor_name),
               "queue": str(message.queue_name)[:100],
               "parent_job_id": None if parent_problem(parent, message.message_id) else parent,
               "entity_type": entity_type, "entity_id": entity_id, "started_at_ms": _now_ms(),
               "attempt": options.get("retries", 0) if isinstance(options.get("retries", 0), int) else 0}
        with self._lock:
            self._running[message.message_id] = job

    def after_ack(self, broker, message):
        self._done(message)

    def after_nack(self, broker, message):
        self._done(message)

    def _done(self, message) -> None:
        with self._lock:
            self._running.pop(message.message_id, None)

    def running(self) -> list[dict]:
        """The jobs this process runs now (as its record lists them)."""
        with self._lock:
            return list(self._running.values())

    # -- the record ---------------------------------------------------------------------

    def after_worker_boot(self, broker, worker):
        if not isinstance(broker, RedisBroker):
            return
        self._broker, self._worker, self._started_ms = broker, worker, _now_ms()
        if self.interval_seconds is None:
            self.interval_seconds = min(2.0, heartbeat_timeout_ms(broker) / 4000)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="worker-registry", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker, worker):
        """Stop the heartbeat and delete the record: a clean exit is not a worker gone."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        index, record = _keys(broker.namespace, broker.broker_id)
        try:
            broker.client.pipeline(transaction=True).zrem(index, broker.broker_id).delete(record).execute()
        except redis.RedisError as exc:
            logger.warning("worker record not deleted at exit; it shows as gone until it expires",
                           error=f"{type(exc).__name__}: {exc}", keep_seconds=self.keep_seconds)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self.write_record()
            self._stop.wait(self.interval_seconds)

    def _queues(self) -> list[str]:
        consumers = getattr(self._worker, "consumers", None) or {}
        return sorted(q for q in list(consumers) if not q.endswith(".DQ"))

    def write_record(self) -> None:
        """Rewrite this process's record with a fresh heartbeat (one transaction); one WARNING per Redis outage."""
        broker, now = self._broker, _now_ms()
        index, record = _keys(broker.namespace, broker.broker_id)
        fields = {"host": socket.gethostname(), "pid": os.getpid(), "queues": json.dumps(self._queues()),
                  "threads": getattr(self._worker, "worker_threads", 0), "started_at_ms": self._started_ms,
                  "heartbeat_ms": now, "jobs": json.dumps(self.running(), default=str)}
        keep_ms = int(self.keep_seconds * 1000)
        try:
            (broker.client.pipeline(transaction=True)
             .hset(record, mapping=fields).pexpire(record, keep_ms)
             .zadd(index, {broker.broker_id: now}).zremrangebyscore(index, "-inf", now - keep_ms)
             .execute())
        except redis.RedisError as exc:
            if not self._down:
                logger.warning("worker record not written: Redis cannot be reached; retried every interval",
                               error=f"{type(exc).__name__}: {exc}")
            self._down = True
            return
        if self._down:
            logger.info("worker record written again: Redis is back")
        self._down = False


# -- reading ----------------------------------------------------------------------------------


def worker_records(client, namespace: str = "dramatiq") -> list[dict]:
    """Every record in Redis, newest heartbeat first: two round trips.  ``worker_id`` added, ``queues`` and
    ``jobs`` decoded (an unreadable one is an empty list); a record that expired meanwhile is left out."""
    index, _ = _keys(namespace)
    ids = [i.decode() if isinstance(i, bytes) else i for i in client.zrevrange(index, 0, -1)]
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(_keys(namespace, worker_id)[1])
    records = []
    for worker_id, raw in zip(ids, pipe.execute()):
        if not raw:
            continue
        fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace") if isinstance(v, bytes)
                                                                 else v) for k, v in raw.items()}
        record = {"worker_id": worker_id, "host": fields.get("host"), "pid": _int(fields.get("pid")),
                  "queues": _list(fields.get("queues")), "threads": _int(fields.get("threads")),
                  "started_at_ms": _int(fields.get("started_at_ms")), "heartbeat_ms": _int(fields.get("heartbeat_ms")),
                  "jobs": [job for job in _list(fields.get("jobs")) if isinstance(job, dict)]}
        records.append(record)
    return records


def is_live(record: dict, timeout_ms: int, now_ms: Optional[int] = None) -> bool:
    """THE rule: a worker is live while its last heartbeat is within the broker's heartbeat timeout."""
    heartbeat = record.get("heartbeat_ms")
    return heartbeat is not None and (now_ms if now_ms is not None else _now_ms()) - heartbeat <= timeout_ms


def running_job_ids(broker) -> Optional[set[str]]:
    """The ids of the jobs live workers run now; None while the records may be incomplete: Redis started less
    than a heartbeat timeout ago (after a restart without persistence each live worker writes its record
    again within its interval, and a worker is live for a heartbeat timeout)."""
    client, timeout = broker.client, heartbeat_timeout_ms(broker)
    try:
        uptime = client.info("server").get("uptime_in_seconds")
    except redis.ResponseError:  # a managed Redis may refuse INFO: then the records are taken as they are
        uptime = None
    if uptime is not None and uptime * 1000 < timeout:
        return None
    now = _now_ms()
    return {job["job_id"] for record in worker_records(client, broker.namespace) if is_live(record, timeout, now)
            for job in record["jobs"] if isinstance(job.get("job_id"), str)}


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _list(value) -> list:
    try:
        data = json.loads(value) if value else []
    except ValueError:
        return []
    return data if isinstance(data, list) else []
