"""Which worker processes are alive, and what each runs now: the records ``WorkerRegistry`` keeps in Redis.

``worker_list`` is the one query: ``enrich workers``, the dashboard's
``/workers`` and ``GET /api/workers`` all read through it.  A worker is
``live`` while its last heartbeat is within the heartbeat timeout
(``REDIS_HEARTBEAT_TIMEOUT_MS``, Dramatiq's rule), ``gone`` after: killed or
cut off from Redis, shown with the jobs it held until its record expires
(``WorkerRegistry``'s ``keep_seconds``).  Two Redis round trips, whatever
the number of workers; no database query.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from middleware.worker_registry import is_live, worker_records

LIVE, GONE = "live", "gone"


@dataclasses.dataclass
class RunningJob:
    job_id: str
    tree_id: str  # the root of its tree: the tree page to link
    actor: Optional[str]
    operation: Optional[str]
    queue: Optional[str]
    entity_type: Optional[str]
    entity_id: Optional[str]
    attempt: int
    started_at: Optional[float]  # epoch seconds, this attempt
    running_for_seconds: Optional[float]


@dataclasses.dataclass
class WorkerProcess:
    worker_id: str  # Dramatiq's broker id of the process (its `__acks__.<id>.*` sets)
    state: str  # live or gone
    host: Optional[str]
    pid: Optional[int]
    queues: list[str]
    threads: Optional[int]
    started_at: Optional[float]  # epoch seconds
    last_heartbeat: Optional[float]  # epoch seconds
    heartbeat_age_seconds: Optional[float]
    jobs: list[RunningJob]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _seconds(ms) -> Optional[float]:
    return ms / 1000 if isinstance(ms, (int, float)) else None


def _text(value, length: int = 200) -> Optional[str]:
    return str(value)[:length] if value is not None else None


def _job(job: dict, now_ms: int) -> RunningJob:
    started = job.get("started_at_ms")
    started = started if isinstance(started, (int, float)) else None
    attempt = job.get("attempt")
    return RunningJob(
        job_id=str(job["job_id"]), tree_id=str(job.get("parent_job_id") or job["job_id"]),
        actor=_text(job.get("actor")), operation=_text(job.get("operation")), queue=_text(job.get("queue")),
        entity_type=_text(job.get("entity_type")), entity_id=_text(job.get("entity_id")),
        attempt=attempt if isinstance(attempt, int) else 0, started_at=_seconds(started),
        running_for_seconds=round(max(0.0, (now_ms - started) / 1000), 1) if started is not None else None)


def worker_list(client, heartbeat_timeout_ms: int, namespace: str = "dramatiq") -> list[WorkerProcess]:
    """Every worker with a record: live ones first (newest heartbeat first), then the gone ones; each with the
    jobs it runs (or held, when gone), the longest running first."""
    now = int(time.time() * 1000)
    workers = []
    for record in worker_records(client, namespace):
        heartbeat = record["heartbeat_ms"]
        jobs = sorted((_job(job, now) for job in record["jobs"] if job.get("job_id")),
                      key=lambda j: -(j.running_for_seconds or 0))
        workers.append(WorkerProcess(
            worker_id=record["worker_id"], state=LIVE if is_live(record, heartbeat_timeout_ms, now) else GONE,
            host=_text(record["host"]), pid=record["pid"], queues=[_text(q, 100) for q in record["queues"]],
            threads=record["threads"], started_at=_seconds(record["started_at_ms"]),
            last_heartbeat=_seconds(heartbeat),
            heartbeat_age_seconds=round(max(0.0, (now - heartbeat) / 1000), 1) if heartbeat is not None else None,
            jobs=jobs))
    workers.sort(key=lambda w: w.state != LIVE)  # stable: each group keeps its newest-heartbeat-first order
    return workers


__all__ = ["LIVE", "GONE", "RunningJob", "WorkerProcess", "worker_list"]
